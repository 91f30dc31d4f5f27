"""``update="sequential"`` for the dot score without parameters: the update of
:mod:`jaxemb.sgns_update` (which derives it) at lower cost, the same to float rounding.

The positive terms live in a *band* layout [b, 2w] (centre i, slot o: its context at i + o),
not in the tiles [b/T, T, T + 2w] of :func:`jaxemb.sgns_update.positive_logits`:

- the products that reduce over the d features (the logits and the curvature's v = u·k)
  stay batched tile matmuls, whose in-band entries are then taken out (a constant-index
  gather, :func:`band_take`): as elementwise products reduced over d (XLA's row reduce) they
  measured slower (one block, dim 100, window 2: 135 µs against 48 µs);
- the products that accumulate rows (the centres' gradient Σ_o c_io k_{i+o} and the contexts'
  Σ_o c_{j−o,o} q_{j−o}) are 2w shifted elementwise multiply-adds over [b, d], which XLA
  fuses into one pass each; as tile matmuls (T rows per batch) they ran at a few percent of
  the core's peak (window 2: 17 µs against 35 µs for the centres, 24 µs against 91 µs for
  the contexts);
- the elementwise passes (σ, the loss, both curvature passes) run on b·2w band entries, not
  b·(T + 2w) tile entries (3× fewer at window 2, 2.6× at window 5).

Per call of :func:`jaxemb.sgns.train_call` (dim 100, 8 blocks of 512 centres, the Wikipedia
sample; the min of 30 calls, the tile version and this one alternating in one process;
2026-12-07, 2-core Xeon at load 5–6), with the sampler hoisted out of the block loop as well:
window 2 × negative 5: 8.8 → 5.6 ms; 5 × 5: 13.9 → 10.0; 10 × 5: 19.6 → 16.6; 2 × 15:
12.6 → 10.4; 5 × 15: 20.4 → 17.9; 10 × 15: 31.3 → 28.8. The three logit-shaped tile matmuls
(forward, and each side's v) are now the largest single cost (a third of the call at window
5 × negative 5, profiled); merging the negatives into each tile's keys (one matmul per
product instead of two) measured slower: it repeats the group's negatives in every tile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.sgns_data import window_offsets
from jaxemb.sgns_update import log_sigmoid_of, side_scale, tiles, word_segments, word_sums

Array = jax.Array


def band_index(b: int, w: int, T: int) -> np.ndarray:
    """[b, 2w] flat indices into tiles [b/T, T, T + 2w]: centre i, slot o → tile i // T, row
    i mod T, key column (i mod T) + w + o."""
    i, o, J = np.arange(b)[:, None], window_offsets(w)[None, :], T + 2 * w
    return (i // T) * T * J + (i % T) * J + (i % T) + w + o


def band_take(x: Array, w: int, T: int) -> Array:
    """[b, 2w] the in-band entries of tile scores x [b/T, T, T + 2w]."""
    return x.reshape(-1)[band_index(x.shape[0] * T, w, T)]


def centre_sum(c: Array, k: Array, w: int) -> Array:
    """[b, d] Σ_o c[i, o]·k[i + w + o]: each centre's sum over its slots (c [b, 2w]; k
    [b + 2w, d] the context rows with w rows of margin either side)."""
    b = c.shape[0]
    return sum(c[:, s, None] * jax.lax.slice_in_dim(k, w + o, w + o + b)
               for s, o in enumerate(window_offsets(w)))


def context_sum(c: Array, x: Array | None, w: int) -> Array:
    """[b + 2w, ...] Σ_o c[j − w − o, o]·x[j − w − o] over the centres whose slot o is row j:
    the transpose of :func:`centre_sum` (c [b, 2w]; x [b, ...] per centre, or None: c's own
    entries summed, [b + 2w]). Rows padded by 2w either side, so each slot is a static
    slice."""
    n = c.shape[0] + 2 * w
    pad = lambda y: jnp.pad(y, [(2 * w, 2 * w)] + [(0, 0)] * (y.ndim - 1))  # noqa: E731
    cp = pad(c)
    xp = None if x is None else pad(x)
    total = 0.0
    for s, o in enumerate(window_offsets(w)):
        cs = jax.lax.slice_in_dim(cp[:, s], w - o, w - o + n)
        total = total + (cs if x is None
                         else cs[:, None] * jax.lax.slice_in_dim(xp, w - o, w - o + n))
    return total


def context_index(b: int, w: int) -> np.ndarray:
    """[b, 2w] the context row i + w + o of centre i's slot o in [b + 2w]."""
    return np.arange(b)[:, None] + w + window_offsets(w)[None, :]


def sequential_dot_update(tables, ids: Array, neg_ids: Array, pair_mask: Array, weight: Array,
                          lr: Array, w: int, T: int, g: int):
    """(table_in, table_out, the block's loss before the update): ``update="sequential"`` for
    the dot score (the general path :func:`jaxemb.sgns.sequential_update_general`, to float
    rounding). Gradients written out (σ computed once per logit and shared by the loss
    gradient and the curvature), only the b centres' input rows gathered and moved, and no
    second forward pass: a word's input row moves by −a·u (its per-position steps −a·g
    summed), so a logit q·k of its positions moves by exactly −a·(u·k) = −a·v, with v the
    products the input side's curvature already formed: the output side's logits are the
    first pass's minus a·v and its features q − a·u.

    tables: (in [V, d], out [V, d]); ids: [b + 2w]; neg_ids: [b/g, pool]; pair_mask [b, 2w]
    (1 where slot o is a real pair of centre i); weight: [b/g, g, 1] the negative terms'
    weights (:func:`jaxemb.sgns.block_weights`); lr: []; T: the tile of the logit matmuls.
    """
    table_in, table_out = tables
    V, d = table_in.shape
    b = pair_mask.shape[0]
    cids = ids[w:w + b]
    q, k, k_neg = table_in[cids], table_out[ids], table_out[neg_ids]
    k_tiles = tiles(k, w, T)
    shape_t, shape_g = (b // T, T, d), (b // g, g, d)
    pos = band_take(jnp.einsum("tif,tjf->tij", q.reshape(shape_t), k_tiles), w, T)
    neg = jnp.einsum("gif,gsf->gis", q.reshape(shape_g), k_neg)
    # 1. the input side, against the output rows as they are
    sigs = jax.nn.sigmoid(pos), jax.nn.sigmoid(neg)
    loss = -(jnp.sum(pair_mask * log_sigmoid_of(pos, sigs[0], 1.0))
             + jnp.sum(weight * log_sigmoid_of(neg, sigs[1], -1.0)))
    g_q = (centre_sum(pair_mask * (sigs[0] - 1.0), k, w)
           + jnp.einsum("gis,gsf->gif", weight * sigs[1], k_neg).reshape(b, d))
    seg = word_segments(cids, V)
    u = word_sums(seg, g_q)
    v_pos = band_take(jnp.einsum("tif,tjf->tij", u.reshape(shape_t), k_tiles), w, T)
    v_neg = jnp.einsum("gif,gsf->gis", u.reshape(shape_g), k_neg)
    s_in = side_scale(seg, (v_pos, v_neg), (pos, neg), sigs, (pair_mask, weight),
                      lambda xs: jnp.sum(xs[0], -1) + jnp.sum(xs[1], -1).reshape(b),
                      lambda a: (a[:, None], a.reshape(shape_g[:2] + (1,))),
                      jnp.sum(u * u, -1), lr)
    a = lr * s_in
    table_in = table_in.at[cids].add(-a[:, None] * g_q)
    # 2. the output side, against the moved input rows: exact logit change −a·v
    q = q - a[:, None] * u
    pos = pos - a[:, None] * v_pos
    neg = neg - a.reshape(shape_g[:2] + (1,)) * v_neg
    sigs = jax.nn.sigmoid(pos), jax.nn.sigmoid(neg)
    g_out = context_sum(pair_mask * (sigs[0] - 1.0), q, w)
    g_neg = jnp.einsum("gis,gif->gsf", weight * sigs[1], q.reshape(shape_g))
    out_ids = jnp.concatenate([ids, neg_ids.reshape(-1)])
    g_outs = jnp.concatenate([g_out, g_neg.reshape(-1, d)])
    seg = word_segments(out_ids, V)
    u = word_sums(seg, g_outs)
    s_out = _output_scale(q, (pos, neg), sigs, (pair_mask, weight), seg, u, lr, w, T)
    table_out = table_out.at[out_ids].add(-lr * s_out[:, None] * g_outs)
    return table_in, table_out, loss


def _output_scale(q: Array, logits, sigs, weights, seg: Array, u: Array, lr: Array, w: int,
                  T: int) -> Array:
    """[b + 2w + b/g·pool] ψ(lr·H) of each output position (contexts, then negatives): q
    [b, d] the moved centres' features, u the output positions' word gradients (``seg``:
    their :func:`word_segments`); logits, sigs, weights: (band [b, 2w], negatives
    [b/g, g, pool])."""
    pos, neg = logits
    b, d = q.shape
    n_ctx = b + 2 * w
    u_ctx, u_neg = u[:n_ctx], u[n_ctx:].reshape(neg.shape[0], neg.shape[2], -1)
    v_pos = band_take(jnp.einsum("tif,tjf->tij", q.reshape(b // T, T, d), tiles(u_ctx, w, T)),
                      w, T)
    v_neg = jnp.einsum("gif,gsf->gis", q.reshape(neg.shape[:2] + (-1,)), u_neg)

    def reduce(xs):
        return jnp.concatenate([context_sum(xs[0], None, w), jnp.sum(xs[1], 1).reshape(-1)])

    def spread(a):
        return a[context_index(b, w)], a[n_ctx:].reshape(neg.shape[0], 1, neg.shape[2])

    return side_scale(seg, (v_pos, v_neg), logits, sigs, weights, reduce, spread,
                      jnp.sum(u * u, -1), lr)
