"""The transformer against a numpy forward pass; causality and padding (exact); attention maps;
vmapped seeds == loop; no retrace; config and input errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxemb.attention import ATTENTION_SCORES
from jaxemb.transformer import Transformer, TransformerConfig, TransformerError

# Pairwise-distinct sizes: batch, depth, heads, head dim, length, vocab, width, max_len, outputs.
B, L, H, DH, T, V, D, MAX_LEN, OUT = 5, 2, 3, 4, 7, 13, 12, 9, 6


def _config(**kw):
    return TransformerConfig(**{"vocab_size": V, "width": D, "depth": L, "num_heads": H,
                                "max_len": MAX_LEN, "num_outputs": OUT, **kw})


@functools.cache
def _jitted(config):
    """(model, jit(apply), jit(attention_maps)), shared by the tests that use one config, so
    each program is compiled once in the session."""
    model = Transformer(config)
    return (model, jax.jit(model.apply),
            jax.jit(functools.partial(model.apply, method="attention_maps")))


def _tokens(rng, t=T):
    return rng.integers(0, V, (B, t)).astype(np.int32)


def _init(config, rng, seed=0):
    model = Transformer(config)
    return model, model.init(jax.random.key(seed), jnp.asarray(_tokens(rng)))


# --- independent numpy forward pass (scaled dot) ---------------------------------------------

def _ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _gelu(x):  # flax's default: the tanh approximation
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _numpy_forward(params, tokens, causal):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    t = tokens.shape[1]
    x = p["embed"]["embedding"][tokens] + p["pos_embed"][:t]
    maps = []
    for i in range(L):
        b = p[f"blocks_{i}"]
        h = _ln(x, b["ln1"])
        a = b["attn"]
        q, k, v = (np.einsum("btd,dhe->bthe", h, a[n]["kernel"]) + a[n]["bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(DH)
        if causal:
            logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        maps.append(w)
        att = np.einsum("bhqk,bkhe->bqhe", w, v)
        x = x + np.einsum("bqhe,heo->bqo", att, a["out"]["kernel"]) + a["out"]["bias"]
        h = _gelu(_ln(x, b["ln2"]) @ b["mlp_in"]["kernel"] + b["mlp_in"]["bias"])
        x = x + h @ b["mlp_out"]["kernel"] + b["mlp_out"]["bias"]
    out = _ln(x, p["ln_f"]) @ p["head"]["kernel"] + p["head"]["bias"]
    return out, np.stack(maps)


@pytest.mark.parametrize("causal", [True, False])
def test_forward_equals_numpy(rng, causal):
    _, params = _init(_config(causal=causal), rng)
    # move the LN parameters and biases off their inits so the reference can tell them apart
    params = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(a.dtype),
                          params)
    tokens = _tokens(rng)
    want, want_maps = _numpy_forward(params, tokens, causal)
    _, apply, attention_maps = _jitted(_config(causal=causal))
    got = apply(params, tokens)
    assert got.shape == (B, T, OUT)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    _, maps = attention_maps(params, tokens)
    assert maps.shape == (L, B, H, T, T)
    np.testing.assert_allclose(maps, want_maps, rtol=1e-4, atol=1e-6)


# --- causality and padding: exact --------------------------------------------------------------

# Two scores by default (test_attention.py checks causality for every score); -m slow: all.
FAST_SCORES = ("scaled_dot", "cosine")


@pytest.mark.parametrize("score", [s if s in FAST_SCORES else pytest.param(
    s, marks=pytest.mark.slow) for s in ATTENTION_SCORES])
def test_every_score_decoder_is_causal_and_gives_attention_maps(rng, score):
    model, params = _init(_config(score=score), rng)
    tokens = _tokens(rng)

    @jax.jit
    def run(params):
        def logits_per_position(pos_embed):  # [T]: position t's logits summed over batch, outputs
            p = {"params": {**params["params"], "pos_embed": pos_embed}}
            return model.apply(p, tokens).sum(axis=(0, 2))

        # pos_embed row s enters the input at position s only, so d logits_t / d pos_embed[s]
        # is the gradient of position t's output with respect to the input at s.
        jac = jax.jacrev(logits_per_position)(params["params"]["pos_embed"])  # [T, MAX_LEN, D]
        return jac, model.apply(params, tokens, method="attention_maps")

    jac, (logits, w) = run(params)
    per_input = np.abs(np.asarray(jac)).sum(-1)  # [t, s]
    assert np.isfinite(per_input).all()
    for t in range(T):
        assert (per_input[t, t + 1:] == 0).all(), t
        assert (per_input[t, :t + 1] > 0).all(), t
    assert logits.shape == w.shape == (L, B, H, T, T)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
    upper = np.triu(np.ones((T, T), bool), k=1)
    assert (np.asarray(w)[..., upper] == 0).all()
    assert (np.asarray(logits)[..., upper] == np.finfo(np.float32).min).all()


def test_decoder_ignores_future_tokens_encoder_does_not(rng):
    tokens = _tokens(rng)
    changed = tokens.copy()
    changed[:, 4] = (changed[:, 4] + 1) % V
    for causal in (True, False):
        _, params = _init(_config(causal=causal), rng)
        _, apply, _ = _jitted(_config(causal=causal))
        a, b = np.asarray(apply(params, tokens)), np.asarray(apply(params, changed))
        if causal:
            np.testing.assert_array_equal(a[:, :4], b[:, :4])
        else:
            assert np.abs(a[:, :4] - b[:, :4]).max() > 1e-4
        assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-4


@pytest.mark.parametrize("causal", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_padded_tokens_do_not_change_real_positions(rng, causal):
    _, params = _init(_config(causal=causal, score="cosine"), rng)
    tokens = _tokens(rng)
    valid = np.ones((B, T), bool)
    valid[0, 5:] = False
    valid[2, [1, 3]] = False
    other = np.where(valid, tokens, (tokens + 3) % V).astype(np.int32)
    _, f, maps = _jitted(_config(causal=causal, score="cosine"))
    a = np.asarray(f(params, tokens, jnp.asarray(valid)))
    b = np.asarray(f(params, other, jnp.asarray(valid)))
    np.testing.assert_array_equal(a[valid], b[valid])
    c = np.asarray(f(params, other))  # without the padding mask they do matter
    assert np.abs(a[valid] - c[valid]).max() > 1e-4
    _, w = maps(params, tokens, jnp.asarray(valid))
    assert (np.asarray(w)[np.broadcast_to(~valid[None, :, None, None, :], w.shape)] == 0).all()


# --- seeds, tracing, dropout -----------------------------------------------------------------

def test_vmapped_seeds_equal_loop(rng):
    model, apply, _ = _jitted(_config(score="neg_sq_euclidean"))
    tokens = jnp.asarray(_tokens(rng))
    seeds = [model.init(jax.random.key(i), tokens) for i in range(3)]
    stacked_params = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    stacked = jax.jit(jax.vmap(apply, in_axes=(0, None)))(stacked_params, tokens)
    for i, params in enumerate(seeds):
        np.testing.assert_allclose(stacked[i], apply(params, tokens), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(stacked[0] - stacked[1])).max() > 1e-4


def test_train_step_traces_once(rng):
    model, params = _init(_config(score="cosine", dropout_rate=0.1, num_outputs=None), rng)
    opt = optax.adamw(1e-2)
    state = (params, opt.init(params))
    traces = []

    @jax.jit
    def step(state, tokens, key, i):
        traces.append(1)
        params, opt_state = state
        rngs = {"dropout": jax.random.fold_in(key, i)}

        def loss(p):
            logits = model.apply(p, tokens[:, :-1], deterministic=False, rngs=rngs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    key = jax.random.key(0)
    losses = []
    for i in range(3):
        state, loss = step(state, jnp.asarray(_tokens(rng)), key, jnp.int32(i))
        losses.append(loss)
    assert len(traces) == 1
    assert np.isfinite(np.asarray(losses)).all()


def test_dropout_needs_an_rng(rng):
    # (that dropout runs and changes the output: test_train_step_traces_once and
    # test_attention.py::test_dropout_path)
    model, params = _init(_config(dropout_rate=0.3), rng)
    with pytest.raises(TransformerError, match="'dropout' rng"):
        model.apply(params, _tokens(rng), deterministic=False)


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"vocab_size": 0}, "vocab_size must be a positive int"),
    ({"width": 10}, "num_heads=3 does not divide width=10"),
    ({"depth": 1.5}, "depth must be a positive int"),
    ({"score": "cosin"}, "did you mean 'cosine'"),
    ({"dropout_rate": 1.0}, r"dropout_rate must be in \[0, 1\)"),
    ({"num_outputs": 0}, "num_outputs must be a positive int"),
    ({"causal": "yes"}, "causal must be a bool"),
])
def test_bad_config_raises(kwargs, match):
    config = _config(**kwargs)
    with pytest.raises(TransformerError, match=match):
        config.validate()
    with pytest.raises(TransformerError, match=match):  # the module validates it too
        Transformer(config).init(jax.random.key(0), jnp.zeros((B, T), jnp.int32))


def test_bad_inputs_raise(rng):
    model, params = _init(_config(), rng)
    tokens = _tokens(rng)
    cases = [
        ((tokens + V,), "token ids must be in \\[0, vocab_size=13\\)"),
        ((tokens - 1,), "got ids in \\[-1"),
        ((_tokens(rng, MAX_LEN + 1),), "sequence length 10 is outside \\[1, max_len=9\\]"),
        ((tokens.astype(np.float32),), "tokens must be integer ids"),
        ((tokens[0],), r"tokens must have shape \[B, T\]"),
        ((tokens, np.ones((B, T + 1), bool)), "padding must be a bool array shaped like"),
        ((tokens, np.ones((B, T), np.int32)), "padding must be a bool array"),
    ]
    for args, match in cases:
        with pytest.raises(TransformerError, match=match):
            model.apply(params, *args)
    # under jit the ids are not concrete: the shape checks still run, before any tracing
    with pytest.raises(TransformerError, match="sequence length"):
        jax.jit(model.apply)(params, _tokens(rng, MAX_LEN + 1))
