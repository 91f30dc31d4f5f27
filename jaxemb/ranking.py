"""Ranking metrics with one held-out positive per user: HR@k and NDCG@k.

Protocol (He et al. 2017, "Neural Collaborative Filtering"; Krichene & Rendle 2020, "On Sampled
Metrics for Item Recommendation"): each user has one held-out item, ranked among candidates.

* Full catalogue: every item except the user's known positives (``exclude``, e.g. training
  items) competes with the held-out item. Krichene & Rendle show sampled metrics can reorder
  models, so the full catalogue is the primary protocol here.
* Sampled: the held-out item against ``m`` items the user never interacted with, drawn uniformly
  without replacement (NCF: m = 100), for comparison with published NCF numbers.

Rank is 1-based. Ties are pessimistic: a candidate whose score equals the held-out item's ranks
*ahead* of it, so a constant scorer gets the worst rank, never the best. A NaN score counts as
ahead too (``~(s_j < s_pos)``), so a diverged model cannot look good.

With C candidates (held-out item included) and a scorer that orders them uniformly at random,
E[HR@k] = k/C and E[NDCG@k] = (1/C)·Σ_{r=1..k} 1/log2(r+1) (:func:`expected_random`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class RankingError(ValueError):
    """Inputs to a ranking metric that do not fit (shapes, k, ids out of range)."""


# --- one user, then vmap ---------------------------------------------------------------------

def rank_of(scores: Array, positive: Array, exclude: Array | None = None) -> Array:
    """1-based rank of item ``positive`` among ``scores`` [C], ties and NaN pessimistic.

    ``exclude`` [C] bool marks items that are not candidates (the user's training items); it
    never removes the positive itself.
    """
    s_pos = scores[positive]
    ahead = ~(scores < s_pos)  # >= , and NaN on either side counts as ahead
    others = jnp.arange(scores.shape[0]) != positive
    if exclude is not None:
        others = others & ~exclude
    return 1 + jnp.sum(ahead & others, dtype=jnp.int32)


def ranks(scores: Array, positives: Array, exclude: Array | None = None) -> Array:
    """Ranks [n] of ``positives`` [n] among ``scores`` [n, C] (rows: users); ``exclude``
    [n, C] bool or None. :func:`rank_of` over rows."""
    _check_scores(scores, positives, exclude)
    if exclude is None:
        return jax.vmap(rank_of)(scores, positives)
    return jax.vmap(rank_of)(scores, positives, exclude)


def sampled_ranks(pos_scores: Array, neg_scores: Array) -> Array:
    """Ranks [n] of the held-out item (score ``pos_scores`` [n]) among itself and its sampled
    negatives (``neg_scores`` [n, m]); ties and NaN pessimistic."""
    pos_scores, neg_scores = jnp.asarray(pos_scores), jnp.asarray(neg_scores)
    if pos_scores.ndim != 1 or neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise RankingError(f"sampled_ranks expects pos_scores [n] and neg_scores [n, m], got "
                           f"shapes {pos_scores.shape} and {neg_scores.shape}")
    scores = jnp.concatenate([pos_scores[:, None], neg_scores], axis=1)
    return jax.vmap(rank_of)(scores, jnp.zeros(scores.shape[0], jnp.int32))


def hit_rate(r: Array, k: int) -> Array:
    """HR@k: the share of users whose held-out item ranks in the top ``k``; ranks ``r`` [..., n]
    → [...]."""
    _check_k(k, math.inf)
    return jnp.mean(jnp.asarray(r) <= k, axis=-1)


def ndcg(r: Array, k: int) -> Array:
    """NDCG@k with one relevant item: mean of 1/log2(rank + 1) if rank <= k else 0 (the ideal
    DCG is 1); ranks ``r`` [..., n] → [...]."""
    _check_k(k, math.inf)
    r = jnp.asarray(r)
    return jnp.mean(jnp.where(r <= k, 1.0 / jnp.log2(r + 1.0), 0.0), axis=-1)


def expected_random(k: int, n_candidates: int) -> tuple[float, float]:
    """(E[HR@k], E[NDCG@k]) of a uniformly random order of ``n_candidates`` candidates."""
    _check_k(k, n_candidates)
    return k / n_candidates, sum(1 / math.log2(r + 1) for r in range(1, k + 1)) / n_candidates


# --- sampled negatives ---------------------------------------------------------------------

def sample_unseen(key: Array, seen: Array, m: int) -> Array:
    """[n, m] int32 items drawn uniformly without replacement from each row's unseen items.

    ``seen`` [n, C] bool (a user's known positives, held-out item included). Gumbel/uniform
    top-m: the m largest of i.i.d. uniforms over the unseen items are a uniform m-subset.
    """
    seen = jnp.asarray(seen, bool)
    if seen.ndim != 2:
        raise RankingError(f"seen must be a [n_users, n_items] bool matrix, got {seen.shape}")
    _check_k(m, seen.shape[1], "m (sampled negatives)")
    fewest = int(seen.shape[1] - jnp.max(jnp.sum(seen, axis=1)))
    if m > fewest:
        raise RankingError(f"cannot sample m={m} unseen items: some user has only {fewest} items "
                           f"they have not interacted with")
    u = jax.random.uniform(key, seen.shape)
    return jax.lax.top_k(jnp.where(seen, -1.0, u), m)[1].astype(jnp.int32)


# --- evaluation over a user set, in blocks -------------------------------------------------

def evaluate(score_all: Callable[[Array], Array], users, positives, exclude, k: int = 10, *,
             negatives=None, block: int = 512) -> dict[str, Array]:
    """HR@k and NDCG@k of the held-out ``positives`` [n] of ``users`` [n].

    ``score_all``, ``exclude``, ``negatives``, ``block``: as in :func:`block_ranks`. Returns
    ``hr``, ``ndcg`` (and, with ``negatives``, ``hr_sampled``, ``ndcg_sampled``), each [...].
    """
    r, rs = block_ranks(score_all, users, positives, exclude, negatives=negatives, block=block,
                        k=k)
    out = {"hr": hit_rate(r, k), "ndcg": ndcg(r, k)}
    if negatives is not None:
        out |= {"hr_sampled": hit_rate(rs, k), "ndcg_sampled": ndcg(rs, k)}
    return out


def block_ranks(score_all: Callable[[Array], Array], users, positives, exclude, *,
                negatives=None, block: int = 512, k: int = 1) -> tuple[Array, Array | None]:
    """1-based ranks (:func:`rank_of`) [..., n] of the held-out ``positives`` [n] of ``users``
    [n] among the full catalogue, and with ``negatives`` among them (else None).

    ``score_all(users [b]) -> scores [..., b, C]`` (leading axes, e.g. seeds, are kept);
    ``exclude`` [n, C] bool: non-candidates for the full-catalogue ranking (the positive is never
    excluded). ``negatives`` [n, m] (from :func:`sample_unseen`). Users are scored in blocks of
    ``block`` (the last one padded, so one shape). ``k`` is checked against the candidates.
    """
    users = np.asarray(users)
    positives = np.asarray(positives)
    exclude = jnp.asarray(exclude, bool)
    n = users.shape[0]
    if users.ndim != 1 or positives.shape != users.shape or n == 0:
        raise RankingError(f"users and positives must be non-empty [n] arrays of one length, got "
                           f"shapes {users.shape} and {positives.shape}")
    if exclude.ndim != 2 or exclude.shape[0] != n:
        raise RankingError(f"exclude must be [n_users={n}, n_items], got {exclude.shape}")
    C = exclude.shape[1]
    _check_k(k, C)
    _check_ids("positives", positives, C)
    if negatives is not None:
        negatives = jnp.asarray(negatives, jnp.int32)
        if negatives.ndim != 2 or negatives.shape[0] != n:
            raise RankingError(f"negatives must be [n_users={n}, m], got {negatives.shape}")
        _check_k(k, negatives.shape[1] + 1, "k (sampled)")
    b = min(block, n)
    pad = -n % b
    idx = np.concatenate([np.arange(n), np.zeros(pad, np.int64)])
    full, samp = [], []
    for a in range(0, n + pad, b):
        rows = idx[a:a + b]
        r, rs = _block_ranks(score_all, jnp.asarray(users[rows]), jnp.asarray(positives[rows]),
                             exclude[rows], None if negatives is None else negatives[rows])
        full.append(r)
        samp.append(rs)
    r = jnp.concatenate(full, axis=-1)[..., :n]
    if negatives is None:
        return r, None
    return r, jnp.concatenate(samp, axis=-1)[..., :n]


def _block_ranks(score_all, users, positives, exclude, negatives):
    s = score_all(users)  # [..., b, C]
    if s.shape[-2:] != exclude.shape:
        raise RankingError(f"score_all returned shape {s.shape}; expected [..., {exclude.shape[0]}"
                           f", {exclude.shape[1]}] (users in the block, items)")
    return _ranks_of_block(s, positives, exclude, negatives)


@jax.jit
def _ranks_of_block(s, positives, exclude, negatives):
    # jitted once per shape and shared by every scorer (eager, each model paid ~1 s of kernels)
    lead = s.shape[:-2]
    flat = s.reshape(-1, *exclude.shape)
    r = jax.vmap(lambda x: jax.vmap(rank_of)(x, positives, exclude))(flat).reshape(*lead, -1)
    if negatives is None:
        return r, None
    pos = jnp.take_along_axis(flat, positives[None, :, None], axis=2)[..., 0]
    neg = jnp.take_along_axis(flat, negatives[None], axis=2)
    rs = jax.vmap(sampled_ranks)(pos, neg).reshape(*lead, -1)
    return r, rs


# --- checks (before any tracing) -------------------------------------------------------------

def _check_k(k, n_candidates: float, label: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_candidates:
        allowed = ">= 1" if n_candidates == math.inf else \
            f"in [1, {n_candidates}] (the number of candidates)"
        raise RankingError(f"{label} must be an integer {allowed}, got {k!r}")


def _check_ids(label: str, ids: np.ndarray, n: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids < 0) | (ids >= n)][0]
        raise RankingError(f"{label} must be item ids in [0, {n}), got {int(bad)}")


def _check_scores(scores, positives, exclude) -> None:
    s, p = jnp.shape(scores), jnp.shape(positives)
    if len(s) != 2 or p != s[:1]:
        raise RankingError(f"ranks expects scores [n, C] and positives [n], got shapes {s} and {p}")
    if exclude is not None and jnp.shape(exclude) != s:
        raise RankingError(f"exclude must have the shape of scores {s}, got {jnp.shape(exclude)}")
    if not isinstance(positives, jax.core.Tracer):
        _check_ids("positives", np.asarray(positives), s[1])
