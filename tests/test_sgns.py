"""SGNS pieces against independent references: sampling distributions (chi-square), gensim's
keep probability in closed form, the loss by hand in float64, gradients (finite differences), the
sparse update against dense autodiff, a whole train call against a hand-written dense loop, one
trace per run, and the errors for bad settings."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.test_util import check_grads

from jaxemb import sgns, sgns_update
from jaxemb.scoring import ScoreError
from jaxemb.sgns import SGNSConfig, SGNSError

# ---------------------------------------------------------------------------- references


def _offsets(w: int) -> list[int]:
    """The context slots of pair_mask's columns, as documented: -w..-1, 1..w."""
    return [*range(-w, 0), *range(1, w + 1)]


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _np_score(score: str, sp: dict, q: np.ndarray, k: np.ndarray) -> float:
    """One logit in float64, written out per score (independent of jaxemb.scoring)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    if score == "dot":
        s = float(q @ k)
    elif score == "cosine":
        s = float(np.exp(float(sp["log_t"])) * (q @ k) / (np.linalg.norm(q) * np.linalg.norm(k)))
    elif score == "bilinear":
        s = float(q @ np.asarray(sp["W"], np.float64) @ k)
    else:
        raise AssertionError(score)
    return s + float(sp.get("b", 0.0))


def _np_block_loss(cfg, sp, rows_in, rows_out, rows_neg, pair_mask, centre_mask) -> float:
    """−Σ_pairs log σ(s(i, i+o)) − Σ_i (negative·n_i/pool) Σ_s log σ(−s(i, s)), loop by loop."""
    w, b = cfg.window, len(pair_mask)
    loss = 0.0
    for i in range(b):
        q = rows_in[w + i]
        for j, o in enumerate(_offsets(w)):
            if pair_mask[i][j]:
                loss -= _log_sigmoid(_np_score(cfg.score, sp, q, rows_out[w + i + o]))
        n_i = float(np.sum(pair_mask[i])) * float(centre_mask[i])
        for neg in rows_neg[i // cfg.neg_group]:
            loss -= cfg.negative * n_i / cfg.neg_pool * _log_sigmoid(
                -_np_score(cfg.score, sp, q, neg))
    return loss


def _score_params(score: str, rng, d: int, dtype=np.float32) -> dict:
    if score == "cosine":
        return {"log_t": jnp.asarray(np.log(2.5), dtype)}
    if score == "bilinear":  # far from the identity, not symmetric
        return {"W": jnp.asarray(rng.standard_normal((d, d)), dtype)}
    return {}


# ------------------------------------------------------------------------- negatives


COUNTS = np.array([13, 500, 1, 90, 0, 7, 200, 40, 3])  # distinct, unsorted, one unseen word


def test_negatives_follow_unigram_to_the_three_quarters():
    n = 200_000
    cdf = jnp.asarray(sgns.negative_cdf(COUNTS), jnp.float32)
    ids = np.asarray(sgns.sample_negatives(jax.random.key(7), cdf, (400, n // 400)))
    assert ids.shape == (400, n // 400) and ids.dtype == np.int32
    observed = np.bincount(ids.ravel(), minlength=len(COUNTS))
    assert len(observed) == len(COUNTS)
    assert observed[COUNTS == 0].sum() == 0  # an unseen word is never a negative
    seen = COUNTS > 0

    def p_value(power):
        p = COUNTS[seen] ** power / np.sum(COUNTS[seen] ** power)
        return scipy.stats.chisquare(observed[seen], n * p).pvalue

    assert p_value(0.75) > 1e-3
    assert p_value(1.0) < 1e-6  # the test can tell word2vec's 0.75 from plain unigrams
    assert p_value(0.5) < 1e-6


def test_negative_cdf_by_hand():
    np.testing.assert_allclose(sgns.negative_cdf([16, 0, 81], power=0.75),
                               [8 / 35, 8 / 35, 1.0], rtol=1e-12)
    np.testing.assert_allclose(sgns.negative_cdf([1, 3], power=1.0), [0.25, 1.0], rtol=1e-12)


# --------------------------------------------------------------------------- windows


def _expected_masks(w, r, docs, valid):
    """pair_mask from reduced windows r by the definition: |o| <= r_i, one document, both kept."""
    b = len(r)
    pair = np.zeros((b, 2 * w), np.float32)
    for i in range(b):
        c = w + i
        for j, o in enumerate(_offsets(w)):
            pair[i, j] = (abs(o) <= r[i] and valid[c] and valid[c + o]
                          and docs[c] == docs[c + o])
    return pair, valid[w:w + b].astype(np.float32)


def test_window_sizes_are_uniform_and_pairs_stay_in_documents_and_kept_positions(rng):
    w, b = 5, 20_000
    cfg = SGNSConfig(window=w, micro_batch=b, neg_group=b)
    key = jax.random.key(3)
    pair, centre = sgns.block_masks(cfg, key, jnp.zeros(b + 2 * w, jnp.int32),
                                    jnp.ones(b + 2 * w, bool))
    pair = np.asarray(pair)
    assert pair.shape == (b, 2 * w)
    np.testing.assert_array_equal(centre, np.ones(b))
    offs = np.abs(_offsets(w))
    r = np.max(np.where(pair > 0, offs, 0), axis=1)  # each centre's reduced window
    # every slot within the reduced window is a pair, on both sides, and none beyond it
    np.testing.assert_array_equal(pair, (offs[None, :] <= r[:, None]).astype(np.float32))
    observed = np.bincount(r, minlength=w + 1)
    assert observed[0] == 0 and len(observed) == w + 1  # r in 1..window
    assert scipy.stats.chisquare(observed[1:]).pvalue > 1e-3  # uniform
    tilted = np.arange(1, w + 1) / np.sum(np.arange(1, w + 1))
    assert scipy.stats.chisquare(observed[1:], b * tilted).pvalue < 1e-6  # the test has power

    # several documents and removed positions, same key (so the same reduced windows)
    docs = np.repeat(np.arange(400), rng.integers(1, 100, 400))[:b + 2 * w]
    assert len(docs) == b + 2 * w
    valid = rng.random(b + 2 * w) < 0.8
    pair2, centre2 = sgns.block_masks(cfg, key, jnp.asarray(docs, jnp.int32), jnp.asarray(valid))
    pair2 = np.asarray(pair2)
    ctx = w + np.arange(b)[:, None] + np.asarray(_offsets(w))[None, :]
    on = pair2 > 0
    assert np.all(docs[ctx][on] == np.broadcast_to(docs[w:w + b, None], on.shape)[on])
    assert np.all(valid[ctx][on]) and not np.any(on[~valid[w:w + b]])
    want_pair, want_centre = _expected_masks(w, r, docs, valid)
    np.testing.assert_array_equal(pair2, want_pair)
    np.testing.assert_array_equal(centre2, want_centre)


def test_window_offsets():
    np.testing.assert_array_equal(sgns.window_offsets(3), [-3, -2, -1, 1, 2, 3])


# ----------------------------------------------------------------------- subsampling


def test_keep_probability_closed_form():
    counts = np.array([900, 90, 9, 1])  # f = 0.9, 0.09, 0.009, 0.001
    # t = 1e-3: (√(f/t) + 1)·t/f = (30+1)/900, (√90+1)/90, (3+1)/9, (1+1)/1 -> 1
    want = [31 / 900, (math.sqrt(90) + 1) / 90, 4 / 9, 1.0]
    np.testing.assert_allclose(sgns.keep_probability(counts, 1e-3), want, rtol=1e-12)
    np.testing.assert_allclose(sgns.keep_probability(counts * 7, 1e-3), want, rtol=1e-12)
    np.testing.assert_allclose(sgns.keep_probability(counts, 1e-2),
                               [(math.sqrt(90) + 1) / 90, 4 / 9, 1.0, 1.0], rtol=1e-12)
    np.testing.assert_array_equal(sgns.keep_probability(counts, 0.0), np.ones(4))


def test_subsample_keeps_each_word_at_its_rate_and_compacts_in_order(rng):
    counts = np.array([20_000, 5_000, 1_000, 200, 50])
    tokens = rng.permutation(np.repeat(np.arange(5), counts)).astype(np.int32)
    p = sgns.keep_probability(counts, 1e-2)
    assert 0.1 < p[0] < p[1] < p[2] < 1.0 and p[3] == p[4] == 1.0
    # one token per document: the kept documents are the kept positions
    corpus = sgns.device_corpus([tokens[i:i + 1] for i in range(len(tokens))], counts, 1e-2)
    np.testing.assert_array_equal(corpus.docs, np.arange(len(tokens)))
    np.testing.assert_allclose(corpus.keep_prob, p, rtol=1e-6)
    kept, kept_docs, n_kept = sgns.subsample(corpus, jax.random.key(11))
    kept, pos, n = np.asarray(kept), np.asarray(kept_docs), int(n_kept)
    assert kept.shape == tokens.shape
    pos = pos[:n]
    assert np.all(np.diff(pos) > 0)  # original order, no repeats
    np.testing.assert_array_equal(kept[:n], tokens[pos])  # tokens and docs aligned
    got = np.bincount(kept[:n], minlength=5)
    mean, sd = counts * p, np.sqrt(counts * p * (1 - p))
    assert np.all(np.abs(got - mean) <= 5 * sd + 1e-9), (got, mean, sd)
    assert n == got.sum()

    everything = sgns.device_corpus([tokens[:700], tokens[700:]], counts, 0.0)
    kept, kept_docs, n_kept = sgns.subsample(everything, jax.random.key(11))
    assert int(n_kept) == len(tokens)
    np.testing.assert_array_equal(kept, tokens)
    np.testing.assert_array_equal(kept_docs, np.repeat([0, 1], [700, len(tokens) - 700]))


def test_device_corpus_concatenates_and_skips_empty_documents():
    docs = [np.array([2, 0], np.int32), np.array([], np.int32), np.array([1, 1, 2], np.int32)]
    c = sgns.device_corpus(docs, np.array([1, 2, 2]), 0.0)
    np.testing.assert_array_equal(c.tokens, [2, 0, 1, 1, 2])
    np.testing.assert_array_equal(c.docs, [0, 0, 1, 1, 1])
    assert c.n_tokens == 5
    np.testing.assert_allclose(c.neg_cdf, sgns.negative_cdf([1, 2, 2]), rtol=1e-6)


# ------------------------------------------------------------------------------ loss


def _tiny(score, rng, w, b, g, pool, d=3, negative=3, dtype=np.float32, bias=False):
    cfg = SGNSConfig(dim=d, window=w, negative=negative, score=score, micro_batch=b,
                     neg_group=g, neg_pool=pool, bias=bias)
    cfg.validate()
    rows_in = rng.standard_normal((b + 2 * w, d)).astype(dtype)
    rows_out = rng.standard_normal((b + 2 * w, d)).astype(dtype)
    rows_neg = rng.standard_normal((b // g, pool, d)).astype(dtype)
    pair = (rng.random((b, 2 * w)) < 0.7).astype(dtype)
    centre = np.ones(b, dtype)
    centre[-1] = 0.0  # a removed centre has no pairs
    pair[-1] = 0.0
    pair[0, 0] = 1.0
    return cfg, rows_in, rows_out, rows_neg, pair, centre


def test_block_loss_all_zero_rows_by_hand():
    # dot of zero rows: every logit 0, each term log 2; 3 positive pairs, and negative·n_i
    # (= 3·2 + 3·1) negative terms in all: 12·log 2 (centres without pairs add nothing).
    cfg = SGNSConfig(dim=3, window=1, negative=3, micro_batch=8, neg_group=4, neg_pool=2)
    z = jnp.zeros((10, 3))
    pair = np.zeros((8, 2), np.float32)
    pair[0], pair[5] = [1, 1], [0, 1]
    loss = sgns.block_loss(cfg, {}, z, z, jnp.zeros((2, 2, 3)), jnp.asarray(pair), jnp.ones(8))
    np.testing.assert_allclose(loss, 12 * math.log(2), rtol=1e-6)


# The block layout (window, block, negative groups, pool) and the score enter the loss apart:
# every score at every layout would be 12 programs; by default every score at the first layout
# and every layout for dot, the rest under -m slow.
LOSS_SCORES = [("dot", False), ("dot", True), ("cosine", False), ("bilinear", False)]
LOSS_LAYOUTS = [(1, 8, 8, 2), (2, 8, 4, 3), (5, 16, 4, 2)]
LOSS_CASES = [pytest.param(score, bias, *layout,
                           marks=() if (score, bias) == LOSS_SCORES[0] or
                           layout == LOSS_LAYOUTS[0] else pytest.mark.slow)
              for score, bias in LOSS_SCORES for layout in LOSS_LAYOUTS]


@pytest.mark.parametrize("score,bias,w,b,g,pool", LOSS_CASES)
def test_block_loss_equals_the_loss_by_hand(rng, score, bias, w, b, g, pool):
    cfg, r_in, r_out, r_neg, pair, centre = _tiny(score, rng, w, b, g, pool, bias=bias)
    sp = _score_params(score, rng, cfg.dim)
    if bias:
        sp["b"] = jnp.float32(0.3)
    got = sgns.block_loss(cfg, sp, r_in, r_out, r_neg, pair, centre)
    want = _np_block_loss(cfg, sp, r_in, r_out, r_neg, pair, centre)
    np.testing.assert_allclose(got, want, rtol=2e-6)


@pytest.mark.parametrize("score", ["dot", "cosine", "bilinear"])
def test_block_loss_gradients(rng, score):
    with jax.enable_x64(True):
        cfg, r_in, r_out, r_neg, pair, centre = _tiny(score, rng, 2, 8, 4, 3, dtype=np.float64)
        sp = _score_params(score, rng, cfg.dim, np.float64)
        f = jax.jit(lambda sp, a, b, c: sgns.block_loss(cfg, sp, a, b, c, pair, centre))
        args = (sp, jnp.asarray(r_in), jnp.asarray(r_out), jnp.asarray(r_neg))
        assert f(*args).dtype == jnp.float64
        check_grads(f, args, order=1, modes=("fwd", "rev"))


# ----------------------------------------------------------------------------- module


def _module_params(score, V, d, temperature=1.0):
    cfg = SGNSConfig(dim=d, score=score, temperature=temperature)
    model = sgns.SGNS(V, cfg)
    ids = jnp.zeros((1,), jnp.int32)
    variables = model.init(jax.random.key(0), ids, ids)
    return cfg, model, dict(variables["params"])


def test_sgns_init_follows_word2vec():
    V, d = 50, 8
    _, _, p = _module_params("dot", V, d)
    assert set(p) == {"in", "out"}
    tin = np.asarray(p["in"])
    assert tin.shape == (V, d) and np.all(np.abs(tin) <= 0.5 / d) and tin.std() > 0.1 / d
    np.testing.assert_array_equal(p["out"], np.zeros((V, d)))
    _, _, p = _module_params("bilinear", V, d)
    np.testing.assert_array_equal(p["score"]["W"], np.eye(d))
    _, _, p = _module_params("cosine", V, d, temperature=3.0)
    np.testing.assert_allclose(p["score"]["log_t"], np.log(3.0), rtol=1e-6)
    for table in (np.asarray(p["in"]), np.asarray(p["out"])):  # cosine: length ≈ 1
        assert np.all(np.abs(table) <= np.sqrt(3 / d))
        assert np.mean(np.sum(table**2, axis=1)) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("score", ["dot", "cosine", "bilinear"])
def test_sgns_logits_equal_the_score_of_the_rows(rng, score):
    V, d = 11, 4
    cfg, model, p = _module_params(score, V, d, temperature=2.5)
    tin = rng.standard_normal((V, d)).astype(np.float32)
    tout = rng.standard_normal((V, d)).astype(np.float32)
    p.update({"in": tin, "out": tout})
    if score == "bilinear":
        p["score"] = {"W": rng.standard_normal((d, d)).astype(np.float32)}
    inputs = rng.integers(0, V, (3, 5)).astype(np.int32)
    outputs = rng.integers(0, V, (3, 5)).astype(np.int32)
    got = np.asarray(model.apply({"params": p}, inputs, outputs))
    assert got.shape == (3, 5)
    sp = p.get("score", {})
    want = np.vectorize(lambda i, j: _np_score(score, sp, tin[i], tout[j]))(inputs, outputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if score == "cosine":
        assert np.all(np.abs(got) <= 2.5 * (1 + 1e-6))
        same = np.asarray(model.apply({"params": {**p, "out": tin}}, inputs, inputs))
        np.testing.assert_allclose(same, 2.5, rtol=1e-6)  # cos(x, x) = 1: logit = t
    if score == "bilinear":
        _, dot_model, _ = _module_params("dot", V, d)
        as_dot = dot_model.apply({"params": {"in": tin, "out": tout}}, inputs, outputs)
        with_eye = model.apply({"params": {**p, "score": {"W": np.eye(d, dtype=np.float32)}}},
                               inputs, outputs)
        np.testing.assert_allclose(with_eye, as_dot, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------- sparse update


def _dense_loss(cfg, mask, ids, neg_ids):
    pair, centre = mask
    return lambda P: sgns.block_loss(cfg, P["score"], P["in"][ids], P["out"][ids],
                                     P["out"][neg_ids], pair, centre)


@pytest.mark.parametrize("score", ["dot", "cosine", "bilinear"])
def test_sparse_sgd_update_equals_a_dense_autodiff_step(rng, score):
    V, w, b, g, pool = 5, 2, 8, 4, 3  # V = 5 rows for 12 block ids and 6 negatives: repeats
    cfg, *_ = _tiny(score, rng, w, b, g, pool)
    ids = jnp.asarray([0, 3, 3, 1, 0, 3, 4, 3, 3, 1, 0, 2], jnp.int32)
    neg_ids = jnp.asarray([[3, 2, 3], [0, 0, 4]], jnp.int32)  # also shared with the block
    docs = jnp.asarray([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2], jnp.int32)
    mask = sgns.block_masks(cfg, jax.random.key(2), docs, jnp.arange(12) != 9)
    P = {"in": jnp.asarray(rng.standard_normal((V, 3)), jnp.float32),
         "out": jnp.asarray(rng.standard_normal((V, 3)), jnp.float32),
         "score": _score_params(score, rng, 3)}
    lr = jnp.float32(0.1)
    dense = jax.jit(jax.grad(_dense_loss(cfg, mask, ids, neg_ids)))(P)

    row_grads = jax.jit(jax.grad(lambda sp, a, o, n: sgns.block_loss(cfg, sp, a, o, n, *mask),
                                 argnums=(0, 1, 2, 3)))(P["score"], P["in"][ids], P["out"][ids],
                                                        P["out"][neg_ids])
    got = sgns.sparse_sgd_update(P, ids, neg_ids, row_grads, lr)
    want = jax.tree.map(lambda p, gr: p - lr * gr, P, dense)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), got, want)
    got_dense = sgns.dense_gradients(P, ids, neg_ids, row_grads)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), got_dense,
                 dense)
    assert float(jnp.abs(dense["in"][3]).sum()) > 0  # a repeated row really moved


# ---------------------------------------------------------------- a whole train call

# window = 1 makes the reduced window always 1 and a CDF with all its mass on word 4 makes every
# negative 4, so the call is deterministic and can be written out as a plain loop.
_KEPT = np.array([0, 1, 2, 1, 0, 3, 3, 4, 1, 2, 0, 1, 1, 3, 2, 4, 0, 5, 5, 5], np.int32)
_DOCS = np.repeat(np.arange(5, dtype=np.int32), [4, 5, 3, 5, 3])
_N_KEPT = 17  # positions 17..19 (all word 5) are past the kept tokens
_NEG_CDF = np.array([0, 0, 0, 0, 1, 1], np.float32)


def _loop_loss(cfg, P, first):
    """The SGNS loss of centres first..first+micro_batch-1 over the full tables, and its pairs."""
    def s(i, j):
        q = P["in"][i] @ P["score"]["W"] if "W" in P["score"] else P["in"][i]
        return q @ P["out"][j]

    loss, pairs = 0.0, 0
    for c in range(first, first + cfg.micro_batch):
        if not 0 <= c < _N_KEPT:
            continue
        n = 0
        for p in (c - 1, c + 1):
            if 0 <= p < _N_KEPT and _DOCS[p] == _DOCS[c]:
                loss -= jax.nn.log_sigmoid(s(_KEPT[c], _KEPT[p]))
                n += 1
        # neg_pool draws, all of word 4, each weighted negative·n/pool
        loss -= cfg.negative * n * jax.nn.log_sigmoid(-s(_KEPT[c], 4))
        pairs += n
    return loss, pairs


@pytest.mark.parametrize("score", ["dot", "bilinear"])
def test_train_call_equals_sequential_dense_sgd_written_out(rng, score):
    # word2vec's plain summed update (update="sum"), written out step by step below
    cfg = SGNSConfig(dim=3, window=1, negative=2, score=score, micro_batch=8, micro_steps=3,
                     update="sum",
                     neg_group=4, neg_pool=3)
    P = {"in": jnp.asarray(rng.standard_normal((6, 3)), jnp.float32),
         "out": jnp.asarray(rng.standard_normal((6, 3)), jnp.float32),
         "score": _score_params(score, rng, 3)}
    start, lr = 2, 0.05  # blocks 2..9, 10..17, 18..25 (the last one past the kept tokens)
    got, opt_state, loss, pairs = jax.jit(functools.partial(sgns.train_call, cfg, None))(
        P, (), jnp.asarray(_KEPT), jnp.asarray(_DOCS), jnp.int32(_N_KEPT),
        jnp.asarray(_NEG_CDF), jnp.int32(start), jax.random.key(0), jnp.float32(lr))
    want, want_loss, want_pairs = P, 0.0, 0
    for u in range(cfg.micro_steps):
        (block_loss, n), grad = jax.value_and_grad(
            lambda Q, u=u: _loop_loss(cfg, Q, start + u * cfg.micro_batch), has_aux=True)(want)
        # (eager on purpose: a plain loop, nothing shared with the library's jitted path)
        # rows: summed gradient; the shared score parameters: mean gradient per pair
        want = {"in": want["in"] - lr * grad["in"], "out": want["out"] - lr * grad["out"],
                "score": jax.tree.map(lambda p, gr, n=n: p - lr * gr / max(n, 1),
                                      want["score"], grad["score"])}
        want_loss += float(block_loss)
        want_pairs += n
    assert opt_state == ()
    # adjacent links inside documents among positions 0..16: 3 + 4 + 2 + 4 = 13, counted from
    # both ends; centres 0 and 1 are before start: 26 − 1 − 2 = 23
    assert int(pairs) == want_pairs == 23
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6), got, want)
    np.testing.assert_array_equal(got["in"][5], P["in"][5])  # word 5: only past n_kept
    np.testing.assert_array_equal(got["out"][5], P["out"][5])


def test_train_call_traces_once():
    cfg = SGNSConfig(dim=4, window=2, micro_batch=8, micro_steps=2, neg_group=4, neg_pool=4)
    cfg.validate()
    traces = []

    def call(*args):
        traces.append(1)
        return sgns.train_call(cfg, None, *args)

    f = jax.jit(call)
    P = {"in": jnp.ones((6, 4)) * 0.1, "out": jnp.zeros((6, 4)), "score": {}}
    kept, docs = jnp.asarray(_KEPT), jnp.asarray(_DOCS)
    cdf = jnp.asarray(sgns.negative_cdf(np.arange(1, 7)), jnp.float32)
    losses = []
    for c in range(4):  # Python scalars (weakly typed)
        P, _, loss, _ = f(P, (), kept, docs, 17, cdf, c * 8 % 20, jax.random.key(c),
                          0.025 / (c + 1))
        losses.append(float(loss))
    for c in range(3):  # and arrays
        P, _, loss, _ = f(P, (), kept, docs, jnp.int32(15), cdf, jnp.int32(c), jax.random.key(c),
                          jnp.float32(0.01))
    assert len(traces) == 2 and f._cache_size() == 2  # one per argument style, not per value
    assert len(set(losses)) > 1


# ---------------------------------------------------------------------------- export


def test_export_vectors():
    P = {"in": jnp.arange(6.0).reshape(3, 2), "out": jnp.ones((3, 2))}
    np.testing.assert_array_equal(sgns.export_vectors(P), np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(sgns.export_vectors(P, "out"), np.ones((3, 2)))
    np.testing.assert_array_equal(sgns.export_vectors(P, "in+out"),
                                  np.arange(6.0).reshape(3, 2) + 1)
    assert sgns.export_vectors(P).dtype == np.float32
    with pytest.raises(SGNSError, match="unknown vector kind 'both'"):
        sgns.export_vectors(P, "both")


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("change,match", [
    (dict(window=0), "window must be >= 1, got 0"),
    (dict(negative=0), "negative must be >= 1, got 0"),
    (dict(dim=0), "dim must be >= 1"),
    (dict(micro_batch=96, neg_group=64), r"micro_batch \(96\) must be a multiple of neg_group"),
    (dict(micro_batch=24, neg_group=8), r"micro_batch \(24\) must be a multiple of 16"),
    (dict(sample=-1e-3), "sample must be >= 0"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(score="lowrank_bilinear"), "lowrank_bilinear is not an SGNS score"),
    (dict(update="mean"), "update must be one of implicit, sequential, sum, damped, got 'mean'"),
    (dict(neg_pool=-1), "neg_pool must be >= 1, or 0 for negative × 2·window"),
])
def test_config_validate_rejects_bad_settings(change, match):
    SGNSConfig().validate()
    with pytest.raises(SGNSError, match=match):
        dataclasses.replace(SGNSConfig(), **change).validate()


def test_config_validate_names_an_unknown_score():
    with pytest.raises(ScoreError, match="unknown score 'cosin'.*did you mean 'cosine'"):
        SGNSConfig(score="cosin").validate()


def test_device_corpus_rejects_an_empty_corpus():
    for docs in ([], [np.array([], np.int32), np.zeros(0, np.int32)]):
        with pytest.raises(SGNSError, match="the corpus is empty"):
            sgns.device_corpus(docs, np.array([3, 1]), 1e-3)


def test_sparse_update_bounds_each_word_by_its_summed_curvature():
    V, d = 6, 3
    P = {"in": jnp.zeros((V, d)), "out": jnp.zeros((V, d)), "score": {}}
    ids = jnp.array([1, 1, 1, 2], jnp.int32)  # word 1 three times, word 2 once
    neg_ids = jnp.array([[2, 4]], jnp.int32)  # word 2 appears once more among the negatives
    grads = ({}, jnp.ones((4, d)), jnp.ones((4, d)), jnp.ones((1, 2, d)))
    h_in, h_out, h_neg = jnp.array([1.0, 2.0, 3.0, 0.5]), jnp.full(4, 4.0), jnp.array([[6.0, 0]])
    lr = 0.5
    phi = lambda x: (1 - np.exp(-x)) / x  # noqa: E731
    got = sgns.sparse_sgd_update(P, ids, neg_ids, grads, lr, (h_in, h_out, h_neg))
    # word 1: three unit gradients, curvature 1 + 2 + 3 summed over its positions
    # (each side of a pair takes at most half its Newton step: φ at 2·lr·H)
    np.testing.assert_allclose(got["in"][1], -lr * 3 * phi(2 * lr * 6.0), rtol=1e-6)
    np.testing.assert_allclose(got["in"][2], -lr * phi(2 * lr * 0.5), rtol=1e-6)
    np.testing.assert_allclose(got["out"][2], -lr * 2 * phi(2 * lr * (4.0 + 6.0)), rtol=1e-6)
    np.testing.assert_array_equal(got["out"][4], -lr)  # zero curvature: word2vec's plain step
    np.testing.assert_array_equal(got["in"][0], 0.0)
    plain = sgns.sparse_sgd_update(P, ids, neg_ids, grads, lr)  # update="sum"
    np.testing.assert_allclose(plain["in"][1], -lr * 3, rtol=1e-6)
    # the bounded step never passes the Newton step G/H, at any lr
    for x in (1e-6, 1e-3, 0.5, 3.0, 1e3):
        f = float(sgns_update.saturation(jnp.float32(x)))
        assert 0 < f <= 1 and x * f <= 1 + 1e-6
        np.testing.assert_allclose(f, -np.expm1(-x) / x, rtol=1e-5)
        # update="sequential"'s fraction: the whole summed step up to the Newton step, then it
        c = float(sgns_update.newton_clip(jnp.float32(x)))
        np.testing.assert_allclose(c, min(1.0, 1.0 / x), rtol=1e-6)
        assert f <= c and x * c <= 1 + 1e-6


@pytest.mark.parametrize("w,b,g,pool", [(1, 8, 4, 3), (2, 16, 8, 5)])
def test_block_curvature_is_each_rows_hessian_along_its_gradient(rng, w, b, g, pool):
    # Independent reference: autodiff's gradient G_p and Hessian of the block loss with respect
    # to the gathered rows; per position p, G_pᵀ H_pp G_p / ‖G_p‖² (dot score: features = rows).
    cfg = SGNSConfig(dim=3, window=w, negative=2, micro_batch=b, neg_group=g, neg_pool=pool,
                     update="implicit")  # _block_grads returns the curvature for "implicit"
    rows = [jnp.asarray(rng.standard_normal((b + 2 * w, 3)), jnp.float32) for _ in "ab"]
    rows.append(jnp.asarray(rng.standard_normal((b // g, pool, 3)), jnp.float32))
    pair = jnp.asarray(rng.random((b, 2 * w)) < 0.7, jnp.float32)
    centre = jnp.asarray(rng.random(b) < 0.9, jnp.float32)
    pair = pair * centre[:, None]
    (_, curv), grads = sgns._block_grads(cfg, {}, *rows, pair, centre)
    f = lambda *r: sgns.block_loss(cfg, {}, *r, pair, centre)  # noqa: E731
    # one jitted program for every block (op by op, each Hessian took 5 s)
    hessians, gradients = jax.jit(lambda *r: (jax.hessian(f, argnums=(0, 1, 2))(*r),
                                              jax.grad(f, argnums=(0, 1, 2))(*r)))(*rows)
    for arg, got in ((1, curv[0]), (2, curv[1]), (3, curv[2].reshape(-1))):
        n = got.shape[0]
        H = np.asarray(hessians[arg - 1][arg - 1], np.float64).reshape(n, 3, n, 3)
        G = np.asarray(gradients[arg - 1], np.float64).reshape(n, 3)
        np.testing.assert_allclose(G, np.asarray(grads[arg]).reshape(n, 3), rtol=1e-5, atol=1e-6)
        gg = np.sum(G * G, 1)
        want = np.where(gg > 0, np.einsum("pi,pipj,pj->p", G, H, G) / np.maximum(gg, 1e-30), 0)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        assert np.all(want >= 0) and want.max() > 0
    assert np.all(np.asarray(curv[0])[:w] == 0) and np.all(np.asarray(curv[0])[-w:] == 0)


@pytest.mark.parametrize("window,negative", [(1, 1), (2, 5), (5, 15), (10, 5), (10, 20)])
def test_default_pool_weighs_no_negative_above_a_single_word2vec_draw(window, negative):
    """pool_size: negative × 2·window rounded up to 8, so a centre at its full window (2w
    pairs) weighs each shared negative negative·2w/pool ≤ 1, and a centre with one pair less
    than that."""
    cfg = SGNSConfig(dim=4, window=window, negative=negative, micro_batch=64, neg_group=16)
    pool = sgns.pool_size(cfg)
    assert pool % 8 == 0 and negative * 2 * window <= pool < negative * 2 * window + 8
    pair_mask = jnp.ones((64, 2 * window), jnp.float32).at[1, 1:].set(0.0)  # centre 1: 1 pair
    _, weight = sgns.block_weights(cfg, pair_mask, jnp.ones((64,), jnp.float32))
    weight = np.asarray(weight).reshape(64)
    np.testing.assert_allclose(weight[0], negative * 2 * window / pool, rtol=1e-6)
    np.testing.assert_allclose(weight[1], negative / pool, rtol=1e-6)
    assert weight.max() <= 1.0
    assert sgns.pool_size(dataclasses.replace(cfg, neg_pool=3)) == 3


@pytest.mark.parametrize("score", ["dot", "bilinear"])
def test_per_pair_negatives_loss_equals_word2vecs_by_hand(rng, score):
    """negatives="per_pair": pair (i, slot o) meets its own `negative` draws, slots
    [o·negative, (o + 1)·negative) of centre i's pool, each term of weight 1 (word2vec's
    −Σ_pairs [log σ(s⁺) + Σ_k log σ(−s_k)]), written out loop by loop."""
    w, b, negative, d = 2, 8, 3, 3
    cfg = SGNSConfig(dim=d, window=w, negative=negative, score=score, micro_batch=b,
                     neg_group=1, negatives="per_pair")
    cfg.validate()
    assert sgns.pool_size(cfg) == 2 * w * negative
    r_in, r_out = rng.standard_normal((2, b + 2 * w, d)).astype(np.float32)
    r_neg = rng.standard_normal((b, 2 * w * negative, d)).astype(np.float32)
    pair = (rng.random((b, 2 * w)) < 0.6).astype(np.float32)
    centre = np.ones(b, np.float32)
    centre[-1], pair[-1], pair[0, 0] = 0.0, 0.0, 1.0
    sp = _score_params(score, rng, d)
    want = 0.0
    for i in range(b):
        for o, off in enumerate(_offsets(w)):
            if pair[i, o]:
                q = r_in[w + i]
                want -= _log_sigmoid(_np_score(score, sp, q, r_out[w + i + off]))
                for k in r_neg[i, o * negative:(o + 1) * negative]:
                    want -= _log_sigmoid(-_np_score(score, sp, q, k))
    got = sgns.block_loss(cfg, sp, r_in, r_out, r_neg, pair, centre)
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_per_pair_negatives_need_their_own_pool_per_centre():
    with pytest.raises(SGNSError, match="needs neg_group=1 and neg_pool=0"):
        SGNSConfig(negatives="per_pair").validate()
    with pytest.raises(SGNSError, match="needs neg_group=1 and neg_pool=0"):
        SGNSConfig(negatives="per_pair", neg_group=1, neg_pool=8).validate()
    with pytest.raises(SGNSError, match="negatives must be one of shared, per_pair"):
        SGNSConfig(negatives="pairwise").validate()


def test_per_pair_negatives_train_on_the_sequential_path(rng):
    """The dot path and the general path agree under per-pair weights too."""
    cfg = SGNSConfig(dim=4, window=2, negative=2, micro_batch=8, neg_group=1,
                     negatives="per_pair")
    V, b, w = 7, 8, 2
    P = {t: jnp.asarray(rng.standard_normal((V, 4)), jnp.float32) for t in ("in", "out")}
    P["score"] = {}
    ids = jnp.asarray(rng.integers(0, V, b + 2 * w), jnp.int32)
    neg_ids = jnp.asarray(rng.integers(0, V, (b, sgns.pool_size(cfg))), jnp.int32)
    pair = jnp.asarray(rng.random((b, 2 * w)) < 0.7, jnp.float32)
    centre = jnp.ones((b,), jnp.float32)
    a = sgns.sequential_update(cfg, P, ids, neg_ids, pair, centre, jnp.float32(0.3))
    g = sgns.sequential_update_general(cfg, P, ids, neg_ids, pair, centre, jnp.float32(0.3))
    for t in ("in", "out"):
        np.testing.assert_allclose(a[0][t], g[0][t], rtol=1e-4, atol=1e-5)
    assert np.isfinite(np.asarray(a[0]["out"])).all()
