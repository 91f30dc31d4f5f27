"""The two-stage search's parts against numpy: the keys' error-bound stats (computed once per
index), the per-block prefilter of pass 1, and the proof that catches what it drops."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb import search
from jaxemb import search_two_stage as ts


@pytest.fixture
def prefilter_at_any_size(monkeypatch):
    """Pass 1's per-block prefilter is used only for large databases (many blocks per band):
    make it apply to these small ones. Compiled searches are dropped before and after, since
    the switch is read when a search is traced."""
    compiled = search._search_block
    compiled.clear_cache()
    monkeypatch.setattr(ts, "PREFILTER_MISS", 1e12)
    monkeypatch.setattr(search, "TWO_STAGE_MIN_KEYS", 0)
    yield
    compiled.clear_cache()


def _numpy_stats(K):
    x = K.astype(np.float32)
    x_low = x.astype(jnp.bfloat16).astype(np.float32)
    e = x_low - x
    return ((x * x).sum(axis=1).max(), (e * e).sum(axis=1).max(), np.abs(x_low).max(axis=0),
            np.abs(e).max(axis=0))


def test_key_stats_are_numpys_whatever_the_chunking(rng):
    """key_stats in chunks (with a remainder) equals numpy over the whole array, and an Index
    computes them once: the same arrays on every search."""
    K = (rng.standard_normal((203, 11)) * rng.uniform(0.01, 100, (203, 1))).astype(np.float32)
    want = _numpy_stats(K)
    for chunk in (7, 64, 203, 1000):
        got = ts.key_stats(jnp.asarray(K), chunk=chunk)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6)
    ix = search.index(K, "dot")
    assert ix.pass1_stats is ix.pass1_stats
    for g, w in zip(ix.pass1_stats, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6)


def test_top2_per_block_is_numpys_stable_ranking(rng):
    """The 2 best of each block (x[:, i, j]: group j of each chunk merged at once), ties to the
    lower row, and the best of the rest, against a stable numpy sort; values drawn from few
    levels, so many tie."""
    R, b, B = 5, 4, 3
    x = rng.integers(0, 4, (R, b, B)).astype(np.float32)
    v, r, rest = (np.asarray(a) for a in ts._top2_per_block(jnp.asarray(x)))
    for i in range(b):
        for j in range(B):
            order = np.argsort(-x[:, i, j], kind="stable")
            assert [r[i, j], r[i, B + j]] == order[:2].tolist()
            assert [v[i, j], v[i, B + j]] == x[order[:2], i, j].tolist()
        kept = np.zeros((R, B), bool)
        kept[r[i, :B], np.arange(B)] = kept[r[i, B:], np.arange(B)] = True
        assert rest[i] == x[:, i][~kept].max()


def test_prefiltered_search_returns_numpys_top_k_with_ties(prefilter_at_any_size, rng):
    """With the prefilter on (2 of every 8 groups reach the merges), the proved
    queries' top-k is numpy's float64 ranking; through search.top_k (unproved queries rescanned)
    every query's is, and exact duplicate rows come back lower index first."""
    K = rng.standard_normal((4100, 13)).astype(np.float32)  # 32 chunks of 128 and a rest of 4
    K[1000] *= 10
    K[3000:3004] = K[1000]  # a tie of 5 equal rows
    Q = rng.standard_normal((64, 13)).astype(np.float32)
    Q[7] = K[1000]  # its top-5 are the 5 equal rows
    k, chunk = 6, 128
    assert ts._use_prefilter(4100 // chunk, -(-4100 // 16), 2 * k + 32)
    ref = Q.astype(np.float64) @ K.T.astype(np.float64)
    run = jax.jit(functools.partial(ts.two_stage_top_k, k=k, chunk=chunk))
    s, idx, ok, _ = (np.asarray(a) for a in run(jnp.asarray(Q), jnp.asarray(K)))
    assert ok.sum() >= 56
    rows = np.flatnonzero(ok)
    _assert_topk_matches(s[rows], idx[rows], ref[rows], k)
    s, idx = (np.asarray(a) for a in search.top_k(Q, K, k, "dot", chunk_size=chunk))
    _assert_topk_matches(s, idx, ref, k)
    assert idx[7, :5].tolist() == [1000, 3000, 3001, 3002, 3003]


def test_a_group_the_prefilter_drops_is_caught(prefilter_at_any_size, monkeypatch):
    """The 3 best keys sit in 3 groups of one block (the first group of chunks 0, 1 and 2,
    which are merged together): the prefilter keeps 2, the third must make
    the query unproved (without that check the 4th best key would be returned third) and marked
    for a retry without the prefilter, which search.top_k runs (not the fp32 scan): the exact
    top-3."""
    m, d = 4096, 8
    K = np.zeros((m, d), np.float32)
    K[:, 1] = np.linspace(-1, 1, m)  # small scores for the query e0 + 0.01 e1
    # Rows 0, 128 and 256 start chunks 0, 1 and 2 (128 keys, 8 groups of 16 each); row 16 is
    # in the second group of chunk 0, another block.
    for row, score in ((0, 10.0), (128, 9.9), (256, 9.8), (16, 9.7)):
        K[row, 0] = score
    Q = np.zeros((16, d), np.float32)  # more than search.SCAN_ROWS, which take the fp32 scan
    Q[:, 0], Q[:, 1] = 1.0, 0.01
    run = jax.jit(functools.partial(ts.two_stage_top_k, k=3, chunk=128))
    _, _, ok, retry = run(jnp.asarray(Q), jnp.asarray(K))
    assert not np.asarray(ok).any() and np.asarray(retry).all()
    methods = []
    block = search._search_block
    monkeypatch.setattr(search, "_search_block",
                        lambda *a, **kw: methods.append(kw["method"]) or block(*a, **kw))
    _, idx = search.top_k(Q, K, 3, "dot", chunk_size=128)
    assert np.asarray(idx).tolist() == [[0, 128, 256]] * 16
    assert methods == ["two_stage", "two_stage_full"]


def _assert_topk_matches(scores, idx, ref, k):
    """Equal to numpy's ranking, allowing ties: the scores at each rank agree and each returned
    index really has the score reported (as tests/test_search.py)."""
    expected = -np.sort(-ref, axis=1)[:, :k]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, idx, axis=1), scores, rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == k for row in idx.tolist())
