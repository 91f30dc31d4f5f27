"""The row update of SGNS blocks: how far a row repeated inside a block may move.

word2vec (Mikolov et al. 2013) applies the pair terms of a word one after another, each step
seeing the last; a block of ``micro_batch`` centres sums them. For a row touched by m terms
(frequent words: many positions, many pairs, and shared negatives weighted negative·n/pool)
the summed step is m·lr·g, while m sequential steps on one logistic term of curvature h move
the row at most (1 − (1 − lr·h)^m)/h ≈ (1 − e^{−m·lr·h})/h: they saturate. Summing diverged
(dim 200, window 8, negative 10 on the Wikipedia sample: NaN in epoch 1).

The bound: a row r of the block steps by −lr·ψ(lr·H_r)·G_r, where G_r is its summed
gradient, H_r the curvature of its block loss along −G_r (Σ_t w_t σ'(s_t)(φ_t·G)²/‖G‖² over the
terms t touching r, with weight w_t, logit s_t and partner feature vector φ_t; summed over the
row's positions in the block) and ψ the fraction of the summed step taken: ψ(x) = min(1, 1/x)
(:func:`newton_clip`) under ``update="sequential"``, φ(x) = (1 − e^{−x})/x
(:func:`saturation`) under ``update="implicit"``. So

- when lr·H_r is small (rows seen once, rare words, early training with word2vec's tiny init,
  the end of the lr decay) ψ ≈ 1 and the step is word2vec's summed one, which is what sequential
  SGD does to first order in lr: as the lr decays, the update tends to word2vec's;
- when it is large, the step is (tends to) G_r/H_r: a Newton step on the row's block loss,
  which is where m sequential steps on m alike terms end up (the saturation above, H = m·h),
  and not past it: lr·ψ(lr·H)·H ≤ 1, so the step does not overshoot along its direction, for
  any window, number of negatives, dimension or corpus, with no per-setting constant. It is a
  closed-form approximation of the implicit (proximal) SGD step x⁺ = x − lr·∇L(x⁺), whose
  stability does not hinge on the step size (Toulis & Airoldi 2017, "Asymptotic and
  finite-sample properties of estimators based on stochastic gradients").

Why the clip and not φ for the sequential sweep: φ is the exact fraction for m sequential
steps on m *alike* terms, but a row's terms in a block have many partners, pointing in many
directions, and word2vec itself sums the negative + 1 terms of one pair into the input row
before applying them (gensim's ``neu1e``); φ already shortens steps that are far from
overshooting (φ(0.5) = 0.79). Measured against gensim on its Wikipedia sample (5 epochs,
3 seeds, the pool then negative × (window + 1)): at dim 100, window 10 × negative 15, SimLex
−0.036 and analogy −0.97 points under φ, −0.015 and −0.67 under the clip; at window
5 × negative 15, analogy −1.07 against −0.57; the clip was stable where φ was (dim 300,
window 10 × negative 15, three seeds).

That bound holds for one side of a pair with the other standing still. Every logit q·k is
moved by two rows, its input row q and its output row k, and for a positive pair both steps
raise it: two full steps taken at once from the same state add up to up to two Newton steps on
the same logits (measured: dim 100, window 10, negative 15 on the Wikipedia sample diverged
for one seed of three). Hence the two updates:

``update="sequential"`` (the default): the sides take their steps one after the other, as
word2vec's pair updates each see the previous ones. First every input row of the block takes
its bounded step against the output rows as they are; then the output rows' gradients and
curvatures are taken against the *moved* input rows (a second forward pass) and they take
theirs. This is one sweep of block-coordinate (Gauss–Seidel) descent over the two tables
(Bertsekas, "Nonlinear Programming", 2nd ed. 1999, §2.7; Wright 2015, "Coordinate descent
algorithms"), the alternation that ALS uses for matrix factorisation (Hu, Koren & Volinsky
2008): with the other table fixed, each side's block loss is a sum over its rows of logistic
losses of linear functions of the row (dot; for other scores, of its features), and its step is
the bounded one above; the logit change the input side made is in the output side's gradient
and curvature, so the two steps do not stack. Each side may so take a full step, ψ(lr·H), where
the simultaneous rule must halve it. word2vec interleaves the sides pair by pair; the sweep
interleaves them block by block, each seeing the other's latest state.

Two refinements make the per-side bound follow the step actually taken, not only the
quadratic model at the current point (with σ' at the current logits and per-position
directions, the full step diverged: dim 300, window 10, negative 15, seed 1 of 3, epoch 2):

- the direction is the word's whole gradient G_w (its positions' gradients summed, what its one
  row moves by), and H the curvature of the row's block loss along G_w (:func:`word_sums`);
- each term's σ'(s_t) is replaced by its mean over the move of its logit under the model's
  step, s_t → s_t − a₀·v_t (v_t = φ_t·G_w, a₀ = lr·ψ(lr·H₀) the step with σ' at the current
  logits): the secant (σ(s_t − a₀v_t) − σ(s_t))/(−a₀v_t) (:func:`sigmoid_prime_secant`). Then
  a₀·H is the exact change of the row's directional derivative over [0, a₀], where the
  quadratic model's H₀ extrapolates it from the start. σ' is small for saturated terms (a
  misclassified negative at s ≫ 0: gradient ≈ φ_t, curvature ≈ 0), and a frequent word's many
  saturated terms made the model's step far too long: on the way their logits cross into the
  region of curvature up to 1/4, which the secant sees. The step lr·ψ(lr·H) is one fixed-point
  iteration, started from α = a₀, of α = lr·ψ(lr·H̄(α)): the bound above with H̄(α) the mean
  curvature over the step itself (as in the implicit step x⁺ = x − lr·∇L(x⁺)). It is not a
  proof of descent: the maximum of σ' over the move (1/4 where it crosses 0; a
  majorise–minimise step, which cannot raise the side's block loss) was stable too but
  measured too damped (dim 100, window 10 × negative 15: SimLex 0.167 against gensim's 0.211,
  analogy −1.05 points), and Böhning & Lindsay's (1988) global bound 1/4 far too damped
  (WS353 0.24 against 0.36).

Cost: two curvature passes per side (elementwise) and 10 batched matmuls per block, as
``update="implicit"`` (the plain sum: 6): the forward pass, each side's gradient and each side's
products v = u·φ_t of its words' directions with their partners. The output side needs no
second forward pass: a word's input row moves by −a·u, so each logit of its positions moves by
exactly −a·v, the products its curvature already formed (:func:`jaxemb.sgns_dot.
sequential_dot_update`, the dot score, where the positive pairs' two row gradients are
shifted elementwise passes instead of matmuls: 8 matmuls; a score with parameters, or a mesh,
takes the general path of :func:`jaxemb.sgns.sequential_update_general`, with a second forward
pass: 12).

``update="implicit"``: both sides at once from the same state, each bounded at φ(2·lr·H)
(:data:`SIDES`: half a Newton step per side, so that their sum stays within one). It never
diverged, but the halving also shrinks the steps of rows that sequential SGD would not damp,
and it lost quality at wide windows: on the Wikipedia sample (dim 100, 5 epochs, 3 seeds),
window 10 × negative 15, WS353 0.316 against gensim's 0.369, SimLex 0.134 against 0.211
(``update="sequential"``, in a later run of the grid: 0.377 and 0.176 against gensim's 0.377
and 0.201).

An absurd lr can still diverge under either (the bound holds for the quadratic model of each
block); training then stops with an error that says so. ``update="sum"`` keeps the plain summed
step (word2vec's gradient, no bound), for comparison; ``update="damped"`` the count-damped sum
(:func:`damped_gradients`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb.sgns_data import window_offsets

Array = jax.Array


def saturation(x: Array) -> Array:
    """φ(x) = (1 − e^{−x})/x for x ≥ 0, φ(0) = 1: the fraction of the summed step that
    sequential steps with total curvature x (in units of lr) take."""
    small = x < 1e-4
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 - x / 2, -jnp.expm1(-safe) / safe)


# update="implicit": each logit q·k is moved by two rows at once, its input row and its output
# row, each bounded as if the other stood still: each side takes at most half its Newton step,
# so that the joint step stays within one (with a full step per side, dim 100, window 10,
# negative 15 on the Wikipedia sample diverged for one seed of three). update="sequential"
# takes the sides in turn and passes sides=1.
SIDES = 2.0


def row_step_scale(ids: Array, h: Array, lr: Array, vocab_size: int,
                   sides: float | None = None) -> Array:
    """[r] φ(sides·lr·H) per position, H the curvature ``h`` [r] summed over positions of the
    same id (a word's positions share one row, so one scale); ``sides`` None: :data:`SIDES`."""
    H = jnp.zeros((vocab_size,), jnp.float32).at[ids].add(h)
    return saturation((SIDES if sides is None else sides) * lr * H[ids])


def word_segments(ids: Array, vocab_size: int) -> Array:
    """[n] int: for each position, the last position holding the same id, a segment id in
    [0, n) shared by exactly the positions of one word (one [V] int index written at the n ids
    and read back: no sort, no [V] float buffer)."""
    n = ids.shape[0]
    last = jnp.zeros((vocab_size,), jnp.int32).at[ids].max(jnp.arange(n, dtype=jnp.int32))
    return last[ids]


def word_sums(seg: Array, x: Array) -> Array:
    """[n, ...] per position, the sum of ``x`` [n, ...] over the positions of the same word
    (``seg``: :func:`word_segments`): a word's whole gradient, the direction its one row moves
    in, or its whole curvature (a segment sum over the n positions; no [V, d] buffer)."""
    return jax.ops.segment_sum(x, seg, num_segments=seg.shape[0])[seg]


def sigmoid_prime_secant(s: Array, ds: Array, sig: Array | None = None) -> Array:
    """The mean of σ'(x) = σ(x)σ(−x) over x from s to s + ds: (σ(s + ds) − σ(s))/ds, σ'(s)
    where ds ≈ 0; ``sig``: σ(s) if already computed."""
    sig = jax.nn.sigmoid(s) if sig is None else sig
    small = jnp.abs(ds) < 1e-4
    safe = jnp.where(small, 1.0, ds)
    return jnp.where(small, sig * (1.0 - sig), (jax.nn.sigmoid(s + safe) - sig) / safe)


def log_sigmoid_of(s: Array, sig: Array, sign: float) -> Array:
    """log σ(sign·s) from sig = σ(s) with one log (jax.nn.log_sigmoid costs an exp and a log1p
    more): log σ(s) = log sig, = s where sig underflows; log σ(−s) = log(1 − sig) for s ≤ 0,
    −s + log sig for s > 0 (each log of a number in [½, 1] or of an accurate σ, so the error
    is float rounding)."""
    if sign > 0:
        return jnp.where(s < -80.0, s, jnp.log(jnp.maximum(sig, 1e-37)))
    return jnp.where(s > 0, -s, 0.0) + jnp.log(jnp.where(s > 0, sig, 1.0 - sig))


def newton_clip(x: Array) -> Array:
    """min(1, 1/x) for x ≥ 0: the fraction of the summed step that ``update="sequential"``
    takes, x = lr·H: the whole summed step where it stays within the Newton step along its
    direction (lr·H ≤ 1), else the Newton step G/H."""
    return 1.0 / jnp.maximum(x, 1.0)


def side_scale(seg: Array, v_terms, logits, sigs, weights, reduce, spread, uu: Array,
               lr: Array) -> Array:
    """[n] min(1, 1/(lr·H)) (:func:`newton_clip`) per position of one side, in two passes: H₀,
    with σ' at the current logits, gives the step a₀ = lr·min(1, 1/(lr·H₀)) along −u; H takes
    each term's σ' as its mean over the logit's move to there, s → s − a₀·v
    (:func:`sigmoid_prime_secant`), so that H·a₀ is the exact change of the directional
    derivative over that move.

    seg: [n] :func:`word_segments` (a word's positions share one row, so one scale: H sums
    over them); v_terms: per family of terms (positive tiles, negatives), u·φ_t laid out like
    its logits ``logits`` (σ of them: ``sigs``); weights: w_t (pair mask, negative weight);
    ``reduce`` sums per-term values into positions [n], ``spread`` lays per-position steps [n]
    out like the terms; uu: [n] ‖u‖², u each position's direction (its word's whole
    gradient)."""
    def curvature(sps):
        h = word_sums(seg, reduce([w * sp * v * v for v, sp, w in zip(v_terms, sps, weights,
                                                                       strict=True)]))
        return jnp.where(uu > 0, h / jnp.maximum(uu, 1e-30), 0.0)

    h0 = curvature([sg * (1.0 - sg) for sg in sigs])
    moves = spread(lr * newton_clip(lr * h0))
    h = curvature([sigmoid_prime_secant(s, -a * v, sg)
                   for v, s, sg, a in zip(v_terms, logits, sigs, moves, strict=True)])
    return newton_clip(lr * h)


def tiles(x: Array, w: int, T: int) -> Array:
    """[b + 2w, ...] rows with w rows of margin → [b/T, T + 2w, ...]: tile t holds rows
    tT .. tT+T+2w−1 (all the window positions of its T centres). A gather at a constant index:
    as a concatenation, XLA fused into the elementwise passes recomputed it per term with
    index arithmetic (measured: 9 % of a block at window 10, negative 15)."""
    n = (x.shape[0] - 2 * w) // T
    return x[np.arange(n)[:, None] * T + np.arange(T + 2 * w)[None, :]]


def band_selector(T: int, w: int) -> np.ndarray:
    """[T, 2w, T+2w] one-hot: centre i of a tile, slot (offset o) → column i + w + o of the
    tile's keys."""
    sel = np.zeros((T, 2 * w, T + 2 * w), np.float32)
    for i in range(T):
        for s, o in enumerate(window_offsets(w)):
            sel[i, s, i + w + o] = 1.0
    return sel


def positive_logits(q: Array, k: Array, w: int, T: int) -> Array:
    """Scores of every centre against the keys of its tile: [b/T, T, T+2w].

    q: [b, f] centres; k: [b + 2w, f] keys with w rows of margin either side. Centre i of tile
    t meets keys tT .. tT+T+2w−1, which hold all its window positions. A banded score matrix
    computed as a batched matmul (2.6× the needed dot products at T = 16, w = 5, but matmuls,
    forward and backward, instead of ten shifted elementwise products whose gradient XLA
    evaluates with slow padded index arithmetic on CPU).
    """
    b, f = q.shape
    return jnp.einsum("tif,tjf->tij", q.reshape(b // T, T, f), tiles(k, w, T))


def untile_add(t: Array, w: int, T: int) -> Array:
    """The transpose of :func:`tiles`: [b/T, T + 2w, ...] overlap-added back to [b + 2w, ...]
    (tile t's first T rows are rows tT.., its last 2w the next tile's first; pads, no
    scatter)."""
    n, rest = t.shape[0], t.shape[2:]
    zeros = [(0, 0)] * len(rest)
    y = (jnp.pad(t[:, :T], [(0, 1), (0, 0), *zeros])
         + jnp.pad(t[:, T:], [(1, 0), (0, T - 2 * w), *zeros]))
    return y.reshape((n + 1) * T, *rest)[:n * T + 2 * w]


def input_curvature(terms, g_in: Array, w: int, T: int) -> Array:
    """[b + 2w] the input (centre) side of :func:`block_curvature`: Σ_j σ'(s_ij)(φ_j·G_i)²/‖G_i‖²
    over each centre's contexts and negatives, zero on the margins and where G = 0."""
    q, k, k_neg, pos, neg, band, weight = map(jax.lax.stop_gradient, terms)
    g_in = jax.lax.stop_gradient(g_in)
    b = q.shape[0]
    sp = band * jax.nn.sigmoid(pos) * jax.nn.sigmoid(-pos)  # [b/T, T, T+2w]
    sn = weight * jax.nn.sigmoid(neg) * jax.nn.sigmoid(-neg)  # [b/g, g, pool]
    gc = g_in[w:w + b]  # the centres' gradients [b, f]
    gct, gcg = gc.reshape(pos.shape[:2] + (-1,)), gc.reshape(neg.shape[:2] + (-1,))
    h_c = (jnp.einsum("tij,tij->ti", sp, jnp.einsum("tif,tjf->tij", gct, tiles(k, w, T)) ** 2)
           .reshape(b)
           + jnp.einsum("gis,gis->gi", sn, jnp.einsum("gif,gsf->gis", gcg, k_neg) ** 2)
           .reshape(b))
    return _along(jnp.pad(h_c, (w, w)), g_in)


def output_curvature(terms, g_out: Array, g_neg: Array, w: int, T: int):
    """(h_out [b + 2w], h_neg [b/g, pool]): the output side of :func:`block_curvature`,
    Σ_i σ'(s_ij)(q_i·G_j)²/‖G_j‖² over the centres that meet each context or negative."""
    q, k, k_neg, pos, neg, band, weight = map(jax.lax.stop_gradient, terms)
    g_out, g_neg = map(jax.lax.stop_gradient, (g_out, g_neg))
    sp = band * jax.nn.sigmoid(pos) * jax.nn.sigmoid(-pos)
    sn = weight * jax.nn.sigmoid(neg) * jax.nn.sigmoid(-neg)
    qt, qg = q.reshape(pos.shape[:2] + (-1,)), q.reshape(neg.shape[:2] + (-1,))
    h_out = untile_add(jnp.einsum("tij,tij->tj", sp, jnp.einsum(
        "tif,tjf->tij", qt, tiles(g_out, w, T)) ** 2), w, T)
    h_neg = jnp.einsum("gis,gis->gs", sn, jnp.einsum("gif,gsf->gis", qg, g_neg) ** 2)
    return _along(h_out, g_out), _along(h_neg, g_neg)


def _along(h: Array, g: Array) -> Array:
    """GᵀHG/‖G‖² from GᵀHG, 0 where G = 0."""
    gg = jnp.sum(g * g, -1)
    return jnp.where(gg > 0, h / jnp.maximum(gg, 1e-30), 0.0)


def block_curvature(terms, grads, w: int, T: int):
    """Per position, the curvature of the block loss along that row's own gradient G,
    GᵀHG/‖G‖² with H = Σ_t w_t σ'(s_t) φ_t φ_tᵀ the Hessian of the row's terms t (feature space;
    σ' = σ(s)σ(−s)): the curvature that the step along −G meets. (The trace of H bounds it but
    counts every direction; the terms of one row point in many directions, and the trace
    halved the steps of rows seen once.) 0 where G = 0.

    terms: (q [b, f] centre features, k [b + 2w, f] context features, k_neg [b/g, pool, f],
    pos [b/T, T, T + 2w] and neg [b/g, g, pool] logits, band: pos's pair mask, weight
    [b/g, g, 1] negative weights) of :func:`jaxemb.sgns.block_loss_terms`; grads: the row
    gradients (score, in [b + 2w, d], out [b + 2w, d], neg [b/g, pool, d]), d = f.
    Returns (h_in [b + 2w], zero on the margins; h_out [b + 2w]; h_neg [b/g, pool]).
    """
    _, g_in, g_out, g_neg = grads
    return (input_curvature(terms, g_in, w, T), *output_curvature(terms, g_out, g_neg, w, T))


def input_side(k_tiles: Array, k_neg: Array, logits, sigs, band: Array, weight: Array,
               seg: Array, u: Array, lr: Array):
    """(ψ(lr·H) [b], v_pos, v_neg) of the block's b centres (input rows) for
    ``update="sequential"``: H the curvature of each word's block loss along its whole gradient
    u [b, d] (:func:`word_sums` over ``seg``, the centres' :func:`word_segments`), bounded over
    the step (:func:`side_scale`); v = u·k, laid out like the logits (pos [b/T, T, T + 2w],
    neg [b/g, g, pool], σ of them ``sigs``), so a step −a·u moves them by −a·v.

    k_tiles: [b/T, T + 2w, f] the context features in tiles (:func:`tiles`); k_neg:
    [b/g, pool, f]; band, weight: the terms' weights (pair mask laid out like pos;
    [b/g, g, 1])."""
    pos, neg = logits
    b = u.shape[0]
    v_pos = jnp.einsum("tif,tjf->tij", u.reshape(pos.shape[:2] + (-1,)), k_tiles)
    v_neg = jnp.einsum("gif,gsf->gis", u.reshape(neg.shape[:2] + (-1,)), k_neg)

    def reduce(xs):
        return jnp.sum(xs[0], -1).reshape(b) + jnp.sum(xs[1], -1).reshape(b)

    def spread(a):
        return a.reshape(pos.shape[:2] + (1,)), a.reshape(neg.shape[:2] + (1,))

    scale = side_scale(seg, (v_pos, v_neg), logits, sigs, (band, weight), reduce, spread,
                       jnp.sum(u * u, -1), lr)
    return scale, v_pos, v_neg


def output_side(q: Array, logits, sigs, band: Array, weight: Array, seg: Array, u: Array,
                lr: Array, w: int, T: int) -> Array:
    """[b + 2w + b/g·pool] ψ(lr·H) of each output position (contexts, then negatives) for
    ``update="sequential"``, as :func:`input_side`: q [b, f] the centres' features, u the
    output positions' word gradients (``seg``: their :func:`word_segments`)."""
    pos, neg = logits
    n_out = seg.shape[0] - neg.shape[0] * neg.shape[2]
    u_out, u_neg = u[:n_out], u[n_out:].reshape(neg.shape[0], neg.shape[2], -1)
    v_pos = jnp.einsum("tif,tjf->tij", q.reshape(pos.shape[:2] + (-1,)), tiles(u_out, w, T))
    v_neg = jnp.einsum("gif,gsf->gis", q.reshape(neg.shape[:2] + (-1,)), u_neg)

    def reduce(xs):
        return jnp.concatenate([untile_add(jnp.sum(xs[0], 1), w, T),
                                jnp.sum(xs[1], 1).reshape(-1)])

    def spread(a):
        return (tiles(a[:n_out], w, T)[:, None, :],
                a[n_out:].reshape(neg.shape[0], 1, neg.shape[2]))

    return side_scale(seg, (v_pos, v_neg), logits, sigs, (band, weight), reduce, spread,
                      jnp.sum(u * u, -1), lr)


DAMP_ALPHA = 0.3  # update="damped": a row repeated c times in a block moves c^-0.3 of its sum


def damped_gradients(grads, ids: Array, neg_ids: Array, vocab_size: int):
    """``update="damped"``: each row's gradients divided by c^DAMP_ALPHA, c the number of times
    its id occurs among the block's input positions (``ids``) or among its output positions and
    negatives (one count for the out table). The exponent was chosen at gensim's default
    setting on the Wikipedia sample (15 epochs: WS353 0.49 vs 0.32 for the plain sum, one seed);
    it is not a bound, and it diverged at dim 200, window 8, negative 10 (``update="implicit"``
    does not)."""
    g_sp, g_in, g_out, g_neg = grads

    def scale(x):
        counts = jnp.zeros((vocab_size,), jnp.float32).at[x].add(1.0)
        return counts[x] ** -DAMP_ALPHA

    out_ids = jnp.concatenate([ids, neg_ids.reshape(-1)])
    s_out = scale(out_ids)
    b = ids.shape[0]
    return (g_sp, g_in * scale(ids)[:, None], g_out * s_out[:b, None],
            g_neg * s_out[b:].reshape(neg_ids.shape)[..., None])


def sparse_sgd_update(params: dict, ids: Array, neg_ids: Array, grads, lr: Array,
                      curvature=None, score_lr_scale: Array | float = 1.0) -> dict:
    """``update="implicit"``: each touched row moves by −lr·φ(2·lr·H)·(its summed gradient)
    (module docstring; ``update="sequential"`` is :func:`jaxemb.sgns.sequential_update`);
    ``curvature`` None: by −lr·(its summed gradient), word2vec's plain summed update. Score
    parameters take plain SGD at lr·score_lr_scale (``train_call`` passes 1/pairs).

    ids: [b + 2w] the block's positions; neg_ids: [b/g, pool]; grads: (score, in [b + 2w, d],
    out [b + 2w, d], neg [b/g, pool, d]); curvature: (h_in, h_out, h_neg) of
    :func:`block_curvature`.
    """
    g_sp, g_in, g_out, g_neg = grads
    V, d = params["in"].shape
    out_ids = jnp.concatenate([ids, neg_ids.reshape(-1)])
    g_outs = jnp.concatenate([g_out, g_neg.reshape(-1, d)])
    if curvature is not None:
        h_in, h_out, h_neg = curvature
        g_in = g_in * row_step_scale(ids, h_in, lr, V)[:, None]
        g_outs = g_outs * row_step_scale(
            out_ids, jnp.concatenate([h_out, h_neg.reshape(-1)]), lr, V)[:, None]
    table_in = params["in"].at[ids].add(-lr * g_in)
    # One scatter for context and negative rows: two in a row made XLA copy the whole table.
    table_out = params["out"].at[out_ids].add(-lr * g_outs)
    score = jax.tree.map(lambda p, g: p - lr * score_lr_scale * g, params["score"], g_sp)
    return {"in": table_in, "out": table_out, "score": score}
