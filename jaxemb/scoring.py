"""Scores as dot products after feature maps.

Every score studied here is ``dot(phi_q(q, *params), phi_k(k, *params))``:

==================  ===========================  ========================
score               phi_q                        phi_k
==================  ===========================  ========================
dot                 q                            k
scaled_dot          q / sqrt(d)                  k
cosine              t * q / |q|                  k / |k|
bilinear            q W                          k
diag_bilinear       q * w                        k
lowrank_bilinear    q A                          k B
neg_sq_euclidean    [2q, -|q|^2, -1]             [k, 1, |k|^2]
mips                [q, 0]                       [k, sqrt(M^2 - |k|^2)]
==================  ===========================  ========================

``mips`` (maximum inner product search) has dot's value, ``q . k``, but every mapped key has
norm ``M`` (``M >= max |k|`` over the database, :func:`mips_norm`), so the key with the largest
dot product is the nearest neighbour and the best cosine of the mapped query (Bachrach et al.
2014, "Speeding up the Xbox recommender system using a Euclidean transformation for
inner-product spaces"; the same reduction as Shrivastava & Li 2014's ALSH with one coordinate).
An index built for nearest-neighbour or cosine search (:mod:`jaxemb.ivf`'s k-means lists) then
serves the dot score. It is not in :data:`SCORES` (the learnable scores): ``M`` is a property of
one database, not a parameter to learn.

So one definition serves a single pair (here), batches and all-pairs matrices (derived with
``jax.vmap`` in :func:`batched`, :func:`one_to_many`, :func:`pairwise`), fused attention (map q
and k, then call ``jax.nn.dot_product_attention``) and top-k search (map the database once, then
it is a matmul). Under ``vmap`` an unbatched operand stays unbatched, so ``pairwise`` maps each
query and each key once and then does a single ``dot_general``.

A score is called as ``score(q, k, *params, **options)``: ``q`` [d_q], ``k`` [d_k] → scalar.
Parameters are arrays (``W``, ``w``, ``A``, ``B``, the temperature ``t``) so they can be learned;
:class:`jaxemb.learned_score.LearnedScore` owns them for the models, through one registry.

Numbers (one rule, :func:`promote`): every feature map computes in float32 or wider. Inputs and
parameters of integer, bool, float16 or bfloat16 dtype are promoted to float32 (float64 stays
float64 under x64), so a parameter such as ``t`` is never cast to an integer; models fed bfloat16
activations map them in float32 too. Host integers are converted by numpy, before JAX sees them:
int64 values beyond 2**24 round to the nearest float32 rather than wrap at 2**31. Refused with a
:class:`ScoreError`: complex and non-numeric inputs, and float64 values beyond float32's range
when x64 is off. Promotion is a dtype decision at trace time: float32 inputs get no extra
operation. Cosine divides by the exact norm |x| of any finite nonzero vector, norms 1e-30 and
1e30 alike: where the sum of squares would over- or underflow, x is scaled by a power of two
before squaring (exact), elsewhere the plain formula runs as before (float32 results unchanged
bit for bit). The zero vector's norm is ``eps``: its cosine is 0, never NaN, in every dtype.
Gradients are the plain formula's, ``max(|x|, eps)``, unchanged. A score whose value or an
intermediate exceeds the compute dtype's range (dot of two 1e20 vectors, -|q-k|^2 with
|q|^2 > 3e38) comes out inf or NaN, never a wrong finite number; :mod:`jaxemb.search` refuses
such queries.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class ScoreError(ValueError):
    """A score was called with inputs that do not fit it (shapes, names)."""


def promote(x, name: str = "input", error: type[Exception] = ScoreError) -> Array:
    """``x`` as an array of a float dtype, float32 or wider (the module's rule).

    Host values (numpy, lists, scalars) are converted by numpy first, so int64 never wraps; JAX
    arrays and tracers only get a dtype decision. Complex, non-numeric and (x64 off) float64
    values beyond float32's range raise ``error`` naming ``name``.
    """
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
        if not (x.dtype.kind in "biuf" or jnp.issubdtype(x.dtype, jnp.floating)):
            raise error(f"{name} must hold real numbers, got dtype {x.dtype}")
        if x.dtype.kind in "biu" or x.dtype.itemsize < 4:
            x = x.astype(np.float32)  # rounds where int64 is beyond 2**24; never wraps
        elif x.dtype == np.float64 and not jax.config.jax_enable_x64 and x.size:
            big = np.max(np.abs(x), initial=0.0, where=np.isfinite(x))
            if big > np.finfo(np.float32).max:
                raise error(f"{name} holds values up to {big:.3g}, beyond float32's range "
                            f"(3.4e38); rescale them or enable x64")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating) and not jnp.issubdtype(dtype, jnp.integer) \
            and dtype != jnp.bool_:
        raise error(f"{name} must hold real numbers, got dtype {dtype}")
    want = jnp.promote_types(dtype, jnp.float32)
    return jnp.asarray(x) if want == dtype else jnp.asarray(x).astype(want)


def _feature_map(phi: Callable[..., Array]) -> Callable[..., Array]:
    """``phi(x, *params, **options)`` with x and every parameter promoted (:func:`promote`)."""
    @functools.wraps(phi)
    def mapped(x, *params, **options):
        return phi(promote(x), *(promote(p, "a parameter") for p in params), **options)
    return mapped


def _over_norm(a: Array, x: Array, eps: float) -> Array:
    """a / ‖x‖, the norm over the last axis (a, x [..., d]); a / eps for the zero vector x.

    Where ``Σx²`` is finite and at least eps² this is the plain ``a / sqrt(max(Σx², eps²))``, as
    it always was (float32 results bit for bit, eagerly and under jit). Elsewhere (1e20 or 1e-30
    vectors, whose Σx² over- or underflows) x is first scaled by a power of two s,
    ``a / sqrt(Σ(s x)²) * s``: exact scaling, so the value is right at any finite magnitude.
    The gradient is always the plain formula's (unchanged, finite everywhere: about 0 for huge
    vectors, ``a' / eps`` below eps), so training pays nothing for the scaled branch's backward.
    """
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    plain = a / jnp.sqrt(jnp.maximum(sq, eps * eps))

    def scaled(a, x):
        big = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
        _, e = jnp.frexp(big)
        # Clamped so that s and 1/s stay normal numbers (frexp of a subnormal or of inf).
        limit = jnp.finfo(x.dtype).maxexp - 8
        s = jnp.ldexp(jnp.ones_like(big), -jnp.clip(e, -limit, limit))
        sq_s = jnp.sum(jnp.square(x * s), axis=-1, keepdims=True)
        zero = sq_s == 0  # also a vector of subnormals flushed to zero
        return a / jnp.sqrt(jnp.where(zero, 1.0, sq_s)) * jnp.where(zero, 1.0 / eps, s)

    # The scaled value with the plain gradient: stop_gradient keeps its backward out of the graph.
    other = jax.lax.stop_gradient(scaled(a, x) - plain) + plain
    return jnp.where((sq >= eps * eps) & (sq < jnp.inf), plain, other)


def _require_vector(name: str, score: str, x: Array) -> None:
    if jnp.ndim(x) != 1:
        raise ScoreError(
            f"score {score!r}: {name} must be a single vector of shape [d], got shape "
            f"{jnp.shape(x)}; use batched/one_to_many/pairwise for several vectors"
        )


@dataclasses.dataclass(frozen=True)
class Score:
    """A similarity score defined by its pair of feature maps.

    ``phi_q(q [d_q], *params, **options) -> [f]`` and ``phi_k(k [d_k], *params, **options) -> [f]``;
    calling the score returns ``dot(phi_q(q), phi_k(k))``, a scalar.
    """

    name: str
    phi_q: Callable[..., Array]
    phi_k: Callable[..., Array]
    doc: str

    def __call__(self, q: Array, k: Array, *params: Array, **options) -> Array:
        _require_vector("q", self.name, q)
        _require_vector("k", self.name, k)
        q, k, params = _promote_all(self.name, q, k, params)
        fq = self.phi_q(q, *params, **options)
        fk = self.phi_k(k, *params, **options)
        if fq.shape != fk.shape:
            raise ScoreError(
                f"score {self.name!r}: q (dim {q.shape[0]}) and k (dim {k.shape[0]}) do not fit: "
                f"their feature maps have shapes {fq.shape} and {fk.shape}"
            )
        return jnp.dot(fq, fk)

    def map_queries(self, Q: Array, *params: Array, **options) -> Array:
        """[n, d] → [n, f]: phi_q over rows, derived with vmap."""
        _require_matrix("queries", self.name, Q)
        Q, params = promote(Q, f"score {self.name!r}: queries"), _promote_params(self.name, params)
        return jax.vmap(lambda q: self.phi_q(q, *params, **options))(Q)

    def map_keys(self, K: Array, *params: Array, **options) -> Array:
        """[m, d] → [m, f]: phi_k over rows, derived with vmap."""
        _require_matrix("keys", self.name, K)
        K, params = promote(K, f"score {self.name!r}: keys"), _promote_params(self.name, params)
        return jax.vmap(lambda k: self.phi_k(k, *params, **options))(K)

    def __repr__(self) -> str:
        return f"<score {self.name}: {self.doc}>"


def _promote_params(score: str, params: tuple) -> tuple[Array, ...]:
    return tuple(promote(p, f"score {score!r}: parameter {i}") for i, p in enumerate(params))


def _promote_all(score: str, q, k, params: tuple) -> tuple[Array, Array, tuple[Array, ...]]:
    """q, k and the parameters promoted (:func:`promote`), before any vmap sees them."""
    return (promote(q, f"score {score!r}: q"), promote(k, f"score {score!r}: k"),
            _promote_params(score, params))


def _require_matrix(name: str, score: str, X: Array) -> None:
    if jnp.ndim(X) != 2:
        raise ScoreError(
            f"score {score!r}: {name} must be a matrix of shape [n, d], got shape {jnp.shape(X)}"
        )




# --- feature maps ---------------------------------------------------------------------------

@_feature_map
def _identity(x: Array) -> Array:
    return x


@_feature_map
def _scaled(q: Array) -> Array:
    # Vaswani et al. 2017: dividing by sqrt(d) keeps logits O(1) for unit-variance inputs.
    return q / math.sqrt(q.shape[-1])


@_feature_map
def _cosine_q(q: Array, t: Array | float = 1.0, *, eps: float = 1e-8) -> Array:
    # The temperature t lives on the query side so the key map stays parameter-free (a database
    # is mapped once whatever t is). Without t a cosine logit is stuck in [-1, 1] and cannot
    # express a confident sigmoid/softmax (SigLIP, Zhai et al. 2023; Swin v2, Liu et al. 2022).
    return _over_norm(jnp.asarray(t, q.dtype) * q, q, eps)


@_feature_map
def _cosine_k(k: Array, t: Array | float = 1.0, *, eps: float = 1e-8) -> Array:
    del t
    return _over_norm(k, k, eps)


@_feature_map
def _bilinear_q(q: Array, W: Array) -> Array:
    if W.ndim != 2 or W.shape[0] != q.shape[0]:
        raise ScoreError(f"score 'bilinear': W must have shape [d_q={q.shape[0]}, d_k], "
                         f"got {W.shape}")
    return q @ W


@_feature_map
def _bilinear_k(k: Array, W: Array) -> Array:
    if W.shape[-1] != k.shape[0]:
        raise ScoreError(f"score 'bilinear': W has shape {W.shape} but k has dim {k.shape[0]}")
    return k


@_feature_map
def _diag_q(q: Array, w: Array) -> Array:
    if jnp.shape(w) != q.shape:
        raise ScoreError(f"score 'diag_bilinear': w must have shape {q.shape} (one weight per "
                         f"dimension), got {jnp.shape(w)}")
    return q * w


@_feature_map
def _diag_k(k: Array, w: Array) -> Array:
    del w
    return k


@_feature_map
def _lowrank_q(q: Array, A: Array, B: Array) -> Array:
    if A.ndim != 2 or A.shape[0] != q.shape[0]:
        raise ScoreError(f"score 'lowrank_bilinear': A must have shape [d_q={q.shape[0]}, r], "
                         f"got {A.shape}")
    return q @ A


@_feature_map
def _lowrank_k(k: Array, A: Array, B: Array) -> Array:
    if B.ndim != 2 or B.shape != (k.shape[0], A.shape[-1]):
        raise ScoreError(f"score 'lowrank_bilinear': B must have shape [d_k={k.shape[0]}, "
                         f"r={A.shape[-1]}], got {B.shape}")
    return k @ B


@_feature_map
def _neg_sq_q(q: Array) -> Array:
    # -|q-k|^2 = 2 q.k - |q|^2 - |k|^2 = [2q, -|q|^2, -1] . [k, 1, |k|^2]
    one = jnp.ones((1,), q.dtype)
    return jnp.concatenate([2.0 * q, -jnp.sum(q * q, keepdims=True), -one])


@_feature_map
def _neg_sq_k(k: Array) -> Array:
    one = jnp.ones((1,), k.dtype)
    return jnp.concatenate([k, one, jnp.sum(k * k, keepdims=True)])


@_feature_map
def _mips_q(q: Array, M: Array | float = 1.0) -> Array:
    del M
    return jnp.concatenate([q, jnp.zeros((1,), q.dtype)])


@_feature_map
def _mips_k(k: Array, M: Array | float = 1.0) -> Array:
    # Bachrach et al. 2014, section 4: x -> [x, sqrt(M^2 - |x|^2)] puts every key on the sphere
    # of radius M, where |q' - x'|^2 = |q|^2 + M^2 - 2 q.x is ordered as -q.x. The max(., 0)
    # only absorbs rounding for the keys of norm M itself.
    extra = jnp.sqrt(jnp.maximum(jnp.square(jnp.asarray(M, k.dtype)) - jnp.sum(k * k), 0.0))
    return jnp.concatenate([k, extra[None]])


def mips_norm(database) -> float:
    """``M`` for :data:`mips`: the largest row norm of ``database`` [m, d] (float64 on the host,
    rounded up by one float32 ulp so that no key's ``M^2 - |k|^2`` is negative)."""
    X = np.asarray(database, np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ScoreError(f"mips_norm: database must have shape [m, d] with m >= 1, got "
                         f"{X.shape}")
    if not np.isfinite(X).all():
        raise ScoreError("mips_norm: database contains NaN or inf")
    big = float(np.sqrt(np.max(np.einsum("md,md->m", X, X))))
    return float(np.nextafter(np.float32(big), np.float32(np.inf)))


dot = Score("dot", _identity, _identity, "q . k")
scaled_dot = Score("scaled_dot", _scaled, _identity, "q . k / sqrt(d)")
cosine = Score("cosine", _cosine_q, _cosine_k,
               "t * q.k / (|q| |k|), 0 if q or k is 0; optional temperature t (default 1)")
bilinear = Score("bilinear", _bilinear_q, _bilinear_k, "q W k, W [d_q, d_k]")
diag_bilinear = Score("diag_bilinear", _diag_q, _diag_k,
                      "sum_i q_i w_i k_i (GMF's weighted element-wise product)")
lowrank_bilinear = Score("lowrank_bilinear", _lowrank_q, _lowrank_k,
                         "(q A) . (k B), A [d_q, r], B [d_k, r] (one attention head's W_Q W_K^T)")
neg_sq_euclidean = Score("neg_sq_euclidean", _neg_sq_q, _neg_sq_k, "-|q - k|^2")
mips = Score("mips", _mips_q, _mips_k,
             "q . k with every key mapped onto the sphere of radius M (see mips_norm)")

SCORES: dict[str, Score] = {s.name: s for s in (dot, scaled_dot, cosine, bilinear, diag_bilinear,
                                                lowrank_bilinear, neg_sq_euclidean)}


def get_score(score: str | Score) -> Score:
    """The score with this name (``"dot"``, ``"cosine"``, …), or ``score`` itself."""
    if isinstance(score, Score):
        return score
    if score in SCORES:
        return SCORES[score]
    close = difflib.get_close_matches(str(score), SCORES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ScoreError(f"unknown score {score!r}{hint} Known scores: {', '.join(SCORES)}")


# --- derived forms: vmap of the single-pair function, never rewritten -------------------------

def _check_dims(score: Score, Q: Array, K: Array, q_rank: int, k_rank: int, form: str) -> None:
    want = {1: "[d]", 2: "[n, d]"}
    if jnp.ndim(Q) != q_rank or jnp.ndim(K) != k_rank:
        raise ScoreError(f"{form}({score.name}): expects q {want[q_rank]} and "
                         f"k {want[k_rank].replace('n', 'm')}, got shapes {jnp.shape(Q)} and "
                         f"{jnp.shape(K)}")


def batched(score: str | Score) -> Callable[..., Array]:
    """``f(Q [n,d], K [n,d], *params) -> [n]``: the score of each row pair."""
    score = get_score(score)

    def f(Q: Array, K: Array, *params: Array, **options) -> Array:
        _check_dims(score, Q, K, 2, 2, "batched")
        if Q.shape[0] != K.shape[0]:
            raise ScoreError(f"batched({score.name}): q has {Q.shape[0]} rows but k has "
                             f"{K.shape[0]}; they are scored row by row")
        Q, K, params = _promote_all(score.name, Q, K, params)
        return jax.vmap(lambda q, k: score(q, k, *params, **options))(Q, K)

    return f


def one_to_many(score: str | Score) -> Callable[..., Array]:
    """``f(q [d], K [m,d], *params) -> [m]``: one query against every key."""
    score = get_score(score)

    def f(q: Array, K: Array, *params: Array, **options) -> Array:
        _check_dims(score, q, K, 1, 2, "one_to_many")
        q, K, params = _promote_all(score.name, q, K, params)
        return jax.vmap(lambda k: score(q, k, *params, **options))(K)

    return f


def pairwise(score: str | Score) -> Callable[..., Array]:
    """``f(Q [n,d], K [m,d], *params) -> [n, m]``: every query against every key."""
    score = get_score(score)
    row = one_to_many(score)

    def f(Q: Array, K: Array, *params: Array, **options) -> Array:
        _check_dims(score, Q, K, 2, 2, "pairwise")
        Q, K, params = _promote_all(score.name, Q, K, params)
        return jax.vmap(lambda q: row(q, K, *params, **options))(Q)

    return f
