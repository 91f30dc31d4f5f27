"""LearnedScore against references: the plain ``jaxemb.scoring`` score with the same parameters
(written out from the param dict, not through the module), numpy in float64, identities at init
(bilinear with W = I is dot), heads = a loop over heads, and the one registry."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb import attention, interaction, learned_score, scoring, sgns
from jaxemb.learned_score import REGISTRY, LearnedScore
from jaxemb.scoring import ScoreError

D, H, R = 4, 3, 2  # pairwise-distinct sizes, so a swapped axis fails
NQ, NK = 5, 7


def _randomised(module, rng, *x):
    """Init, then every parameter moved by N(0, 0.5²) (W off I, t off its init, LayerNorm gains
    off 1), so identities cannot hide bugs."""
    params = jax.tree.map(np.array, module.init(jax.random.key(0), *x)).get("params", {})
    for leaf in jax.tree.leaves(params):
        leaf[...] = leaf + 0.5 * rng.standard_normal(leaf.shape)
    return {"params": params}


def _features(module, v, q, k):
    qf, kf = module.apply(v, q, k)
    return np.asarray(qf, np.float64), np.asarray(kf, np.float64)


def _args_by_hand(name, p):
    """The pure score's parameters written out from the param dict."""
    if name == "cosine":
        return (jnp.exp(p["log_t"]),)
    return tuple(p[n] for n in {"bilinear": ("W",), "diag_bilinear": ("w",),
                                "lowrank_bilinear": ("A", "B")}.get(name, ()))


@pytest.mark.parametrize("name", learned_score.names(pair=True))
def test_pair_scores_equal_the_plain_score_function(rng, name):
    q = jnp.asarray(rng.standard_normal((NQ, D)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((NK, D)), jnp.float32)
    m = LearnedScore(name, D, rank=R, bias=True)
    v = _randomised(m, rng, q, k)
    qf, kf = _features(m, v, q, k)
    b = float(v["params"]["b"])
    want = scoring.pairwise(name)(q, k, *_args_by_hand(name, v["params"])) + b
    np.testing.assert_allclose(qf @ kf.T + b, want, rtol=1e-5, atol=1e-5)
    assert float(m.apply(v, method="offset")) == b


@pytest.mark.parametrize("name", ["bilinear", "cosine", "neg_sq_euclidean", "diag_bilinear",
                                  "lowrank_bilinear"])
def test_pair_scores_equal_numpy(rng, name):
    q = rng.standard_normal((NQ, D)).astype(np.float32)
    k = rng.standard_normal((NK, D)).astype(np.float32)
    m = LearnedScore(name, D, rank=R)
    v = _randomised(m, rng, q, k)
    p = {n: np.asarray(x, np.float64) for n, x in v["params"].items()}
    Q, K = q.astype(np.float64), k.astype(np.float64)
    if name == "bilinear":
        want = Q @ p["W"] @ K.T
    elif name == "cosine":
        unit = lambda X: X / np.linalg.norm(X, axis=1, keepdims=True)  # noqa: E731
        want = np.exp(p["log_t"]) * unit(Q) @ unit(K).T
    elif name == "neg_sq_euclidean":
        want = -((Q[:, None] - K[None]) ** 2).sum(-1)
    elif name == "diag_bilinear":
        want = (Q * p["w"]) @ K.T
    else:
        want = (Q @ p["A"]) @ (K @ p["B"]).T
    qf, kf = _features(m, v, q, k)
    np.testing.assert_allclose(qf @ kf.T, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["bilinear", "diag_bilinear"])
def test_bilinear_at_its_init_equals_dot(rng, name):
    q, k = rng.standard_normal((NQ, D)), rng.standard_normal((NK, D))
    m = LearnedScore(name, D)
    v = m.init(jax.random.key(0), q, k)
    qf, kf = _features(m, v, q, k)
    np.testing.assert_allclose(qf @ kf.T, q @ k.T, rtol=1e-5, atol=1e-5)


def test_parameters_start_as_documented():
    x = jnp.zeros((2, D))
    p = LearnedScore("cosine", D, temperature=2.5).init(jax.random.key(0), x, x)["params"]
    np.testing.assert_allclose(p["log_t"], np.log(2.5), rtol=1e-6)
    p = LearnedScore("lowrank_bilinear", D, rank=R).init(jax.random.key(0), x, x)["params"]
    assert p["A"].shape == p["B"].shape == (D, R) and not np.allclose(p["A"], p["B"])
    xh = jnp.zeros((2, H, D))
    p = LearnedScore("head_bilinear", D, heads=H).init(jax.random.key(0), xh, xh)["params"]
    np.testing.assert_array_equal(p["W"], np.broadcast_to(np.eye(D), (H, D, D)))
    p = LearnedScore("bilinear", D, heads=H).init(jax.random.key(0), xh, xh)["params"]
    np.testing.assert_array_equal(p["W"], np.eye(H * D))


@pytest.mark.parametrize("name", ["cosine", "diag_bilinear", "lowrank_bilinear",
                                  "head_bilinear", "neg_sq_euclidean", "qk_layernorm"])
def test_heads_equal_a_loop_over_heads(rng, name):
    """Per-head parameters: head h's features are the score's with parameters [h]."""
    q = jnp.asarray(rng.standard_normal((2, NQ, H, D)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, NK, H, D)), jnp.float32)
    m = LearnedScore(name, D, heads=H, rank=R)
    v = _randomised(m, rng, q, k)
    qf, kf = _features(m, v, q, k)
    base = REGISTRY[name].maps.name if name != "head_bilinear" else "bilinear"
    single = LearnedScore(base, D, rank=R)
    for h in range(H):
        ph = jax.tree.map(lambda x, h=h: x if name == "qk_layernorm" else x[h], v["params"])
        if name == "qk_layernorm":  # shared LayerNorm gains, then the scaled dot
            ph = {}
            ln = lambda x, g: (x - x.mean(-1, keepdims=True)) / np.sqrt(  # noqa: E731
                x.var(-1, keepdims=True) + 1e-6) * g
            p = v["params"]
            qh = ln(np.asarray(q[:, :, h], np.float64), p["query_ln"]["scale"])
            kh = ln(np.asarray(k[:, :, h], np.float64), p["key_ln"]["scale"])
            want_q, want_k = qh / np.sqrt(D), kh
        else:
            want_q, want_k = _features(single, {"params": ph}, q[:, :, h], k[:, :, h])
        np.testing.assert_allclose(qf[:, :, h], want_q, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(kf[:, :, h], want_k, rtol=1e-5, atol=1e-5)


def test_bilinear_with_heads_mixes_all_heads(rng):
    """One W over the concatenated heads: the features are the full-width q W, split again."""
    q = jnp.asarray(rng.standard_normal((NQ, H, D)), jnp.float32)
    m = LearnedScore("bilinear", D, heads=H, scale_queries=True)
    v = _randomised(m, rng, q, q)
    qf = np.asarray(m.apply(v, q, method="phi_q"))
    W = np.asarray(v["params"]["W"], np.float64)
    want = (np.asarray(q, np.float64).reshape(NQ, H * D) @ W).reshape(NQ, H, D) / np.sqrt(D)
    np.testing.assert_allclose(qf, want, rtol=1e-5, atol=1e-5)


def test_temperature_clamp_and_frozen_temperature(rng):
    q, k = rng.standard_normal((NQ, D)), rng.standard_normal((NK, D))
    m = LearnedScore("cosine", D, max_temperature=4.0)
    at = lambda t: m.apply({"params": {"log_t": jnp.log(t)}}, q, method="phi_q")  # noqa: E731
    np.testing.assert_allclose(at(50.0), at(4.0), rtol=1e-6)
    frozen = LearnedScore("cosine", D, learn_temperature=False)

    def total(log_t, module):
        qf, kf = module.apply({"params": {"log_t": log_t}}, q, k)
        return jnp.sum(qf @ kf.T)

    assert float(jax.grad(total)(jnp.float32(1.0), frozen)) == 0.0
    assert float(jax.grad(total)(jnp.float32(1.0), LearnedScore("cosine", D))) != 0.0


def test_unknown_and_misused_scores_raise():
    x = jnp.zeros((2, D))
    with pytest.raises(ScoreError, match="did you mean 'cosine'"):
        LearnedScore("cosin", D).init(jax.random.key(0), x, x)
    with pytest.raises(ScoreError, match="give heads"):
        LearnedScore("head_bilinear", D).init(jax.random.key(0), x, x)


def test_the_registry_lists_every_score_once():
    assert all(s.name == n for n, s in REGISTRY.items())
    assert set(scoring.SCORES) <= set(REGISTRY)  # every pure score has its parameters here
    for s in REGISTRY.values():
        assert len({p.name for p in s.params}) == len(s.params)
        assert s.maps is scoring.get_score(s.maps.name)
    # the attention scores are read from the registry, in the study's order
    assert attention.ATTENTION_SCORES == ("scaled_dot", "cosine", "bilinear", "head_bilinear",
                                          "neg_sq_euclidean", "qk_layernorm", "raw",
                                          "tied_qk")
    # SGNS accepts the pair scores but the low-rank one, and rejects attention variants
    for name in REGISTRY:
        cfg = dataclasses.replace(sgns.SGNSConfig(), score=name)
        if REGISTRY[name].pair and name != "lowrank_bilinear":
            cfg.validate()
        else:
            with pytest.raises(sgns.SGNSError):
                cfg.validate()
    # every user-item model with a score names a registered one
    for cls in interaction.MODELS.values():
        if issubclass(cls, interaction.FeatureModel):
            assert REGISTRY[cls.score_name].pair
