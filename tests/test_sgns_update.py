"""The row update on the case that diverged: one word fills 40% of every block (as "the" does
at sample 0), so its rows are touched by hundreds of terms per block. The curvature-bounded
updates ("implicit": both sides at once, half a Newton step each; "sequential": input side,
then output side against the moved inputs, a full one each) train at narrow, standard and wide
window × negative settings; the plain summed update (word2vec's gradient summed over the block)
diverges on the same corpus, so the test can fail. The sequential update is checked against an
autodiff reference."""

import dataclasses

import numpy as np
import pytest

from jaxemb import train
from jaxemb.sgns import SGNSConfig
from jaxemb.train import TrainConfig

V, N = 300, 20_000


@pytest.fixture(scope="module")
def heavy():
    """Documents where word 0 is 40% of the tokens, the rest Zipf(1.2) over 299 words."""
    rng = np.random.default_rng(0)
    other = np.minimum(rng.zipf(1.2, N), V - 1)
    tokens = np.where(rng.random(N) < 0.4, 0, other).astype(np.int32)
    counts = np.maximum(np.bincount(tokens, minlength=V), 1)
    return np.split(tokens, 10), counts


def _cfg(window, negative, update="implicit"):
    return SGNSConfig(dim=32, window=window, negative=negative, sample=0, micro_batch=256,
                      micro_steps=8, update=update)


@pytest.mark.parametrize("update", ["implicit", "sequential"])
@pytest.mark.parametrize("window,negative", [(2, 5), (5, 15), (10, 20)])
def test_a_word_filling_the_block_trains_stably(heavy, window, negative, update):
    docs, counts = heavy
    res = train.train(docs, counts, _cfg(window, negative, update),
                      TrainConfig(epochs=3, seeds=(0,)), progress=False)
    loss = res.epoch_loss[:, 0]
    assert np.isfinite(loss).all() and np.all(np.diff(loss) < 0), loss
    # all-zero output vectors cost (1 + negative)·log 2 per pair: well below that
    assert loss[-1] < 0.8 * (1 + negative) * np.log(2), loss
    p = res.seed_params(0)
    for table in ("in", "out"):
        norms = np.linalg.norm(np.asarray(p[table]), axis=1)
        # measured ≤ 2.9 (implicit), ≤ 3.4 (sequential), 3 epochs; the summed update: inf
        assert np.isfinite(norms).all() and norms.max() < 10, (table, norms.max())
    # the frequent word learned (its input row left the ±0.5/d init, ‖·‖ ≈ 0.05)
    assert np.linalg.norm(np.asarray(p["in"][0])) > 0.5


def test_the_plain_summed_update_diverges_on_the_same_corpus(heavy):
    docs, counts = heavy
    with pytest.raises(train.DivergenceError, match="update='sum' is the likely cause"):
        train.train(docs, counts, dataclasses.replace(_cfg(5, 15), update="sum"),
                    TrainConfig(epochs=3, seeds=(0,)), progress=False)


def test_damped_update_divides_each_rows_gradient_by_its_count_to_the_0_3(rng):
    """update="damped" (the SGNS study's rule): a numpy reference of c^-0.3 per table."""
    from jaxemb.sgns_update import DAMP_ALPHA, damped_gradients

    ids = np.array([3, 1, 3, 3, 0], np.int32)
    neg_ids = np.array([[1, 2], [3, 1]], np.int32)
    g_in, g_out = rng.standard_normal((2, 5, 4)).astype(np.float32)
    g_neg = rng.standard_normal((2, 2, 4)).astype(np.float32)
    _, d_in, d_out, d_neg = damped_gradients((None, g_in, g_out, g_neg), ids, neg_ids, 6)
    c_in = np.array([np.sum(ids == i) for i in ids], np.float64)
    out_ids = np.concatenate([ids, neg_ids.ravel()])
    c_out = np.array([np.sum(out_ids == i) for i in out_ids], np.float64)
    np.testing.assert_allclose(d_in, g_in * c_in[:, None] ** -DAMP_ALPHA, rtol=1e-6)
    np.testing.assert_allclose(d_out, g_out * c_out[:5, None] ** -DAMP_ALPHA, rtol=1e-6)
    np.testing.assert_allclose(d_neg, g_neg * c_out[5:].reshape(2, 2, 1) ** -DAMP_ALPHA,
                               rtol=1e-6)
    assert DAMP_ALPHA == 0.3


def _sequential_reference(P_in, P_out, ids, neg_ids, pair, centre, w, negative, g, lr,
                          segment=True):
    """update="sequential" written out term by term in float64 numpy: every (input row, output
    row, weight, label) term of the block; per word, G = Σ_t w_t(σ(s_t) − y_t)·partner_t and
    H₀ = Σ_t w_t σ'(s_t)(partner_t·Ĝ)²; a₀ = lr·ψ(lr·H₀), ψ(x) = min(1, 1/x); H as H₀ with σ'
    at its mean over s_t → s_t − a₀·(partner_t·G), the secant (σ(e) − σ(s))/(e − s); the row
    moves by −lr·ψ(lr·H)·G. Input side first, then the output side against the moved input rows."""
    V = P_in.shape[0]
    b = len(centre)
    offs = [*range(-w, 0), *range(1, w + 1)]
    terms = []  # (input word, output word, weight, label)
    for i in range(b):
        for o, off in enumerate(offs):
            if pair[i, o]:
                terms.append((ids[w + i], ids[w + i + off], pair[i, o], 1.0))
        wn = negative * pair[i].sum() * centre[i] / neg_ids.shape[1]
        for n in neg_ids[i // g]:
            terms.append((ids[w + i], n, wn, 0.0))
    t_in, t_out, t_w, t_y = (np.array(x) for x in zip(*terms, strict=True))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    sp = lambda x: sig(x) * sig(-x)  # noqa: E731
    psi = lambda x: 1.0 / np.maximum(x, 1.0)  # noqa: E731

    def side(rows, partners, table, other):
        x, y = table[rows], other[partners]  # the moving rows, their partners
        s = np.sum(x * y, 1)
        G = np.zeros_like(table)
        np.add.at(G, rows, (t_w * (sig(s) - t_y))[:, None] * y)
        v = np.sum(y * G[rows], 1)
        gg = np.maximum(np.sum(G * G, 1), 1e-300)
        H0 = np.bincount(rows, t_w * sp(s) * v * v, minlength=V) / gg
        a0 = lr * psi(lr * H0)
        e = s - a0[rows] * v
        de = np.where(np.abs(e - s) < 1e-12, 1.0, e - s)
        mean = np.where(np.abs(e - s) < 1e-12, sp(s), (sig(e) - sig(s)) / de)
        H = np.bincount(rows, t_w * (mean if segment else sp(s)) * v * v, minlength=V) / gg
        return table - lr * psi(lr * H)[:, None] * G, psi(lr * H)

    new_in, f_in = side(t_in, t_out, P_in, P_out)
    new_out, f_out = side(t_out, t_in, P_out, new_in)
    return new_in, new_out, min(f_in.min(), f_out.min())


@pytest.mark.parametrize("path", ["sequential_update", "sequential_update_general"])
def test_sequential_update_matches_a_term_by_term_reference(rng, path):
    """Both paths: the dot score's (gradients written out, no second forward pass) and the
    general one (autodiff, a second forward pass against the moved rows)."""
    import jax
    import jax.numpy as jnp

    from jaxemb import sgns

    V, d, w, b, g, pool, lr = 6, 3, 2, 16, 8, 5, 0.4
    cfg = SGNSConfig(dim=d, window=w, negative=2, micro_batch=b, neg_group=g, neg_pool=pool,
                     update="sequential")
    P = {t: rng.standard_normal((V, d)) for t in ("in", "out")}
    ids = rng.integers(0, V, b + 2 * w)
    neg_ids = rng.integers(0, V, (b // g, pool))
    centre = (rng.random(b) < 0.9).astype(np.float64)
    pair = (rng.random((b, 2 * w)) < 0.7) * centre[:, None]
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got, loss, n_pairs = jax.jit(lambda P: getattr(sgns, path)(
        cfg, P, jnp.asarray(ids, jnp.int32), jnp.asarray(neg_ids, jnp.int32), f32(pair),
        f32(centre), jnp.float32(lr)))({"in": f32(P["in"]), "out": f32(P["out"]), "score": {}})
    want_in, want_out, smallest = _sequential_reference(P["in"], P["out"], ids, neg_ids, pair,
                                                        centre, w, 2, g, lr)
    assert smallest < 0.5  # the bound is active
    np.testing.assert_allclose(got["in"], want_in, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["out"], want_out, rtol=1e-4, atol=1e-5)
    assert float(n_pairs) == pair.sum()
    # the reference sees the curvature over the move, not only at the current logits
    plain_in, plain_out, _ = _sequential_reference(P["in"], P["out"], ids, neg_ids, pair, centre,
                                                   w, 2, g, lr, segment=False)
    assert not np.allclose(want_out, plain_out, atol=1e-3)


@pytest.mark.parametrize("window,negative,g", [(2, 5, 16), (5, 3, 32), (10, 2, 64), (5, 2, 4)])
def test_the_dot_path_equals_the_general_path(rng, window, negative, g):
    """update="sequential" for the dot score (logits after the input step from the first
    pass's, −a·(u·k)) equals the general path (a second forward pass through the moved rows)
    to float rounding, on blocks where words repeat as centres, contexts and negatives."""
    import jax
    import jax.numpy as jnp

    from jaxemb import sgns

    V, d, b = 40, 16, 128
    cfg = SGNSConfig(dim=d, window=window, negative=negative, micro_batch=b, neg_group=g)
    P = {"in": jnp.asarray(rng.standard_normal((V, d)), jnp.float32),
         "out": jnp.asarray(rng.standard_normal((V, d)), jnp.float32), "score": {}}
    ids = jnp.asarray(np.minimum(rng.zipf(1.5, b + 2 * window), V) - 1, jnp.int32)
    neg_ids = jnp.asarray(rng.integers(0, V, (b // g, sgns.pool_size(cfg))), jnp.int32)
    centre = (rng.random(b) < 0.95).astype(np.float32)
    pair = ((rng.random((b, 2 * window)) < 0.7) * centre[:, None]).astype(np.float32)
    args = (ids, neg_ids, jnp.asarray(pair), jnp.asarray(centre), jnp.float32(0.3))
    fast, loss_f, _ = jax.jit(lambda P: sgns.sequential_update(cfg, P, *args))(P)
    general, loss_g, _ = jax.jit(lambda P: sgns.sequential_update_general(cfg, P, *args))(P)
    moved = np.abs(np.asarray(general["out"]) - np.asarray(P["out"])).max()
    assert moved > 0.1  # the update does something
    np.testing.assert_allclose(fast["in"], general["in"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast["out"], general["out"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss_f, loss_g, rtol=1e-5)


def test_the_band_layouts_pieces_equal_loops(rng):
    """jaxemb.sgns_dot's band layout against loops: the in-band entries of the tile scores,
    each centre's sum over its slots and its transpose, each context's sum over the centres
    whose slot it is (with and without per-centre rows)."""
    from jaxemb.sgns_dot import band_take, centre_sum, context_sum

    b, w, T, d = 32, 3, 8, 4
    offs = [*range(-w, 0), *range(1, w + 1)]
    x = rng.standard_normal((b // T, T, T + 2 * w)).astype(np.float32)
    c = rng.standard_normal((b, 2 * w)).astype(np.float32)
    k = rng.standard_normal((b + 2 * w, d)).astype(np.float32)
    q = rng.standard_normal((b, d)).astype(np.float32)
    want_band = np.array([[x[i // T, i % T, i % T + w + o] for o in offs] for i in range(b)])
    want_centre = np.array([sum(c[i, s] * k[i + w + o] for s, o in enumerate(offs))
                            for i in range(b)])
    want_ctx, want_cnt = np.zeros((b + 2 * w, d)), np.zeros(b + 2 * w)
    for i in range(b):
        for s, o in enumerate(offs):
            want_ctx[i + w + o] += c[i, s] * q[i]
            want_cnt[i + w + o] += c[i, s]
    np.testing.assert_array_equal(band_take(x, w, T), want_band)
    np.testing.assert_allclose(centre_sum(c, k, w), want_centre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context_sum(c, q, w), want_ctx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(context_sum(c, None, w), want_cnt, rtol=1e-5, atol=1e-6)
