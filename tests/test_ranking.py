"""Ranking metrics: values against a numpy reference, perfect and random scorers, pessimistic
ties, sampled negatives, blocked evaluation, and clear errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb import ranking
from jaxemb.ranking import RankingError


def ref_ranks(scores, positives, exclude):
    """Plain loops: 1 + the candidates (not the positive, not excluded) scoring >= it."""
    out = []
    for s, p, ex in zip(scores, positives, exclude, strict=True):
        out.append(1 + sum(1 for j in range(len(s)) if j != p and not ex[j] and s[j] >= s[p]))
    return np.array(out)


def ref_metrics(r, k):
    hr = np.mean([x <= k for x in r])
    ndcg = np.mean([1 / math.log2(x + 1) if x <= k else 0.0 for x in r])
    return hr, ndcg


def _problem(rng, n=7, C=11):
    # integer scores force ties; the positive is never excluded
    scores = rng.integers(0, 4, (n, C)).astype(np.float32)
    positives = rng.integers(0, C, n)
    exclude = rng.random((n, C)) < 0.3
    exclude[np.arange(n), positives] = rng.random(n) < 0.5  # sometimes marked: must be ignored
    return scores, positives, exclude


@pytest.mark.parametrize("k", [1, 3, 10])
def test_metrics_equal_numpy_reference(rng, k):
    scores, positives, exclude = _problem(rng)
    r = ranking.ranks(jnp.asarray(scores), jnp.asarray(positives), jnp.asarray(exclude))
    want = ref_ranks(scores, positives, exclude)
    np.testing.assert_array_equal(np.asarray(r), want)
    hr, nd = ref_metrics(want, k)
    np.testing.assert_allclose(float(ranking.hit_rate(r, k)), hr, rtol=1e-6)
    np.testing.assert_allclose(float(ranking.ndcg(r, k)), nd, rtol=1e-6)
    r_all = ranking.ranks(jnp.asarray(scores), jnp.asarray(positives))
    np.testing.assert_array_equal(np.asarray(r_all),
                                  ref_ranks(scores, positives, np.zeros_like(exclude)))


def test_ties_and_nan_count_against_the_held_out_item():
    # 5 items, positive 2; items 0 and 4 tie with it, item 3 is excluded
    s = jnp.array([1.0, 0.0, 1.0, 5.0, 1.0])
    ex = jnp.array([False, False, False, True, False])
    assert int(ranking.rank_of(s, 2, ex)) == 3  # after both equal candidates
    assert int(ranking.rank_of(jnp.zeros(5), 2)) == 5  # a constant scorer ranks it last
    assert int(ranking.rank_of(s.at[1].set(jnp.nan), 2, ex)) == 4  # NaN ranks ahead
    assert int(ranking.rank_of(s.at[2].set(jnp.nan), 2, ex)) == 4  # NaN positive: last


def test_perfect_scorer_gets_one(rng):
    n, C = 9, 13
    positives = rng.integers(0, C, n)
    scores = rng.normal(size=(n, C)).astype(np.float32)
    scores[np.arange(n), positives] = 10.0
    exclude = rng.random((n, C)) < 0.2
    seen = exclude.copy()
    seen[np.arange(n), positives] = True  # the held-out item is never a sampled negative
    out = ranking.evaluate(lambda u: jnp.asarray(scores)[u], np.arange(n), positives, exclude,
                           k=1, negatives=ranking.sample_unseen(jax.random.key(0), seen, 5),
                           block=4)
    for key in ("hr", "ndcg", "hr_sampled", "ndcg_sampled"):
        assert float(out[key]) == 1.0


def test_random_scorer_matches_expected_values():
    n, C, k, n_ex = 20_000, 50, 10, 10
    key = jax.random.key(3)
    k1, k2 = jax.random.split(key)
    scores = jax.random.uniform(k1, (n, C))
    positives = jnp.zeros(n, jnp.int32)
    exclude = jnp.zeros((n, C), bool).at[:, C - n_ex:].set(True)  # 40 candidates each
    r = ranking.ranks(scores, positives, exclude)
    hr, nd = ranking.expected_random(k, C - n_ex)
    assert hr == k / (C - n_ex)
    assert abs(float(ranking.hit_rate(r, k)) - hr) < 4 * math.sqrt(hr * (1 - hr) / n)
    assert abs(float(ranking.ndcg(r, k)) - nd) < 4 * 0.5 / math.sqrt(n)
    # sampled variant: k/(m+1) with m sampled negatives
    rs = ranking.sampled_ranks(jax.random.uniform(k2, (n,)), scores[:, :19])
    assert abs(float(ranking.hit_rate(rs, k)) - k / 20) < 4 * math.sqrt(0.25 / n)


def test_expected_random_formula():
    hr, nd = ranking.expected_random(3, 7)
    assert hr == pytest.approx(3 / 7)
    assert nd == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(4)) / 7)
    assert ranking.expected_random(7, 7) == pytest.approx((1.0, sum(
        1 / math.log2(r + 1) for r in range(1, 8)) / 7))


def test_sampled_ranks_equal_reference(rng):
    pos = rng.integers(0, 3, 6).astype(np.float32)
    neg = rng.integers(0, 3, (6, 5)).astype(np.float32)
    want = 1 + (neg >= pos[:, None]).sum(axis=1)
    np.testing.assert_array_equal(np.asarray(ranking.sampled_ranks(pos, neg)), want)


def test_sample_unseen_is_unseen_distinct_and_uniform():
    n, C, m = 400, 12, 4
    seen = np.zeros((n, C), bool)
    seen[:, :5] = True  # items 0..4 seen by everyone
    seen[np.arange(n), 5 + np.arange(n) % 7] = True  # one more per user
    s = np.asarray(ranking.sample_unseen(jax.random.key(1), seen, m))
    assert s.shape == (n, m) and s.dtype == np.int32
    assert not seen[np.arange(n)[:, None], s].any()
    assert all(len(set(row)) == m for row in s)
    # each user has 6 unseen items, m = 4 of them drawn: each unseen item with probability 4/6
    counts = np.bincount(s.ravel(), minlength=C)[5:]
    expected = n * m / 7  # items 5..11 are each unseen by 6/7 of the users: (6/7)·(4/6)·n
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_evaluate_blocks_and_leading_axes_equal_direct(rng):
    n, C, S = 10, 8, 3
    scores = rng.normal(size=(S, n, C)).astype(np.float32)
    positives = rng.integers(0, C, n)
    exclude = rng.random((n, C)) < 0.25
    negatives = np.stack([rng.choice(C, 4, replace=False) for _ in range(n)])
    out = ranking.evaluate(lambda u: jnp.asarray(scores)[:, u], np.arange(n), positives, exclude,
                           k=3, negatives=negatives, block=4)  # blocks 4, 4, 2 (+2 padding)
    for s in range(S):
        r = ref_ranks(scores[s], positives, exclude)
        hr, nd = ref_metrics(r, 3)
        np.testing.assert_allclose(float(out["hr"][s]), hr, rtol=1e-6)
        np.testing.assert_allclose(float(out["ndcg"][s]), nd, rtol=1e-6)
        pos = scores[s, np.arange(n), positives]
        neg = np.take_along_axis(scores[s], negatives, axis=1)
        hs, ns = ref_metrics(1 + (neg >= pos[:, None]).sum(1), 3)
        np.testing.assert_allclose(float(out["hr_sampled"][s]), hs, rtol=1e-6)
        np.testing.assert_allclose(float(out["ndcg_sampled"][s]), ns, rtol=1e-6)


def test_bad_inputs_raise_clear_errors():
    scores, positives = jnp.zeros((3, 5)), jnp.zeros(3, jnp.int32)
    exclude = np.zeros((3, 5), bool)
    f = lambda u: scores[u]  # noqa: E731
    with pytest.raises(RankingError, match=r"k must be an integer in \[1, 5\].*got 6"):
        ranking.evaluate(f, np.arange(3), np.zeros(3, int), exclude, k=6)
    with pytest.raises(RankingError, match="got 0"):
        ranking.hit_rate(jnp.ones(3), 0)
    with pytest.raises(RankingError, match="got 2.5"):
        ranking.ndcg(jnp.ones(3), 2.5)
    with pytest.raises(RankingError, match=r"positives must be item ids in \[0, 5\), got 7"):
        ranking.evaluate(f, np.arange(3), np.array([0, 7, 1]), exclude, k=2)
    with pytest.raises(RankingError, match=r"item ids in \[0, 5\), got -1"):
        ranking.ranks(scores, jnp.array([0, -1, 1]))
    with pytest.raises(RankingError, match="non-empty"):
        ranking.evaluate(f, np.arange(0), np.arange(0), np.zeros((0, 5), bool), k=2)
    with pytest.raises(RankingError, match=r"scores \[n, C\] and positives \[n\]"):
        ranking.ranks(jnp.zeros(5), positives)
    with pytest.raises(RankingError, match="exclude must have the shape"):
        ranking.ranks(scores, positives, jnp.zeros((3, 4), bool))
    with pytest.raises(RankingError, match=r"k \(sampled\) must be an integer in \[1, 3\]"):
        ranking.evaluate(f, np.arange(3), np.zeros(3, int), exclude, k=4,
                         negatives=np.zeros((3, 2), int))
    with pytest.raises(RankingError, match="some user has only 1 items"):
        ranking.sample_unseen(jax.random.key(0), np.eye(2, 2, dtype=bool), 2)
    with pytest.raises(RankingError, match="m \\(sampled negatives\\) must be an integer"):
        ranking.sample_unseen(jax.random.key(0), np.zeros((2, 3), bool), 4)
    with pytest.raises(RankingError, match=r"score_all returned shape \(3, 4\)"):
        ranking.evaluate(lambda u: jnp.zeros((3, 4)), np.arange(3), np.zeros(3, int), exclude,
                         k=2)
