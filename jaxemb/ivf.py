"""Approximate top-k search under any score: an inverted-file (IVF) index in JAX.

The score's feature maps make every score a dot product (:mod:`jaxemb.scoring`), so one index
over the mapped keys ``phi_k(x)`` [m, f], probed with ``phi_q(q)``, serves cosine, dot (maximum
inner product search) and every other score of the table. One more map makes every dot product
a nearest-neighbour problem: ``[phi_k(x), sqrt(M^2 - |phi_k(x)|^2)] / M`` puts every key on the
unit sphere, where its cosine with ``[phi_q(q), 0]`` orders keys as the score does
(:data:`jaxemb.scoring.mips`; Bachrach et al. 2014). The quantizer can cluster those lifted keys
(``quantizer="mips"``) or the keys' directions (the default; :func:`build` says why).

* Coarse quantizer: spherical k-means (Dhillon & Modha 2001) on the keys' directions (or, with
  ``quantizer="mips"``, on the lifted keys; see :func:`build` for why not by default), ``nlist``
  centroids, from an explicit PRNG key (initial centroids: distinct random training rows; an
  empty cluster keeps its centroid). Trained on at most ``256 * nlist`` rows, as FAISS does.
* Inverted lists: the mapped keys sorted by list, with ``offsets`` [nlist + 1] (Jégou et al.
  2011, "Product quantization for nearest neighbor search", section 5: IVF without compression,
  FAISS's ``IndexIVFFlat``).
* Search: each query probes the ``nprobe`` lists whose centroids have the largest dot with
  ``phi_q(q)`` (for lifted centroids, with their first f coordinates: the query's lifted
  coordinate is 0), and every key in those lists is rescored exactly (fp32, precision HIGHEST).

Where the speed comes from: a batch of queries is grouped by list. The (query, probed list)
pairs are sorted by list on the host, and each work item multiplies up to ``C`` queries that
probe the same list by that list, W keys at a time (a [C, f] x [f, W] matmul, W about half the
mean list), keeping the running top k. A list is read once per ``C`` queries that probe it
instead of once per query, so a batch turns a per-query, memory-bound scan into matmuls. Shapes
are fixed (the window W, the item count bound, ``C`` a power of two), so a new batch compiles
nothing new.

Results: (scores [n, k], indices [n, k]) best first; where the probed lists hold fewer than k
keys, the tail is score ``-inf``, index ``-1``. With ``nprobe == nlist`` every key is scored and
the result is the exact top k.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.scoring import Score, get_score, promote
from jaxemb.search_two_stage import dot_t

Array = jax.Array

TRAIN_ROWS_PER_LIST = 256  # FAISS's max_points_per_centroid: k-means sees at most 256 * nlist rows
ASSIGN_BLOCK = 8192  # rows per block when assigning rows to centroids ([8192, nlist] scores)
MAX_QUERIES_PER_ITEM = 32  # C's cap: a [32, f] x [f, W] matmul per work item


class IVFError(ValueError):
    """Inputs to an IVF index that cannot work (sizes, nlist, nprobe, k, NaN)."""


@dataclasses.dataclass(frozen=True, eq=False)
class IVF:
    """An inverted-file index: ``keys`` [m + W, f] = phi_k(database) sorted by list (W zero rows
    of padding at the end, so a window never reads past the array), ``ids`` [m] (host) the
    database row of each sorted key, ``offsets`` [nlist + 1] (host) where each list starts,
    ``centroids`` [nlist, f] the probing directions."""

    centroids: Array
    keys: Array
    ids: np.ndarray
    offsets: np.ndarray
    score: Score
    params: tuple
    options: dict
    dim: int
    window: int  # W: keys scored per step of a list scan (:func:`_window`)

    @property
    def nlist(self) -> int:
        return self.centroids.shape[0]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def list_sizes(self) -> np.ndarray:
        """[nlist] rows per inverted list."""
        return np.diff(self.offsets)


def _floats(name: str, x, rank: int) -> Array:
    X = jnp.asarray(promote(x, name, IVFError))
    if X.ndim != rank:
        want = "[m, d]" if rank == 2 else "[d]"
        raise IVFError(f"{name} must have shape {want}, got {np.shape(x)}")
    bad = ~jnp.isfinite(X).all(axis=-1) if rank == 2 else ~jnp.isfinite(X).all()
    if bool(jnp.any(bad)):
        first = int(np.flatnonzero(np.atleast_1d(np.asarray(bad)))[0])
        raise IVFError(f"{name} contain NaN or inf (first at row {first})")
    return X


def _positive_int(name: str, v, low: int, high: int | None = None) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low or (
            high is not None and v > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise IVFError(f"{name} must be an integer in {span}, got {v!r}")
    return int(v)


QUANTIZERS = ("direction", "mips")


def build(key: Array, database, nlist: int, score: str | Score = "cosine", *params,
          iters: int = 10, train_rows: int | None = None, quantizer: str = "direction",
          **options) -> IVF:
    """An IVF index over ``database`` [m, d] under ``score`` with ``nlist`` lists.

    ``key``: the PRNG key of k-means (training sample and initial centroids). ``params`` and
    ``options`` go to the score (as in :func:`jaxemb.search.index`). ``iters`` k-means rounds on
    ``train_rows`` rows (default ``min(m, 256 * nlist)``). ``quantizer``: what k-means clusters,
    ``"direction"`` (the mapped keys scaled to unit length) or ``"mips"`` (the mapped keys lifted
    by the MIPS map, :func:`_lift`). The two agree where the mapped keys have one norm (cosine);
    where norms spread, one global M puts most lifted keys near the pole and k-means groups them
    by norm rather than direction (Yan et al. 2018, "Norm-ranging LSH for maximum inner product
    search", section 3), which ``experiments.bench_ivf`` measures: hence the default.
    """
    score = get_score(score)
    D = _floats("database", database, 2)
    m = D.shape[0]
    if m == 0:
        raise IVFError("the database is empty (0 rows)")
    nlist = _positive_int("nlist", nlist, 1, m)
    iters = _positive_int("iters", iters, 1)
    t = min(m, TRAIN_ROWS_PER_LIST * nlist) if train_rows is None else train_rows
    t = _positive_int("train_rows", t, nlist, m)
    if quantizer not in QUANTIZERS:
        raise IVFError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    K = _map_keys(D, tuple(params), score=score, options=tuple(sorted(options.items())))
    del D
    U = _lift(K) if quantizer == "mips" else _unit(K)
    k_sample, k_init = jax.random.split(key)
    train = U[jax.random.choice(k_sample, m, (t,), replace=False)] if t < m else U
    C = _kmeans(k_init, train, nlist=nlist, iters=iters)
    assign = np.asarray(_assign(U, C))
    del U, train
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=nlist)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    window = _window(sizes)
    keys = jnp.concatenate([K[jnp.asarray(order)], jnp.zeros((window, K.shape[1]), K.dtype)])
    return IVF(C[:, :K.shape[1]], keys, order.astype(np.int32), offsets, score,
               tuple(params), dict(options), int(np.shape(database)[1]), window)


def _window(sizes: np.ndarray) -> int:
    """Keys scored per step of a list scan: about half the mean list, a multiple of 64 (a list
    longer than the window takes several steps, so unequal lists waste under one window each)."""
    mean = sizes.sum() / max(1, int((sizes > 0).sum()))
    return int(min(sizes.max(), max(64, 64 * round(mean / 128))))


@functools.partial(jax.jit, static_argnames=("score", "options"))
def _map_keys(D, params, *, score: Score, options):
    return score.map_keys(D, *params, **dict(options))


@jax.jit
def _lift(K: Array) -> Array:
    """K [m, f] -> [m, f + 1] unit rows: the MIPS map with M = max |K|, divided by M."""
    sq = jnp.sum(K * K, axis=1)
    M2 = jnp.maximum(jnp.max(sq), jnp.finfo(K.dtype).tiny)
    extra = jnp.sqrt(jnp.maximum(M2 - sq, 0.0))
    return jnp.concatenate([K, extra[:, None]], axis=1) / jnp.sqrt(M2)


@jax.jit
def _unit(K: Array) -> Array:
    """K [m, f] with each row scaled to unit length (a zero row stays zero)."""
    norm = jnp.linalg.norm(K, axis=1, keepdims=True)
    return K / jnp.where(norm > 0, norm, 1.0)


@functools.partial(jax.jit, static_argnames=("block",))
def _assign(U: Array, C: Array, block: int = ASSIGN_BLOCK) -> Array:
    """[m] index of each row's best centroid (largest dot), ``block`` rows at a time."""
    m = U.shape[0]
    pad = -m % block
    blocks = jnp.pad(U, ((0, pad), (0, 0))).reshape(-1, block, U.shape[1])
    best = jax.lax.map(lambda X: jnp.argmax(X @ C.T, axis=1).astype(jnp.int32), blocks)
    return best.reshape(-1)[:m]


@functools.partial(jax.jit, static_argnames=("nlist", "iters"))
def _kmeans(key: Array, X: Array, *, nlist: int, iters: int) -> Array:
    """Spherical k-means (Dhillon & Modha 2001) of unit rows X [t, g]: centroids [nlist, g]."""
    init = X[jax.random.choice(key, X.shape[0], (nlist,), replace=False)]

    def step(C, _):
        a = _assign(X, C)
        S = jax.ops.segment_sum(X, a, num_segments=nlist)
        norm = jnp.linalg.norm(S, axis=1, keepdims=True)
        # An empty (or degenerate) cluster keeps its centroid rather than becoming NaN.
        return jnp.where(norm > 0, S / jnp.where(norm > 0, norm, 1.0), C), None

    C, _ = jax.lax.scan(step, init, None, length=iters)
    return C


# --- search ----------------------------------------------------------------------------------

def search(index: IVF, queries, k: int, nprobe: int, *, query_block: int = 1024):
    """Approximate top-``k`` for ``queries`` [n, d] (or [d]): probe ``nprobe`` of the index's
    lists per query and score their keys exactly. (scores [n, k], indices [n, k]) best first."""
    Q = _floats("queries", queries, np.ndim(queries))
    single = Q.ndim == 1
    Q = Q[None] if single else Q
    if Q.ndim != 2 or Q.shape[0] == 0 or Q.shape[1] != index.dim:
        raise IVFError(f"queries must have shape [n, {index.dim}] or [{index.dim}] (the "
                       f"database's dim), got {np.shape(queries)}")
    k = _positive_int("k", k, 1, len(index))
    nprobe = _positive_int("nprobe", nprobe, 1, index.nlist)
    query_block = _positive_int("query_block", query_block, 2)
    n = Q.shape[0]
    scores = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int32)
    for i in range(0, n, query_block):
        rows = np.arange(i, min(i + query_block, n))
        b = min(query_block, max(2, 1 << (rows.size - 1).bit_length()))  # a few shapes only
        block = Q[np.concatenate([rows, np.full(b - rows.size, rows[0])])]
        s, ix = _search_block(index, block, k, nprobe)
        scores[rows], ids[rows] = s[:rows.size], ix[:rows.size]
    if single:
        scores, ids = scores[0], ids[0]
    return jnp.asarray(scores), jnp.asarray(ids)


def _search_block(index: IVF, Q: Array, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """One padded block of queries Q [b, d]: probe on the device, plan the work on the host,
    scan the probed lists on the device."""
    Qf, probe = _probe(Q, index.centroids, index.params, nprobe=nprobe, score=index.score,
                       options=tuple(sorted(index.options.items())))
    plan = _plan(np.asarray(probe), index.nlist)
    pair_query, unsort, item_list, item_start, c, n_items = plan
    s, pos = _scan_lists(Qf, index.keys, jnp.asarray(index.offsets), pair_query, unsort,
                         item_list, item_start, n_items, k=k, c=c, window=index.window)
    pos = np.asarray(pos)
    found = pos >= 0
    ids = np.where(found, index.ids[np.where(found, pos, 0)], -1)
    return np.asarray(s), ids.astype(np.int32)


@functools.partial(jax.jit, static_argnames=("nprobe", "score", "options"))
def _probe(Q, centroids, params, *, nprobe, score, options):
    """(phi_q(Q) [b, f], the ``nprobe`` best lists of each query [b, nprobe])."""
    Qf = score.map_queries(Q, *params, **dict(options))
    return Qf, jax.lax.top_k(Qf @ centroids.T, nprobe)[1]


def _plan(probe: np.ndarray, nlist: int):
    """Work items for a block's (query, list) pairs, on the host.

    Pairs sorted by list; item i covers sorted pairs ``start[i] : start[i] + c`` of list
    ``item_list[i]`` (a list probed by more than c queries gets several items). Returns
    (query of each sorted pair [P + c], unsort [P] (sorted position of each pair), item_list [U],
    item_start [U], c, n_items) with U a bound fixed by (P, nlist, c), so shapes repeat.
    """
    b, nprobe = probe.shape
    P = b * nprobe
    lists = probe.ravel()
    order = np.argsort(lists, kind="stable")
    counts = np.bincount(lists, minlength=nlist)
    busy = max(1, int((counts > 0).sum()))
    c = int(min(MAX_QUERIES_PER_ITEM, 1 << (max(1, P // busy).bit_length() - 1)))
    chunks = -(-counts // c)
    n_items = int(chunks.sum())
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    item_list = np.repeat(np.arange(nlist), chunks)
    within = np.arange(n_items) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    item_start = first[item_list] + within * c
    U = -(-P // c) + min(nlist, P)
    pad = U - n_items
    pair_query = np.concatenate([order // nprobe, np.zeros(c, np.int64)]).astype(np.int32)
    unsort = np.empty(P, np.int32)
    unsort[order] = np.arange(P, dtype=np.int32)
    return (jnp.asarray(pair_query), jnp.asarray(unsort),
            jnp.asarray(np.pad(item_list, (0, pad)).astype(np.int32)),
            jnp.asarray(np.pad(item_start, (0, pad)).astype(np.int32)), c, n_items)


@functools.partial(jax.jit, static_argnames=("k", "c", "window"))
def _scan_lists(Qf, keys, offsets, pair_query, unsort, item_list, item_start, n_items, *, k, c,
                window):
    """Run the work items (fp32 scores of c queries against one list, ``window`` keys at a
    time), then merge each query's nprobe candidate lists: (scores [b, k], sorted key positions
    [b, k], -1 where none)."""
    P = unsort.shape[0]
    b = Qf.shape[0]
    kk = min(k, window)
    cols = jnp.arange(window)

    def item(i, carry):
        cs, ci = carry
        j, s0 = item_list[i], item_start[i]
        Qc = Qf[jax.lax.dynamic_slice_in_dim(pair_query, s0, c)]
        o, end = offsets[j], offsets[j + 1]

        def part(w, best):
            # One window of the list; a list longer than the window takes several (the last
            # masked past the list's end), so the cost follows the list's size, not the longest.
            start = o + w * window
            X = jax.lax.dynamic_slice_in_dim(keys, start, window)
            S = jnp.where(cols < end - start, dot_t(Qc, X), -jnp.inf)
            ts, ti = jax.lax.top_k(S, kk)
            all_s = jnp.concatenate([best[0], ts], axis=1)
            all_i = jnp.concatenate([best[1], jnp.where(ts > -jnp.inf, ti + start, -1)], axis=1)
            s2, p = jax.lax.top_k(all_s, kk)
            return s2, jnp.take_along_axis(all_i, p, axis=1)

        none = (jnp.full((c, kk), -jnp.inf, jnp.float32), jnp.full((c, kk), -1, jnp.int32))
        ts, ti = jax.lax.fori_loop(0, (end - o + window - 1) // window, part, none)
        # Items run in order of their first pair, so rows written past an item's own pairs
        # (a list probed by fewer than c queries) are overwritten by the next item.
        cs = jax.lax.dynamic_update_slice(cs, ts, (s0, 0))
        ci = jax.lax.dynamic_update_slice(ci, ti, (s0, 0))
        return cs, ci

    init = (jnp.full((P + c, kk), -jnp.inf, jnp.float32), jnp.full((P + c, kk), -1, jnp.int32))
    cs, ci = jax.lax.fori_loop(0, n_items, item, init)
    cs, ci = cs[unsort].reshape(b, -1), ci[unsort].reshape(b, -1)
    if cs.shape[1] < k:  # fewer candidates than k in all: pad with "none"
        cs = jnp.pad(cs, ((0, 0), (0, k - cs.shape[1])), constant_values=-jnp.inf)
        ci = jnp.pad(ci, ((0, 0), (0, k - ci.shape[1])), constant_values=-1)
    s, p = jax.lax.top_k(cs, k)
    return s, jnp.where(s > -jnp.inf, jnp.take_along_axis(ci, p, axis=1), -1)
