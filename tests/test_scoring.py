"""Scores against independent numpy maths; derived forms against loops; gradients; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxemb import scoring as S

DQ, DK, R = 7, 6, 4  # pairwise-distinct sizes so a swapped axis fails loudly
N, M = 5, 3


def _params(rng, name, dq=DQ, dk=DK):
    """Random inputs and parameters for each score (bilinear scores take dq != dk)."""
    if name == "bilinear":
        return dq, dk, (rng.standard_normal((dq, dk)).astype(np.float32),)
    if name == "lowrank_bilinear":
        return dq, dk, (rng.standard_normal((dq, R)).astype(np.float32),
                        rng.standard_normal((dk, R)).astype(np.float32))
    if name == "diag_bilinear":
        return dq, dq, (rng.standard_normal(dq).astype(np.float32),)
    if name == "cosine":
        return dq, dq, (np.float32(2.5),)
    return dq, dq, ()


def _numpy_score(name, q, k, params):
    q = q.astype(np.float64)
    k = k.astype(np.float64)
    if name == "dot":
        return q @ k
    if name == "scaled_dot":
        return q @ k / np.sqrt(len(q))
    if name == "cosine":
        return params[0] * (q @ k) / (np.linalg.norm(q) * np.linalg.norm(k))
    if name == "bilinear":
        return q @ params[0].astype(np.float64) @ k
    if name == "diag_bilinear":
        return np.sum(q * params[0] * k)
    if name == "lowrank_bilinear":
        A, B = (p.astype(np.float64) for p in params)
        return q @ A @ B.T @ k
    if name == "neg_sq_euclidean":
        return -np.sum((q - k) ** 2)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(S.SCORES))
def test_score_equals_numpy_and_its_feature_maps(rng, name):
    score = S.get_score(name)
    dq, dk, params = _params(rng, name)
    for _ in range(5):
        q = rng.standard_normal(dq).astype(np.float32)
        k = rng.standard_normal(dk).astype(np.float32)
        expected = _numpy_score(name, q, k, params)
        got = score(q, k, *params)
        assert got.shape == ()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        fmap = np.dot(np.asarray(score.phi_q(q, *params), np.float64),
                      np.asarray(score.phi_k(k, *params), np.float64))
        np.testing.assert_allclose(fmap, expected, rtol=1e-5, atol=1e-5)


def test_bilinear_forms_at_identity_equal_dot(rng):
    q, k = rng.standard_normal((2, DQ)).astype(np.float32)
    expected = S.dot(q, k)
    I = np.eye(DQ, dtype=np.float32)
    np.testing.assert_allclose(S.bilinear(q, k, I), expected, rtol=1e-6)
    np.testing.assert_allclose(S.diag_bilinear(q, k, np.ones(DQ, np.float32)), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(S.lowrank_bilinear(q, k, I, I), expected, rtol=1e-6)


def test_cosine_is_invariant_to_positive_rescaling(rng):
    q, k = rng.standard_normal((2, DQ)).astype(np.float32)
    base = S.cosine(q, k)
    for a, b in [(3.0, 1.0), (1.0, 0.01), (250.0, 7.0)]:
        np.testing.assert_allclose(S.cosine(a * q, b * k), base, rtol=1e-5)
    np.testing.assert_allclose(S.cosine(-q, k), -base, rtol=1e-6)  # but not to a sign flip


def test_neg_sq_euclidean_feature_dot_ranks_keys_like_distance(rng):
    Q = rng.standard_normal((N, DQ)).astype(np.float32)
    K = rng.standard_normal((40, DQ)).astype(np.float32)
    dist = ((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1)
    fq = S.neg_sq_euclidean.map_queries(Q)
    fk = S.neg_sq_euclidean.map_keys(K)
    via_features = np.asarray(fq @ fk.T)
    np.testing.assert_array_equal(np.argsort(-via_features, axis=1), np.argsort(dist, axis=1))
    # In a softmax over keys the -|q|^2 part cancels: only 2q.k - |k|^2 matters.
    sm = jax.nn.softmax(via_features, axis=1)
    sm_without_q_norm = jax.nn.softmax(2 * Q @ K.T - (K**2).sum(-1)[None, :], axis=1)
    np.testing.assert_allclose(sm, sm_without_q_norm, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(S.SCORES))
def test_derived_forms_equal_python_loops(rng, name):
    score = S.get_score(name)
    dq, dk, params = _params(rng, name)
    Q = rng.standard_normal((N, dq)).astype(np.float32)
    K = rng.standard_normal((M, dk)).astype(np.float32)
    loop = np.array([[score(q, k, *params) for k in K] for q in Q])
    np.testing.assert_allclose(S.pairwise(score)(Q, K, *params), loop, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(S.one_to_many(name)(Q[1], K, *params), loop[1], rtol=1e-5,
                               atol=1e-5)
    K_n = rng.standard_normal((N, dk)).astype(np.float32)
    rows = np.array([score(q, k, *params) for q, k in zip(Q, K_n, strict=True)])
    np.testing.assert_allclose(S.batched(name)(Q, K_n, *params), rows, rtol=1e-5, atol=1e-5)
    # and all of it under jit
    jitted = jax.jit(lambda Q, K, *p: S.pairwise(score)(Q, K, *p))
    np.testing.assert_allclose(jitted(Q, K, *params), loop, rtol=1e-5, atol=1e-5)


def _count_primitive(jaxpr, name):
    # pairwise is not jitted, so its jaxpr is flat: no sub-jaxprs to descend into
    return sum(eqn.primitive.name == name for eqn in jaxpr.eqns)


@pytest.mark.parametrize("name", ["dot", "scaled_dot", "cosine", "neg_sq_euclidean"])
def test_pairwise_lowers_to_one_dot_general(name):
    closed = jax.make_jaxpr(S.pairwise(name))(jnp.ones((N, DQ)), jnp.ones((M, DQ)))
    assert _count_primitive(closed.jaxpr, "dot_general") == 1
    # each query and key is mapped once, not once per pair: no [N, M, DQ] intermediate
    for eqn in closed.jaxpr.eqns:
        for v in eqn.outvars:
            assert v.aval.shape != (N, M, DQ), eqn


@pytest.mark.parametrize("name", list(S.SCORES))
def test_gradients_check(rng, name):
    score = S.get_score(name)
    with jax.enable_x64(True):
        dq, dk, params = _params(rng, name)
        params = tuple(np.asarray(p, np.float64) for p in params)
        q = rng.standard_normal(dq)
        k = rng.standard_normal(dk)
        # jitted: check_grads evaluates the score and its derivatives many times; eager, every
        # primitive of every derivative compiled on its own (12 s for cosine, now 5 s).
        check_grads(jax.jit(lambda q, k, *p: score(q, k, *p)), (q, k, *params), order=2,
                    modes=("fwd", "rev"))


def test_cosine_gradient_is_finite_at_zero(rng):
    k = rng.standard_normal(DQ).astype(np.float32)
    zero = jnp.zeros(DQ)
    gq = jax.grad(S.cosine, argnums=0)(zero, k)
    gk = jax.grad(S.cosine, argnums=1)(k, zero)
    assert np.isfinite(gq).all() and np.isfinite(gk).all()
    assert S.cosine(zero, k) == 0.0


def test_pairwise_traces_once_per_shape(rng):
    traces = []

    @jax.jit
    def f(Q, K):
        traces.append(1)
        return S.pairwise("cosine")(Q, K)

    for _ in range(3):
        f(rng.standard_normal((N, DQ)).astype(np.float32),
          rng.standard_normal((M, DQ)).astype(np.float32))
    assert len(traces) == 1


def test_unknown_score_name_suggests():
    with pytest.raises(S.ScoreError, match=r"unknown score 'cosin'.*did you mean 'cosine'"):
        S.get_score("cosin")


def test_mismatched_dims_are_named(rng):
    q = np.ones(DQ, np.float32)
    k = np.ones(DK, np.float32)
    with pytest.raises(S.ScoreError, match=r"q \(dim 7\) and k \(dim 6\)"):
        S.dot(q, k)
    with pytest.raises(S.ScoreError, match="W must have shape"):
        S.bilinear(q, k, np.ones((DK, DQ), np.float32))
    with pytest.raises(S.ScoreError, match="w must have shape"):
        S.diag_bilinear(q, q, np.ones(DK, np.float32))
    with pytest.raises(S.ScoreError, match="single vector"):
        S.dot(np.ones((2, DQ)), q)
    with pytest.raises(S.ScoreError, match="3 rows but k has 2"):
        S.batched("dot")(np.ones((3, DQ)), np.ones((2, DQ)))
    with pytest.raises(S.ScoreError, match=r"pairwise\(dot\): expects"):
        S.pairwise("dot")(q, np.ones((2, DQ)))


# --- the numeric rule (issue 16): promoted to float32 or refused, never wrapped or truncated --

def test_integer_inputs_keep_a_fractional_temperature():
    q, k = np.array([1, 2, 3], np.int32), np.array([3, 2, 1], np.int32)
    expected = 0.5 * 10 / 14  # t cos(q, k); t was cast to int32 (0) before
    np.testing.assert_allclose(S.cosine(q, k, 0.5), expected, rtol=1e-6)
    np.testing.assert_allclose(S.pairwise("cosine")(q[None], k[None], 0.5), [[expected]],
                               rtol=1e-6)
    assert S.cosine(q, k, 0.5).dtype == jnp.float32


def test_int64_beyond_int32_rounds_rather_than_wraps():
    q = np.array([2**31, 1], np.int64)
    k = np.array([1, 0], np.int64)
    assert float(S.dot(q, k)) == 2.0**31  # was -2**31
    np.testing.assert_allclose(S.pairwise("dot")(np.array([[2**40 + 1, 0]], np.int64), k[None]),
                               [[2.0**40]], rtol=1e-7)  # float32's nearest


def test_int32_squares_do_not_overflow():
    q, k = np.array([50_000, 0], np.int32), np.zeros(2, np.int32)
    np.testing.assert_allclose(S.neg_sq_euclidean(q, k), -2.5e9, rtol=1e-7)  # was +1.79e9


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16, np.float32, np.int32])
def test_zero_vectors_score_zero_with_finite_gradients_in_every_dtype(dtype):
    zero, k = jnp.zeros(DQ, dtype), jnp.ones(DQ, dtype)
    assert float(S.cosine(zero, k)) == 0.0 and float(S.cosine(zero, zero)) == 0.0
    assert float(S.pairwise("cosine")(zero[None], k[None])[0, 0]) == 0.0
    if dtype != np.int32 and dtype != np.float16:  # (t/eps = 1e8 is beyond float16: inf)
        g = jax.grad(lambda q: S.cosine(q, k).astype(jnp.float32))(zero)
        assert np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e20, 1e30])
def test_cosine_is_right_at_any_magnitude(rng, scale):
    q, k = rng.standard_normal((2, DQ))
    expected = q @ k / np.linalg.norm(q) / np.linalg.norm(k)
    q32, k32 = (q * scale).astype(np.float32), (k * scale).astype(np.float32)
    np.testing.assert_allclose(S.cosine(q32, k32), expected, rtol=1e-5)
    np.testing.assert_allclose(S.pairwise("cosine")(q32[None], k32[None]), [[expected]],
                               rtol=1e-5)
    # and its gradient, which the scaling must not break
    g = jax.grad(S.cosine)(q32, k32)
    assert np.isfinite(g).all()


def test_scaling_is_exact_so_float32_norms_are_unchanged(rng):
    """Power-of-two scaling: normal-magnitude float32 results equal the unscaled formula's (the
    map before issue 16) bit for bit, eagerly and under jit (where XLA uses rsqrt)."""
    Q = (rng.standard_normal((50, DQ)) * rng.uniform(0.01, 100, (50, 1))).astype(np.float32)

    def unscaled(Q):
        return jax.vmap(lambda k: k / jnp.sqrt(jnp.maximum(jnp.sum(k * k), 1e-16)))(Q)

    np.testing.assert_array_equal(S.cosine.map_keys(Q), unscaled(Q))
    np.testing.assert_array_equal(jax.jit(S.cosine.map_keys)(Q), jax.jit(unscaled)(Q))


def test_inputs_that_cannot_be_promoted_are_refused():
    q = np.ones(DQ, np.float32)
    with pytest.raises(S.ScoreError, match=r"score 'dot': q must hold real numbers, got dtype "
                                           r"complex64"):
        S.dot(q.astype(np.complex64), q)
    with pytest.raises(S.ScoreError, match=r"k holds values up to 1e\+300, beyond float32's "
                                           r"range"):
        S.pairwise("cosine")(q[None], np.full((1, DQ), 1e300))
    with pytest.raises(S.ScoreError, match="must hold real numbers"):
        S.dot(np.array(["a"] * DQ), q)


def test_float32_pairwise_is_one_dot_general_and_no_convert():
    closed = jax.make_jaxpr(S.pairwise("dot"))(jnp.ones((N, DQ)), jnp.ones((M, DQ)))
    assert [e.primitive.name for e in closed.jaxpr.eqns] == ["dot_general"]
    # other dtypes: converted once, at trace time, then the same dot_general
    closed = jax.make_jaxpr(S.pairwise("dot"))(jnp.ones((N, DQ), jnp.bfloat16),
                                               jnp.ones((M, DQ), jnp.int32))
    names = [e.primitive.name for e in closed.jaxpr.eqns]
    assert names.count("dot_general") == 1 and closed.out_avals[0].dtype == jnp.float32
