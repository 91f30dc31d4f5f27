"""The SGNS study (Q1, Q2, Q3, Q7): the quick run end to end, and its maths against references."""

import contextlib
import dataclasses
import json

import numpy as np
import pytest
from scipy import optimize, special, stats

from experiments import report, sgns_study
from experiments.sgns_study import SGNSStudyConfig, SGNSStudyError
from jaxemb import evaluate, ppmi
from jaxemb.wordvectors import WordVectors

pytest.importorskip("gensim")


@contextlib.contextmanager
def _quiet(label):
    yield


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    config = SGNSStudyConfig(quick=True)
    run = report.Run(path, config)
    out = sgns_study.run_sgns_study(config, run, _quiet)
    run.finish("sgns study")
    metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return path, out, metrics, (path / "report.md").read_text()


def test_quick_study_writes_four_sections_with_tables_and_plots(quick):
    path, out, _, text = quick
    heads = ["## Q1. Why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?",
             "## Q2. Why does 'don't' relate to 'like' if they are not similar?",
             "## Q3. Why not cosine? Is it possible at all?",
             "## Q7. Why do the output weights become word vectors?"]
    at = [text.index(h) for h in heads]
    assert at == sorted(at) and all(text.count(h) == 1 for h in heads)
    bodies = [text[a:b] for a, b in zip(at, at[1:] + [len(text)], strict=True)]
    for body, png in zip(bodies, ("q1_norm_vs_frequency.png", "q2_inout_vs_pmi.png",
                                  "q3_loss_per_epoch.png", "q7_norms_in_out.png"), strict=True):
        assert "|---|" in body and "**Answer.**" in body
        assert f"]({png})" in body and (path / png).stat().st_size > 1000
    # every variant is in the Q3 table, trained on all seeds (vmapped) or reported as diverged
    q3 = bodies[2]
    for name in sgns_study.VARIANTS:
        assert f"| {name} |" in q3
    assert set(out["q3"]) == set(sgns_study.VARIANTS)


def test_every_number_in_the_report_tables_is_logged(quick):
    _, _, metrics, text = quick
    tables = [m for m in metrics if m.get("kind") == "table"]
    assert {m["section"] for m in tables} >= {
        "q1_seed_arithmetic", "q1_norms", "q1_neighbours", "q1_benchmarks", "q1_hubness",
        "q2_aggregate", "q2_pairs", "q2_benchmarks", "q2_levy_goldberg", "q2_planted", "q3_scores",
        "q7_benchmarks", "q7_geometry", "q7_king_queen"}
    logged_lines = set()
    for m in tables:
        rendered = report.table(m["header"], m["rows"], m["caption"])
        assert rendered in text  # the report shows exactly what was logged
        logged_lines |= set(rendered.splitlines())
    report_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(report_rows) > 30
    assert set(report_rows) <= logged_lines


def test_q3_loss_floor_of_t1_is_the_closed_form(quick):
    _, _, metrics, _ = quick
    k = SGNSStudyConfig().negative
    # with |logit| <= 1 the best positive has σ(1), the best negative σ(-(-1)) = σ(1) too
    closed = -(1 + k) * np.log(special.expit(1.0))
    assert sgns_study.cosine_loss_floor(1.0, k) == pytest.approx(closed, rel=1e-12)
    assert closed == pytest.approx(1.87957, abs=1e-5)
    rec = next(m for m in metrics if m["section"] == "q3_variant" and m["variant"] == "cosine_t1")
    assert rec["floor"] == pytest.approx([closed] * 3, rel=1e-12)
    # the measured loss of a model bounded by t = 1 can never beat its bounds
    assert min(rec["final_loss"]) > max(rec["data_floor"]) > closed


def _tiny_ids():
    return [np.array([0, 1, 2, 0, 3, 1, 0, 4, 2, 2, 1], np.int32),
            np.array([3, 0, 1, 4], np.int32), np.array([2], np.int32)]


def _reference_pairs(ids, V, window):
    """Expected dynamic-window pair counts by a loop: offset o is used with p (w − o + 1)/w."""
    n = np.zeros((V, V))
    for doc in ids:
        for i in range(len(doc)):
            for j in range(len(doc)):
                o = abs(i - j)
                if 1 <= o <= window:
                    n[doc[i], doc[j]] += (window - o + 1) / window
    return n


def test_q2_pmi_equals_a_numpy_reference_on_a_tiny_corpus():
    ids, V, window = _tiny_ids(), 5, 3
    counts = np.bincount(np.concatenate(ids), minlength=V)
    pairs = sgns_study.expected_pairs(ids, V, window, counts, sample=0.0)
    ref = _reference_pairs(ids, V, window)
    np.testing.assert_allclose(pairs.toarray(), ref, rtol=1e-12)
    pmi = sgns_study.sgns_pmi(pairs, counts).tocsr()
    pn = counts ** 0.75 / np.sum(counts ** 0.75)
    for w in range(V):
        for c in range(V):
            if ref[w, c] > 0:
                want = np.log(ref[w, c] / (ref[w].sum() * pn[c]))
                assert pmi[w, c] == pytest.approx(want, rel=1e-10, abs=1e-12), (w, c)
    # plain window counts are jaxemb.ppmi's (chunked the same way for text8)
    np.testing.assert_array_equal(sgns_study.window_pairs(ids, V, window).toarray(),
                                  ppmi.cooccurrence(ids, V, window).toarray())
    small_chunks = sgns_study._pairs_matrix(*sgns_study._concat(ids), V, [1.0] * window, chunk=2)
    np.testing.assert_array_equal(small_chunks.toarray(), ppmi.cooccurrence(ids, V, window)
                                  .toarray())


def test_subsampled_pairs_keep_every_token_when_nothing_is_frequent():
    ids, V = _tiny_ids(), 5
    counts = np.full(V, 1_000_000)  # f = 0.2 each; a threshold of 1 keeps all
    a = sgns_study.expected_pairs(ids, V, 2, counts, sample=1.0, draws=2)
    np.testing.assert_allclose(a.toarray(), _reference_pairs(ids, V, 2))


def test_data_loss_floor_matches_per_pair_minimisation():
    ids, V, k = _tiny_ids(), 5, 3
    counts = np.bincount(np.concatenate(ids), minlength=V)
    pairs = _reference_pairs(ids, V, 2)
    pn = counts ** 0.75 / np.sum(counts ** 0.75)
    neg = k * pairs.sum(axis=1, keepdims=True) * pn[None, :]

    def best(t):  # minimise each (w, c) term over x in [-t, t] numerically
        total = 0.0
        for w in range(V):
            for c in range(V):
                f = lambda x, w=w, c=c: (pairs[w, c] * np.logaddexp(0, -x)  # noqa: E731
                                         + neg[w, c] * np.logaddexp(0, x))
                res = optimize.minimize_scalar(f, bounds=(-t, t), method="bounded",
                                               options={"xatol": 1e-10})
                total += res.fun
        return total / pairs.sum()

    import scipy.sparse as sp
    P = sp.csr_matrix(pairs)
    for t in (0.5, 1.0, 3.0):
        assert sgns_study.data_loss_floor(P, counts, k, t) == pytest.approx(best(t), rel=1e-6)
        assert sgns_study.data_loss_floor(P, counts, k, t) >= sgns_study.cosine_loss_floor(t, k)
    assert sgns_study.data_loss_floor(P, counts, k) == pytest.approx(best(60.0), rel=1e-6)


def test_study_evaluation_is_jaxemb_evaluate_with_the_whole_vocabulary(quick):
    """The study's protocol is gensim's (the library's defaults, cosine) over every trained word;
    under dot only the score changes."""
    _, out, _, _ = quick
    study = out["study"]
    wv = WordVectors(study.vocab.words, study.dot.vectors(0, "out"))
    assert len(wv) < 300000  # so the library's default restrict_vocab is the whole vocabulary
    data = sgns_study.load_benchmarks()
    for score, methods in (("cosine", ("3cosadd", "3cosmul")), ("dot", ("3cosadd",))):
        mine = sgns_study.evaluate_vectors(wv.vectors, study.bench, score, methods)
        for name in ("ws353", "simlex"):
            ref = evaluate.word_pairs(wv, data[name], score=score)
            assert mine[name] == pytest.approx(ref.spearman, abs=1e-6)
            assert (mine[f"{name}_pairs"], mine[f"{name}_oov"]) == (ref.n_pairs, ref.n_oov)
        for m in methods:
            an = evaluate.analogies(wv, data["analogies"], method=m, score=score)
            assert mine[m] == an.accuracy
            assert (mine[f"{m}_answered"], mine[f"{m}_oov"]) == (an.total.answered,
                                                                 an.total.n_oov)


def _tiny_bench(words):
    qs = np.array([["a", "b", "c", "d"], ["b", "e", "f", "g"], ["A", "c", "g", "e"],
                   ["a", "zz", "c", "d"]])
    pairs = evaluate.WordPairs("p", np.array(["a", "b", "c", "d", "q"]),
                               np.array(["b", "c", "e", "g", "a"]),
                               np.array([1.0, 3.0, 2.0, 5.0, 4.0]))
    return qs, sgns_study.prepare_benchmarks(words, {
        "ws353": pairs, "simlex": pairs,
        "analogies": evaluate.AnalogySet("t", (evaluate.AnalogySection("s", qs),))})


def test_dot_analogies_and_pairs_keep_the_norms(rng):
    words = ("a", "b", "c", "d", "e", "f", "g")
    X = rng.normal(size=(7, 4)).astype(np.float32) * rng.uniform(0.2, 5, size=(7, 1))
    X = X.astype(np.float32)
    qs, bench = _tiny_bench(words)
    got = sgns_study.evaluate_vectors(X, bench, "dot", ("3cosadd",))
    correct = 0
    for q in qs[:3]:
        a, b, c, d = (words.index(w.lower()) for w in q)
        s = X.astype(np.float64) @ (X[b] - X[a] + X[c])
        s[[a, b, c]] = -np.inf
        correct += int(np.argmax(s) == d)
    assert (got["3cosadd"], got["3cosadd_answered"], got["3cosadd_oov"]) == (correct / 3, 3, 1)
    dots = [X[0] @ X[1], X[1] @ X[2], X[2] @ X[4], X[3] @ X[6]]
    assert (got["ws353_pairs"], got["ws353_oov"]) == (4, 1)
    assert got["ws353"] == pytest.approx(stats.spearmanr([1, 3, 2, 5], dots).statistic)
    with pytest.raises(evaluate.EvaluationError, match="3CosMul needs cosines"):
        sgns_study.evaluate_vectors(X, bench, "dot", ("3cosmul",))
    with pytest.raises(SGNSStudyError, match="unknown evaluation score 'Cosine'"):
        sgns_study.evaluate_vectors(X, bench, "Cosine", (), pairs=True)


def test_undefined_figures_are_nan_not_errors(rng):
    """A quick run's tiny vocabulary: ρ over fewer than 3 pairs, or with nothing answerable."""
    words = ("a", "b", "c", "x", "y")
    X = rng.normal(size=(5, 4)).astype(np.float32)
    _, bench = _tiny_bench(words)  # pairs a-b, b-c only; no question has all four words
    got = sgns_study.evaluate_vectors(X, bench, "cosine", ("3cosadd", "3cosmul"))
    assert np.isnan(got["ws353"]) and (got["ws353_pairs"], got["ws353_oov"]) == (2, 3)
    for m in ("3cosadd", "3cosmul"):
        assert np.isnan(got[m]) and (got[f"{m}_answered"], got[f"{m}_oov"]) == (0, 4)
    # three pairs whose model scores are all equal (orthonormal vectors): ρ undefined, NaN
    words = ("a", "b", "c", "d", "e", "f", "g")
    _, bench = _tiny_bench(words)
    E = np.eye(7, dtype=np.float32)
    assert np.isnan(sgns_study.evaluate_vectors(E, bench, "dot", ())["ws353"])


@pytest.mark.parametrize("change, message", [
    (dict(seeds=(0, 1)), "--seeds must be at least 3 distinct seeds"),
    (dict(seeds=(0, 1, 1)), "--seeds must be at least 3 distinct seeds"),
    (dict(variants=("cosine_t1", "bilinear")), "--variants must be .*including 'dot'"),
    (dict(variants=("dot", "cosine")), "--variants must be distinct names from"),
    (dict(variants=("dot", "dot")), "--variants must be distinct"),
    (dict(cosine_temperature=1.0), "--cosine-temperature must be > 1"),
    (dict(learned_temperature_init=0.0), "--learned-temperature-init must be > 0"),
    (dict(dim=0), "--dim must be >= 1, got 0"),
    (dict(epochs=-2), "--epochs must be >= 1, got -2"),
    (dict(window=0), "--window must be >= 1"),
    (dict(sample=-0.1), "--sample must be >= 0"),
    (dict(sample=float("nan")), "--sample must be >= 0"),
    (dict(lr=0.0), "--lr must be > 0"),
    (dict(pair_min_count=0.0), "--pair-min-count must be > 0"),
    (dict(planted_docs=-1), "--planted-docs must be >= 0"),
    (dict(max_docs=0), "--max-docs must be >= 1 or None"),
    (dict(corpus=""), "--corpus must be"),
])
def test_validate_rejects_bad_values(change, message):
    config = dataclasses.replace(SGNSStudyConfig(), **change)
    with pytest.raises(SGNSStudyError, match=message):
        config.validate()
    with pytest.raises(ValueError):  # before any work: train_sgns_variants validates first
        sgns_study.train_sgns_variants(config, _quiet)


def test_defaults_validate_and_quick_is_small():
    SGNSStudyConfig().validate()
    q = SGNSStudyConfig(quick=True).resolved()
    q.validate()
    assert q.max_docs == 20 and q.epochs < SGNSStudyConfig().epochs and len(q.seeds) >= 3
    assert SGNSStudyConfig(corpus="text8").resolved().corpus == "text8"


def test_seeds_are_trained_together_and_text8_is_one_option_away(quick):
    import tyro

    _, out, _, _ = quick
    study = out["study"]
    for v in study.variants.values():  # one vmapped training per variant: a leading seed axis
        if v.result is not None:
            assert v.result.params["in"].shape == (3, len(study.vocab), study.config.dim)
            assert v.epoch_loss.shape == (study.config.epochs, 3)
    assert not np.allclose(study.dot.vectors(0), study.dot.vectors(1))
    assert tyro.cli(SGNSStudyConfig, args=["--corpus", "text8"]).corpus == "text8"
    config = tyro.cli(SGNSStudyConfig, args=["--quick", "--variants", "dot", "bilinear"])
    assert config.quick and config.variants == ("dot", "bilinear")
