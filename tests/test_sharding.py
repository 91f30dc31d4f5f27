"""SGNS on a device mesh (the 8 fake CPU devices of conftest.py): a sharded step equals the
single-device step, tables sharded along the vocabulary give the same training, and a sharded
run reaches the same evaluation scores as a 1-device run and resumes to the same parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxemb import datasets, sgns, train
from jaxemb.corpus import build_vocabulary
from jaxemb.sgns import SGNSConfig
from jaxemb.train import StoppedEarlyError, TrainConfig

# window 5 → positive tile 16; neg_group 16: 128 centres split into 8 slices of 16
CFG = SGNSConfig(dim=16, window=5, negative=5, sample=1e-3, micro_batch=128, micro_steps=16,
                 neg_group=16, neg_pool=32)
N_DEV = 8
# Whole training runs use 2 of the devices: the code path is the one of 8 (vocabulary-sharded
# tables, padded rows, psum), and on 2 shared cores an 8-device run took 6× as long (threads and
# collectives: 19 s against 4 s for the resume test). The step, layout and error tests use all 8.
RUN_DEV = 2


@pytest.fixture(scope="module")
def planted():
    pc = datasets.planted_corpus(n_words=301, dim=10, n_docs=60, doc_len=1000, seed=0)
    vocab = build_vocabulary(pc.docs, min_count=1)
    assert len(vocab) % N_DEV and len(vocab) % RUN_DEV  # tables need padding rows on both
    return pc, vocab, vocab.encode(pc.docs)


def _mesh(n):
    return jax.sharding.Mesh(np.array(jax.devices()[:n]), ("data",))


# bilinear by default (its W's gradient is summed across devices); dot and cosine under -m slow:
# each compiles a sharded and a single-device step (6 s and 10 s on 2 cores).
@pytest.mark.parametrize("score", ["bilinear", *(pytest.param(s, marks=pytest.mark.slow)
                                                 for s in ("dot", "cosine"))])
def test_a_sharded_step_equals_the_single_device_step(planted, score):
    assert len(jax.devices()) >= N_DEV
    _, vocab, encoded = planted
    # two sequential updates: enough to show the second sees the first, few enough that float
    # summation order (psum vs one sum) stays at rounding level
    cfg = SGNSConfig(**{**CFG.__dict__, "score": score, "bias": score == "cosine",
                        "micro_steps": 2})
    tcfg = TrainConfig(seeds=(0,))
    params, opt_state, keys = train.init_state(len(vocab), cfg, tcfg)
    params = jax.tree.map(lambda x: x[0], params)
    if score != "dot":  # move the score parameters off their identity/1 initialisation
        params["score"] = jax.tree.map(lambda x: x + 0.1, params["score"])
    corpus = sgns.device_corpus(encoded, vocab.counts, cfg.sample)
    kept, kept_docs, n_kept = sgns.subsample(corpus, jax.random.key(1))
    out = {}
    for n in (1, N_DEV):
        step = jax.jit(functools.partial(sgns.train_call, cfg, None, mesh=_mesh(n)))
        out[n] = step(params, (), kept, kept_docs, n_kept, corpus.neg_cdf, jnp.int32(64),
                      jax.random.key(7), jnp.float32(0.01))
    (p1, _, loss1, pairs1), (p8, _, loss8, pairs8) = out[1], out[N_DEV]
    assert float(pairs1) == float(pairs8) > 0
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-5)
    moved = np.abs(np.asarray(p1["in"]) - np.asarray(params["in"])).max()
    assert moved > 1e-5  # the step did something (init rows are ±0.5/d)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-6, rtol=1e-5)


def _rho_planted(pc, vocab, params, top=100):
    rows = pc.index(np.array(vocab.words[:top]))
    iu = np.triu_indices(top, 1)
    pmi = pc.planted_pmi(rows[:, None], rows[None, :])[iu]
    vin, vout = np.asarray(params["in"][:top]), np.asarray(params["out"][:top])
    return scipy.stats.spearmanr(((vin @ vout.T + vout @ vin.T) / 2)[iu], pmi)[0]


@pytest.fixture(scope="module")
def runs(planted):
    _, vocab, encoded = planted
    out = {}
    for name, devices, shard_vocab in (("1", 1, False), ("sharded", RUN_DEV, True)):
        out[name] = train.train(encoded, vocab.counts, CFG,
                                TrainConfig(epochs=3, seeds=(0, 1), devices=devices,
                                            shard_vocab=shard_vocab), progress=False)
    return out


def test_a_sharded_run_reaches_the_scores_of_a_1_device_run(planted, runs):
    pc, vocab, _ = planted
    one = runs["1"]
    assert one.params["in"].shape == (2, len(vocab), CFG.dim)
    for name in ("sharded",):
        r = runs[name]
        # 301 words do not split over the devices: the padded rows are dropped again
        assert r.params["in"].shape == one.params["in"].shape
        np.testing.assert_allclose(r.epoch_loss, one.epoch_loss, rtol=1e-4)
        for s in range(2):
            rho1 = _rho_planted(pc, vocab, one.seed_params(s))
            rho_sharded = _rho_planted(pc, vocab, r.seed_params(s))
            assert rho1 > 0.5, rho1  # training worked at all
            assert abs(rho_sharded - rho1) < 0.01, (name, s, rho1, rho_sharded)


def test_vocabulary_sharded_tables_live_split_across_devices(planted):
    _, vocab, _ = planted
    mesh = _mesh(N_DEV)
    rows = -(-len(vocab) // N_DEV) * N_DEV
    state = train.init_state(len(vocab), CFG, TrainConfig(seeds=(0,)), rows)[:2]
    where = train.state_shardings(state, mesh, True, rows)
    placed = jax.device_put(state, where)
    table = placed[0]["in"]
    assert table.shape == (1, 304, CFG.dim)
    assert {s.data.shape for s in table.addressable_shards} == {(1, 304 // N_DEV, CFG.dim)}
    np.testing.assert_array_equal(np.asarray(table[0, len(vocab):]), 0.0)  # padding rows


def test_a_sharded_run_resumes_to_the_uninterrupted_parameters(planted, runs, tmp_path):
    _, vocab, encoded = planted
    tcfg = TrainConfig(epochs=3, seeds=(0, 1), devices=RUN_DEV, shard_vocab=True)
    with pytest.raises(StoppedEarlyError):
        train.train(encoded, vocab.counts, CFG, tcfg, work_dir=tmp_path, progress=False,
                    stop_after_calls=5)
    resumed = train.train(encoded, vocab.counts, CFG, tcfg, work_dir=tmp_path, progress=False)
    for a, b in zip(jax.tree.leaves(runs["sharded"].params), jax.tree.leaves(resumed.params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_mesh_settings_are_refused(planted):
    _, vocab, encoded = planted
    with pytest.raises(sgns.SGNSError, match="devices must be between 0"):
        TrainConfig(devices=len(jax.devices()) + 1).validate()
    cfg = SGNSConfig(**{**CFG.__dict__, "micro_batch": 64})
    with pytest.raises(sgns.SGNSError, match="must split evenly over 8 devices"):
        train.train(encoded, vocab.counts, cfg, TrainConfig(devices=N_DEV), progress=False)
