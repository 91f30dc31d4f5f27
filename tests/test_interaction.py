"""Interaction models: values against numpy, identities (GMF with h = 1 and bilinear with W = I
are dot), all-items scoring equal to pair scoring, training (loss falls, beats chance, one
trace, vmapped runs equal separate ones), clear errors, and the quick Q5 study."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxemb import interaction, interaction_train, ranking, recdata
from jaxemb.interaction import InteractionError
from jaxemb.interaction_train import InteractionTrainConfig as TrainConfig

U, I, D = 7, 11, 5  # pairwise distinct, so a swapped axis fails
FEATURE = ("dot", "cosine", "gmf", "bilinear", "seed_combo", "neg_sq_euclidean")
ALL = (*FEATURE, "mlp", "product_mlp", "neumf")


def _model(name, **kw):
    if name in interaction.PAIR_MODELS:
        kw.setdefault("hidden", (6, 3))
    return interaction.make_model(name, U, I, D, **kw)


def _random_params(model, seed=0):
    """Init, then replace every leaf by random values (biases, h, W, t all non-trivial)."""
    params = interaction.init_params(model, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, new)


def _relu(x):
    return np.maximum(x, 0)


def reference(name, p):
    """The [U, I] logit matrix in numpy, from the definitions."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    P, Q = p["user"], p["item"]
    bias = p["user_bias"][:, None] + p["item_bias"][None, :]
    if name == "dot":
        s = P @ Q.T
    elif name == "cosine":
        s = np.exp(p["score"]["log_t"]) * (P / np.linalg.norm(P, axis=1, keepdims=True)) @ (
            Q / np.linalg.norm(Q, axis=1, keepdims=True)).T
    elif name == "gmf":
        s = (P * p["score"]["w"]) @ Q.T
    elif name == "bilinear":
        s = P @ p["score"]["W"] @ Q.T
    elif name == "seed_combo":
        s = np.einsum("j,uij->ui", p["score"]["w"],
                      0.5 * (P[:, None] * Q[None] + P[:, None] + Q[None]))
    elif name == "neg_sq_euclidean":
        s = -((P[:, None] - Q[None]) ** 2).sum(-1)
    else:
        def tower(x):
            for layer in ("Dense_0", "Dense_1"):
                x = _relu(x @ p["tower"][layer]["kernel"] + p["tower"][layer]["bias"])
            return x
        Pm, Qm = (p["user_mlp"], p["item_mlp"]) if name == "neumf" else (P, Q)
        x = np.concatenate([np.repeat(Pm[:, None], I, 1), np.repeat(Qm[None], U, 0)], -1)
        if name == "product_mlp":  # the element-wise product vector is the tower's input
            x = P[:, None] * Q[None]
        h = tower(x)
        if name == "neumf":
            h = np.concatenate([P[:, None] * Q[None], h], -1)
        return h @ p["out"]["kernel"][:, 0] + p["out"]["bias"][0] + bias
    return s + bias + p["bias"]


@pytest.mark.parametrize("name", ALL)
def test_scores_equal_numpy_and_all_items_equal_pairs(name):
    model = _model(name)
    params = _random_params(model)
    want = reference(name, params)
    users = jnp.array([3, 0, 6, 3, 1], jnp.int32)
    items = jnp.array([10, 2, 0, 4, 7], jnp.int32)
    got = model.apply({"params": params}, users, items)
    np.testing.assert_allclose(got, want[users, items], rtol=1e-5, atol=1e-5)
    every = interaction.score_all(model, params, np.array([3, 0, 6]))
    assert every.shape == (3, I)
    np.testing.assert_allclose(every, want[[3, 0, 6]], rtol=1e-5, atol=1e-5)
    # score_all (feature maps + matmul, or vmap) equals a loop of pair calls
    loop = np.stack([model.apply({"params": params}, jnp.array([3, 0, 6]),
                                 jnp.full(3, i, jnp.int32)) for i in range(I)], axis=1)
    np.testing.assert_allclose(every, loop, rtol=1e-5, atol=1e-5)


def test_gmf_with_all_ones_head_equals_dot():
    dot, gmf = _model("dot"), _model("gmf")
    p = _random_params(dot)
    pg = dict(p, score={"w": jnp.ones(D)})
    users, items = jnp.arange(U) % 5, jnp.arange(U) % I
    np.testing.assert_allclose(gmf.apply({"params": pg}, users, items),
                               dot.apply({"params": p}, users, items), rtol=1e-6)
    np.testing.assert_allclose(interaction.score_all(gmf, pg, np.arange(U)),
                               interaction.score_all(dot, p, np.arange(U)), rtol=1e-6)
    pg2 = dict(p, score={"w": jnp.ones(D).at[0].set(2.0)})  # any other head differs
    assert not np.allclose(gmf.apply({"params": pg2}, users, items),
                           dot.apply({"params": p}, users, items))
    # and freshly initialised GMF starts as dot (h = 1), bilinear too (W = I)
    assert np.all(interaction.init_params(gmf, jax.random.key(0))["score"]["w"] == 1)
    pb = dict(p, score={"W": jnp.eye(D)})
    np.testing.assert_allclose(_model("bilinear").apply({"params": pb}, users, items),
                               dot.apply({"params": p}, users, items), rtol=1e-5)


def test_product_mlp_contains_the_dot_product():
    """With the tower [I; −I] → ReLU → [1, −1] summed → ReLU → out [1, −1], MLP(u⊙v) is Σ u_j v_j
    exactly (relu(x) − relu(−x) = x): the Background's claim, at widths 2d and 2."""
    model = interaction.make_model("product_mlp", U, I, D, hidden=(2 * D, 2))
    p = _random_params(model)
    eye = np.eye(D)
    p = dict(p, user_bias=jnp.zeros(U), item_bias=jnp.zeros(I),
             tower={"Dense_0": {"kernel": jnp.asarray(np.concatenate([eye, -eye], 1)),
                                "bias": jnp.zeros(2 * D)},
                    "Dense_1": {"kernel": jnp.asarray(np.concatenate(
                        [np.ones((D, 1)), -np.ones((D, 1))]) * np.array([[1.0, -1.0]])),
                                "bias": jnp.zeros(2)}},
             out={"kernel": jnp.array([[1.0], [-1.0]]), "bias": jnp.zeros(1)})
    P, Q = np.asarray(p["user"]), np.asarray(p["item"])
    np.testing.assert_allclose(interaction.score_all(model, p, np.arange(U)), P @ Q.T,
                               rtol=1e-5, atol=1e-5)


def test_seed_combo_user_term_does_not_change_a_users_ranking():
    model = _model("seed_combo")
    p = _random_params(model)
    s = np.asarray(interaction.score_all(model, p, np.arange(U)))
    # removing the user term ½h·u shifts each row by a constant
    shift = 0.5 * np.asarray(p["user"]) @ np.asarray(p["score"]["w"])
    no_user = s - shift[:, None]
    np.testing.assert_array_equal(np.argsort(-s, axis=1), np.argsort(-no_user, axis=1))


def test_dot_scores_all_items_with_one_matmul():
    model = _model("dot")
    p = interaction.init_params(model, jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda p, u: model.apply({"params": p}, u, method="score_all"))(
        p, jnp.arange(3))
    assert str(jaxpr).count("dot_general") == 1


def test_model_errors():
    with pytest.raises(InteractionError, match="unknown model 'dott'; did you mean 'dot'"):
        interaction.make_model("dott", U, I, D)
    with pytest.raises(InteractionError, match="dim must be a positive integer, got 0"):
        interaction.make_model("dot", U, I, 0)
    with pytest.raises(InteractionError, match=r"model 'dot' has no option\(s\) \['hidden'\]"):
        interaction.make_model("dot", U, I, D, hidden=(4,))
    with pytest.raises(InteractionError, match="hidden must be a non-empty tuple"):
        interaction.make_model("mlp", U, I, D, hidden=())
    with pytest.raises(InteractionError, match="temperature must be > 0"):
        interaction.make_model("cosine", U, I, D, temperature=0.0)
    model = _model("mlp")
    p = interaction.init_params(model, jax.random.key(0))
    with pytest.raises(InteractionError, match="user id 7 is out of range: there are 7 users"):
        model.apply({"params": p}, jnp.array([7]), jnp.array([0]))
    with pytest.raises(InteractionError, match="item id -1 is out of range"):
        _model("dot").apply({"params": interaction.init_params(_model("dot"),
                                                               jax.random.key(0))},
                            jnp.array([0]), jnp.array([-1]))
    with pytest.raises(InteractionError, match="user id 9 is out of range"):
        interaction.score_all(model, p, [0, 9])


def test_sample_negatives_avoid_seen_items_and_are_uniform():
    n_users, n_items = 40, 13
    seen = np.random.default_rng(0).random((n_users, n_items)) < 0.3
    users = jnp.asarray(np.repeat(np.arange(n_users), 50), jnp.int32)
    negs = np.asarray(interaction_train.sample_negatives(jax.random.key(0), users,
                                                         jnp.asarray(seen), 4))
    hit = seen[np.asarray(users)[:, None], negs]
    assert hit.mean() < 0.01  # density^5 ≈ 0.002
    once = np.asarray(interaction_train.sample_negatives(jax.random.key(0), users,
                                                         jnp.asarray(seen), 4, tries=0))
    assert abs(seen[np.asarray(users)[:, None], once].mean() - seen.mean()) < 0.03
    counts = np.bincount(negs.ravel(), minlength=n_items)
    expected = ((~seen).astype(float) / (~seen).sum(1, keepdims=True)).sum(0) * 50 * 4
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 5)


def test_only_embedding_tables_are_decayed():
    p = interaction.init_params(_model("neumf"), jax.random.key(0))
    decayed = {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(p)
               if interaction_train._decayed(path)}
    assert decayed == {"['user']", "['item']", "['user_mlp']", "['item_mlp']"}


@pytest.fixture(scope="module")
def planted():
    p = recdata.planted_dot(num_users=60, num_items=120, dim=4, per_user=10, seed=1)
    return p, recdata.leave_one_out(p.data)


def test_training_lowers_loss_beats_chance_and_traces_once(planted):
    p, split = planted
    model = interaction.make_model("dot", 60, 120, 8)
    cfg = TrainConfig(epochs=10, batch_size=64, lrs=(3e-2, 1e-1), weight_decays=(0.0, 1.0),
                      seeds=(0,))
    epoch_fn = interaction_train.make_epoch(model, cfg)
    res = interaction_train.train(model, split.train, cfg, epoch_fn=epoch_fn)
    assert res.loss.shape == (10, 4) and res.runs[1] == (0, 3e-2, 1.0)
    assert np.all(res.loss[-1] < 0.8 * res.loss[0])
    score = interaction_train.score_all_runs(model)
    out = ranking.evaluate(lambda u: score(res.params, u), split.test_users, split.test_items,
                           split.exclude(), 10)
    chance = ranking.expected_random(10, 120 - 9)[0]
    assert np.all(np.asarray(out["hr"]) > 2.5 * chance)  # measured 0.28-0.37, chance 0.09
    # another run with other values of the same shapes: still one trace
    other = TrainConfig(epochs=2, batch_size=64, lrs=(1e-3,), weight_decays=(0.5, 0.1),
                        seeds=(5, 6))  # 4 runs again
    interaction_train.train(model, split.train, other, epoch_fn=epoch_fn)
    assert epoch_fn._cache_size() == 1
    # vmap == loop: the last run trained alone ends with the same parameters
    alone = interaction_train.train(model, split.train, dataclasses.replace(
        cfg, lrs=(1e-1,), weight_decays=(1.0,)))
    assert alone.runs == [res.runs[3]]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[3], b[0], rtol=1e-3, atol=1e-5),
                 res.params, alone.params)


def test_training_errors(planted):
    _, split = planted
    model = interaction.make_model("dot", 60, 120, 4)
    with pytest.raises(InteractionError, match="built for 61 and 120"):
        interaction_train.train(interaction.make_model("dot", 61, 120, 4), split.train,
                                TrainConfig())
    with pytest.raises(InteractionError, match="seeds must be distinct"):
        interaction_train.train(model, split.train, TrainConfig(seeds=(1, 1)))
    with pytest.raises(InteractionError, match="lrs must be one or more rates > 0"):
        interaction_train.train(model, split.train, TrainConfig(lrs=(0.0,)))
    with pytest.raises(InteractionError, match="weight_decays must be one or more values"):
        interaction_train.train(model, split.train, TrainConfig(weight_decays=(-1.0,)))
    with pytest.raises(InteractionError, match="negatives must be >= 1"):
        interaction_train.train(model, split.train, TrainConfig(negatives=0))
    full = recdata.Interactions(np.repeat(np.arange(2), 3), np.tile(np.arange(3), 2),
                                np.ones(6), np.zeros(6), 2, 3)
    with pytest.raises(InteractionError, match="some user has seen every item"):
        interaction_train.train(interaction.make_model("dot", 2, 3, 2), full, TrainConfig())
    with pytest.raises(InteractionError, match="NaN/inf in epoch 1"):
        interaction_train.train(model, split.train,
                                TrainConfig(epochs=1, lrs=(1e38,), batch_size=64))
