"""Property tests (hypothesis) of scoring's numeric rule: for int32, int64, float16, bfloat16 and
float32 inputs of magnitudes 1e-30 to 1e30 (as far as the dtype reaches), zero vectors included,
every score is right or refused, against a float64 numpy reference of the same input values.

Right: within float32's rounding of the reference (the inputs are promoted to float32). Refused:
a score beyond float32's range comes out inf or NaN, never a wrong finite number; search raises
a QueryError naming a query only if that query's reference scores overflow float32 or cannot be
told apart in float32, and otherwise returns the reference's top-k up to such ties.

Shapes are fixed (every dtype is promoted to float32), so nothing recompiles per example.
"""

import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jaxemb import scoring as S
from jaxemb import search

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=os.environ.get("JAXEMB_HYPOTHESIS_RANDOM") != "1")
_SCALE = float(os.environ.get("JAXEMB_HYPOTHESIS_SCALE", "1"))


def _n(k: int) -> int:
    return max(1, round(k * _SCALE))


N, M, D, K = 3, 8, 4, 3  # queries, keys, dim, top-k: fixed shapes, one compilation each
EPS32, TINY32, BIG = 2.0**-24, float(np.finfo(np.float32).tiny), 1e38
T = 0.5  # cosine's temperature: below 1, so an integer cast of it would show (it gave 0)

# Per dtype: the decimal exponents its values are drawn from (float16 reaches 6e-8 to 65504).
_RANGE = {np.int32: (0, 9), np.int64: (0, 18), np.float16: (-4, 4),
          ml_dtypes.bfloat16: (-30, 30), np.float32: (-30, 30)}
_DTYPES = list(_RANGE)


@st.composite
def _vectors(draw, rows: int):
    """(array [rows, D] of one dtype, its exact values as float64): each row a random direction
    at its own magnitude 10^e, or the zero vector."""
    dtype = draw(st.sampled_from(_DTYPES))
    lo, hi = _RANGE[dtype]
    out = np.zeros((rows, D))
    for r in range(rows):
        if draw(st.integers(0, 11)) == 0:
            continue  # the zero vector
        e = draw(st.integers(lo, hi))
        unit = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=D, max_size=D))
        out[r] = np.asarray(unit) * 10.0**e
    if np.issubdtype(dtype, np.integer):
        x = np.clip(np.round(out), -np.iinfo(dtype).max, np.iinfo(dtype).max).astype(dtype)
    else:
        x = out.astype(dtype)
    return x, x.astype(np.float64)


def _reference(name: str, Q, K_):
    """(scores [n, m], bound [n, m]): float64 scores of the definitions, and the size of the
    largest intermediate (what float32 must hold, and what its rounding is relative to)."""
    absdot = np.abs(Q) @ np.abs(K_).T
    if name == "dot":
        return Q @ K_.T, absdot
    if name == "cosine":  # the zero vector's cosine is 0 (its norm is eps)
        def unit(X):
            n = np.linalg.norm(X, axis=1, keepdims=True)
            return X / np.where(n == 0, 1, n)
        return T * unit(Q) @ unit(K_).T, np.full(absdot.shape, T)
    if name == "neg_sq_euclidean":
        sq = lambda X: (X * X).sum(1)  # noqa: E731
        score = -((Q[:, None, :] - K_[None, :, :]) ** 2).sum(-1)
        return score, sq(Q)[:, None] + sq(K_)[None, :] + 2 * absdot
    raise AssertionError(name)


def _tolerance(bound):
    """float32 rounding of the promoted inputs, the products and the sums (d + 3 of them, with
    room to spare), plus what underflow can flush (d products below float32's least normal)."""
    return 8 * (D + 3) * EPS32 * bound + 8 * D * TINY32


_SCORES = ["dot", "cosine", "neg_sq_euclidean"]


def _params(name):
    return (T,) if name == "cosine" else ()


@pytest.mark.parametrize("name", _SCORES)
@settings(max_examples=_n(40), **SETTINGS)
@given(q=_vectors(N), k=_vectors(M))
def test_pairwise_scores_are_right_or_not_finite(name, q, k):
    (Q, Q64), (K_, K64) = q, k
    got = np.asarray(S.pairwise(name)(Q, K_, *_params(name)), np.float64)
    assert got.dtype == np.float64 and got.shape == (N, M)
    ref, bound = _reference(name, Q64, K64)
    finite = np.isfinite(got)
    zero_row = not (Q64.any(axis=1).all() and K64.any(axis=1).all())
    event(f"not all finite: {not finite.all()}; a zero row: {zero_row}")
    # Not finite only where float32 could not hold an intermediate.
    assert (finite | (bound > BIG)).all(), (got, ref)
    # Finite: right, however large or small.
    err = np.abs(got - ref)
    assert (~finite | (err <= _tolerance(bound))).all(), (got, ref, err / np.maximum(bound, 1e-300))


@pytest.mark.parametrize("name", _SCORES)
@settings(max_examples=_n(40), **SETTINGS)
@given(q=_vectors(N), k=_vectors(M))
def test_single_pairs_equal_pairwise(name, q, k):
    (Q, _), (K_, _) = q, k
    whole = np.asarray(S.pairwise(name)(Q, K_, *_params(name)))
    one = np.asarray(S.get_score(name)(Q[1], K_[2], *_params(name)))
    np.testing.assert_allclose(one, whole[1, 2], rtol=1e-6, atol=8 * D * TINY32)


@pytest.mark.parametrize("name", _SCORES)
@settings(max_examples=_n(40), **SETTINGS)
@given(q=_vectors(N), k=_vectors(M))
def test_top_k_is_the_reference_up_to_ties_or_names_a_hopeless_query(name, q, k):
    (Q, Q64), (K_, K64) = q, k
    ref, bound = _reference(name, Q64, K64)
    tol = _tolerance(bound).max(axis=1)  # per query
    spread = ref.max(axis=1) - ref.min(axis=1)
    hopeless = (bound.max(axis=1) > BIG) | (spread <= 2 * tol)
    try:
        scores, idx = search.top_k(Q, K_, K, name, *_params(name))
    except search.QueryError as e:
        event("refused")
        assert hopeless[e.query], (e, ref[e.query], tol[e.query])
        assert f"query {e.query} " in str(e)
        return
    event(f"returned (hopeless queries among them: {hopeless.any()})")
    scores, idx = np.asarray(scores, np.float64), np.asarray(idx)
    assert all(len(set(row)) == K for row in idx.tolist())
    kth = -np.sort(-ref, axis=1)[:, K - 1]
    mine = np.take_along_axis(ref, idx, axis=1)
    # Each returned key is among the reference's top-k, up to float32 ties, with its own score.
    assert (mine >= kth[:, None] - 2 * tol[:, None]).all(), (idx, ref)
    assert (np.abs(scores - mine) <= tol[:, None]).all(), (scores, mine)


@settings(max_examples=_n(30), **SETTINGS)
@given(k=_vectors(M), e=st.integers(-100, 100))
def test_cosine_search_is_scale_free(k, e):
    """Cosine ranks keys the same at every magnitude: the query scaled by 2^e (exact, from about
    1e-30 to 1e30) finds the same keys with the same scores, bit for bit."""
    K32 = k[1].astype(np.float32)
    q = K32[np.abs(K32).sum(axis=1).argmax()]
    if not q.any():
        return  # all zero: refused whatever the scale (see above)
    q = np.ldexp(q, -np.frexp(np.abs(q).max())[1])  # max |q_j| in [0.5, 1)
    base = search.top_k(q, K32, K, "cosine")
    scaled = search.top_k(np.ldexp(q, e), K32, K, "cosine")
    np.testing.assert_array_equal(np.asarray(scaled[1]), np.asarray(base[1]))
    np.testing.assert_array_equal(np.asarray(scaled[0]), np.asarray(base[0]))
