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
    search._search_block.clear_cache()
    monkeypatch.setattr(ts, "PREFILTER_MISS", 1e12)
    monkeypatch.setattr(search, "TWO_STAGE_MIN_KEYS", 0)
    yield
    search._search_block.clear_cache()


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
    """The 2 best of each strided block (groups j, j + B, ...), ties to the lower group, and the
    best of the rest, against a stable numpy sort; values drawn from few levels, so many tie."""
    B = 3
    top = rng.integers(0, 4, (5, ts.BLOCK_GROUPS * B)).astype(np.float32)
    v, pos, rest = (np.asarray(a) for a in ts._top2_per_block(jnp.asarray(top)))
    for i in range(top.shape[0]):
        for j in range(B):
            groups = j + B * np.arange(ts.BLOCK_GROUPS)
            order = groups[np.argsort(-top[i, groups], kind="stable")]
            assert [pos[i, j], pos[i, B + j]] == order[:2].tolist()
            assert [v[i, j], v[i, B + j]] == top[i, order[:2]].tolist()
        dropped = np.setdiff1d(np.arange(top.shape[1]), pos[i])
        assert rest[i] == top[i, dropped].max()


def test_prefiltered_search_returns_numpys_top_k_with_ties(prefilter_at_any_size, rng):
    """With the prefilter on (2 of every 8 groups per chunk reach the merges), the proved
    queries' top-k is numpy's float64 ranking; through search.top_k (unproved queries rescanned)
    every query's is, and exact duplicate rows come back lower index first."""
    K = rng.standard_normal((4100, 13)).astype(np.float32)  # 32 chunks of 128 and a rest of 4
    K[1000] *= 10
    K[3000:3004] = K[1000]  # a tie of 5 equal rows
    Q = rng.standard_normal((64, 13)).astype(np.float32)
    Q[7] = K[1000]  # its top-5 are the 5 equal rows
    k, chunk = 6, 128
    assert ts._use_prefilter(chunk // 16, -(-4100 // 16), 2 * k + 32)
    ref = Q.astype(np.float64) @ K.T.astype(np.float64)
    run = jax.jit(functools.partial(ts.two_stage_top_k, k=k, chunk=chunk))
    s, idx, ok = (np.asarray(a) for a in run(jnp.asarray(Q), jnp.asarray(K)))
    assert ok.sum() >= 56
    rows = np.flatnonzero(ok)
    _assert_topk_matches(s[rows], idx[rows], ref[rows], k)
    s, idx = (np.asarray(a) for a in search.top_k(Q, K, k, "dot", chunk_size=chunk))
    _assert_topk_matches(s, idx, ref, k)
    assert idx[7, :5].tolist() == [1000, 3000, 3001, 3002, 3003]


def test_a_group_the_prefilter_drops_is_caught(prefilter_at_any_size):
    """The 3 best keys sit in 3 groups of one block: the prefilter keeps 2, the third must make
    the query unproved (without that check the 4th best key would be returned third), and
    search.top_k must still return the exact top-3 (rescanned)."""
    m, d = 4096, 8
    K = np.zeros((m, d), np.float32)
    K[:, 1] = np.linspace(-1, 1, m)  # small scores for the query e0 + 0.01 e1
    # Groups 0, 1, 2 are in chunk 0's only block (8 groups of 16 per 128-key chunk); group 8
    # is in chunk 1.
    for row, score in ((0, 10.0), (16, 9.9), (32, 9.8), (128, 9.7)):
        K[row, 0] = score
    Q = np.zeros((4, d), np.float32)
    Q[:, 0], Q[:, 1] = 1.0, 0.01
    run = jax.jit(functools.partial(ts.two_stage_top_k, k=3, chunk=128))
    _, _, ok = run(jnp.asarray(Q), jnp.asarray(K))
    assert not np.asarray(ok).any()
    _, idx = search.top_k(Q, K, 3, "dot", chunk_size=128)
    assert np.asarray(idx).tolist() == [[0, 16, 32]] * 4


def _assert_topk_matches(scores, idx, ref, k):
    """Equal to numpy's ranking, allowing ties: the scores at each rank agree and each returned
    index really has the score reported (as tests/test_search.py)."""
    expected = -np.sort(-ref, axis=1)[:, :k]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref, idx, axis=1), scores, rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == k for row in idx.tolist())
