"""The two-stage exact top-k of :mod:`jaxemb.search`: a bfloat16 pass with a proven error bound
keeps candidate groups, an fp32 pass ranks them (half the fp32 matmul's cost)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_t(A, B, precision=jax.lax.Precision.HIGHEST):
    """A [a, f] . B [c, f] -> [a, c], accumulated in fp32 (true fp32 products by default)."""
    return jax.lax.dot_general(A, B, (((1,), (1,)), ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)


def two_stage_top_k(Qf, keys, *, k, chunk, stats=None, prefilter=True):
    """Exact fp32 top-k of mapped queries Qf [b, f] in keys [m, f]: (scores, indices, ok,
    retry), retry [b]: not ``ok`` only because the prefilter dropped a group that might
    matter; ``prefilter=False`` (never prefilter) settles those.

    ``stats``: the keys' :func:`key_stats`, computed here if None. They depend on the keys only,
    so :class:`jaxemb.search.Index` computes them once and passes them to every query block:
    computed per chunk inside the pass-1 loop they cost a quarter to a third of the search
    (1k queries, 1M x 300, 2-core CPU, median of 5 alternating, 2026-12-07: pass 1 2.84 vs
    2.03 s at load 4; the whole search 3.72 vs 2.47 s at load 3.4).

    1. Pass 1 (:func:`_pass1_groups`) scores every key in bfloat16 (products exact, fp32
       accumulation) and keeps only the max of each group of ``g`` consecutive keys; for large
       databases only the 2 best of the 8 groups at the same place in 8 chunks
       (:func:`_top2_per_block`) go on, and the best ``n_keep`` groups per query are merged
       every 8 chunks, so memory stays
       [b, chunk]. On CPU, jax 0.10's XLA runs the bf16 dot through YNNPACK, which uses the
       CPU's bf16 instructions (on the 2-core AMX Xeon measured here a [1000, 300] x
       [300, 8192] score block runs at 1,100-1,200 GFLOP/s against 270-280 in fp32, best of 20,
       load 2.5, 2026-12-07: beyond what AVX512_BF16 alone reaches on 2 cores, so AMX tiles);
       GPU/TPU matrix units run bf16 faster than fp32 too. Without those instructions the bf16
       dot is converted to fp32 and pass 1 gains nothing (see
       ``experiments.bench_search --xla-flags``).
    2. ``delta`` (:func:`_pass1_error_bound`, per query) bounds |pass-1 score - fp32 score| for
       every key, rigorously.
    3. With L the k-th best kept group max, k distinct keys score >= L - delta in fp32, so
       every key of the exact top-k scores >= L - delta in fp32 and >= L - 2 delta in pass 1:
       its group is among the kept ones if every group not kept has a pass-1 max < L - 2 delta:
       the worst kept group max (the merges drop only groups below it) and the best group
       the prefilter dropped (``ok``).
    4. Pass 2 (:func:`_rescore`) rescores every key of the kept groups in fp32 (gathered, in
       index order) and takes the top-k: the exact fp32 top-k, ties to the lower index, wherever
       ``ok``.
    """
    m = keys.shape[0]
    # Group size g: pass 1 keeps one max per g keys, pass 2 rescores g keys per kept group.
    # On CPU 16 measured best, by a little (8: twice the merge work; 32: twice the rows to
    # rescore).
    g = min(16, chunk, m)
    chunk = max(min(chunk, m) // g * g, g)
    n_full, rest = divmod(m, chunk)
    n_groups = n_full * (chunk // g) + -(-rest // g)
    # Kept groups: the k best plus slack for the groups within 2 delta of the k-th. 1k queries on
    # 1M random 300-d vectors, cosine: k=10 keeps 52, the band holds 18 on average and 35 at most;
    # k=100 keeps 232, the band holds 170 on average and 203 at most.
    n_keep = min(2 * k + 32, n_groups)
    prefilter = prefilter and _use_prefilter(n_full, n_groups, n_keep)
    # Candidates that reach the merges: every group, or with the prefilter 2 per block (where
    # more than 2 chunks are merged at once).
    n_steps, n_last = divmod(n_full, MERGE_CHUNKS)
    n_candidates = n_groups - (chunk // g) * (
        n_steps * (MERGE_CHUNKS - 2) + max(n_last - 2, 0) if prefilter else 0)
    Q_low = Qf.astype(jnp.bfloat16)
    if stats is None:
        stats = key_stats(keys, chunk=chunk)
    best_v, best_g, low, dropped = _pass1_groups(Q_low, keys, g=g, chunk=chunk, n_keep=n_keep,
                                                 prefilter=prefilter)
    delta = _pass1_error_bound(Qf, Q_low, stats)
    # Settled here only where every fp32 score is surely finite (|q.x| <= |q| max|x|, with room
    # for rounding) and surely not all equal (pass-1 scores spread wider than 2 delta): the rest
    # go to the exact scan. Written so that NaN means "not settled".
    q_norm = jnp.sqrt(jnp.sum(jnp.square(Qf.astype(jnp.float32)), axis=1))
    settled = ((q_norm * jnp.sqrt(stats[0]) < 2.0**126)
               & ((best_v[:, 0] - low > 2 * delta) | (m == 1)))
    # Every group not kept scores at most the worst kept (dropped by a merge) or ``dropped``
    # (by the prefilter) in pass 1.
    ok = settled
    if n_keep < n_candidates:
        # The barrier keeps the last merge a top_k: reading its values past the first k makes
        # XLA's CPU compiler lower it as a full sort instead.
        best_v, best_g = jax.lax.optimization_barrier((best_v, best_g))
        ok = ok & (best_v[:, n_keep - 1] < best_v[:, k - 1] - 2 * delta)
    retry = jnp.zeros_like(ok)
    if prefilter:  # (then n_groups > n_keep > k)
        kept = dropped < best_v[:, k - 1] - 2 * delta
        ok, retry = ok & kept, ok & ~kept
    scores, indices = _rescore(Qf, keys, best_g, k=k, g=g)
    return scores, indices, ok, retry


def _key_stats(block):
    """Maxima over the rows x of |x|^2, |e|^2 (e = bf16(x) - x) and per column of |x~|, |e|."""
    x = block.astype(jnp.float32)
    x_low = block.astype(jnp.bfloat16).astype(jnp.float32)
    e = x_low - x  # exact (Sterbenz)
    return (jnp.max(jnp.sum(x * x, axis=1)), jnp.max(jnp.sum(e * e, axis=1)),
            jnp.max(jnp.abs(x_low), axis=0), jnp.max(jnp.abs(e), axis=0))


def key_stats(keys, *, chunk=1 << 11):
    """What :func:`_pass1_error_bound` needs of keys [m, f]: (max |x|^2, max |e|^2 over rows,
    column maxima [f] of |x~| and of |e|), x~ = bf16(x), e = x~ - x; ``chunk`` rows at a time,
    so temporaries stay [chunk, f] whatever m.

    One pass over the keys, but not a cheap one: 1M x 300 on the 2-core CPU took 1.2 s at load
    4 (2026-12-07; 2k-row chunks, 1.4-1.8 s in 8k-row ones; the four reductions, not the bf16
    rounding, cost most), against 0.25 s for max |x|^2 alone."""
    m, f = keys.shape
    chunk = max(1, min(chunk, m))
    n_full = m // chunk

    def stats_max(a, b):
        return jax.tree.map(jnp.maximum, a, b)

    def step(stats, c):
        block = jax.lax.dynamic_slice_in_dim(keys, c * chunk, chunk)
        return stats_max(stats, _key_stats(block)), None

    stats = (jnp.float32(0), jnp.float32(0), jnp.zeros((f,), jnp.float32),
             jnp.zeros((f,), jnp.float32))
    stats, _ = jax.lax.scan(step, stats, jnp.arange(n_full, dtype=jnp.int32))
    if m % chunk:
        stats = stats_max(stats, _key_stats(keys[n_full * chunk:]))
    return stats


# The prefilter: pass 1 merges the group maxima of MERGE_CHUNKS chunks at a time, and of the
# MERGE_CHUNKS groups at the same place in those chunks (a block: groups 2k keys apart) only
# the 2 best reach the merge. Why: XLA's CPU top_k is a per-row partial sort on one thread whose
# cost is mostly fixed per call (sorting the n_keep kept), so merging 128 group maxima into the
# kept 52 after every chunk cost a quarter of pass 1; two max-reductions per block cost a
# fraction of that. 1k queries, 1M x 300, 2-core CPU, load 3-4, 2026-12-07, median of 5
# alternating: 2.28-2.35 s (blocks of 8 or 16 groups, merges every 8 or 16 chunks) against
# 2.62 s merging every chunk. Blocks span chunks, so near neighbours that sit together in the
# database (rows sorted by cluster) rarely share one.
MERGE_CHUNKS = 8
# A query whose band (the groups within 2 delta of the k-th) puts 3 groups in one block loses
# one to the prefilter and is not proved (``ok`` False, ``retry`` True: searched again without
# the prefilter). With n_keep groups spread over N blocks that happens to about
# C(n_keep, 3) / N^2 of the queries; the prefilter is used only where that is at most
# PREFILTER_MISS (k = 10: from about 190k keys; k = 100: 1.8M). The band is smaller than n_keep
# (k = 10: 18-35 groups), so the real rate is far lower: 1k random queries, cosine, k = 10 at
# 200k, 262k and 1M x 300 keys: all proved.
PREFILTER_MISS = 1e-2


def _use_prefilter(n_full: int, n_groups: int, n_keep: int) -> bool:
    """Whether pass 1 keeps the 2 best groups per block (see :data:`PREFILTER_MISS`), given
    ``n_full`` full chunks."""
    if n_full < MERGE_CHUNKS:
        return False
    blocks = n_groups // MERGE_CHUNKS
    return n_keep * (n_keep - 1) * (n_keep - 2) / 6 <= PREFILTER_MISS * blocks**2


def _top2_per_block(x):
    """Group maxima x [R, b, B] (block j of query i: x[:, i, j]) -> the 2 best of each block:
    (values [b, 2 B], their rows r in [0, R) [b, 2 B], the best of the rest [b]); ties to the
    lower r. Max-reductions and selects only (no top_k, no argmax: both are serial loops on
    CPU)."""
    R = x.shape[0]
    # Reduced over a middle axis: over the leading one XLA's CPU reductions took 3.3 s for
    # the whole 1M-key search instead of 2.3-2.5 (load 4.7).
    x = jnp.moveaxis(x, 0, 1)
    r = jnp.arange(R, dtype=jnp.int32)[None, :, None]
    v1 = x.max(axis=1)
    r1 = jnp.min(jnp.where(x == v1[:, None], r, R), axis=1)
    x = jnp.where(r == r1[:, None], -jnp.inf, x)
    v2 = x.max(axis=1)
    r2 = jnp.min(jnp.where(x == v2[:, None], r, R), axis=1)
    rest = jnp.where(r == r2[:, None], -jnp.inf, x).max(axis=(1, 2))
    # With NaN scores no row matches (r = R, a group of the next chunks): such queries are
    # never settled, and _rescore clamps the group ids.
    return jnp.concatenate([v1, v2], axis=1), jnp.concatenate([r1, r2], axis=1), rest


def _pass1_groups(Q_low, keys, *, g, chunk, n_keep, prefilter):
    """bf16 pass: the ``n_keep`` best kept group maxima [b, n_keep], their group ids, each
    query's least pass-1 group max [b] (>= its least pass-1 score) and the best group max that
    ``prefilter`` (:func:`_top2_per_block`) dropped [b] (-inf if none).

    Keys are read ``chunk`` rows at a time (``chunk`` a multiple of ``g``; the rest after the last
    full chunk in one go), so memory stays [b, chunk] (and [MERGE_CHUNKS, b, chunk / g] group
    maxima per merge).
    """
    m = keys.shape[0]
    b = Q_low.shape[0]
    n_full, rest = divmod(m, chunk)
    groups_per_chunk = chunk // g

    def merge(best_v, best_g, values, ids):
        all_v = jnp.concatenate([best_v, values], axis=1)
        all_g = jnp.concatenate([best_g, jnp.broadcast_to(ids, values.shape)], axis=1)
        v, pos = jax.lax.top_k(all_v, n_keep)
        return v, jnp.take_along_axis(all_g, pos, axis=1)

    def group_max(block):  # [b, rows] bf16 scores (fp32 accumulation); rows % g == 0 or padded
        s = dot_t(Q_low, block.astype(jnp.bfloat16), precision=None)
        pad = -block.shape[0] % g
        if pad:  # fewer than g padding columns: every group keeps a real key, so a finite max
            s = jnp.concatenate([s, jnp.full((b, pad), -jnp.inf, jnp.float32)], axis=1)
        top = s.reshape(b, -1, g).max(axis=2)
        # The least group max, not the least score: an upper bound on the least score, read from
        # the g-times smaller [b, rows / g] array. A second reduction over the [b, rows] score
        # block cost as much as the group max itself (1k queries, 2-core AVX-512 CPU).
        return top, jnp.min(top, axis=1)

    def chunk_max(low, c):  # chunk c's group maxima [b, groups_per_chunk]
        top, block_low = group_max(jax.lax.dynamic_slice_in_dim(keys, c * chunk, chunk))
        return jnp.minimum(low, block_low), top

    def chunks(carry, first, count):  # chunks first .. first + count - 1, then one merge
        best_v, best_g, dropped, low = carry
        low, top = jax.lax.scan(chunk_max, low, first + jnp.arange(count, dtype=jnp.int32))
        j = jnp.arange(groups_per_chunk, dtype=jnp.int32)
        if prefilter and count > 2:  # top [count, b, G]: block j is top[:, :, j]
            v, r, lost = _top2_per_block(top)
            ids = (first + r) * groups_per_chunk + jnp.tile(j, 2)[None]
            dropped = jnp.maximum(dropped, lost)
        else:
            v = jnp.moveaxis(top, 0, 1).reshape(b, -1)
            ids = ((first + jnp.arange(count, dtype=jnp.int32))[:, None] * groups_per_chunk
                   + j[None]).reshape(-1)
        return (*merge(best_v, best_g, v, ids), dropped, low)

    carry = (jnp.full((b, n_keep), -jnp.inf, jnp.float32),
             jnp.full((b, n_keep), -1, jnp.int32),
             jnp.full((b,), -jnp.inf, jnp.float32),
             jnp.full((b,), jnp.inf, jnp.float32))
    n_steps, n_last = divmod(n_full, MERGE_CHUNKS)
    if n_steps:
        carry, _ = jax.lax.scan(lambda c, i: (chunks(c, i * MERGE_CHUNKS, MERGE_CHUNKS), None),
                                carry, jnp.arange(n_steps, dtype=jnp.int32))
    if n_last:
        carry = chunks(carry, n_steps * MERGE_CHUNKS, n_last)
    best_v, best_g, dropped, low = carry
    if rest:
        top, block_low = group_max(keys[n_full * chunk:])
        ids = n_full * groups_per_chunk + jnp.arange(top.shape[1], dtype=jnp.int32)
        best_v, best_g = merge(best_v, best_g, top, ids)
        low = jnp.minimum(low, block_low)
    return best_v, best_g, low, dropped


def _pass1_error_bound(Qf, Q_low, stats):
    """delta [b] >= |pass-1 score - fp32 score| for every key x, given the keys' ``stats``.

    With q~, x~ the bf16 roundings and e = x~ - x:  q~.x~ - q.x = (q~ - q).x~ + q.e, plus the fp32
    accumulation error of each pass (gamma sum_j |q_j x_j|). Each term is bounded both by
    Cauchy-Schwarz with the maximal row norms (tight for unit vectors) and coordinate by
    coordinate with the column maxima (tight for features such as neg_sq_euclidean's
    [2q, -|q|^2, -1] whose big coordinates never meet); the smaller bound is used. Norms are upper
    bounds: sums of squares may round (the 1.01) or underflow (+ f * tiny under the root);
    subnormal inputs and results may be flushed to zero in either pass (the last term).
    """
    f = Qf.shape[1]
    tiny = float(jnp.finfo(jnp.float32).tiny)

    def norm(sq):  # upper bound on the norm from a float32 sum of squares
        return jnp.sqrt(sq + f * tiny)

    def dot_abs(a, col_max):  # sum_j |a_j| col_max_j per query, in fp32 on every backend
        return jnp.sum(jnp.abs(a) * col_max[None, :], axis=1)

    x_sq, e_sq, x_low_col, e_col = stats
    x_norm, e_norm = norm(x_sq), norm(e_sq)
    x_low_norm = x_norm + e_norm  # |x~| <= |x| + |e|
    q, q_low = Qf.astype(jnp.float32), Q_low.astype(jnp.float32)
    q_norm, q_low_norm = norm(jnp.sum(q * q, axis=1)), norm(jnp.sum(q_low * q_low, axis=1))
    dq = q_low - q
    gamma = 2.0 * f * 2.0**-24  # fp32 accumulation of f products (any order), generously
    return 1.01 * (
        jnp.minimum(norm(jnp.sum(dq * dq, axis=1)) * x_low_norm, dot_abs(dq, x_low_col))
        + jnp.minimum(q_norm * e_norm, dot_abs(q, e_col))
        + gamma * (jnp.minimum(q_low_norm * x_low_norm, dot_abs(q_low, x_low_col))
                   + jnp.minimum(q_norm * x_norm, dot_abs(q, x_low_col + e_col)))
        + f * tiny) + tiny * (f**0.5 * (q_low_norm + x_low_norm) + 4 * f)


def _rescore(Qf, keys, best_g, *, k, g):
    """Pass 2: per query, the exact fp32 top-k over the keys of its kept groups ``best_g``."""
    m, f = keys.shape
    b, n_keep = best_g.shape

    def rescore(args):  # one query
        query, groups = args
        groups = jnp.sort(groups)  # index order, so top_k's stable order breaks ties low
        start = jnp.minimum(jnp.maximum(groups, 0) * g, m - g)  # the last group may be partial
        rows = jax.vmap(lambda s0: jax.lax.dynamic_slice_in_dim(keys, s0, g))(start)
        items = start[:, None] + jnp.arange(g, dtype=jnp.int32)[None, :]
        # Multiply and reduce, not a dot: a batched matvec kernel may round the same row
        # differently at different positions, which would break exact ties.
        s = jnp.sum(rows.astype(jnp.float32) * query.astype(jnp.float32)[None, None, :],
                    axis=-1)
        fresh = (groups[:, None] >= 0) & (items >= groups[:, None] * g)  # no row twice
        s, pos = jax.lax.top_k(jnp.where(fresh, s, -jnp.inf).reshape(-1), k)
        return s, items.reshape(-1)[pos]

    # A few queries at a time, so that their gathered rows (n_keep x g x f floats each) stay
    # near 8 MiB, in cache: 1k queries x 52 groups rescore in 0.12 s with 8 at a time, 0.25 s
    # with 32. A power of two, so that it divides the (power-of-two) query blocks and no query
    # is left to a one-row remainder: on CPU a lone row's multiply-reduce is fused into another
    # kernel that rounds differently (last-bit changes with the batch a query came in).
    per_batch = min(b, 1 << (max(2, min(32, (8 << 20) // (n_keep * g * f * 4))).bit_length() - 1))
    return jax.lax.map(rescore, (Qf, best_g), batch_size=per_batch)
