"""The SGNS study's library pieces against independent references: the pairs SGNS trains on, its
PMI and loss floors (``jaxemb.ppmi``), and the vector evaluator (``jaxemb.evaluate``)."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import optimize, special, stats

from jaxemb import benchmarks, evaluate, ppmi


def _tiny_ids():
    return [np.array([0, 1, 2, 0, 3, 1, 0, 4, 2, 2, 1], np.int32),
            np.array([3, 0, 1, 4], np.int32), np.array([2], np.int32)]


def _reference_pairs(ids, V, window, weight=lambda o, w: (w - o + 1) / w):
    """Pair counts by a loop over every two positions of a document: offset o counts
    ``weight(o, window)`` (SGNS's dynamic window by default)."""
    n = np.zeros((V, V))
    for doc in ids:
        for i in range(len(doc)):
            for j in range(len(doc)):
                o = abs(i - j)
                if 1 <= o <= window:
                    n[doc[i], doc[j]] += weight(o, window)
    return n


def test_expected_pairs_and_sgns_pmi_equal_a_loop_on_a_tiny_corpus():
    ids, V, window = _tiny_ids(), 5, 3
    counts = np.bincount(np.concatenate(ids), minlength=V)
    pairs = ppmi.expected_pairs(ids, V, window, counts, sample=0.0)
    ref = _reference_pairs(ids, V, window)
    np.testing.assert_allclose(pairs.toarray(), ref, rtol=1e-12)
    pmi = ppmi.sgns_pmi(pairs, counts).tocsr()
    pn = counts ** 0.75 / np.sum(counts ** 0.75)
    for w in range(V):
        for c in range(V):
            if ref[w, c] > 0:
                want = np.log(ref[w, c] / (ref[w].sum() * pn[c]))
                assert pmi[w, c] == pytest.approx(want, rel=1e-10, abs=1e-12), (w, c)
    assert pmi.nnz == np.count_nonzero(ref)


@pytest.mark.parametrize("window", [1, 2, 3, 20])
def test_cooccurrence_is_plain_window_counts_in_any_chunking(window):
    ids, V = _tiny_ids(), 5
    ref = _reference_pairs(ids, V, window, weight=lambda o, w: 1.0)
    np.testing.assert_array_equal(ppmi.cooccurrence(ids, V, window).toarray(), ref)
    tokens = np.concatenate(ids).astype(np.int64)
    doc_ids = np.repeat(np.arange(len(ids)), [len(d) for d in ids])
    for chunk in (1, 2, 7):  # chunk boundaries inside documents change nothing
        got = ppmi.pairs_matrix(tokens, doc_ids, V, [1.0] * window, chunk=chunk)
        np.testing.assert_array_equal(got.toarray(), ref)
    assert ppmi.cooccurrence([], V, window).nnz == 0
    with pytest.raises(ValueError, match="window must be >= 1"):
        ppmi.cooccurrence(ids, V, 0)


def test_subsampled_pairs_keep_every_token_when_nothing_is_frequent():
    ids, V = _tiny_ids(), 5
    counts = np.full(V, 1_000_000)  # f = 0.2 each; a threshold of 1 keeps all
    a = ppmi.expected_pairs(ids, V, 2, counts, sample=1.0, draws=2)
    np.testing.assert_allclose(a.toarray(), _reference_pairs(ids, V, 2))


def test_subsampled_pairs_are_the_mean_over_draws_of_compacted_documents():
    ids, V = _tiny_ids(), 5
    counts = np.array([50, 10, 10, 10, 10])
    f = counts / counts.sum()
    keep_p = np.minimum(1.0, np.sqrt(1e-2 / f) + 1e-2 / f)  # gensim's (√(f/t) + 1)·t/f
    got = ppmi.expected_pairs(ids, V, 2, counts, sample=1e-2, draws=3, seed=4)
    rng = np.random.default_rng(4)
    tokens = np.concatenate(ids)
    doc = np.repeat(np.arange(len(ids)), [len(d) for d in ids])
    want = np.zeros((V, V))
    for _ in range(3):
        keep = rng.random(tokens.size) < keep_p[tokens]
        kept = [tokens[keep & (doc == d)] for d in range(len(ids))]
        want += _reference_pairs(kept, V, 2) / 3
    np.testing.assert_allclose(got.toarray(), want, rtol=1e-12)


def test_cosine_loss_floor_is_the_closed_form():
    k = 5
    # with |logit| <= 1 the best positive has σ(1), the best negative σ(-(-1)) = σ(1) too
    closed = -(1 + k) * np.log(special.expit(1.0))
    assert ppmi.cosine_loss_floor(1.0, k) == pytest.approx(closed, rel=1e-12)
    assert closed == pytest.approx(1.87957, abs=1e-5)


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

    P = sp.csr_matrix(pairs)
    for t in (0.5, 1.0, 3.0):
        assert ppmi.data_loss_floor(P, counts, k, t) == pytest.approx(best(t), rel=1e-6)
        assert ppmi.data_loss_floor(P, counts, k, t) >= ppmi.cosine_loss_floor(t, k)
    assert ppmi.data_loss_floor(P, counts, k) == pytest.approx(best(60.0), rel=1e-6)


def test_row_cosine_equals_dense_numpy(rng):
    M = rng.random((9, 6)) * (rng.random((9, 6)) < 0.5)
    M[3] = 0  # an empty row has cosine 0 with everything
    a, b = rng.integers(0, 9, size=(2, 20))
    U = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
    want = np.einsum("nd,nd->n", U[a], U[b])
    np.testing.assert_allclose(ppmi.row_cosine(sp.csr_matrix(M), a, b), want, atol=1e-12)


# --- the vector evaluator ------------------------------------------------------------------------

def _tiny_bench(words):
    qs = np.array([["a", "b", "c", "d"], ["b", "e", "f", "g"], ["A", "c", "g", "e"],
                   ["a", "zz", "c", "d"]])
    pairs = evaluate.WordPairs("p", np.array(["a", "b", "c", "d", "q"]),
                               np.array(["b", "c", "e", "g", "a"]),
                               np.array([1.0, 3.0, 2.0, 5.0, 4.0]))
    return qs, benchmarks.prepare_benchmarks(words, {
        "ws353": pairs, "simlex": pairs,
        "analogies": evaluate.AnalogySet("t", (evaluate.AnalogySection("s", qs),))})


def _numpy_3cosadd(X, words, qs):
    correct = 0
    for q in qs:
        a, b, c, d = (words.index(w.lower()) for w in q)
        s = X.astype(np.float64) @ (X[b] - X[a] + X[c])
        s[[a, b, c]] = -np.inf
        correct += int(np.argmax(s) == d)
    return correct / len(qs)


def test_dot_analogies_and_pairs_keep_the_norms(rng):
    words = ("a", "b", "c", "d", "e", "f", "g")
    X = rng.normal(size=(7, 4)).astype(np.float32) * rng.uniform(0.2, 5, size=(7, 1))
    X = X.astype(np.float32)
    qs, bench = _tiny_bench(words)
    got = benchmarks.evaluate_vectors(X, bench, "dot", ("3cosadd",))
    assert (got["3cosadd"], got["3cosadd_answered"], got["3cosadd_oov"]) == (
        _numpy_3cosadd(X, words, qs[:3]), 3, 1)
    dots = [X[0] @ X[1], X[1] @ X[2], X[2] @ X[4], X[3] @ X[6]]
    assert (got["ws353_pairs"], got["ws353_oov"]) == (4, 1)
    assert got["ws353"] == pytest.approx(stats.spearmanr([1, 3, 2, 5], dots).statistic)
    with pytest.raises(evaluate.EvaluationError, match="3CosMul needs cosines"):
        benchmarks.evaluate_vectors(X, bench, "dot", ("3cosmul",))
    with pytest.raises(evaluate.EvaluationError, match="unknown score 'Cosine'"):
        benchmarks.evaluate_vectors(X, bench, "Cosine", (), pairs=True)


def test_cosine_evaluation_equals_numpy_on_unit_vectors(rng):
    words = ("a", "b", "c", "d", "e", "f", "g")
    X = (rng.normal(size=(7, 4)) * rng.uniform(0.2, 5, size=(7, 1))).astype(np.float32)
    qs, bench = _tiny_bench(words)
    got = benchmarks.evaluate_vectors(X, bench, "cosine", ("3cosadd",))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert got["3cosadd"] == _numpy_3cosadd(U, words, qs[:3])
    cos = [U[0] @ U[1], U[1] @ U[2], U[2] @ U[4], U[3] @ U[6]]
    assert got["ws353"] == pytest.approx(stats.spearmanr([1, 3, 2, 5], cos).statistic)
    assert got["simlex"] == got["ws353"]


def test_undefined_figures_are_nan_not_errors(rng):
    """A quick run's tiny vocabulary: ρ over fewer than 3 pairs, or with nothing answerable."""
    words = ("a", "b", "c", "x", "y")
    X = rng.normal(size=(5, 4)).astype(np.float32)
    _, bench = _tiny_bench(words)  # pairs a-b, b-c only; no question has all four words
    got = benchmarks.evaluate_vectors(X, bench, "cosine", ("3cosadd", "3cosmul"))
    assert np.isnan(got["ws353"]) and (got["ws353_pairs"], got["ws353_oov"]) == (2, 3)
    for m in ("3cosadd", "3cosmul"):
        assert np.isnan(got[m]) and (got[f"{m}_answered"], got[f"{m}_oov"]) == (0, 4)
    # three pairs whose model scores are all equal (orthonormal vectors): ρ undefined, NaN
    words = ("a", "b", "c", "d", "e", "f", "g")
    _, bench = _tiny_bench(words)
    E = np.eye(7, dtype=np.float32)
    assert np.isnan(benchmarks.evaluate_vectors(E, bench, "dot", ())["ws353"])


def test_benchmark_rows_are_looked_up_case_insensitively_earliest_first():
    words = ("b", "A", "a", "c", "e", "g", "d")
    _, bench = _tiny_bench(words)
    ia, ib, gold, n = bench.pairs["ws353"]
    # 'a' is found as 'A' (row 1, the earliest uppercase 'A'); pair q–a is out of vocabulary
    assert (ia.tolist(), ib.tolist(), gold.tolist(), n) == ([1, 0, 3, 6], [0, 3, 4, 5],
                                                            [1.0, 3.0, 2.0, 5.0], 5)
    assert (bench.answerable, bench.n_questions) == (2, 4)  # b-e-f-g lacks f; a-zz-c-d zz
