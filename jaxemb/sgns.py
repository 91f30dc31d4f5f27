"""Skip-gram with negative sampling (Mikolov et al. 2013) with any jaxemb score.

Data on device, sampling inside jit from (key, step), fixed shapes:

- ``subsample``: each token kept with gensim's probability (√(f/t) + 1)·t/f, the kept tokens
  compacted to the front of a fixed-size array (so windows span removed words, as in word2vec).
- A training call takes ``micro_steps`` consecutive blocks of ``micro_batch`` kept positions;
  each block is one SGD update (``lax.scan``), so frequent words see many small sequential
  updates, close to word2vec's Hogwild, instead of one huge summed one.
- Windows: per centre a reduced window b ~ U{1..window}; pairs never cross documents.
- The row update (:mod:`jaxemb.sgns_update`, which derives it): a row touched by m terms in a
  block moves by −lr·min(1, 1/(lr·H))·G (G its summed gradient, H its block curvature along
  G): word2vec's summed step where it stays within the Newton step along G, the Newton step
  where m sequential steps would saturate, so no setting needs its own constant.
  ``update="sequential"`` (default): input rows step first, then output rows against the moved
  inputs (a Gauss–Seidel sweep over the two tables). ``"implicit"``: both at once, each at
  most half a Newton step (lost WS353/SimLex against gensim at window 10). ``"damped"``: the
  sum damped by count^0.3, what the SGNS study uses for every score (H is computed in feature
  space, not cosine's own curvature: cosine trains much worse under the bound). ``"sum"``:
  the plain summed step, for comparison.
- Negatives: drawn from unigram^0.75 by inverse CDF and *shared* by a group of ``neg_group``
  centres (:func:`pool_size` per group: negative × the most pairs of a centre, 2·window), so
  negative scoring is a [group, d] × [d, pool] matmul rather than ~30 gathers per word (Ji et
  al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory", share negatives within a
  window for the same reason). Each centre's negative term is weighted by
  negative·n_pairs/pool (≤ 1 at the default pool), so its expectation equals word2vec's
  (negative draws per pair). ``neg_group=1`` gives each centre its own pool (Ji et al.'s
  sharing exactly); ``negatives="per_pair"`` (with ``neg_group=1``) word2vec's own negatives,
  for comparison: a centre's pool holds ``negative`` draws for each of its 2·window slots and
  a pair's terms weigh 1 on its own slot's draws, 0 elsewhere (the unused slots' scores are
  computed and discarded, so it runs far slower).

Differences from gensim, by design: mini-batch updates of ``micro_batch`` centres instead of
per-pair Hogwild, bounded per row as above; negatives shared in groups (above); the centre is
the input vector and the context the output (gensim's skip-gram does the reverse; the pair set
is symmetric in expectation); documents are not split at 10,000 tokens.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxemb.sgns_data import (  # noqa: F401  (public as sgns.*: the sampler's pieces)
    DeviceCorpus,
    SGNSError,
    device_corpus,
    keep_probability,
    negative_cdf,
    sample_negatives,
    subsample,
    window_offsets,
)
from jaxemb.sgns_dot import sequential_dot_update
from jaxemb.sgns_model import (  # noqa: F401  (public as sgns.*)
    INIT_SCALES,
    INITS,
    SGNS,
    SGNSConfig,
    _logits,
    feature_maps,
    init_params,
    pair_logits,
    pool_size,
    positive_tile,
    rounded_pool,
    score_module,
)
from jaxemb.sgns_update import (
    band_selector,
    block_curvature,
    damped_gradients,
    input_side,
    output_side,
    positive_logits,
    sparse_sgd_update,
    tiles,
    word_segments,
    word_sums,
)

Array = jax.Array


def block_loss(cfg: SGNSConfig, sp: dict, rows_in: Array, rows_out: Array, rows_neg: Array,
               pair_mask: Array, centre_mask: Array) -> Array:
    """Summed SGNS loss of one block of centres (see :func:`block_loss_terms`)."""
    return block_loss_terms(cfg, sp, rows_in, rows_out, rows_neg, pair_mask, centre_mask)[0]


def block_loss_terms(cfg: SGNSConfig, sp: dict, rows_in: Array, rows_out: Array,
                     rows_neg: Array, pair_mask: Array, centre_mask: Array):
    """(summed SGNS loss of one block of centres, its terms (q, k, k_neg, pos, neg, band,
    weight) for :func:`jaxemb.sgns_update.block_curvature`).

    rows_in, rows_out: [b + 2w, d], the block's input/output rows with w positions of margin;
    rows_neg: [b / g, pool, d]; pair_mask: [b, 2w] (1 where slot o is a real pair of centre i);
    centre_mask: [b]. Loss = −Σ log σ(s(i, i+o)) − Σ_i (negative·n_i/pool) Σ_s log σ(−s(i, s)).
    """
    w, b = cfg.window, pair_mask.shape[0]
    T = positive_tile(cfg)
    score = score_module(cfg).bind({"params": sp})
    phi_in, phi_out, bias = score.phi_q, score.phi_k, score.offset()
    q = phi_in(rows_in[w:w + b])  # [b, f]
    k = phi_out(rows_out)
    pos = positive_logits(q, k, w, T) + bias  # [b/T, T, T+2w]
    g = cfg.neg_group
    k_neg = phi_out(rows_neg)
    neg = jnp.einsum("gif,gsf->gis", q.reshape(b // g, g, -1), k_neg) + bias
    band, weight = block_weights(cfg, pair_mask, centre_mask)
    loss = -(jnp.sum(band * jax.nn.log_sigmoid(pos)) + jnp.sum(weight * jax.nn.log_sigmoid(-neg)))
    return loss, (q, k, k_neg, pos, neg, band, weight)


def block_weights(cfg: SGNSConfig, pair_mask: Array, centre_mask: Array):
    """(band [b/T, T, T + 2w], the pair mask [b, 2w] laid out like the positive logits;
    weight [b/g, g, 1], each centre's negative-term weight negative·n_pairs/pool; with
    ``negatives="per_pair"`` [b, 1, 2w·negative]: 1 on the ``negative`` slots of each of the
    centre's pairs, 0 on those of the slots it has no pair in)."""
    w, b, T = cfg.window, pair_mask.shape[0], positive_tile(cfg)
    band = jnp.einsum("tis,isj->tij", pair_mask.reshape(b // T, T, 2 * w), band_selector(T, w))
    if cfg.negatives == "per_pair":
        per_slot = jnp.repeat(pair_mask * centre_mask[:, None], cfg.negative, axis=1)
        return band, per_slot.reshape(b, 1, 2 * w * cfg.negative)
    n_pairs = pair_mask.sum(1) * centre_mask
    weight = (cfg.negative * n_pairs / pool_size(cfg)).reshape(b // cfg.neg_group, cfg.neg_group, 1)
    return band, weight


def block_masks(cfg: SGNSConfig, key: Array, docs: Array, valid: Array):
    """(pair_mask [b, 2w], centre_mask [b]) for a block with margins: dynamic windows b_i ~
    U{1..window}, pairs only inside one document and between kept positions."""
    w = cfg.window
    b = docs.shape[0] - 2 * w
    offs = window_offsets(w)
    reduced = jax.random.randint(key, (b,), 1, w + 1)
    centre = w + jnp.arange(b)
    ctx = centre[:, None] + offs[None, :]
    pair = ((np.abs(offs)[None, :] <= reduced[:, None]) & valid[ctx] & valid[centre][:, None]
            & (docs[ctx] == docs[centre][:, None]))
    return pair.astype(jnp.float32), valid[centre].astype(jnp.float32)


def _block(cfg: SGNSConfig, params: dict, sample, mesh: Mesh | None = None):
    """Differentiate the loss of one block of centres (``sample``: :func:`_block_sample`) with
    respect to the *gathered rows* (so the update is a scatter-add of b + 2w + negatives rows,
    not a dense [V, d] gradient). Returns (loss, n_pairs, ids, neg_ids, grads, curvature).

    With a ``mesh``, the loss and its gradient are computed by :func:`sharded_block_grads`: the
    block's centres split across the mesh's ``data`` axis. The randomness is drawn for the whole
    block first, so a sharded step computes the same update as a single-device one.
    """
    ids, neg_ids, pair_mask, centre_mask = sample
    rows = (params["in"][ids], params["out"][ids], params["out"][neg_ids])
    if mesh is None or mesh.size == 1:
        (loss, curv), grads = _block_grads(cfg, params["score"], *rows, pair_mask, centre_mask)
    else:
        (loss, curv), grads = sharded_block_grads(cfg, mesh, params["score"], *rows, pair_mask,
                                                  centre_mask)
    return loss, pair_mask.sum(), ids, neg_ids, grads, curv


def _block_sample(cfg: SGNSConfig, kept: Array, kept_docs: Array, n_kept: Array,
                  neg_cdf: Array, start: Array, key: Array):
    """(ids [b + 2w], neg_ids [b/g, pool], pair_mask [b, 2w], centre_mask [b]) of the block of
    centres at kept position ``start``."""
    w, b = cfg.window, cfg.micro_batch
    p = start - w + jnp.arange(b + 2 * w)
    valid = (p >= 0) & (p < n_kept)
    pc = jnp.clip(p, 0, kept.shape[0] - 1)
    ids, docs = kept[pc], kept_docs[pc]
    k_win, k_neg = jax.random.split(key)
    pair_mask, centre_mask = block_masks(cfg, k_win, docs, valid)
    neg_ids = sample_negatives(k_neg, neg_cdf, (b // cfg.neg_group, pool_size(cfg)))
    return ids, neg_ids, pair_mask, centre_mask


def sequential_update(cfg: SGNSConfig, params: dict, ids: Array, neg_ids: Array,
                      pair_mask: Array, centre_mask: Array, lr: Array, mesh: Mesh | None = None):
    """``update="sequential"``: one block's SGD update, the two sides one after the other
    (:mod:`jaxemb.sgns_update`). The input rows (and the score's parameters) take their bounded
    step −lr·min(1, 1/(lr·H))·G; then the output rows' gradient and curvature are evaluated
    against the *moved* input rows and they take theirs. Returns (params, loss, pair count);
    the loss is the block's before the update. ids, neg_ids, pair_mask, centre_mask:
    :func:`_block_sample`.

    The dot score without a bias on one device takes :func:`jaxemb.sgns_dot.
    sequential_dot_update` (the same update, cheaper); other scores and a mesh the general
    path, :func:`sequential_update_general`.
    """
    if cfg.score == "dot" and not cfg.bias and (mesh is None or mesh.size == 1):
        _, weight = block_weights(cfg, pair_mask, centre_mask)
        table_in, table_out, loss = sequential_dot_update(
            (params["in"], params["out"]), ids, neg_ids, pair_mask, weight, lr, cfg.window,
            positive_tile(cfg), cfg.neg_group)
        return ({"in": table_in, "out": table_out, "score": params["score"]}, loss,
                pair_mask.sum())
    return sequential_update_general(cfg, params, ids, neg_ids, pair_mask, centre_mask, lr, mesh)


def sequential_update_general(cfg: SGNSConfig, params: dict, ids: Array, neg_ids: Array,
                              pair_mask: Array, centre_mask: Array, lr: Array,
                              mesh: Mesh | None = None):
    """:func:`sequential_update` for any score and a mesh: gradients by autodiff, a second
    forward pass against the moved input rows and score."""
    w, T, V, b = cfg.window, positive_tile(cfg), params["in"].shape[0], pair_mask.shape[0]
    masks = (pair_mask, centre_mask)
    n_pairs = pair_mask.sum()
    rows_out, rows_neg = params["out"][ids], params["out"][neg_ids]
    # 1. the input side, against the output rows as they are
    loss, terms, (g_sp, g_in) = _side_grads(cfg, mesh, params["score"], params["in"][ids],
                                            rows_out, rows_neg, masks, (0, 1))
    q, k, k_neg, pos, neg, band, weight = terms
    g_c = g_in[w:w + b]  # only the centres' rows enter the loss
    seg = word_segments(ids[w:w + b], V)
    s_in, _, _ = input_side(tiles(k, w, T), k_neg, (pos, neg),
                            (jax.nn.sigmoid(pos), jax.nn.sigmoid(neg)), band, weight, seg,
                            word_sums(seg, g_c), lr)
    table_in = params["in"].at[ids[w:w + b]].add(-lr * s_in[:, None] * g_c)
    score = jax.tree.map(lambda p, g: p - lr / jnp.maximum(n_pairs, 1.0) * g,
                         params["score"], g_sp)
    # 2. the output side, against the moved input rows (and score)
    _, (q, _, _, pos, neg, _, _), (g_out, g_neg) = _side_grads(
        cfg, mesh, score, table_in[ids], rows_out, rows_neg, masks, (2, 3))
    out_ids = jnp.concatenate([ids, neg_ids.reshape(-1)])
    g_outs = jnp.concatenate([g_out, g_neg.reshape(-1, g_out.shape[-1])])
    seg = word_segments(out_ids, V)
    s_out = output_side(q, (pos, neg), (jax.nn.sigmoid(pos), jax.nn.sigmoid(neg)), band, weight,
                        seg, word_sums(seg, g_outs), lr, w, T)
    table_out = params["out"].at[out_ids].add(-lr * s_out[:, None] * g_outs)
    return {"in": table_in, "out": table_out, "score": score}, loss, n_pairs


def _side_grads(cfg: SGNSConfig, mesh: Mesh | None, sp: dict, rows_in: Array, rows_out: Array,
                rows_neg: Array, masks, argnums: tuple[int, ...]):
    """(loss, terms of :func:`block_loss_terms`, the gradients with respect to ``argnums`` of
    (sp, rows_in, rows_out, rows_neg)), all without gradient: on one device by autodiff of only
    those (no matmuls for the other side's), on a mesh by :func:`sharded_block_grads`."""
    rows = (rows_in, rows_out, rows_neg)
    if mesh is not None and mesh.size > 1:
        (loss, _), grads = sharded_block_grads(dataclasses.replace(cfg, update="sum"), mesh, sp,
                                               *rows, *masks)
        _, terms = block_loss_terms(cfg, sp, *rows, *masks)
        grads = tuple(grads[i] for i in argnums)
    else:
        (loss, terms), grads = jax.value_and_grad(
            lambda *a: block_loss_terms(cfg, *a, *masks), argnums=argnums,
            has_aux=True)(sp, *rows)
    return jax.lax.stop_gradient((loss, terms, grads))


def _block_grads(cfg: SGNSConfig, sp: dict, rows_in: Array, rows_out: Array, rows_neg: Array,
                 pair_mask: Array, centre_mask: Array):
    """((loss, curvature), (d/d score params, d/d rows_in, d/d rows_out, d/d rows_neg)) of one
    block; curvature: :func:`jaxemb.sgns_update.block_curvature` (None for ``update="sum"``)."""
    (loss, terms), grads = jax.value_and_grad(
        lambda sp, r_in, r_out, r_neg: block_loss_terms(cfg, sp, r_in, r_out, r_neg,
                                                        pair_mask, centre_mask),
        argnums=(0, 1, 2, 3), has_aux=True)(sp, rows_in, rows_out, rows_neg)
    curv = (block_curvature(terms, grads, cfg.window, positive_tile(cfg))
            if cfg.update == "implicit" else None)
    return (loss, curv), grads


def shard_multiple(cfg: SGNSConfig) -> int:
    """Centres per device must be a multiple of this (the positive tile and the negative group)."""
    return int(np.lcm(positive_tile(cfg), cfg.neg_group))


def sharded_block_grads(cfg: SGNSConfig, mesh: Mesh, sp: dict, rows_in: Array, rows_out: Array,
                        rows_neg: Array, pair_mask: Array, centre_mask: Array):
    """:func:`_block_grads` with the block's b centres split into n contiguous slices, one per
    device of the mesh's ``data`` axis (data parallelism inside one SGD update).

    Each device scores its b/n centres against their window (b/n + 2w rows, overlapping its
    neighbours' by the 2w margin) and its negative groups; the loss and the score parameters'
    gradient are summed across devices and the row gradients overlap-added back into the
    block's layout, so the caller's sparse update is the single-device one.
    """
    w, b, g = cfg.window, pair_mask.shape[0], cfg.neg_group
    n = mesh.shape["data"]
    bl = b // n

    def local(sp, rows_in, rows_out, rows_neg, pair_mask, centre_mask):
        i = jax.lax.axis_index("data")
        sl = lambda x, size, scale: jax.lax.dynamic_slice_in_dim(x, i * scale, size)  # noqa: E731
        (loss, _), (g_sp, g_in, g_out, g_neg) = _block_grads(
            plain, sp, sl(rows_in, bl + 2 * w, bl), sl(rows_out, bl + 2 * w, bl),
            sl(rows_neg, bl // g, bl // g), sl(pair_mask, bl, bl), sl(centre_mask, bl, bl))
        # g_sp is already summed over devices: sp enters replicated, and under shard_map's
        # varying-axes typing the transpose of its implicit broadcast is a psum.
        return jax.lax.psum(loss, "data"), g_sp, g_in[None], g_out[None], g_neg

    plain = dataclasses.replace(cfg, update="sum")  # curvature: below, on the whole block
    rep, data = PartitionSpec(), PartitionSpec("data")
    loss, g_sp, g_in, g_out, g_neg = jax.shard_map(
        local, mesh=mesh, in_specs=(rep,) * 6, out_specs=(rep, rep, data, data, data),
    )(sp, rows_in, rows_out, rows_neg, pair_mask, centre_mask)
    # overlap-add the n windows [n, bl + 2w, ...] back into the block's rows [b + 2w, ...]
    where = (np.arange(n)[:, None] * bl + np.arange(bl + 2 * w)[None, :]).reshape(-1)
    d = rows_in.shape[-1]
    g_in = jnp.zeros_like(rows_in).at[where].add(g_in.reshape(-1, d))
    g_out = jnp.zeros_like(rows_out).at[where].add(g_out.reshape(-1, d))
    grads = (g_sp, g_in, g_out, g_neg)
    curv = None
    if cfg.update == "implicit":
        # The curvature along each row's *whole-block* gradient, from the whole block's terms
        # (a forward pass, replicated): so the sharded update equals the single-device one.
        _, terms = block_loss_terms(cfg, sp, rows_in, rows_out, rows_neg, pair_mask, centre_mask)
        curv = block_curvature(terms, grads, w, positive_tile(cfg))
    return (loss, curv), grads


def dense_gradients(params: dict, ids: Array, neg_ids: Array, grads) -> dict:
    """The same gradient as a dense tree (what autodiff through the gathers would give), for
    optax optimisers such as Adam."""
    g_sp, g_in, g_out, g_neg = grads
    d = g_in.shape[-1]
    dense_in = jnp.zeros_like(params["in"]).at[ids].add(g_in)
    dense_out = (jnp.zeros_like(params["out"]).at[ids].add(g_out)
                 .at[neg_ids.reshape(-1)].add(g_neg.reshape(-1, d)))
    return {"in": dense_in, "out": dense_out, "score": g_sp}


def train_call(cfg: SGNSConfig, optimizer, params: dict, opt_state, kept: Array,
               kept_docs: Array, n_kept: Array, neg_cdf: Array, start: Array, key: Array,
               lr: Array, mesh: Mesh | None = None):
    """``cfg.micro_steps`` sequential SGD updates over consecutive blocks from ``start``.

    ``optimizer`` None: sparse SGD at learning rate ``lr`` (word2vec's update); otherwise an optax
    transformation applied to dense gradients (``lr`` unused: the optimiser owns its schedule).
    Returns (params, opt_state, loss sum, pair count). Pure: jit it once (see ``train.py``).
    ``mesh``: split each block's centres across its ``data`` axis (:func:`sharded_block_grads`).
    """

    def body(carry, xs):
        params, opt_state = carry
        u, sample = xs
        # A block past the end of this seed's kept tokens (seeds keep different numbers) must
        # not move anything: its gradient is zero, but Adam's momentum would still step.
        active = start + u * cfg.micro_batch < n_kept
        if optimizer is None and cfg.update == "sequential":
            params, loss, n_pairs = sequential_update(cfg, params, *sample,
                                                      jnp.where(active, lr, 0.0), mesh)
            return (params, opt_state), (loss, n_pairs)
        loss, n_pairs, ids, neg_ids, grads, curv = _block(cfg, params, sample, mesh)
        if optimizer is None:
            # The score's parameters (cosine's log t, bilinear W, a bias) are shared by every
            # pair of the block: a step on their *summed* gradient moves them ~pairs (thousands)
            # times further than one word2vec pair update would, and diverged (log t → −2230 in
            # 3 epochs on the Wikipedia sample). They take a step on the mean loss per pair.
            if cfg.update == "damped":
                grads = damped_gradients(grads, ids, neg_ids, params["in"].shape[0])
            params = sparse_sgd_update(params, ids, neg_ids, grads, jnp.where(active, lr, 0.0),
                                       curv,
                                       1.0 / jnp.maximum(n_pairs, 1.0))
        else:
            def step(state):
                p, o = state
                updates, o = optimizer.update(dense_gradients(p, ids, neg_ids, grads), o, p)
                return jax.tree.map(jnp.add, p, updates), o

            params, opt_state = jax.lax.cond(active, step, lambda st: st, (params, opt_state))
        return (params, opt_state), (loss, n_pairs)

    # Every block's sample drawn before the loop, vmapped (the same draws as one block at a
    # time: keys fold in the block index): the sampler's small ops (threefry rounds, the
    # inverse-CDF search) then run once per call, not once per block.
    steps = jnp.arange(cfg.micro_steps)
    samples = jax.vmap(lambda u: _block_sample(cfg, kept, kept_docs, n_kept, neg_cdf,
                                               start + u * cfg.micro_batch,
                                               jax.random.fold_in(key, u)))(steps)
    (params, opt_state), (loss, n_pairs) = jax.lax.scan(
        body, (params, opt_state), (steps, samples))
    return params, opt_state, loss.sum(), n_pairs.sum()


def export_vectors(params: dict, which: str = "in") -> np.ndarray:
    """[V, d] host vectors: ``in``, ``out`` or ``in+out`` (Levy, Goldberg & Dagan 2015 add them)."""
    if which == "in":
        v = params["in"]
    elif which == "out":
        v = params["out"]
    elif which == "in+out":
        v = params["in"] + params["out"]
    else:
        raise SGNSError(f"unknown vector kind {which!r}; use 'in', 'out' or 'in+out'")
    return np.asarray(v, np.float32)
