"""Top-k search against a numpy reference for every score; nearest words; analogies; errors."""

import functools

import jax
import numpy as np
import pytest

from jaxemb import scoring as S
from jaxemb import search
from jaxemb.wordvectors import VocabularyError, WordVectors

D = 9


@pytest.fixture(autouse=True)
def two_stage_at_any_size(monkeypatch):
    """These tests' databases are small, where search() would take the fp32 scan: make it take
    the two-stage path (bfloat16 first pass, bound, rescoring, fallback), which they pin."""
    monkeypatch.setattr(search, "TWO_STAGE_MIN_KEYS", 0)


def test_small_databases_take_the_scan_and_large_ones_two_stage(monkeypatch, rng):
    """The method follows TWO_STAGE_MIN_KEYS (None: by size; True/False: forced), with the same
    top-k either way."""
    methods = []
    block = search._search_block
    monkeypatch.setattr(search, "_search_block",
                        lambda *a, **kw: methods.append(kw["method"]) or block(*a, **kw))
    Q, K = (rng.standard_normal((n, D)).astype(np.float32) for n in (12, 40))
    got = {}
    for threshold, two_stage in ((40, None), (41, None), (41, True), (0, False)):
        monkeypatch.setattr(search, "TWO_STAGE_MIN_KEYS", threshold)
        methods.clear()
        got[threshold, two_stage] = np.asarray(search.top_k(Q, K, 4, two_stage=two_stage)[1])
        # the first block's method (two-stage may rescore unproven queries by the scan)
        assert methods[0] == ("two_stage" if (two_stage is None and threshold <= 40)
                              or two_stage else "scan"), (threshold, two_stage, methods)
    for v in got.values():
        np.testing.assert_array_equal(v, got[40, None])


def _reference_scores(name, Q, K, params):
    """[n, m] scores of every query-key pair in float64 numpy, from each score's definition
    (not from jaxemb.scoring, whose feature maps are what search runs on)."""
    Q, K = Q.astype(np.float64), K.astype(np.float64)
    p = [np.asarray(x, np.float64) for x in params]
    if name == "dot":
        return Q @ K.T
    if name == "scaled_dot":
        return Q @ K.T / np.sqrt(Q.shape[1])
    if name == "cosine":  # t cos(q, k)
        t = p[0] if p else 1.0
        return t * (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (
            K / np.linalg.norm(K, axis=1, keepdims=True)).T
    if name == "bilinear":  # q^T W k
        return Q @ p[0] @ K.T
    if name == "diag_bilinear":  # sum_j q_j w_j k_j
        return (Q * p[0]) @ K.T
    if name == "lowrank_bilinear":  # (A^T q) . (B^T k)
        return (Q @ p[0]) @ (K @ p[1]).T
    if name == "neg_sq_euclidean":
        return -((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1)
    raise AssertionError(f"no reference for score {name!r}")


def _assert_topk_matches(scores, idx, ref, k):
    """Equal to numpy's ranking, allowing ties: the scores at each rank agree and each returned
    index really has the score reported."""
    scores, idx = np.asarray(scores), np.asarray(idx)
    expected = -np.sort(-ref, axis=1)[:, :k]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, idx, axis=1), scores, rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == k for row in idx.tolist())


def _params(rng, name):
    if name == "bilinear":
        return (rng.standard_normal((D, D)).astype(np.float32),)
    if name == "lowrank_bilinear":
        return (rng.standard_normal((D, 3)).astype(np.float32),
                rng.standard_normal((D, 3)).astype(np.float32))
    if name == "diag_bilinear":
        return (rng.standard_normal(D).astype(np.float32),)
    if name == "cosine":
        return (np.float32(3.0),)
    return ()


# The scan's chunking (k > chunk, k = rows, chunk > rows) does not depend on the score, which
# enters through its feature maps only: every score at one chunking, every chunking for dot and
# cosine by default (each case is a search program of its own, ~1 s to compile); the rest of the
# cross product under -m slow.
CHUNKINGS = [(103, 5, 16), (103, 20, 8), (64, 64, 7), (50, 3, 1000)]
TOP_K_CASES = [pytest.param(name, *shape, marks=() if name in ("dot", "cosine") or
                            shape == CHUNKINGS[0] else pytest.mark.slow)
               for name in S.SCORES for shape in CHUNKINGS]


@pytest.mark.parametrize("name,m,k,chunk", TOP_K_CASES)
def test_top_k_matches_numpy(rng, name, m, k, chunk):
    params = _params(rng, name)
    Q = rng.standard_normal((11, D)).astype(np.float32)
    K = rng.standard_normal((m, D)).astype(np.float32)
    ref = _reference_scores(name, Q, K, params)
    scores, idx = search.top_k(Q, K, k, name, *params, chunk_size=chunk)
    assert idx.shape == (11, k)
    _assert_topk_matches(scores, idx, ref, k)


def test_top_k_breaks_ties_towards_lower_index(rng):
    K = np.repeat(rng.standard_normal((4, D)).astype(np.float32), 5, axis=0)  # rows 0-4 equal...
    Q = K[[0, 7]]
    _, idx = search.top_k(Q, K, 5, "dot", chunk_size=3)
    np.testing.assert_array_equal(np.asarray(idx), [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])


def test_single_query_and_query_blocks(rng):
    K = rng.standard_normal((77, D)).astype(np.float32)
    Q = rng.standard_normal((13, D)).astype(np.float32)
    idx = search.index(K, "cosine")
    s_all, i_all = idx.search(Q, 4, query_block=4)  # 13 is not a multiple of 4
    s_one, i_one = idx.search(Q[6], 4)
    np.testing.assert_array_equal(np.asarray(i_all[6]), np.asarray(i_one))
    _assert_topk_matches(s_all, i_all, _reference_scores("cosine", Q, K, ()), 4)


def _counting_dot():
    """A dot score whose query map counts its traces: it runs once per compilation of a search
    block (and never when a compiled one is reused)."""
    traces = []

    def phi_q(q):
        traces.append(q.shape)
        return q

    return S.Score("counted_dot", phi_q, lambda k: k, "q . k, traces counted"), traces


def test_query_counts_reuse_a_few_padded_compilations(rng):
    score, traces = _counting_dot()
    K = rng.standard_normal((200, D)).astype(np.float32)
    Q7 = rng.standard_normal((7, D)).astype(np.float32)
    idx = search.index(K, score)
    out = {n: idx.search(Q7[:n], 4) for n in (5, 3, 7, 6, 5)}
    # 5, 6, 7 share the 8-row block, 3 gets the 4-row one; a repeated size compiles nothing.
    assert len(traces) == 2
    # blocks of 4 with a padded power-of-two tail: 9 (4+4+2), 10 (4+4+2), 11 (4+4+4), 12, 13
    for n in range(9, 14):
        idx.search(rng.standard_normal((n, D)).astype(np.float32), 4, query_block=4)
    assert len(traces) == 3  # only the 2-row tail block is new
    # Values: padding rows are dropped and change nothing. Q=5 is numpy's ranking (float64
    # scores, stable argsort, so ties would go to the lower index) and, bit for bit, the first
    # rows of the Q=7 call (same block shape).
    ref = Q7[:5].astype(np.float64) @ K.T.astype(np.float64)
    s5, i5 = map(np.asarray, out[5])
    s7, i7 = map(np.asarray, out[7])
    np.testing.assert_array_equal(i5, np.argsort(-ref, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(s5, np.take_along_axis(ref, i5, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(s5, s7[:5])
    np.testing.assert_array_equal(i5, i7[:5])
    assert s5.dtype == np.float32 and i5.dtype == np.int32


@pytest.mark.parametrize("chunk", [None, 96])  # one chunk, and 6 merged (the last clamped)
def test_approx_recall_against_numpy(rng, chunk):
    K = rng.standard_normal((500, D)).astype(np.float32)
    Q = rng.standard_normal((16, D)).astype(np.float32)
    k, target = 10, 0.9
    s, i = search.top_k(Q, K, k, "cosine", np.float32(3.0), approx=True, recall_target=target,
                        chunk_size=chunk)
    ref = _reference_scores("cosine", Q, K, (3.0,))
    true_top = np.argsort(-ref, axis=1, kind="stable")[:, :k]  # random data: no ties
    s, i = np.asarray(s), np.asarray(i)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(i.tolist(), true_top.tolist(),
                                                               strict=True)])
    # approx_max_k's recall_target is per chunk: the merged top-k recalls at least as much.
    assert recall >= target, recall
    # Whatever it recalls is real: distinct keys, best first, each with its own true score.
    assert all(len(set(row)) == k for row in i.tolist())
    assert np.all(np.diff(s, axis=1) <= 0)
    np.testing.assert_allclose(np.take_along_axis(ref, i, axis=1), s, rtol=1e-5, atol=1e-5)
    if jax.default_backend() != "tpu":  # approx_max_k is an exact top-k off TPU
        np.testing.assert_array_equal(i, true_top)


def test_search_errors_name_the_problem(rng):
    K = rng.standard_normal((10, D)).astype(np.float32)
    Q = rng.standard_normal((2, D)).astype(np.float32)
    with pytest.raises(search.SearchError, match="k must be an integer in \\[1, 10\\]"):
        search.top_k(Q, K, 11)
    with pytest.raises(search.SearchError, match="queries have dim 4 but the database has dim 9"):
        search.top_k(Q[:, :4], K, 3)
    with pytest.raises(search.SearchError, match="query_block must be a power of two >= 2, "
                                                 "got 5"):
        search.index(K).search(Q, 3, query_block=5)
    with pytest.raises(search.SearchError, match="database is empty"):
        search.top_k(Q, K[:0], 1)
    with pytest.raises(S.ScoreError, match="unknown score"):
        search.top_k(Q, K, 3, "cosinus")
    bad = K.copy()
    bad[6, 2] = np.nan
    with pytest.raises(search.SearchError, match="NaN or inf in 1 row.*row 6"):
        search.top_k(Q, bad, 3)
    with pytest.raises(search.SearchError, match="queries contain NaN"):
        search.top_k(np.full((1, D), np.nan, np.float32), K, 3)


def _toy_vectors():
    # 2-d vectors with a planted analogy: king - man + woman = queen (exactly, before scaling)
    words = ("man", "woman", "king", "queen", "apple", "car")
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.2], [2.2, 1.0], [-1.0, -0.2], [-0.3, -1.0]],
                    np.float32)
    return WordVectors(words, vecs)


def test_most_similar_excludes_query_words_and_matches_numpy():
    wv = _toy_vectors()
    got = search.most_similar(wv, "king", topn=5)
    unit = wv.normalized()
    sims = unit @ unit[2]
    order = [i for i in np.argsort(-sims) if i != 2][:5]
    assert [w for w, _ in got] == [wv.words[i] for i in order]
    np.testing.assert_allclose([s for _, s in got], sims[order], rtol=1e-5)
    # dot ranks by length too: the long 'king' vector wins for 'queen' under dot, not cosine
    assert search.most_similar(wv, "queen", topn=1, score="dot")[0][0] == "king"


@pytest.mark.parametrize("method", search.ANALOGY_METHODS)
def test_analogy_solves_planted_example(method):
    wv = _toy_vectors()
    assert search.analogy(wv, "man", "king", "woman", method=method)[0][0] == "queen"


def test_analogy_scores_3cosmul_match_closed_form(rng):
    unit = rng.standard_normal((12, 5)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    abc = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    got = np.asarray(search.analogy_scores(unit, abc, method="3cosmul"))
    cos = unit @ unit.T
    for r, (a, b, c) in enumerate(abc):
        expected = ((cos[b] + 1) / 2) * ((cos[c] + 1) / 2) / ((cos[a] + 1) / 2 + 1e-6)
        expected[[a, b, c]] = -np.inf
        np.testing.assert_allclose(got[r], expected, rtol=1e-5)


def test_word_errors_name_the_word():
    wv = _toy_vectors()
    with pytest.raises(VocabularyError, match="word 'kinq' is not in the vocabulary.*'king'"):
        search.most_similar(wv, "kinq")
    with pytest.raises(VocabularyError, match="'queeen'"):
        search.analogy(wv, "man", "king", "queeen")
    with pytest.raises(search.SearchError, match="unknown analogy method"):
        search.analogy(wv, "man", "king", "woman", method="3cosmult")


def test_analogy_restricts_candidates_not_query_words():
    # found by comparison with gensim: a query word past restrict_vocab must still be read
    words = ("a", "b", "x", "y", "c")
    vecs = np.array([[1, 0], [0, 1], [-1, 0.1], [0.6, 0.8], [-1, -0.2]], np.float32)
    wv = WordVectors(words, vecs)
    assert search.analogy(wv, "a", "b", "c", restrict_vocab=4)[0][0] == "x"
    with pytest.raises(search.SearchError, match="topn must be in \\[1, 2\\]"):
        search.analogy(wv, "a", "b", "c", topn=3)


# --- issue 16: numbers right or refused; indices never arbitrary ------------------------------

def test_huge_and_tiny_vectors_rank_as_at_unit_scale(rng):
    K = rng.standard_normal((40, D)).astype(np.float32)
    Q = K[:3] + 0.1 * rng.standard_normal((3, D)).astype(np.float32)
    base = search.top_k(Q, K, 5, "cosine")
    for scale in (1e20, 1e-30):
        s, idx = search.top_k(Q * np.float32(scale), K * np.float32(scale), 5, "cosine")
        np.testing.assert_array_equal(idx, base[1])  # were 0, 1, 2, ... at 1e20
        np.testing.assert_allclose(s, base[0], rtol=1e-5)
    wv = WordVectors(tuple(f"w{i}" for i in range(40)), K * np.float32(1e20))
    unit = WordVectors(wv.words, K)
    for got, want in [(search.most_similar(wv, "w1", topn=4),
                       search.most_similar(unit, "w1", topn=4)),
                      (search.analogy(wv, "w1", "w2", "w3", topn=3),
                       search.analogy(unit, "w1", "w2", "w3", topn=3))]:
        assert [w for w, _ in got] == [w for w, _ in want]  # were arbitrary at 1e20
        np.testing.assert_allclose([x for _, x in got], [x for _, x in want], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, "bfloat16"])
def test_other_dtypes_search_as_float32(rng, dtype):
    K = rng.integers(-1000, 1000, (60, D))
    Q = K[:4] + rng.integers(-5, 5, (4, D))
    dt = jnp_dtype(dtype)
    Q, K = Q.astype(dt), K.astype(dt)  # (bfloat16 rounds beyond 256)
    expected = search.top_k(Q.astype(np.float32), K.astype(np.float32), 5, "neg_sq_euclidean")
    got = search.top_k(Q, K, 5, "neg_sq_euclidean")
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    # int64 beyond 2**31 rounds to float32 rather than wrapping
    if dtype == np.int64:
        big = np.array([[2**40, 0], [-(2**40), 0], [1, 1]], np.int64)
        assert np.asarray(search.top_k(big[:1], big, 1, "dot")[1]).tolist() == [[0]]


def jnp_dtype(name):
    import ml_dtypes
    return ml_dtypes.bfloat16 if name == "bfloat16" else name


def test_a_query_with_all_scores_equal_is_refused_by_its_row(rng):
    K = rng.standard_normal((30, D)).astype(np.float32)
    Q = rng.standard_normal((5, D)).astype(np.float32)
    Q[3] = 0
    for kw in ({}, {"chunk_size": 7}, {"approx": True}):
        with pytest.raises(search.QueryError, match=r"query 3 has the same score under 'cosine' "
                                                    r"for every key") as e:
            search.top_k(Q, K, 4, **kw)
        assert e.value.query == 3
    with pytest.raises(search.QueryError, match="the query has the same score under 'dot'"):
        search.top_k(Q[3], K, 4, "dot")
    # orthogonal to every key: equal scores too
    with pytest.raises(search.QueryError, match="query 0 has the same score"):
        search.top_k(np.eye(D, dtype=np.float32)[:1], np.eye(D, dtype=np.float32)[1:], 2, "dot")
    # but neg_sq_euclidean tells keys apart from the zero vector, and one key is no choice
    search.top_k(Q, K, 4, "neg_sq_euclidean")
    search.top_k(Q, K[:1], 1, "dot")


def test_overflowing_scores_are_refused_by_query(rng):
    K = (rng.standard_normal((50, D)) * 1e20).astype(np.float32)
    Q = K[:3].copy()
    Q[0] /= np.float32(1e20)
    with pytest.raises(search.QueryError, match=r"query 1 has scores under 'dot' beyond "
                                                r"float32's range .* \(2 queries are, this is "
                                                r"the first\)"):
        search.top_k(Q, K, 3, "dot")  # returned inf scores with arbitrary indices before
    search.top_k(Q[:1], K, 3, "dot")  # 1e20 x 1 is fine
    with pytest.raises(search.QueryError, match="query 0 has scores under 'neg_sq_euclidean'"):
        search.top_k(Q[1:], K, 3, "neg_sq_euclidean")


def test_word_searches_name_a_hopeless_query():
    wv = _toy_vectors()
    with pytest.raises(search.QueryError, match=r"most_similar\(positive=\['king'\], "
                                                r"negative=\['king'\]\): their query has the "
                                                r"same score"):
        search.most_similar(wv, "king", ["king"])
    zero = WordVectors(wv.words, np.where(np.arange(6)[:, None] < 3, 0, wv.vectors))
    with pytest.raises(search.QueryError, match="analogy man:woman :: king:. has the same score"):
        search.analogy(zero, "man", "woman", "king")


# --- issue 15: the two-stage method prunes, and proves what it keeps ------------------------

def test_two_stage_prunes_and_returns_the_float64_top_k(rng):
    """Pass 1 keeps 32 of 250 groups per query (16 keys each, in 128-key chunks and a 32-key
    rest); where it proves that enough (``ok``, nearly every query here) the rescored top-k is
    numpy's float64 ranking, ties allowed. A zero query and a query every key scores alike are
    never proved (their top-k would be arbitrary): they go to the fp32 scan."""
    import jax.numpy as jnp

    from jaxemb import search_two_stage

    K = rng.standard_normal((4000, 24)).astype(np.float32)
    Q = rng.standard_normal((64, 24)).astype(np.float32)
    Q[5] = 0
    Q[9] = np.eye(24, dtype=np.float32)[0]
    K[:, 0] = 0  # query 9 is orthogonal to every key: all its scores are 0
    ref = Q.astype(np.float64) @ K.T.astype(np.float64)
    run = jax.jit(functools.partial(search_two_stage.two_stage_top_k, k=5, chunk=128))
    s, idx, ok, _ = run(jnp.asarray(Q), jnp.asarray(K))
    ok = np.asarray(ok)
    assert not ok[5] and not ok[9]
    assert ok.sum() >= 60  # pruning proved for nearly all: the bound is far tighter than the gaps
    rows = np.flatnonzero(ok)
    _assert_topk_matches(np.asarray(s)[rows], np.asarray(idx)[rows], ref[rows], 5)
