"""Dual encoders (jaxemb.dual_encoder): the planted popularity data against its definition (closed
forms), the in-batch softmax against numpy, in-batch logits against pair scores, training (loss
falls, one trace, the log-Q flag changes the loss), recall by group and the norm correlation
against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxemb import dual_encoder as de
from jaxemb import recdata
from jaxemb.interaction import InteractionError


def test_planted_norms_weights_and_probs_follow_the_definition():
    p = de.planted_popularity(50, 30, 4, 5, zipf=0.8, tail_norm=0.7, sigma=1.3, seed=3)
    w = (np.arange(30) + 1.0) ** -0.8
    np.testing.assert_allclose(p.weight, w / w.sum())
    rho = np.sqrt(0.7 ** 2 + 2 * np.log(w / w.min()) / 1.3 ** 2)  # the closed form
    np.testing.assert_allclose(np.linalg.norm(p.items, axis=1), rho, rtol=1e-10)
    np.testing.assert_allclose(de.popularity_norms(p.weight, 0.7, 1.3), rho, rtol=1e-10)
    assert np.isclose(np.linalg.norm(p.items[-1]), 0.7)  # the least popular item: r
    z = p.users @ p.items.T
    np.testing.assert_allclose(p.probs(), np.exp(z) / np.exp(z).sum(1, keepdims=True),
                               rtol=1e-10)
    d = p.data
    assert len(d) == 50 * 5 and d.num_items == 30
    for u in range(50):  # per_user distinct items, timestamps a permutation
        assert len(set(d.items[d.users == u])) == 5
        assert sorted(d.timestamps[d.users == u]) == list(range(5))
    assert p.head(0.1).tolist() == [True] * 3 + [False] * 27


def test_item_norm_sets_expected_exp_score_proportional_to_popularity():
    """E_X[exp(X·Y_i)] = exp(σ²ρ_i²/2) = exp(σ²r²/2) · w_i / w_min for X ~ N(0, σ²I)."""
    p = de.planted_popularity(10, 12, 3, 2, zipf=0.5, tail_norm=1.0, sigma=0.8, seed=0)
    X = 0.8 * np.random.default_rng(1).standard_normal((400_000, 3))
    mc = np.exp(X @ p.items.T).mean(axis=0)
    closed = np.exp(0.8 ** 2 * 1.0 / 2) * p.weight / p.weight.min()
    np.testing.assert_allclose(mc, closed, rtol=0.03)


def test_first_draw_is_softmax_distributed():
    p = de.planted_popularity(20_000, 8, 2, 1, zipf=1.0, seed=5)
    counts = np.bincount(p.data.items, minlength=8)
    expected = p.probs().sum(axis=0)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 1)


def _reference_info_nce(L, items, log_q=None):
    L = np.asarray(L, np.float64) - (0 if log_q is None else np.asarray(log_q)[None, :])
    out = []
    for a in range(len(items)):
        keep = [b for b in range(len(items)) if b == a or items[b] != items[a]]
        out.append(-L[a, a] + np.log(np.sum(np.exp(L[a, keep]))))
    return np.mean(out)


def test_info_nce_equals_numpy():
    rng = np.random.default_rng(0)
    L = rng.standard_normal((5, 5)) * 2
    items = np.array([3, 1, 3, 4, 0])  # item 3 twice: not its own negative
    log_q = np.log(rng.uniform(0.05, 0.5, 5))
    got = de.info_nce(jnp.asarray(L), jnp.asarray(items), jnp.asarray(log_q))
    np.testing.assert_allclose(got, _reference_info_nce(L, items, log_q), rtol=1e-5)
    got = de.info_nce(jnp.asarray(L), jnp.asarray(items))
    np.testing.assert_allclose(got, _reference_info_nce(L, items), rtol=1e-5)
    distinct = jnp.arange(5)  # no repeats: plain softmax cross-entropy on the diagonal
    want = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(L), distinct).mean()
    np.testing.assert_allclose(de.info_nce(jnp.asarray(L), distinct), want, rtol=1e-5)


@pytest.mark.parametrize("score", list(de.SCORES))
def test_in_batch_logits_equal_pair_scores(score):
    model = de.make_encoder(score, 7, 11, 5)
    params = model.init(jax.random.key(0), jnp.zeros(1, jnp.int32), jnp.zeros(1, jnp.int32))
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape),
                          params)
    u, i = jnp.array([0, 3, 6, 3]), jnp.array([10, 2, 2, 5])
    S = model.apply(params, u, i, method="score_pairs")
    assert S.shape == (4, 4)
    # every (user, item) pair of the batch through the pair score, one call
    loop = model.apply(params, jnp.repeat(u, 4), jnp.tile(i, 4)).reshape(4, 4)
    np.testing.assert_allclose(S, loop, rtol=1e-5, atol=1e-5)
    P, Q = (np.asarray(params["params"][t], np.float64) for t in ("user", "item"))
    if score == "neg_sq_euclidean":
        want = -((P[np.asarray(u)][:, None] - Q[np.asarray(i)][None]) ** 2).sum(-1)
        np.testing.assert_allclose(S, want, rtol=1e-4, atol=1e-4)
    if score == "dot":
        np.testing.assert_allclose(S, P[np.asarray(u)] @ Q[np.asarray(i)].T, rtol=1e-5)


def test_fixed_temperature_gets_no_gradient_and_learned_one_does():
    u, i = jnp.array([0, 1, 2]), jnp.array([1, 2, 0])
    for score, moves in (("cosine_fixed", False), ("cosine_learned", True)):
        model = de.make_encoder(score, 3, 4, 2)
        v = model.init(jax.random.key(0), u, i)
        g = jax.jit(jax.grad(lambda v, m=model: de.info_nce(
            m.apply(v, u, i, method="score_pairs"), i)))(v)
        assert bool(g["params"]["score"]["log_t"] != 0) == moves


@pytest.fixture(scope="module")
def small():
    p = de.planted_popularity(60, 40, 3, 6, seed=2)
    split = recdata.leave_one_out(p.data)
    return p, split


def test_training_lowers_the_loss_traces_once_and_logq_matters(small):
    p, split = small
    model = de.make_encoder("dot", 60, 40, 4)
    cfg = de.ContrastiveConfig(epochs=4, batch_size=32, lrs=(5e-2,), temperatures=(0.3,),
                               seeds=(0,), logq=(False, True))
    epoch_fn = de.make_epoch(model, cfg)
    res = de.train(model, split.train, cfg, epoch_fn=epoch_fn)
    assert res.runs == [(0, False, 5e-2, 0.3), (0, True, 5e-2, 0.3)]
    assert res.loss.shape == (4, 2) and np.all(res.loss[-1] < res.loss[0])
    assert not np.allclose(res.params["item"][0], res.params["item"][1])  # log-Q changes it
    de.train(model, split.train, cfg, epoch_fn=epoch_fn,
             runs=[(3, False, 1e-2, 1.0), (4, True, 1e-3, 0.1)])
    assert epoch_fn._cache_size() == 1
    with pytest.raises(InteractionError, match="NaN/inf"):
        de.train(model, split.train, cfg, runs=[(0, False, 1e30, 1.0)] * 2)
    with pytest.raises(InteractionError, match="temperatures must be"):
        de.train(model, split.train, de.ContrastiveConfig(temperatures=(0.0,)))
    with pytest.raises(InteractionError, match="unknown dual-encoder score"):
        de.make_encoder("cos", 2, 2, 2)


def test_pair_ranks_and_recall_by_group_against_numpy():
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.8, 0.1], [0.0, 0.1, 0.2, 0.3]],
                      np.float32)
    users, items = np.array([0, 1, 2, 0]), np.array([2, 1, 0, 3])
    exclude = np.zeros((4, 4), bool)
    exclude[0, 0] = True  # the first pair: item 0 is a training item
    r = de.pair_ranks(lambda u: jnp.asarray(scores)[u][None], users, items, exclude, block=3)
    # pair 0: 0.5 among {0.1, 0.5, 0.3} -> 1; pair 1: 0.8 tied with 0.8 -> 2 (pessimistic);
    # pair 2: 0.0 last of 4 -> 4; pair 3: 0.3 behind 0.9 and 0.5 -> 3
    assert r.tolist() == [[1, 2, 4, 3]]
    head = np.array([False, True, True, False])  # items 1 and 2: the first two pairs
    rec = de.recall_by_group(r, items, {"head": head, "tail": ~head}, 2)
    assert rec["all"].tolist() == [0.5] and rec["head"].tolist() == [1.0]
    assert rec["tail"].tolist() == [0.0]


def test_norm_correlation_and_temperatures():
    rng = np.random.default_rng(0)
    tables = rng.standard_normal((3, 9, 4))
    log_w = rng.standard_normal(9)
    want = [np.corrcoef(np.linalg.norm(t, axis=1), log_w)[0, 1] for t in tables]
    np.testing.assert_allclose(de.norm_correlation(tables, log_w), want, rtol=1e-10)
    runs = [(0, False, 0.1, 0.2), (1, True, 0.1, 0.5)]
    np.testing.assert_allclose(de.temperatures({"score": {"log_t": np.log([2.0, 0.5])}}, runs),
                               [0.1, 1.0])
    np.testing.assert_allclose(de.temperatures({}, runs), [0.2, 0.5])
