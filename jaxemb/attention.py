"""Multi-head attention whose query–key score is any jaxemb score.

Every score is a dot product after feature maps (``jaxemb.scoring``), so attention with any of
them is: project, map q and k per head, then one call of ``jax.nn.dot_product_attention`` —
on a GPU the fused cuDNN kernel serves every score, not only the scaled dot.

==================  =================================================================
score               logit of query i and key j in head h (q, k: that head's projections)
==================  =================================================================
scaled_dot          q·k / sqrt(d_head)                               (Vaswani et al. 2017)
cosine              t_h cos(q, k), t_h = exp(min(log_t_h, log 100))  (Swin v2, Liu et al. 2022)
bilinear            (q_full W)_h · k / sqrt(d_head), W [width, width] on all heads' queries
head_bilinear       q W_h · k / sqrt(d_head), one W_h [d_head, d_head] per head
neg_sq_euclidean    −‖q − k‖² / sqrt(d_head)
qk_layernorm        LN(q)·LN(k) / sqrt(d_head)       (Dehghani et al. 2023, flax normalize_qk)
raw                 x_i·x_j / sqrt(d_head) on the inputs split into heads: no W_Q, W_K
tied_qk             (x_i W)·(x_j W) / sqrt(d_head), one projection W = W_Q = W_K: learned but
                    symmetric in the two tokens (the control for asymmetry)
==================  =================================================================

Both bilinear forms start at W = I, i.e. as the scaled dot. In exact arithmetic they add no
expressive power (``x W_Q W`` is another query projection); what they change is the
parametrisation and so the optimisation, which is what the study measures.

Parameters are named and shaped as in ``flax.linen.MultiHeadDotProductAttention`` (``query``,
``key``, ``value``: DenseGeneral kernels [D, H, d_head]; ``out``: [H, d_head, out]), so weights
copy across. The score's own parameters sit in the submodule ``score``, a
:class:`jaxemb.learned_score.LearnedScore`: ``score/log_t`` [H], ``score/W`` [width, width]
(bilinear) or [H, d_head, d_head] (head_bilinear), or ``score/query_ln``, ``score/key_ln``
(flax's LayerNorm gains; at flax's top level ``query_ln``/``key_ln``).
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import learned_score
from jaxemb.learned_score import LearnedScore

Array = jax.Array

# The attention scores, in the registry's order: scaled_dot, cosine, bilinear, head_bilinear,
# neg_sq_euclidean, qk_layernorm, raw, tied_qk.
ATTENTION_SCORES = learned_score.names(attention=True)
IMPLEMENTATIONS = (None, "xla", "cudnn")

# Cosine temperature as in Swin v2 (Liu et al. 2022, §3.2): a learned per-head log-scale
# initialised at log 10 and clamped at log 100. Without a temperature a cosine logit lies in
# [-1, 1], so the softmax over T keys is at most e²-fold peaked on one key: it cannot express a
# confident (near one-hot) attention pattern. The log parametrisation keeps t > 0 and makes its
# updates multiplicative.
COSINE_T_INIT, COSINE_T_MAX = 10.0, 100.0
COSINE_LOG_T_INIT = math.log(COSINE_T_INIT)
COSINE_LOG_T_MAX = math.log(COSINE_T_MAX)

# cuDNN's flash attention wants the head dimension to be a multiple of 8 (and ≤ 128/256);
# features that widen it (−‖q−k‖² adds 2) are zero-padded to the next multiple on that path.
CUDNN_HEAD_MULTIPLE = 8


class AttentionError(ValueError):
    """Attention was configured or called with inputs that do not fit it."""


def check_score(score: str) -> str:
    """``score`` if it is one of ATTENTION_SCORES, else AttentionError naming the closest."""
    if score in ATTENTION_SCORES:
        return score
    close = difflib.get_close_matches(str(score), ATTENTION_SCORES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise AttentionError(f"unknown attention score {score!r}{hint} "
                         f"Known: {', '.join(ATTENTION_SCORES)}")


def causal_mask(T: int) -> Array:
    """[1, 1, T, T] bool, True where key j ≤ query i (a decoder attends to the past only)."""
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise AttentionError(f"causal_mask: T must be a positive int, got {T!r}")
    return jnp.tril(jnp.ones((T, T), bool))[None, None]


def padding_mask(valid: Array, *, queries: bool = False) -> Array:
    """Mask from valid [B, T] bool (True = real token): [B, 1, 1, T] over keys, or with
    ``queries=True`` [B, 1, T, T], also masking padded query rows (they then attend uniformly
    to every key, since a softmax over all-masked logits is flat; their outputs mean nothing)."""
    if jnp.ndim(valid) != 2 or jnp.result_type(valid) != jnp.bool_:
        raise AttentionError(f"padding_mask: valid must be a [B, T] bool array (True = real "
                             f"token), got shape {jnp.shape(valid)} dtype {jnp.result_type(valid)}")
    keys = valid[:, None, None, :]
    if not queries:
        return keys
    return jnp.logical_and(valid[:, None, :, None], keys)


# --- attention from feature maps (the maps and their parameters: jaxemb.learned_score) -----

def explicit_attention(qf: Array, kf: Array, mask: Array | None, causal: bool
                       ) -> tuple[Array, Array]:
    """(logits, weights) [B, H, Tq, Tk] from features; masked logits at the dtype's minimum."""
    dtype = jnp.promote_types(qf.dtype, jnp.float32)
    logits = jnp.einsum("bqhf,bkhf->bhqk", qf, kf, preferred_element_type=dtype)
    keep = _combined_mask(mask, causal, logits.shape)
    if keep is not None:
        logits = jnp.where(keep, logits, jnp.finfo(dtype).min)
    return logits, jax.nn.softmax(logits, axis=-1)


def _combined_mask(mask: Array | None, causal: bool, shape: tuple[int, ...]) -> Array | None:
    if causal:
        # As jax.nn.dot_product_attention's is_causal: query i attends to keys j <= i.
        tri = jnp.tril(jnp.ones(shape[-2:], bool))[None, None]
        mask = tri if mask is None else jnp.logical_and(mask, tri)
    return mask


def pad_last(x: Array, size: int) -> Array:
    """Zero-pad the last axis of x to ``size`` (a no-op if it is already that size)."""
    extra = size - x.shape[-1]
    if extra == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def fused_head_dim(f: int, d_v: int, implementation: str | None) -> int:
    """Head dim the fused call runs at: q/k/v share it (jax requires v's shape to equal k's),
    rounded up to a multiple of 8 for cuDNN."""
    size = max(f, d_v)
    if implementation == "cudnn":
        size = -(-size // CUDNN_HEAD_MULTIPLE) * CUDNN_HEAD_MULTIPLE
    return size


# --- the module ------------------------------------------------------------------------------

class MultiHeadAttention(nn.Module):
    """Multi-head attention with a chosen query–key score: [B, Tq, D] (, [B, Tk, D_kv]) →
    [B, Tq, out_features].

    ``mask``: bool, rank 4, broadcastable to [B, H, Tq, Tk], True = attend. ``causal=True``
    adds the causal mask (query i attends to keys j ≤ i; passed to the fused kernel as
    ``is_causal`` so cuDNN can skip the masked blocks).
    """

    num_heads: int
    score: str = "scaled_dot"
    qkv_features: int | None = None
    out_features: int | None = None
    dropout_rate: float = 0.0
    implementation: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def __call__(self, inputs_q: Array, inputs_kv: Array | None = None, mask: Array | None = None,
                 deterministic: bool = True, *, causal: bool = False) -> Array:
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        dropout = not deterministic and self.dropout_rate > 0.0
        self._check(inputs_q, inputs_kv, mask)
        if dropout and not self.has_rng("dropout"):
            raise AttentionError("MultiHeadAttention: deterministic=False with dropout_rate "
                                 f"{self.dropout_rate} needs a 'dropout' rng: "
                                 "apply(..., rngs={'dropout': key})")
        return self._attend(inputs_q, inputs_kv, mask, causal, "dropout" if dropout else "fused")

    def weights(self, inputs_q: Array, inputs_kv: Array | None = None,
                mask: Array | None = None, *, causal: bool = False) -> tuple[Array, Array]:
        """Explicit path, for analysis: (logits [B, H, Tq, Tk] with masked entries at the
        dtype's minimum, softmax weights [B, H, Tq, Tk])."""
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        self._check(inputs_q, inputs_kv, mask)
        return self._attend(inputs_q, inputs_kv, mask, causal, "weights")

    @nn.compact
    def _attend(self, inputs_q, inputs_kv, mask, causal, mode):
        H, score = self.num_heads, self.score
        width = self.qkv_features or inputs_q.shape[-1]
        d = width // H
        dense = functools.partial(
            nn.DenseGeneral, features=(H, d), axis=-1, dtype=self.dtype,
            param_dtype=self.param_dtype, kernel_init=nn.initializers.lecun_normal())
        v = dense(name="value")(inputs_kv)
        spec = learned_score.spec(score)
        if not spec.project:
            # The control without W_Q, W_K: relevance = similarity of the inputs themselves.
            q = inputs_q.reshape(*inputs_q.shape[:2], H, d).astype(v.dtype)
            k = inputs_kv.reshape(*inputs_kv.shape[:2], H, d).astype(v.dtype)
        elif spec.tie_qk:
            # One module called twice: W_Q = W_K (and the biases) are the same parameters.
            query = dense(name="query")
            q, k = query(inputs_q), query(inputs_kv)
        else:
            q, k = dense(name="query")(inputs_q), dense(name="key")(inputs_kv)
        # The score's parameters (log_t [H], W, LayerNorm gains) live in the submodule "score";
        # its temperature and scale are folded into q, since cuDNN's scale is a static float.
        qf, kf = LearnedScore(
            score, d, heads=H, temperature=COSINE_T_INIT, max_temperature=COSINE_T_MAX,
            scale_queries=spec.attention_scale, dtype=q.dtype, param_dtype=self.param_dtype,
            name="score")(q, k)
        qf, kf = qf.astype(v.dtype), kf.astype(v.dtype)

        if mode == "weights":
            return explicit_attention(qf, kf, mask, causal)
        if mode == "dropout":
            # jax.nn.dot_product_attention has no dropout (the cuDNN kernel's is not exposed),
            # so training with attention dropout takes the explicit path: softmax, then drop
            # each weight independently with rate p and rescale by 1/(1-p).
            _, w = explicit_attention(qf, kf, mask, causal)
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout_rate,
                                        w.shape)
            w = jnp.where(keep, w / (1.0 - self.dropout_rate), 0.0).astype(v.dtype)
            x = jnp.einsum("bhqk,bkhd->bqhd", w, v)
        else:
            size = fused_head_dim(qf.shape[-1], d, self.implementation)
            x = jax.nn.dot_product_attention(
                pad_last(qf, size), pad_last(kf, size), pad_last(v, size), mask=mask,
                scale=1.0, is_causal=causal, implementation=self.implementation)
            x = x[..., :d]
        return nn.DenseGeneral(
            features=self.out_features or inputs_q.shape[-1], axis=(-2, -1), dtype=self.dtype,
            param_dtype=self.param_dtype, kernel_init=nn.initializers.lecun_normal(),
            name="out")(x)

    def _check(self, inputs_q, inputs_kv, mask) -> None:
        """Every bad configuration or input as an AttentionError, before any tracing."""
        name = f"MultiHeadAttention(score={self.score!r})"
        check_score(self.score)
        H = self.num_heads
        if isinstance(H, bool) or not isinstance(H, int | np.integer) or H < 1:
            raise AttentionError(f"{name}: num_heads must be a positive int, got {H!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise AttentionError(f"{name}: implementation must be one of {IMPLEMENTATIONS}, "
                                 f"got {self.implementation!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise AttentionError(f"{name}: dropout_rate must be in [0, 1), "
                                 f"got {self.dropout_rate}")
        for what, x in (("inputs_q", inputs_q), ("inputs_kv", inputs_kv)):
            if jnp.ndim(x) != 3:
                raise AttentionError(f"{name}: {what} must have shape [B, T, D], got shape "
                                     f"{jnp.shape(x)}")
            if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
                raise AttentionError(f"{name}: {what} must be floating point, got "
                                     f"{jnp.result_type(x)}")
        (B, Tq, D), (Bk, Tk, Dk) = inputs_q.shape, inputs_kv.shape
        if Bk != B:
            raise AttentionError(f"{name}: inputs_q has batch {B} but inputs_kv has {Bk}")
        for what, n in (("qkv_features", self.qkv_features), ("out_features", self.out_features)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer)
                                  or n < 1):
                raise AttentionError(f"{name}: {what} must be a positive int or None, got {n!r}")
        width = self.qkv_features or D
        if width % H:
            raise AttentionError(f"{name}: num_heads={H} does not divide the qkv width {width} "
                                 f"({'qkv_features' if self.qkv_features else 'input width'}); "
                                 f"use a divisor of {width}")
        if self.score == "tied_qk" and Dk != D:
            raise AttentionError(
                f"{name}: the tied_qk score projects queries and keys with one W_Q = W_K, so "
                f"the key/value input width must equal the query input width {D}; got {Dk}")
        if self.score == "raw" and (width != D or Dk != D):
            raise AttentionError(
                f"{name}: the raw score has no query/key projections, so qkv_features and the "
                f"key/value input width must equal the query input width {D}; got "
                f"qkv_features={self.qkv_features}, inputs_kv width {Dk}")
        if mask is not None:
            want = (B, H, Tq, Tk)
            if jnp.ndim(mask) != 4:
                raise AttentionError(f"{name}: mask must have rank 4 (broadcastable to [B, H, "
                                     f"Tq, Tk] = {list(want)}), got shape {jnp.shape(mask)}; "
                                     f"see causal_mask / padding_mask")
            if jnp.result_type(mask) != jnp.bool_:
                raise AttentionError(f"{name}: mask must be bool (True = attend), got dtype "
                                     f"{jnp.result_type(mask)}")
            if any(m not in (1, w) for m, w in zip(mask.shape, want, strict=True)):
                raise AttentionError(f"{name}: mask shape {tuple(mask.shape)} is not "
                                     f"broadcastable to [B, H, Tq, Tk] = {list(want)}")
