"""Exact and approximate top-k search under any score, nearest words and analogies.

Search is the score's feature maps plus a matmul: the database is mapped once through ``phi_k``
(:func:`index`), each query block through ``phi_q``, and the database is scanned in chunks so
that the [queries, chunk] score block, not the [queries, database] matrix, bounds memory.

Inputs follow :mod:`jaxemb.scoring`'s numeric rule (integers, float16 and bfloat16 promoted to
float32). Indices are never arbitrary: a query whose scores are all equal (a zero vector under
dot or cosine, say) or not all finite (overflow) raises a :class:`QueryError` naming it. The
check costs one min-reduction per score block; the flags come back with the results each block
already returns, and the error is raised once, after the search.

Where exact search's speed comes from (1000 queries, 1M x 300, top-10 cosine,
``python -m experiments.bench_search --sizes 1000000``, each method in its own process; the
figures, machines and JSON files are in the README's "Exact search beside FAISS"):

* Scoring every key costs 2 x 1000 x 300 x 1M = 0.6 TFLOP. In fp32 that is bounded by the
  machine's fp32 rate: numpy's 4096^3 sgemm measured 212-219 GFLOP/s on the 2-vCPU AMD EPYC
  (2.7-2.8 s for the scan) and about 300 on the 2-vCPU AMX Xeon (2.0 s). FAISS
  ``IndexFlatIP`` on its best OpenBLAS kernel runs near that bound (3.4-3.6 s on the EPYC).
* jaxemb's two-stage method (:func:`jaxemb.search_two_stage.two_stage_top_k`) scores in bf16
  with fp32 accumulation. jax 0.10's XLA runs CPU dots through YNNPACK, which uses the CPU's
  bf16 instructions: a [1000, 300] x [300, 8192] block runs at 2x the fp32 rate on the EPYC
  (AVX512_BF16: 406 vs 204 GFLOP/s) and up to 4.4x on the Xeon (AMX: 1,226 vs 281). int8
  x int8 -> int32 is no faster inside the scan (each chunk's keys converted, int32 scores
  converted back), so pass 1 stays bf16. It keeps one max per 16 keys (no top-k over every
  score) in 2k-key chunks whose score block stays near the cores, with the keys' error-bound
  statistics computed once per index (:attr:`Index.pass1_stats`, +1.3 s build at 1M) and
  XLA's serial top_k run every 8 chunks on the 2 best groups of each block of 8; it then
  rescores only the groups the bound cannot rule out, in fp32. Quiet, on the EPYC: median
  1.98 and 2.10 s in two runs, 1.80x and 1.62x FAISS, 2.8x the plain fp32 scan, faster than
  the sgemm alone. On the Xeon the fair quiet runs gave 1.04x and (previous version) 1.35x,
  the speed of its XLA processes varying from run to run. Results equal numpy's (ties
  allowed).
* Without bf16 instructions (``--xla-flags='--xla_cpu_max_isa=AVX2
  --xla_cpu_experimental_ynn_fusion_type='``: YNNPACK off, the bf16 dot converted to fp32;
  quiet, on the EPYC) the two-stage method still took median 3.72 s against the fp32 scan's
  5.77 s (7.7 against 16.0 s in a loaded run on the Xeon): there its gain is the selection (a
  group max instead of a top-k over every score), not the matmul. (Single queries there took
  1.1-1.2 s: without YNNPACK XLA's matrix-vector product is slow.)
* A single query takes the one-pass fp32 scan (memory-bound): median 88-91 ms against FAISS's
  99-115 ms on the EPYC; 230 against 123 ms in the Xeon's fair run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.scoring import Score, get_score, promote
from jaxemb.search_two_stage import dot_t, key_stats, two_stage_top_k
from jaxemb.wordvectors import WordVectors

Array = jax.Array


class SearchError(ValueError):
    """Inputs to a search that cannot work (sizes, k, NaN)."""


class QueryError(SearchError):
    """A query whose top-k would be arbitrary: ``query`` is its row among the queries."""

    def __init__(self, message: str, query: int):
        super().__init__(message)
        self.query = query


# Per-query flags from the device (int8): the query's top-k is meaningful, its scores are all
# equal, or some are inf/NaN.
_FINE, _FLAT, _NONFINITE = 0, 1, 2


# Bytes of the [query_block, chunk] float32 score block (also the cap on a chunk's bf16 keys):
# bounds memory whatever the database size. 32 MiB gives 8k-row chunks for 1k queries, measured
# best on a 2-core CPU (1M keys: 4k-row chunks 5% slower, 16k-row chunks 1.6x slower).
DEFAULT_BLOCK_BYTES = 32 << 20
# The same for the two-stage method's bf16 first pass, whose score block is read again by the
# group max: 8 MiB (2k-row chunks for 1k queries) stays nearer the cores. 1k queries x 262k
# keys x 300, 2-core AVX-512 CPU, bf16 matmul + group max alone: 2k-row chunks 1.6-1.8x the
# rate of 8k-row chunks (550 vs 310 GFLOP/s, best of 5, 2026-12-07, load 4-7). With the
# group-max flat check, the whole 1M-key search against the 8k-row, two-reduction version:
# median of medians 3.7 vs 4.8 s, min 3.0 vs 3.2 s (4 alternating processes each, load 3-5).
PASS1_BLOCK_BYTES = 8 << 20
DEFAULT_QUERY_BLOCK = 1024
SCAN_ROWS = 8  # query blocks of at most this many rows take the one-pass fp32 scan
# Databases of fewer keys take the fp32 scan unless two_stage=True: there the bfloat16 first
# pass, its bound and the rescoring cost more than they save, and the two-stage program takes
# longer to compile. Measured 2026-12-07 on the 2-core Xeon, quiet (load 2.7), cosine, min of
# 4, two-stage vs scan: 512 queries, d = 100: 8k keys 55 vs 16 ms, 30k 61 vs 65, 60k 88 vs 112,
# 120k 125 vs 208; d = 300: 8k 98 vs 23, 30k 123 vs 96, 60k 164 vs 171, 120k 230 vs 336;
# 64 queries, the scan is faster at every size to 120k (d = 300: 146 vs 97 ms); first calls
# (compiling) 0.6-1.1 s vs 0.2-0.6 s.
TWO_STAGE_MIN_KEYS = 1 << 16


@dataclasses.dataclass(frozen=True, eq=False)
class Index:
    """A database mapped once through a score's key feature map.

    ``keys`` [m, f] = phi_k(database); queries are mapped with the same ``params`` and ``options``.
    """

    keys: Array
    score: Score
    params: tuple
    options: dict
    dim: int  # the database's own dim d (before the feature map)

    def __len__(self) -> int:
        return self.keys.shape[0]

    @functools.cached_property
    def pass1_stats(self) -> tuple:
        """The keys' :func:`jaxemb.search_two_stage.key_stats` (2 + 2f floats), computed once
        (:func:`index` starts it where the two-stage method is the default) for every search."""
        return _key_stats(self.keys)

    def _checked_queries(self, queries, k, query_block) -> tuple[Array, bool]:
        """(queries as [n, d], whether one query [d] was given); every argument checked."""
        Q = _as_float_array("queries", queries)
        single = Q.ndim == 1
        if single:
            Q = Q[None]
        if Q.ndim != 2 or Q.shape[0] == 0:
            raise SearchError(f"queries must have shape [n, d] or [d] with n >= 1, "
                              f"got {np.shape(queries)}")
        if Q.shape[1] != self.dim:
            raise SearchError(f"queries have dim {Q.shape[1]} but the database has dim {self.dim}")
        m = len(self)
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
            raise SearchError(f"k must be an integer in [1, {m}] (the database size), got {k!r}")
        _require_finite("queries", Q)
        if (not isinstance(query_block, (int, np.integer)) or query_block < 2
                or query_block & (query_block - 1)):
            raise SearchError(f"query_block must be a power of two >= 2, got {query_block!r}")
        return Q, single

    def search(self, queries, k: int, *, approx: bool = False, recall_target: float = 0.95,
               chunk_size: int | None = None, query_block: int = DEFAULT_QUERY_BLOCK,
               two_stage: bool | None = None):
        """Top-``k`` keys for each query: (scores [n, k], indices [n, k]), best first.

        ``two_stage``: None (default) uses the bfloat16 first pass of
        :func:`jaxemb.search_two_stage.two_stage_top_k` from :data:`TWO_STAGE_MIN_KEYS` keys
        and the plain fp32 scan below; True uses it at any size, False never (the same results
        either way; for measuring what the first pass gains).

        ``queries`` [n, d] (or [d], giving [k] results). Ties go to the lower index.
        ``approx`` uses ``jax.lax.approx_max_k`` per chunk (fast on TPU; exact elsewhere).
        Queries run ``query_block`` (a power of two) at a time, the last block padded to a power
        of two, so any n reuses one of a few compiled shapes.
        """
        Q, single = self._checked_queries(queries, k, query_block)
        n = Q.shape[0]

        def run(block: Array, method: str):
            return self._run_block(block, method, k=int(k), approx=approx,
                                   recall_target=recall_target, chunk_size=chunk_size)

        def padded(rows: np.ndarray) -> Array:
            # Padding repeats a real query (not zeros, which some feature maps divide by): each
            # row is searched on its own and padding rows are dropped, so they change nothing.
            size = _block_rows(rows.size, int(query_block))
            return Q[np.concatenate([rows, np.full(size - rows.size, rows[0])])]

        # Results are gathered on the host: ``ok`` is needed there anyway, and slicing numpy
        # arrays of the query count compiles nothing.
        scores = np.empty((n, int(k)), np.float32)
        indices = np.empty((n, int(k)), np.int32)
        ok, retry = np.empty(n, bool), np.empty(n, bool)
        flags = np.empty(n, np.int8)

        def fill(rows: np.ndarray, method: str) -> None:  # search ``rows`` of Q, block by block
            for i in range(0, rows.size, int(query_block)):
                r = rows[i:i + int(query_block)]
                # padding rows do not count
                out = (np.asarray(a)[:r.size] for a in run(padded(r), method))
                scores[r], indices[r], ok[r], flags[r], retry[r] = out

        if two_stage is None:
            two_stage = len(self) >= TWO_STAGE_MIN_KEYS
        method = "two_stage" if two_stage else "scan"
        for i in range(0, n, int(query_block)):
            rows = np.arange(i, min(i + int(query_block), n))
            fill(rows, method)
            if ok[rows].mean() < 0.5:
                # Pass 1 cannot prune for these data (its bf16 error bound is wider than the
                # gaps between scores, e.g. neg_sq_euclidean on raw high-dimensional vectors):
                # scan directly from now on. Where only pass 1's prefilter lost groups (data
                # whose nearest rows sit together in the database), drop the prefilter.
                method = ("two_stage_full" if method == "two_stage"
                          and (ok | retry)[rows].mean() >= 0.5 else "scan")
        # Unproved queries: where only the prefilter may have lost a group, the two-stage
        # method without it; the rest (many near-ties) the exact fp32 scan.
        fill(np.flatnonzero(~ok & retry), "two_stage_full")
        fill(np.flatnonzero(~ok), "scan")
        _raise_for_flags(flags, self.score.name, single)
        if single:
            scores, indices = scores[0], indices[0]
        return jnp.asarray(scores), jnp.asarray(indices)


    def _run_block(self, block: Array, method: str, *, k: int, approx: bool,
                   recall_target: float, chunk_size: int | None):
        """One padded block of queries [b, f] through :func:`_search_block`: (scores, indices,
        ok, flags, retry), each with b rows; the chunk of keys per step chosen from the block
        shape."""
        b, f, m = block.shape[0], self.keys.shape[1], len(self)
        chunk = chunk_size
        if b <= SCAN_ROWS and not approx:
            # A few queries are memory-bound: one pass of fp32 products over the keys in as
            # few chunks as the score block allows beats the two-stage method, whose first
            # pass and rescoring each read the keys (1M x 300, one query, 2-core AVX-512
            # CPU: 79 ms median vs 1.5 s two-stage and 180 ms in 56k-row chunks).
            method = "scan"
            if chunk is None:
                chunk = DEFAULT_BLOCK_BYTES // (4 * b)
        if chunk is None:
            # Bytes of the [b, chunk] score block; also cap the key rows per chunk (the
            # chunk's bfloat16 copy) by the same bytes, for few queries. A function of the
            # block shape only, so it adds no compilations.
            block_bytes = (PASS1_BLOCK_BYTES if method.startswith("two_stage")
                           else DEFAULT_BLOCK_BYTES)
            chunk = min(block_bytes // (4 * b), DEFAULT_BLOCK_BYTES // (2 * f))
        stats = self.pass1_stats if method.startswith("two_stage") and not approx else None
        return _search_block(block, self.keys, self.params, stats, k=k,
                             chunk=int(min(max(chunk, 1), m)), approx=approx,
                             recall_target=recall_target, score=self.score,
                             options=tuple(sorted(self.options.items())), method=method)


def _block_rows(rows: int, query_block: int) -> int:
    """Rows of the device block for ``rows`` queries: blocks of ``query_block``, the last (or
    only) one padded to the next power of two, so every block shape comes from {2, 4, ...,
    query_block}: n = 1, 2, ..., N compiles at most log2(query_block) shapes and a size seen
    before never recompiles. Never one row: a one-row block lowers to other CPU kernels that
    round differently (last-bit changes in a query's scores with the batch it came in)."""
    return min(query_block, max(2, 1 << (rows - 1).bit_length()))


def index(database, score: str | Score = "cosine", *params, **options) -> Index:
    """Map ``database`` [m, d] once through ``score``'s key feature map for repeated search."""
    score = get_score(score)
    D = _as_float_array("database", database)
    if D.ndim != 2:
        raise SearchError(f"database must have shape [m, d], got {np.shape(database)}")
    if D.shape[0] == 0:
        raise SearchError("the database is empty (0 rows)")
    _require_finite("database", D)
    keys = _map_keys(D, params, score=score, options=tuple(sorted(options.items())))
    ix = Index(keys, score, tuple(params), dict(options), D.shape[1])
    if len(ix) >= TWO_STAGE_MIN_KEYS:
        _ = ix.pass1_stats  # dispatched now (asynchronously): part of building the index
    return ix


def top_k(queries, database, k: int, score: str | Score = "cosine", *params,
          approx: bool = False, recall_target: float = 0.95, chunk_size: int | None = None,
          two_stage: bool | None = None, **options):
    """Exact top-``k`` of ``database`` [m, d] for each of ``queries`` [n, d] under ``score``.

    Returns (scores [n, k], indices [n, k]), best first. ``params``/``options`` go to the score
    (e.g. ``W`` for bilinear, ``t`` for cosine); ``two_stage`` as :meth:`Index.search`. For
    repeated queries build :func:`index` once.
    """
    return index(database, score, *params, **options).search(
        queries, k, approx=approx, recall_target=recall_target, chunk_size=chunk_size,
        two_stage=two_stage)


def _as_float_array(name: str, x) -> Array:
    """``x`` promoted by scoring's rule (float32 or wider; int64 never wraps)."""
    return jnp.asarray(promote(x, name, SearchError))


def _raise_for_flags(flags: np.ndarray, score: str, single: bool) -> None:
    """One QueryError naming the first query whose top-k would be arbitrary, if any."""
    bad = np.flatnonzero(flags != _FINE)
    if not bad.size:
        return
    i = int(bad[0])
    who = "the query" if single else f"query {i}"
    more = "" if bad.size == 1 else f" ({bad.size} queries are, this is the first)"
    if flags[i] == _FLAT:
        why = (f"has the same score under {score!r} for every key (a zero vector, say), so its "
               f"top-k would be arbitrary")
    else:
        why = (f"has scores under {score!r} beyond float32's range (inf or NaN: vectors too "
               f"large, e.g. norms near 1e19 or more); rescale the vectors")
    raise QueryError(f"{who} {why}{more}", i)


def _require_finite(name: str, x: Array) -> None:
    bad = ~jnp.isfinite(x).all(axis=-1)
    if bool(bad.any()):
        rows = np.flatnonzero(np.asarray(bad))
        raise SearchError(f"{name} contain NaN or inf in {rows.size} row(s), the first at row "
                          f"{int(rows[0])}")


@functools.partial(jax.jit, static_argnames=("score", "options"))
def _map_keys(D, params, *, score: Score, options):
    return score.map_keys(D, *params, **dict(options))


_key_stats = jax.jit(key_stats)


@functools.partial(jax.jit, static_argnames=("k", "chunk", "approx", "recall_target", "score",
                                             "options", "method"))
def _search_block(Q, keys, params, stats=None, *, k, chunk, approx, recall_target, score,
                  options, method="two_stage"):
    """Q [b, d] against keys [m, f]: (scores [b, k], indices [b, k], ok [b], flags [b], retry
    [b]), best first; ``flags`` (int8) say whose top-k would be arbitrary (``_FLAT``,
    ``_NONFINITE``); ``retry``: not ``ok`` only because pass 1's prefilter dropped a group that
    might matter (``method="two_stage_full"``, the two-stage method without it, settles them).
    ``stats``: the keys' :func:`jaxemb.search_two_stage.key_stats` (computed here if None).

    Scores are float32 dot products of the mapped query and key, computed in true fp32 on every
    backend; ties go to the lower index.

    ``method="scan"`` (and ``approx``) is :func:`_scan_top_k`: fp32 scores of ``chunk`` keys at a
    time, top-k per chunk merged into the running top-k (1k queries x 1M keys x 300: median
    5.6-5.7 s quiet on the 2-vCPU AMD EPYC; 8.3 s, 12.4 s at load 6, on the 2-vCPU Xeon).
    ``method="two_stage"`` (the default) is :func:`jaxemb.search_two_stage.two_stage_top_k`,
    exact too (same case: median 2.0-2.1 s quiet on the EPYC; 2.8 s at load 4-5 on the Xeon,
    against 4.4-5.1 s before the key stats were hoisted and pass 1 prefiltered; see the module
    docstring): a bfloat16 first pass keeps the candidate groups, fp32 rescoring
    ranks them. Where not ``ok`` (many near-ties, e.g. duplicated rows, or a
    bound wider than the gaps between scores; or flags pass 1 cannot settle: scores possibly
    all equal or beyond float32's range) the caller recomputes those queries with
    ``method="scan"``, which computes the flags exactly. One code path for CPU, GPU and TPU.
    """
    Qf = score.map_queries(Q, *params, **dict(options))
    if approx or method == "scan":
        scores, indices, low = _scan_top_k(Qf, keys, k=k, chunk=chunk, approx=approx,
                                           recall_target=recall_target)
        # NaN anywhere makes the min NaN; all equal: the best is the worst (with >= 2 keys).
        nonfinite = jnp.isnan(low) | ~jnp.isfinite(scores).all(axis=1)
        flat = (scores[:, 0] == low) & (keys.shape[0] > 1)
        flags = jnp.where(nonfinite, _NONFINITE, jnp.where(flat, _FLAT, _FINE)).astype(jnp.int8)
        return scores, indices, jnp.ones((Q.shape[0],), bool), flags, jnp.zeros_like(flat)
    scores, indices, ok, retry = two_stage_top_k(Qf, keys, k=k, chunk=chunk, stats=stats,
                                                 prefilter=method == "two_stage")
    return scores, indices, ok, jnp.zeros((Q.shape[0],), jnp.int8), retry


def _scan_top_k(Qf, keys, *, k, chunk, approx, recall_target):
    """Mapped queries Qf [b, f] against keys [m, f], ``chunk`` keys at a time: (scores, indices,
    low), low [b] the least score of each query (NaN if any score is NaN).

    fp32 scores (precision HIGHEST), then top-k per chunk (``approx``: ``approx_max_k``) merged
    into the running top-k: the fp32 matmul plus a top-k over every score.
    """
    m = keys.shape[0]
    b = Qf.shape[0]
    n_chunks = -(-m // chunk)
    kk = min(k, chunk)

    def step(carry, c):
        best_s, best_i, low = carry
        # The last chunk is clamped to end at m (dynamic_slice clamps the start), so it overlaps
        # the previous one; its already-seen columns are masked rather than padding the database.
        start = jnp.minimum(c * chunk, m - chunk)
        block = jax.lax.dynamic_slice_in_dim(keys, start, chunk)
        s = dot_t(Qf, block)
        cols = start + jnp.arange(chunk)
        fresh = (cols >= c * chunk)[None, :]
        low = jnp.minimum(low, jnp.min(jnp.where(fresh, s, jnp.inf), axis=1))
        s = jnp.where(fresh, s, -jnp.inf)
        if approx:
            cs, ci = jax.lax.approx_max_k(s, kk, recall_target=recall_target)
        else:
            cs, ci = jax.lax.top_k(s, kk)
        # Merge: earlier (lower-index) candidates first, so top_k's stable order breaks ties
        # towards the lower index.
        all_s = jnp.concatenate([best_s, cs], axis=1)
        all_i = jnp.concatenate([best_i, ci + start], axis=1)
        s2, pos = jax.lax.top_k(all_s, k)
        return (s2, jnp.take_along_axis(all_i, pos, axis=1), low), None

    init = (jnp.full((b, k), -jnp.inf, jnp.float32), jnp.full((b, k), -1, jnp.int32),
            jnp.full((b,), jnp.inf, jnp.float32))
    (scores, indices, low), _ = jax.lax.scan(step, init, jnp.arange(n_chunks))
    return scores, indices, low


# --- words ----------------------------------------------------------------------------------

def most_similar(wv: WordVectors, positive: str | Sequence[str], negative: Sequence[str] = (),
                 topn: int = 10, score: str | Score = "cosine",
                 restrict_vocab: int | None = None) -> list[tuple[str, float]]:
    """The ``topn`` words nearest to mean(positive) − mean(negative), query words excluded.

    With ``score="cosine"`` the inputs are unit-normalised before averaging, as in gensim's
    ``most_similar`` (so each word counts equally whatever its norm); with any other score the raw
    vectors are averaged.
    """
    positive = [positive] if isinstance(positive, str) else list(positive)
    negative = list(negative)
    words = positive + negative
    if not words:
        raise SearchError("most_similar needs at least one word")
    rows = [wv.index(w) for w in words]  # raises VocabularyError naming the word
    score = get_score(score)
    vectors = wv.vectors if restrict_vocab is None else wv.vectors[:restrict_vocab]
    src = _unit_rows(wv.vectors[rows]) if score.name == "cosine" else wv.vectors[rows]
    weights = np.array([1.0] * len(positive) + [-1.0] * len(negative), np.float32)
    q = (weights[:, None] * src).mean(axis=0)
    take = min(topn + len(rows), vectors.shape[0])
    try:
        scores, idx = top_k(q, vectors, take, score)
    except QueryError as e:
        raise QueryError(f"most_similar(positive={positive}, negative={negative}): "
                         f"{str(e).replace('the query ', 'their query ', 1)}", 0) from None
    excluded = set(rows)
    out = [(wv.words[i], float(s)) for s, i in zip(np.asarray(scores), np.asarray(idx), strict=True)
           if int(i) not in excluded]
    return out[:topn]


def _unit_rows(X) -> np.ndarray:
    """Rows of X [n, d] scaled to unit norm (zero rows stay zero), at least float32.

    As ``WordVectors.normalized`` (bit for bit where its norms neither overflow nor fall under
    its eps), but each row is first scaled by a power of two (exact) so that the sum of squares
    can neither overflow nor underflow: 1e20 and 1e-30 rows come out unit too.
    """
    X = np.asarray(X)
    X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float32)
    big = np.abs(X).max(axis=1, keepdims=True) if X.size else np.zeros((len(X), 1), X.dtype)
    s = np.ldexp(np.ones_like(big), -np.clip(np.frexp(big)[1], -120, 120))
    norms = np.linalg.norm(X * s, axis=1, keepdims=True) / s
    return X / np.where(norms == 0, 1, norms)


ANALOGY_METHODS = ("3cosadd", "3cosmul")


def analogy(wv: WordVectors, a: str, b: str, c: str, topn: int = 1, method: str = "3cosadd",
            restrict_vocab: int | None = None) -> list[tuple[str, float]]:
    """"``a`` is to ``b`` as ``c`` is to ?": the ``topn`` answers, a, b and c excluded.

    3CosAdd (Mikolov et al. 2013): argmax_x cos(x, b) − cos(x, a) + cos(x, c).
    3CosMul (Levy & Goldberg 2014): argmax_x cos'(x, b) cos'(x, c) / (cos'(x, a) + 1e-6), with
    cos' = (cos + 1) / 2 mapped to [0, 1] (the ε and the shift as in gensim's
    ``most_similar_cosmul``).
    """
    unit = _unit_rows(wv.vectors)
    abc = np.array([[wv.index(a), wv.index(b), wv.index(c)]], np.int32)
    # Query words come from the whole vocabulary; only the candidates are restricted (as gensim).
    n = len(wv) if restrict_vocab is None else min(restrict_vocab, len(wv))
    scores = np.asarray(analogy_scores(jnp.asarray(unit), jnp.asarray(abc), method=method))[0]
    scores = scores[:n]
    available = int(np.isfinite(scores).sum())
    if not 1 <= topn <= available:
        raise SearchError(f"topn must be in [1, {available}] (candidate words other than the "
                          f"question words), got {topn}")
    live = scores[np.isfinite(scores)]
    if np.isnan(scores).any() or (live.size > 1 and live.min() == live.max()):
        raise QueryError(f"analogy {a}:{b} :: {c}:? has the same score for every candidate "
                         f"(zero vectors, say), so its answers would be arbitrary", 0)
    order = np.argsort(-scores, kind="stable")[:topn]
    return [(wv.words[i], float(scores[i])) for i in order]


def analogy_scores(unit: Array, abc: Array, *, method: str = "3cosadd") -> Array:
    """Scores [q, V] of every candidate for questions ``abc`` [q, 3] (rows of a, b, c).

    ``unit`` [V, d] holds unit-normalised vectors; a, b and c get −inf so they are never answers.
    """
    if method not in ANALOGY_METHODS:
        raise SearchError(f"unknown analogy method {method!r}; use one of {ANALOGY_METHODS}")
    if abc.ndim != 2 or abc.shape[1] != 3:
        raise SearchError(f"abc must have shape [q, 3], got {abc.shape}")
    return _analogy_scores(unit, abc, method)


@functools.partial(jax.jit, static_argnames=("method",))
def _analogy_scores(unit, abc, method):
    if method == "3cosadd":
        # cos is linear in the (unit) query, so the three cosines collapse to one matmul.
        target = unit[abc[:, 1]] - unit[abc[:, 0]] + unit[abc[:, 2]]
        s = target @ unit.T
    else:
        cos = jnp.einsum("qjd,vd->jqv", unit[abc], unit)
        pos = (cos + 1.0) / 2.0
        s = pos[1] * pos[2] / (pos[0] + 1e-6)
    V = unit.shape[0]
    hit = (jnp.arange(V)[None, None, :] == abc[:, :, None]).any(axis=1)
    return jnp.where(hit, -jnp.inf, s)
