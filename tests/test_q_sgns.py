"""The SGNS questions Q1, Q2, Q3, Q7: tables and answers from hand-made results (no training),
results that round-trip through JSON, the config's checks, and one small measure of all four
on a tiny corpus (each variant trained once, shared by the questions)."""

import contextlib
import dataclasses
import json
import re

import jax
import numpy as np
import pytest
from study_fixtures import SEEDS, SETUP

from experiments import report
from experiments.study import q1, q2, q3, q7, sgns_common
from experiments.study.sgns_common import SGNSStudyConfig, SGNSStudyError
from jaxemb import engine, stats


@contextlib.contextmanager
def _quiet(label):
    yield


def _run(tmp_path):
    return report.Run(tmp_path, {"test": True})


def _logged(run, tmp_path):
    run.finish("t")
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def _report(tmp_path):
    return (tmp_path / "report.md").read_text()


def _ev(ws353, simlex=0.3, add=0.2, mul=0.25):
    return {"ws353": ws353, "ws353_pairs": 40, "ws353_oov": 313, "simlex": simlex,
            "simlex_pairs": 30, "simlex_oov": 969, "3cosadd": add, "3cosadd_answered": 50,
            "3cosadd_oov": 19494, "3cosmul": mul, "3cosmul_answered": 50, "3cosmul_oov": 19494}


def _plain(x):
    """Only JSON values: dicts with str keys, lists (not tuples), str, int, float, bool, None."""
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    return x is None or isinstance(x, str | int | float | bool)


def _roundtrip(r):
    data = r.to_json()
    assert all(_plain(getattr(r, f.name)) for f in dataclasses.fields(r))
    assert json.loads(json.dumps(type(r).from_json(data).to_json())) == json.loads(
        json.dumps(data))
    return type(r).from_json(data)


# --- Q1 --------------------------------------------------------------------------------------

def _d(mean, low, high, n=3):
    """A stored paired difference (item_differences.difference) with its bootstrap interval."""
    return {"mean": mean, "low": low, "high": high, "n": n}


def _q1(dot_ws353=(0.30, 0.32, 0.31), rho=(0.80, 0.82, 0.84), in_out_ws353=(0.60, 0.62, 0.61),
        dot_diff=(-0.21, -0.30, -0.12), in_out_diff=(0.10, 0.04, 0.16)):
    """Benchmark words follow the item-bootstrap differences (dot_diff, in_out_diff: WS353's
    mean, low, high); SimLex's differences include 0, analogy's is above it."""
    counts = np.arange(200, 0, -1)
    hub = {"cosine": [{"share_top": 0.02, "k_occurrence_skew": 2.0, "max_k_occurrence": 9}] * 3,
           "dot": [{"share_top": 0.40, "k_occurrence_skew": 12.0, "max_k_occurrence": 60}] * 3}
    return q1.Results(
        setup=SETUP, seed=q1.seed_arithmetic(), rho=list(rho),
        norms=(0.5 + np.log(counts) / 5).tolist(), counts=counts.tolist(),
        neighbours=[["king", ["queen", "prince", "lord", "crown", "throne"],
                     ["the", "of", "and", "in", "a"]]],
        benchmarks={"cosine": [_ev(x) for x in (0.50, 0.53, 0.51)],
                    "dot": [_ev(x) for x in dot_ws353],
                    "in_out": [{"ws353": x, "simlex": 0.3} for x in in_out_ws353]},
        differences={"dot": {"ws353": _d(*dot_diff), "simlex": _d(0.0, -0.05, 0.05),
                             "3cosadd": _d(0.02, 0.01, 0.03)},
                     "in_out": {"ws353": _d(*in_out_diff), "simlex": _d(0.0, -0.05, 0.05)}},
        bootstrap_seconds={"items": 0.5, "bootstrap": 0.2},
        hubness=hub, frequent=2, n_queries=50)


def test_q1_results_roundtrip():
    r = _q1()
    assert _roundtrip(r) == r


def test_q1_answer_follows_the_numbers():
    text = q1.answer(_q1())
    assert "a·b = 9.08 > a·a = 9.04" in text and "ranks the identical vector first" in text
    assert "the norm rises with word frequency (Spearman ρ = 0.82" in text
    assert "take 40.0% of the top-10 slots vs 2.0% under cosine" in text
    assert "more concentrated on a few hubs (k-occurrence skew 12.0 vs 2.0, paired" in text
    # the item-bootstrap interval of dot − cosine excludes 0 below: lower; SimLex's includes 0
    assert re.search(r"WS353 ρ 0\.310 against 0\.\d+, lower than cosine's; "
                     r"SimLex ρ [\d.]+ against [\d.]+, indistinguishable from cosine's; and "
                     r"3CosAdd accuracy [\d.]+% against [\d.]+%, higher than cosine's", text)
    assert ("'indistinguishable': the 95% interval of the paired difference, a bootstrap over "
            "the benchmark's items and the seeds widened to the seeds' paired t-interval, "
            "includes 0") in text
    # the seeds alone would call dot lower (t-interval), but the items' interval includes 0
    assert stats.compare([0.30, 0.32, 0.31], [0.50, 0.53, 0.51]) == "lower"
    text = q1.answer(_q1(dot_diff=(-0.21, -0.45, 0.02), rho=(-0.5, -0.4, -0.45)))
    assert re.search(r"WS353 ρ 0\.310 against 0\.\d+, indistinguishable from", text)
    assert "falls with word frequency" in text
    assert re.search(r"WS353 ρ 0\.310 against 0\.\d+, higher than",
                     q1.answer(_q1(dot_diff=(0.1, 0.05, 0.15))))
    assert ("Scored by in·out, the score SGNS trained, the same model gives WS353 ρ 0.610, "
            "higher than cosine's and SimLex ρ 0.300, indistinguishable from cosine's") in text
    flipped = q1.answer(_q1(in_out_ws353=(0.40, 0.42, 0.41), in_out_diff=(-0.1, -0.16, -0.04)))
    assert "WS353 ρ 0.410, lower than cosine's" in flipped


def test_q1_hub_words_follow_the_paired_seeds():
    r = _q1()

    def skew(dot):
        hub = dict(r.hubness, dot=[h | {"k_occurrence_skew": x}
                                   for h, x in zip(r.hubness["dot"], dot, strict=True)])
        return q1.answer(dataclasses.replace(r, hubness=hub))

    assert "less concentrated on a few hubs (k-occurrence skew 1.0 vs 2.0" in skew([1.0] * 3)
    assert "neither measurably more nor less concentrated on a few hubs (k-occurrence skew " \
           "2.0 vs 2.0" in skew([1.0, 3.0, 2.0])


def test_q1_render_writes_its_tables_figure_and_answer(tmp_path):
    run = _run(tmp_path)
    q1.render(_q1(), run)
    logged = _logged(run, tmp_path)
    tables = {m["section"]: m for m in logged if m.get("kind") == "table"}
    assert list(tables) == ["q1_seed_arithmetic", "q1_norms", "q1_neighbours", "q1_benchmarks",
                            "q1_benchmark_differences", "q1_hubness"]
    assert tables["q1_benchmark_differences"]["rows"] == [
        ["dot (in·in) − cosine", "-0.210 [-0.300, -0.120]", "+0.000 [-0.050, +0.050]",
         "+2.00 [+1.00, +3.00]"],
        ["in·out − cosine", "+0.100 [+0.040, +0.160]", "+0.000 [-0.050, +0.050]",
         "— (undefined)"]]
    assert tables["q1_benchmarks"]["rows"][1][:2] == ["dot (in·in)", "0.310 ± 0.025"]
    assert tables["q1_benchmarks"]["rows"][2] == ["in·out", "0.610 ± 0.025", "0.300 ± 0.000",
                                                  "— (undefined)"]
    assert tables["q1_hubness"]["rows"][1][1] == "40.0 ± 0.0"
    assert tables["q1_neighbours"]["rows"] == [["king", "queen, prince, lord, crown, throne",
                                                "the, of, and, in, a"]]
    assert [m["seed"] for m in logged if m["section"] == "q1_benchmarks" and "seed" in m] \
        == SEEDS * 3
    assert (tmp_path / "q1_norm_vs_frequency.png").stat().st_size > 1000
    text = run.sections[0]
    assert text.startswith(q1.TITLE) and text.rstrip().endswith(q1.answer(_q1()))


# --- Q2 --------------------------------------------------------------------------------------

def _q2(planted=True, n_pairs=4):
    agg = {"io_pmi": [0.7, 0.72, 0.71], "ii_pmi": [0.3, 0.31, 0.29],
           "io_2nd": [0.2, 0.21, 0.2], "ii_2nd": [0.5, 0.52, 0.51],
           "io_2nd_r": [0.1, 0.12, 0.11], "ii_2nd_r": [0.6, 0.61, 0.62],
           "io_ws353": [0.4, 0.41, 0.42], "ii_ws353": [0.5, 0.5, 0.5],
           "io_simlex": [0.1, 0.1, 0.1], "ii_simlex": [0.3, 0.3, 0.3]}
    fits = [{"slope": 0.5, "intercept": -0.2, "pearson": 0.8, "mean_diff": -0.3}] * 3
    examples = [{"word": "king", "partner": "crowned", "count": 6.0, "pmi": 5.1, "io": 3.2,
                 "ii": 0.1, "rank_io": 2, "rank_ii": 80, "nearest": "prince"},
                {"word": "war", "partner": "world", "count": 9.0, "pmi": 3.0, "io": 1.0,
                 "ii": 0.5, "rank_io": 9, "rank_ii": 3, "nearest": "battle"}]
    pl = {"io": [0.6, 0.62, 0.61], "ii": [0.2, 0.25, 0.22], "empirical": 0.9, "n_pairs": 3,
          "n_tokens": 20000, "n_words": 50, "true0": [1.0, 2.0, 3.0], "io0": [0.5, 1.5, 2.0]}
    settings = {"pair_min_count": 5.0, "pair_top_words": 2000, "pmi_draws": 1,
                "example_min_count": 2.0, "planted_docs": 20}
    return q2.Results(setup=SETUP, settings=settings, n_pairs=n_pairs, n_random=100, top=200,
                      aggregate=agg, fits=fits, bench_pairs={"ws353": 40, "simlex": 30},
                      examples=examples, shifted_pmi=[-1.0, 0.0, 1.0, 2.0],
                      io0=[-0.5, 0.1, 0.4, 1.2], planted=pl if planted else None)


def test_q2_results_roundtrip():
    for r in (_q2(), _q2(planted=False)):
        assert _roundtrip(r) == r


def test_q2_answer_follows_the_numbers():
    text = q2.answer(_q2())
    assert "it follows PMI more closely than cos(in, in) does (Spearman 0.71 vs 0.30)" in text
    assert "cos(in, in) tracks shared contexts more than in·out does" in text
    assert ("for 1 of 2 query words a co-occurring partner (drawn at random, not chosen by PMI) "
            "ranks higher") in text
    assert "changes Spearman by -0.200 on SimLex (similarity only) and by -0.090 on WS353" in text
    assert "in·out does worse where only similarity counts" in text
    assert "slope 0.50 (below the theory's 1)" in text and "0.30 below PMI − log k" in text
    assert "On the planted corpus" in text and "in·out reaches Spearman 0.61" in text
    assert "planted" not in q2.answer(_q2(planted=False))
    # the opposite outcome turns the words: in·in above in·out on PMI, in·out on shared contexts
    r = _q2()
    agg = r.aggregate | {"io_pmi": r.aggregate["ii_pmi"], "ii_pmi": r.aggregate["io_pmi"],
                         "io_2nd_r": r.aggregate["ii_2nd_r"], "ii_2nd_r": r.aggregate["io_2nd_r"],
                         "io_simlex": [0.5] * 3, "io_ws353": [0.3] * 3}
    flipped = q2.answer(dataclasses.replace(r, aggregate=agg,
                                            fits=[r.fits[0] | {"slope": 1.05}] * 3))
    assert "it does not follow PMI more closely than cos(in, in) does" in flipped
    assert "cos(in, in) does not track shared contexts more than in·out does" in flipped
    assert "in·out does no worse where only similarity counts" in flipped
    assert "slope 1.05 (close to the theory's 1)" in flipped


def test_q2_render_writes_its_tables_figure_and_answer(tmp_path):
    run = _run(tmp_path)
    q2.render(_q2(), run)
    logged = _logged(run, tmp_path)
    tables = {m["section"]: m for m in logged if m.get("kind") == "table"}
    assert list(tables) == ["q2_aggregate", "q2_benchmarks", "q2_levy_goldberg", "q2_pairs",
                            "q2_planted"]
    assert tables["q2_pairs"]["rows"][0] == ["king → crowned", "6.0", "5.10", "3.20", "0.10", 2,
                                             80, "prince"]
    assert tables["q2_levy_goldberg"]["rows"][0][1] == "0.500 ± 0.000"
    seeds = [m for m in logged if m["section"] == "q2_seed"]
    assert [m["seed"] for m in seeds] == SEEDS and seeds[1]["io_pmi"] == 0.72
    assert seeds[1]["slope"] == 0.5
    assert (tmp_path / "q2_inout_vs_pmi.png").stat().st_size > 1000
    assert run.sections[0].rstrip().endswith(q2.answer(_q2()))


def test_q2_with_too_few_pairs_says_so(tmp_path):
    run = _run(tmp_path)
    r = q2.Results(SETUP, _q2().settings, 2, 0, 0, {}, [], {}, [], [], [], None)
    assert _roundtrip(r) == r
    q2.render(r, run)
    assert not [m for m in _logged(run, tmp_path) if m.get("kind") == "table"]
    assert "Fewer than 3 word pairs occur 5.0 times" in run.sections[0]


# Q3: tests/test_q3.py


# --- Q7 (its answers, tables and measured pieces: tests/test_q7.py) ---------------------------

def test_mean_pairwise_cosine_equals_the_mean_over_pairs(rng):
    X = rng.normal(size=(7, 3)) + 0.5
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = U @ U.T
    want = C[~np.eye(7, dtype=bool)].mean()
    assert q7.mean_pairwise_cosine(X) == pytest.approx(want, abs=1e-12)


def test_undefined_figures_are_never_called_different():
    assert stats.compare([0.1, float("nan"), 0.2], [0.0, 0.0, 0.0]) == "indistinguishable"
    assert stats.compare([0.5, 0.52, 0.51], [0.3, 0.33, 0.31]) == "higher"


# --- the config ------------------------------------------------------------------------------

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
    with pytest.raises(ValueError):  # before any work: the first measure validates
        q1.measure(config, {}, _quiet)


def test_defaults_validate_and_quick_is_small():
    import tyro

    SGNSStudyConfig().validate()
    q = SGNSStudyConfig(quick=True).resolved()
    q.validate()
    assert q.max_docs == 20 and q.epochs < SGNSStudyConfig().epochs and len(q.seeds) >= 3
    assert len(SGNSStudyConfig().seeds) >= 5 and q.seeds == SGNSStudyConfig().seeds[:3]
    assert q.resolved() == q  # resolving twice changes nothing
    assert SGNSStudyConfig(corpus="text8").resolved().corpus == "text8"
    assert tyro.cli(SGNSStudyConfig, args=["--corpus", "text8"]).corpus == "text8"
    config = tyro.cli(SGNSStudyConfig, args=["--quick", "--variants", "dot", "bilinear"])
    assert config.quick and config.variants == ("dot", "bilinear")


# --- one small measure of all four -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_measured(tmp_path_factory):
    """The dot variant × 3 seeds, 1 epoch, dim 8, on 40 documents drawn from 60 words (the
    other variants train in the quick run of the main job)."""
    pytest.importorskip("gensim")  # the benchmark files ship with gensim
    rng = np.random.default_rng(0)
    words = ["king", "queen", "man", "woman", "good", "water", "music", "war"] + [
        f"x{a}{b}" for a in "abcd" for b in "abcdefghijklm"]
    p = 1 / np.arange(1, len(words) + 1)
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, size=80, p=p / p.sum()))
                              for _ in range(40)))
    config = SGNSStudyConfig(corpus=str(path), min_count=1, dim=8, epochs=1, sample=0.0,
                             seeds=(0, 1, 2), variants=("dot",), planted_docs=0, hub_queries=20,
                             pair_min_count=2.0, pair_top_words=30, pmi_draws=1,
                             sweep_dims=(2, 4), composition_pairs=("king:woman:queen",))
    shared, labels = {}, []

    @contextlib.contextmanager
    def progress(label):
        labels.append(label)
        yield

    results = {q.__name__: q.measure(config, shared, progress) for q in (q1, q2, q3, q7)}
    return config, shared, labels, results


def test_the_variants_train_once_for_all_four_questions(tiny_measured):
    config, shared, labels, _ = tiny_measured
    assert sum(label.startswith("SGNS ") for label in labels) == 1  # trained once
    study = shared["sgns"]
    assert study.config == config.resolved()
    for v in study.variants.values():  # seeds vmapped: one leading seed axis
        assert v.result.params["in"].shape == (3, len(study.vocab), 8)
        assert v.epoch_loss.shape == (1, 3)
    assert not np.allclose(study.dot.vectors(0), study.dot.vectors(1))


def test_variants_trained_in_threads_equal_variants_trained_one_by_one(tiny_measured,
                                                                      monkeypatch):
    config = dataclasses.replace(tiny_measured[0], variants=("dot", "bilinear"))
    inputs = sgns_common.load_inputs(config)
    workers = []
    run_jobs = engine.run_jobs
    monkeypatch.setattr(engine, "run_jobs",
                        lambda jobs, n, *a: workers.append(n) or run_jobs(jobs, n, *a))
    together, alone = (sgns_common.train_variants(dataclasses.replace(config, workers=n),
                                                  lambda label: contextlib.nullcontext(),
                                                  inputs) for n in (2, 1))
    assert workers == [2, 1]
    for name in config.variants:
        a, b = (jax.tree.leaves(s.variants[name].result.params) for s in (together, alone))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        np.testing.assert_array_equal(together.variants[name].epoch_loss,
                                      alone.variants[name].epoch_loss)


def test_measured_results_are_json_and_render(tiny_measured, tmp_path):
    _, _, _, results = tiny_measured
    run = _run(tmp_path)
    for name, r in results.items():
        back = _roundtrip(r)
        mod = {"experiments.study.q1": q1, "experiments.study.q2": q2,
               "experiments.study.q3": q3, "experiments.study.q7": q7}[name]
        mod.render(back, run)
        assert mod.answer(back) in run.sections[-1]
    dot = results["experiments.study.q3"].variants["dot"]
    assert dot["floor"] == [0.0] * 3 and dot["status"] == "ok"
    assert dot["data_floor"] == [results["experiments.study.q3"].unbounded_floor] * 3
    # the tables as initialised: in uniform ±0.5/d (E‖v‖² = d·a²/3), out = 0; both moved
    assert dot["norm_out_start"] == [0.0] * 3 and min(dot["norm_out"]) > 0
    a = 0.5 / 8
    assert np.mean(dot["norm_in_start"]) == pytest.approx(a * np.sqrt(8 / 3), rel=0.05)
    assert results["experiments.study.q3"].configs["dot"]["init"] == "word2vec"
    assert results["experiments.study.q2"].n_pairs >= 3
    r7 = results["experiments.study.q7"]  # Q7's extras ran: ablation, sweep, composition
    assert set(r7.evaluation_random) == {"in", "out", "in+out"}
    assert list(r7.sweep["ppmi"]) == ["2", "4", "8"] and list(r7.sweep["sgns"]) == ["8"]
    assert r7.composition["pairs"] == [["king", "woman", "queen"]]
    # the per-item data reproduce the tables: each paired difference's mean is the difference
    # of the two scorings' mean figures (a metric undefined on this corpus is None)
    r1, r3 = results["experiments.study.q1"], results["experiments.study.q3"]

    def check(d, want):
        assert (d is None and not np.isfinite(want)) or d["mean"] == pytest.approx(want)

    for score, diffs in r1.differences.items():
        for m, d in diffs.items():
            check(d, np.mean([e[m] for e in r1.benchmarks[score]])
                  - np.mean([e[m] for e in r1.benchmarks["cosine"]]))
    for a_, by in r3.differences.items():
        for b_, diffs in by.items():
            for m, d in diffs.items():
                check(d, np.mean(r3.variants[a_][m]) - np.mean(r3.variants[b_][m]))
    run.close()
    text = "".join(run.sections)
    for title in (q1.TITLE, q2.TITLE, q3.TITLE, q7.TITLE):
        assert text.count(title) == 1


def test_in_out_pair_scores_average_both_directions(rng):
    from experiments.study.sgns_common import in_out_pair_scores

    vin, vout = rng.standard_normal((2, 6, 4))
    ia, ib = np.array([0, 2, 5]), np.array([1, 2, 3])
    want = [0.5 * (np.dot(vin[a], vout[b]) + np.dot(vin[b], vout[a]))
            for a, b in zip(ia, ib, strict=True)]
    np.testing.assert_allclose(in_out_pair_scores(vin, vout, ia, ib), want, rtol=1e-12)
    # in·out is not symmetric; the average is
    np.testing.assert_allclose(in_out_pair_scores(vin, vout, ib, ia), want, rtol=1e-12)
