"""One learnable score: the parameters of every score and the feature maps they define.

A score of ``jaxemb.scoring`` is a pair of feature maps that take parameters (t, W, w, A, B).
:class:`LearnedScore` is the one Flax module that owns those parameters — for SGNS, the user–item
models and attention alike — and hands back the maps applied to arrays::

    s = LearnedScore("bilinear", dim=d)          # W [d, d], initialised at I
    qf, kf = s.apply(v, q, k)                    # q, k [..., d] -> [..., f]; logit = qf · kf

:data:`REGISTRY` is the one table of score names and their parameters; the attention scores
(``jaxemb.attention.ATTENTION_SCORES``) and the scores SGNS accepts are read from it.

==================  ==========================================  ================================
score               parameters (``heads`` H: per head)          init
==================  ==========================================  ================================
dot, scaled_dot     —
cosine              ``log_t`` [] or [H]                         log ``temperature``
bilinear            ``W`` [d, d]; with heads [H·d, H·d]         I (starts as dot)
head_bilinear       ``W`` [H, d, d] (heads only)                I per head
diag_bilinear       ``w`` [d] or [H, d]                         ones (starts as dot)
lowrank_bilinear    ``A``, ``B`` [d, r] or [H, d, r]            LeCun normal (as W_Q, W_K)
neg_sq_euclidean    —
qk_layernorm        ``query_ln``/``key_ln`` LayerNorm gains [d]   ones (flax's normalize_qk)
raw                 — (attention without W_Q, W_K)
tied_qk             — (attention with one projection W_Q = W_K)
==================  ==========================================  ================================

``bias=True`` adds a scalar ``b`` (zeros) to every logit (:meth:`LearnedScore.offset`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import scoring
from jaxemb.scoring import Score, ScoreError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter of a score: ``shape(module)``, ``init(module)`` (a flax initialiser) and
    ``to_arg(module, value)``, the argument the pure score takes (e.g. t = exp(log t))."""

    name: str
    shape: Callable[[LearnedScore], tuple[int, ...]]
    init: Callable[[LearnedScore], Callable]
    to_arg: Callable[[LearnedScore, Array], Array] = lambda m, x: x


@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """A score name, its pure feature maps (``maps``) and its parameters.

    ``pair``: a score of one pair of vectors (SGNS, the user–item models); False: an attention
    variant that needs heads or projections. ``attention``: one of the attention scores.
    ``mix_heads``: with heads, the maps act on all heads concatenated (else head by head).
    ``layernorm``: q and k pass a LayerNorm first. ``project``: attention projects its inputs
    with W_Q, W_K (False: the raw control). ``attention_scale``: attention divides φ_q by
    √d_head (scaled_dot does so itself; cosine has its temperature instead).
    """

    name: str
    maps: Score
    params: tuple[ParamSpec, ...] = ()
    pair: bool = True
    attention: bool = False
    mix_heads: bool = False
    layernorm: bool = False
    project: bool = True
    tie_qk: bool = False
    attention_scale: bool = False


def _per_head(m: LearnedScore, *shape: int) -> tuple[int, ...]:
    return shape if m.heads is None else (m.heads, *shape)


def _eye(key, shape, dtype=None):
    """[..., d, d] identities: a bilinear score at W = I is the dot product."""
    del key
    return jnp.broadcast_to(jnp.eye(shape[-1], dtype=dtype), shape)


def _temperature(m: LearnedScore, log_t: Array) -> Array:
    # A learned log-temperature keeps t > 0 and makes its updates multiplicative; without t a
    # cosine logit lies in [-1, 1] and cannot express a confident sigmoid or softmax (SigLIP,
    # Zhai et al. 2023). The optional clamp is Swin v2's (Liu et al. 2022, §3.2: t <= 100).
    if m.max_temperature is not None:
        log_t = jnp.minimum(log_t, math.log(m.max_temperature))
    t = jnp.exp(log_t)
    return t if m.learn_temperature else jax.lax.stop_gradient(t)


_LOG_T = ParamSpec("log_t", lambda m: _per_head(m),
                   lambda m: nn.initializers.constant(np.log(m.temperature)), _temperature)
_W = ParamSpec("W", lambda m: (m.width, m.width), lambda m: _eye)
_W_HEAD = ParamSpec("W", lambda m: (m.heads, m.dim, m.dim), lambda m: _eye)
_w = ParamSpec("w", lambda m: _per_head(m, m.dim), lambda m: nn.initializers.ones)
def _lecun(m: LearnedScore) -> Callable:
    """A and B start random, like the projections W_Q, W_K whose product a low-rank score is
    (no rank-r matrix is I): LeCun normal, untruncated (truncation only costs compile time),
    fan-in d per head."""
    return nn.initializers.variance_scaling(1.0, "fan_in", "normal",
                                            batch_axis=() if m.heads is None else (0,))


_A = ParamSpec("A", lambda m: _per_head(m, m.dim, m.rank or m.dim), _lecun)
_B = ParamSpec("B", lambda m: _per_head(m, m.dim, m.rank or m.dim), _lecun)

REGISTRY: dict[str, ScoreSpec] = {s.name: s for s in (
    ScoreSpec("dot", scoring.dot),
    ScoreSpec("scaled_dot", scoring.scaled_dot, attention=True),
    ScoreSpec("cosine", scoring.cosine, (_LOG_T,), attention=True),
    ScoreSpec("bilinear", scoring.bilinear, (_W,), attention=True, mix_heads=True,
              attention_scale=True),
    ScoreSpec("head_bilinear", scoring.bilinear, (_W_HEAD,), pair=False, attention=True,
              attention_scale=True),
    ScoreSpec("diag_bilinear", scoring.diag_bilinear, (_w,)),
    ScoreSpec("lowrank_bilinear", scoring.lowrank_bilinear, (_A, _B)),
    ScoreSpec("neg_sq_euclidean", scoring.neg_sq_euclidean, attention=True, attention_scale=True),
    # Dehghani et al. 2023: LayerNorm on q and k bounds the logits (flax's normalize_qk).
    ScoreSpec("qk_layernorm", scoring.scaled_dot, pair=False, attention=True, layernorm=True),
    # The control without W_Q, W_K: relevance = similarity of the inputs themselves.
    ScoreSpec("raw", scoring.scaled_dot, pair=False, attention=True, project=False),
    # The learned but symmetric control: W_Q = W_K, so score(x_i, x_j) = (x_i W)·(x_j W) / √d
    # = score(x_j, x_i). A learned relevance that cannot be one-way within one layer.
    ScoreSpec("tied_qk", scoring.scaled_dot, pair=False, attention=True, tie_qk=True),
)}


def spec(name: str) -> ScoreSpec:
    """The registry entry of ``name``; ScoreError naming the closest one if unknown."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name), REGISTRY, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ScoreError(f"unknown score {name!r}{hint} Known scores: {', '.join(REGISTRY)}")


def names(*, pair: bool | None = None, attention: bool | None = None) -> tuple[str, ...]:
    """Registered names (in registry order) with these flags."""
    return tuple(n for n, s in REGISTRY.items()
                 if (pair is None or s.pair == pair)
                 and (attention is None or s.attention == attention))


def _rows(f: Callable, x: Array, args: tuple) -> Array:
    """``f(row [d], *args) -> [f]`` over x [..., d] → [..., f] (vmap over the flattened rows)."""
    y = jax.vmap(lambda r: f(r, *args))(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], -1)


def _heads(f: Callable, x: Array, args: tuple) -> Array:
    """``f`` on each head of x [..., H, d] → [..., H, f]; args with a leading H axis."""
    if not args:
        return _rows(f, x, ())
    H, d = x.shape[-2:]
    rows = x.reshape(-1, H, d)
    per_head = jax.vmap(lambda X, *a: jax.vmap(lambda r: f(r, *a))(X),
                        in_axes=(1,) + (0,) * len(args), out_axes=1)
    return per_head(rows, *args).reshape(*x.shape[:-1], -1)


def _mixed(f: Callable, x: Array, args: tuple) -> Array:
    """``f`` on all heads of x [..., H, d] concatenated ([..., H·d]), split again after."""
    H, d = x.shape[-2:]
    y = jax.vmap(lambda r: f(r, *args))(x.reshape(-1, H * d))
    return y.reshape(*x.shape[:-2], H, -1)


class LearnedScore(nn.Module):
    """The parameters of score ``score`` and its feature maps.

    ``dim``: d, the vectors' (or each head's) width. ``heads``: H, inputs are [..., H, d] and
    parameters per head (bilinear: one W over the H·d concatenated heads). ``rank``:
    lowrank_bilinear's r (default d). ``temperature``, ``learn_temperature``,
    ``max_temperature``: cosine's initial t, whether log t is learned, and a clamp on t.
    ``bias``: a learned scalar added to every logit. ``scale_queries``: divide φ_q by √d
    (attention's convention). ``dtype``: parameters are cast to it (None: as stored);
    ``param_dtype``: None keeps each initialiser's default dtype.
    """

    score: str
    dim: int
    heads: int | None = None
    rank: int | None = None
    temperature: float = 1.0
    learn_temperature: bool = True
    max_temperature: float | None = None
    bias: bool = False
    scale_queries: bool = False
    dtype: Any = None
    param_dtype: Any = None

    @property
    def spec(self) -> ScoreSpec:
        return spec(self.score)

    @property
    def width(self) -> int:
        """H·d, the width of all heads together (d without heads)."""
        return self.dim * (self.heads or 1)

    def setup(self):
        sp = self.spec
        if self.heads is None and not sp.pair and sp.params:
            raise ScoreError(f"score {self.score!r} has per-head parameters: give heads")
        dt = () if self.param_dtype is None else (self.param_dtype,)
        self.theta = {p.name: self.param(p.name, p.init(self), p.shape(self), *dt)
                      for p in sp.params}
        if sp.layernorm:
            ln = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype or
                      jnp.float32)
            self.query_ln, self.key_ln = nn.LayerNorm(**ln), nn.LayerNorm(**ln)
        if self.bias:
            self.b = self.param("b", nn.initializers.zeros, (), *dt)

    def args(self) -> tuple[Array, ...]:
        """The parameters as ``jaxemb.scoring``'s score takes them: (t,), (W,), (w,), (A, B)
        or (), so that ``scoring.get_score(spec.maps.name)(q, k, *args)`` is this score."""
        out = tuple(p.to_arg(self, self.theta[p.name]) for p in self.spec.params)
        return out if self.dtype is None else tuple(a.astype(self.dtype) for a in out)

    def _map(self, phi: Callable, x: Array) -> Array:
        if self.heads is None:
            return _rows(phi, x, self.args())
        return (_mixed if self.spec.mix_heads else _heads)(phi, x, self.args())

    def phi_q(self, q: Array) -> Array:
        """[..., d] (with heads [..., H, d]) → [..., f]: the query feature map."""
        if self.spec.layernorm:
            q = self.query_ln(q)
        f = self._map(self.spec.maps.phi_q, q)
        return f / math.sqrt(self.dim) if self.scale_queries else f

    def phi_k(self, k: Array) -> Array:
        """[..., d] (with heads [..., H, d]) → [..., f]: the key feature map."""
        if self.spec.layernorm:
            k = self.key_ln(k)
        return self._map(self.spec.maps.phi_k, k)

    def offset(self) -> Array | float:
        """The logit bias b ([]) if ``bias``, else 0.0."""
        return self.b if self.bias else 0.0

    def __call__(self, q: Array, k: Array) -> tuple[Array, Array]:
        """(φ_q(q), φ_k(k)): the logit of a pair is their dot product (plus :meth:`offset`)."""
        return self.phi_q(q), self.phi_k(k)
