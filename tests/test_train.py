"""SGNS training end to end: on the planted corpus (Arora et al. 2016) the learned scores rank
word pairs like the planted PMI and vector norms rank words like their frequency; a resumed run
equals an uninterrupted one; seeds trained together (vmap) equal seeds trained alone; changed
settings and a diverging loss stop with a TrainingError that says why."""

import dataclasses
import re
import shutil

import jax
import numpy as np
import pytest
import scipy.stats

from jaxemb import checkpoint, datasets, sgns, train
from jaxemb.corpus import build_vocabulary
from jaxemb.sgns import SGNSConfig
from jaxemb.train import StoppedEarlyError, TrainConfig, TrainingError

# ---------------------------------------------------------------------- planted corpus

PLANTED_CFG = SGNSConfig(dim=16, window=5, negative=5, sample=1e-3, micro_batch=64,
                         micro_steps=32, neg_group=32, neg_pool=32)
PLANTED_SEEDS = (0, 1)
TOP = 100  # the most frequent words, whose pairs are compared


@pytest.fixture(scope="module")
def planted():
    pc = datasets.planted_corpus(n_words=300, dim=10, n_docs=60, doc_len=1000, seed=0)
    vocab = build_vocabulary(pc.docs, min_count=1)
    assert len(vocab) == 300
    return pc, vocab, vocab.encode(pc.docs)


@pytest.fixture(scope="module")
def planted_run(planted):
    """Two seeds, trained together, 5 epochs (~4 s on 2 CPU cores)."""
    _, vocab, encoded = planted
    return train.train(encoded, vocab.counts, PLANTED_CFG,
                       TrainConfig(epochs=5, seeds=PLANTED_SEEDS), progress=False)


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(len(m), 1)]


def test_learned_scores_rank_pairs_like_the_planted_pmi(planted, planted_run):
    pc, vocab, _ = planted
    rows = pc.index(np.array(vocab.words[:TOP]))  # planted row of each frequent vocabulary id
    planted_pmi = _upper(pc.planted_pmi(rows[:, None], rows[None, :]))
    model_pmi = _upper(pc.model_pmi(rows))
    # What word frequency alone predicts: a learned score must do much better than this.
    logf = np.log(vocab.counts[:TOP].astype(np.float64))
    freq_only = scipy.stats.spearmanr(_upper(logf[:, None] + logf[None, :]), planted_pmi)[0]
    assert abs(freq_only) < 0.3
    for s in range(len(PLANTED_SEEDS)):
        p = planted_run.seed_params(s)
        vin = np.asarray(p["in"][:TOP], np.float64)
        vout = np.asarray(p["out"][:TOP], np.float64)
        score = _upper((vin @ vout.T + vout @ vin.T) / 2)  # in·out, both orders
        # measured (seeds 0, 1; seed 2), update="sequential": 0.829, 0.833 (0.836) against
        # the planted PMI and 0.870, 0.870 (0.875) against the model's own (Monte Carlo) PMI
        # (update="implicit": 0.800, 0.800 (0.807) and 0.836, 0.830 (0.840); count^0.3
        # damping: 0.790, 0.791 (0.790) and 0.830, 0.828 (0.832)); frequency alone: 0.008
        assert scipy.stats.spearmanr(score, planted_pmi)[0] > 0.75
        assert scipy.stats.spearmanr(score, model_pmi)[0] > 0.79


def test_vector_norms_rank_words_like_their_frequency(planted, planted_run):
    _, vocab, _ = planted
    logf = np.log(vocab.counts.astype(np.float64))
    for s in range(len(PLANTED_SEEDS)):
        p = planted_run.seed_params(s)
        vin, vout = np.asarray(p["in"], np.float64), np.asarray(p["out"], np.float64)
        # measured (seeds 0, 1; seed 2), update="sequential": ‖in‖² 0.875, 0.882 (0.886);
        # ‖in+out‖² 0.902, 0.892 (0.901); ‖out‖² 0.83 (update="implicit": 0.892, 0.887
        # (0.902); 0.888, 0.876 (0.895); ‖out‖² only 0.75)
        assert scipy.stats.spearmanr(np.sum(vin**2, 1), logf)[0] > 0.85
        assert scipy.stats.spearmanr(np.sum((vin + vout) ** 2, 1), logf)[0] > 0.80
        # the word2vec init (uniform in ±0.5/d) carries no frequency: the norms were learned
        assert np.sum(vin**2, 1).max() > 10 * (0.5 / PLANTED_CFG.dim) ** 2 * PLANTED_CFG.dim


def test_epoch_loss_decreases_on_the_planted_corpus(planted_run):
    loss = planted_run.epoch_loss
    assert loss.shape == (5, len(PLANTED_SEEDS)) and loss.dtype == np.float64
    assert np.all(np.diff(loss, axis=0) < 0), loss
    # with all-zero output vectors every pair costs (1 + negative)·log 2 = 4.16
    assert np.all(loss[-1] < 0.7 * (1 + PLANTED_CFG.negative) * np.log(2))
    assert planted_run.effective_words < planted_run.raw_words == 5 * 60_000


def test_adam_runs_and_lowers_the_loss(planted):
    _, vocab, encoded = planted
    res = train.train(encoded, vocab.counts, PLANTED_CFG,
                      TrainConfig(epochs=3, optimizer="adam", adam_lr=1e-2), progress=False)
    loss = res.epoch_loss[:, 0]
    assert np.all(np.isfinite(loss)) and np.all(np.diff(loss) < 0), loss
    assert loss[-1] < 0.7 * (1 + PLANTED_CFG.negative) * np.log(2)


# ------------------------------------------------------------------------- tiny corpus

TINY_CFG = SGNSConfig(dim=8, window=3, negative=3, sample=1e-2, micro_batch=16, micro_steps=8,
                      neg_group=8, neg_pool=8)
TINY_TRAIN = TrainConfig(epochs=2, lr=0.1, seeds=(3,), log_every=1, checkpoint_every=3)


@pytest.fixture(scope="module")
def tiny():
    pc = datasets.planted_corpus(n_words=50, dim=5, n_docs=6, doc_len=300, seed=1)
    vocab = build_vocabulary(pc.docs, min_count=1)
    return vocab.encode(pc.docs), vocab.counts


def _record_calls(mp: pytest.MonkeyPatch) -> list:
    """(epoch, call) of every train call, in order, as train's loss drain sees them (log_every=1
    drains after each call)."""
    log = []
    drain = train._drain

    def recording(pending, loss_acc, pair_acc, epoch, call):
        if pending:
            log.append((epoch, call))
        return drain(pending, loss_acc, pair_acc, epoch, call)

    mp.setattr(train, "_drain", recording)
    return log


@pytest.fixture
def calls_log(monkeypatch):
    return _record_calls(monkeypatch)


def _assert_same_params(a: dict, b: dict, exact: bool = True):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    if exact:
        jax.tree.map(np.testing.assert_array_equal, a, b)
    else:
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    """An uninterrupted run per optimizer, the (epoch, call) sequence it made and its work_dir
    (read-only for the tests: only runs refused on restore may use it)."""
    runs = {}
    for opt in ("sgd", "adam"):
        with pytest.MonkeyPatch.context() as mp:
            log = _record_calls(mp)
            tcfg = dataclasses.replace(TINY_TRAIN, optimizer=opt, adam_lr=1e-2)
            work_dir = tmp_path_factory.mktemp(opt)
            res = train.train(*tiny, TINY_CFG, tcfg, work_dir=work_dir, progress=False)
        runs[opt] = res, log, work_dir
    return runs


@pytest.mark.parametrize("opt,epoch,resume_from", [
    ("sgd", 0, "stop"),  # from the checkpoint written on stopping
    ("sgd", 1, "periodic"),  # from an earlier checkpoint_every one (as after a crash)
    ("adam", 1, "stop"),
])
def test_resumed_run_equals_uninterrupted(tiny, tmp_path, uninterrupted, calls_log, opt, epoch,
                                          resume_from):
    full, full_calls, _ = uninterrupted[opt]
    n0 = sum(e == 0 for e, _ in full_calls)
    assert n0 >= 6 and len(full_calls) > n0 + 6  # a few calls per epoch
    stop_after = n0 * epoch + 5  # after call 4 of the epoch: mid-epoch, not at a save
    tcfg = dataclasses.replace(TINY_TRAIN, optimizer=opt, adam_lr=1e-2)
    with pytest.raises(StoppedEarlyError):
        train.train(*tiny, TINY_CFG, tcfg, work_dir=tmp_path, progress=False,
                    stop_after_calls=stop_after)
    assert calls_log == full_calls[:stop_after]
    resume_at = stop_after
    if resume_from == "periodic":
        steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                       if p.name.isdigit())
        shutil.rmtree(tmp_path / "checkpoints" / str(steps[-1]))
        resume_at = n0 * epoch + 3  # checkpoint_every=3: saved after call 2 of the epoch
    calls_log.clear()
    res = train.train(*tiny, TINY_CFG, tcfg, work_dir=tmp_path, progress=False)
    assert calls_log == full_calls[resume_at:]  # resumed where it was saved, nothing repeated
    _assert_same_params(res.params, full.params)
    np.testing.assert_allclose(res.epoch_loss, full.epoch_loss, rtol=1e-12)
    assert np.all(np.isfinite(full.epoch_loss)) and full.epoch_loss[0, 0] > 0


def test_stopping_right_after_a_periodic_save_saves_once(tiny, tmp_path, uninterrupted,
                                                         calls_log):
    full, full_calls, _ = uninterrupted["sgd"]
    tcfg = dataclasses.replace(TINY_TRAIN, optimizer="sgd")
    assert tcfg.checkpoint_every == 3
    with pytest.raises(StoppedEarlyError):  # call 3 is the one that saves periodically
        train.train(*tiny, TINY_CFG, tcfg, work_dir=tmp_path, progress=False, stop_after_calls=3)
    steps = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps == ["1"]  # one checkpoint, not the same state written twice
    calls_log.clear()
    res = train.train(*tiny, TINY_CFG, tcfg, work_dir=tmp_path, progress=False)
    assert calls_log == full_calls[3:]
    _assert_same_params(res.params, full.params)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_seeds_trained_together_equal_seeds_trained_alone(tiny, opt):
    # 64 words per call: with subsampling seed 3 keeps 1471 tokens in epoch 0 (23 calls) and
    # seed 5 1476 (24 calls), so the seeds differ in both their kept counts and call counts
    cfg = dataclasses.replace(TINY_CFG, micro_steps=4)
    tcfg = dataclasses.replace(TINY_TRAIN, epochs=1, optimizer=opt, adam_lr=1e-2)
    both = train.train(*tiny, cfg, dataclasses.replace(tcfg, seeds=(3, 5)), progress=False)
    assert both.epoch_loss.shape == (1, 2)
    alone = [train.train(*tiny, cfg, dataclasses.replace(tcfg, seeds=(s,)), progress=False)
             for s in (3, 5)]
    for i, res in enumerate(alone):
        _assert_same_params(both.seed_params(i), res.seed_params(0), exact=False)
        np.testing.assert_allclose(both.epoch_loss[:, i], res.epoch_loss[:, 0], rtol=1e-6)
    # the two seeds really are different models
    assert not np.allclose(both.seed_params(0)["in"], both.seed_params(1)["in"])


def test_make_call_compiles_once(tiny):
    encoded, counts = tiny
    tcfg = dataclasses.replace(TINY_TRAIN, seeds=(3, 5))
    corpus = sgns.device_corpus(encoded, counts, TINY_CFG.sample)
    params, opt_state, keys = train.init_state(len(counts), TINY_CFG, tcfg)
    kept = train._subsample_seeds(corpus, jax.random.wrap_key_data(keys[:, 0]))
    call = train.make_call(TINY_CFG, tcfg)
    for c in range(3):
        params, opt_state, loss, pairs = call(params, opt_state, *kept, corpus.neg_cdf,
                                              np.int32(c), keys[:, 1],
                                              np.full(2, 0.1 / (c + 1), np.float32))
        assert loss.shape == pairs.shape == (2,)
    assert call._cache_size() == 1


# --------------------------------------------------------------------------- stopping


def test_changed_settings_in_the_same_work_dir_are_refused(tiny, uninterrupted):
    work_dir = uninterrupted["sgd"][2]  # finished: 2 epochs, lr 0.1, seed 3, sgd
    tcfg = TINY_TRAIN
    with pytest.raises(TrainingError, match=r"other settings \(lr: 0\.1 there, 0\.05 here\)"):
        train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, lr=0.05), work_dir=work_dir,
                    progress=False)
    with pytest.raises(TrainingError, match=r"epochs: 2 there, 3 here"):
        train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, epochs=3), work_dir=work_dir,
                    progress=False)
    with pytest.raises(TrainingError, match=r"sgns: \{.*'window': 3.*\} there, \{.*'window': 2"):
        train.train(*tiny, dataclasses.replace(TINY_CFG, window=2), tcfg, work_dir=work_dir,
                    progress=False)
    with pytest.raises(TrainingError, match=r"seeds: \[3\] there, \[3, 4\] here"):
        train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, seeds=(3, 4)),
                    work_dir=work_dir, progress=False)
    with pytest.raises(TrainingError, match=r"optimizer: sgd there, adam here"):
        train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, optimizer="adam"),
                    work_dir=work_dir, progress=False)


def test_changed_adam_learning_rate_in_the_same_work_dir_is_refused(tiny, uninterrupted):
    work_dir = uninterrupted["adam"][2]  # finished, adam_lr 1e-2
    tcfg = dataclasses.replace(TINY_TRAIN, optimizer="adam", adam_lr=1e-2)
    with pytest.raises(TrainingError, match=r"adam_lr"):
        train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, adam_lr=1e-3),
                    work_dir=work_dir, progress=False)


def test_a_diverging_loss_stops_with_the_epoch_and_a_hint(tiny):
    tcfg = dataclasses.replace(TINY_TRAIN, lr=1e30, min_lr=1e29, checkpoint_every=0)
    with pytest.raises(TrainingError, match=r"NaN/inf in epoch 1 at call 1 .*Hint: the learning "
                                            r"rate lr=1e\+30 is the likely cause .*use lr=0.025"):
        train.train(*tiny, dataclasses.replace(TINY_CFG, update="sum"), tcfg, progress=False)


def test_divergence_names_the_setting_keeps_a_good_checkpoint_and_its_hint_trains(tiny,
                                                                                  tmp_path):
    # lr 3 (120× word2vec's) diverges after a few calls on the tiny corpus, under either update
    tcfg = dataclasses.replace(TINY_TRAIN, lr=3.0, checkpoint_every=1, log_every=1)
    with pytest.raises(train.DivergenceError) as info:
        train.train(*tiny, TINY_CFG, tcfg, work_dir=tmp_path / "bad", progress=False)
    e = info.value
    assert e.epoch == 0 and e.call >= 1, str(e)  # found at the first bad call, after a save
    message = str(e)
    assert "the learning rate lr=3 is the likely cause (word2vec uses 0.025): use lr=0.025" in (
        message)
    assert f"The last good checkpoint is kept in {tmp_path / 'bad' / 'checkpoints'}" in message
    # what was kept is finite, and from before the first bad call
    meta = train._checkpoint_meta(TINY_CFG, tcfg, len(tiny[1]))
    with checkpoint.Checkpoints(tmp_path / "bad", meta) as ckpt:
        params, opt_state, _ = train.init_state(len(tiny[1]), TINY_CFG, tcfg)
        state, info_ = ckpt.restore({"params": params, "opt_state": opt_state,
                                     "epoch_loss": np.zeros((2, 1)),
                                     "epoch_pairs": np.zeros((2, 1))})
    assert (info_["epoch"], info_["call"]) <= (e.epoch, e.call)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
    # the value the hint names trains
    lr = float(re.search(r"use lr=(\d[0-9.e+-]*\d)", message).group(1))
    res = train.train(*tiny, TINY_CFG, dataclasses.replace(tcfg, lr=lr), progress=False)
    assert np.isfinite(res.epoch_loss).all()


def test_divergence_message_names_the_likely_setting():
    e = train.DivergenceError("the loss became NaN/inf in epoch 1 at call 3", 0, 2, 0)
    msg = lambda cfg=TINY_CFG, **t: train.divergence_message(  # noqa: E731
        cfg, dataclasses.replace(TINY_TRAIN, **t), e, None)
    assert "update='sum' is the likely cause" in msg(dataclasses.replace(TINY_CFG,
                                                                         update="sum"), lr=0.025)
    assert "lr=1 is the likely cause (word2vec uses 0.025): use lr=0.025" in msg(
        dataclasses.replace(TINY_CFG, update="sum"), lr=1.0)
    assert "lr=0.1 is the likely cause: use lr=0.01" in msg(lr=0.1)
    assert "temperature=50 is the likely cause" in msg(
        dataclasses.replace(TINY_CFG, score="cosine", temperature=50.0), lr=0.1)
    assert "adam_lr=0.1 is the likely cause: use adam_lr=0.01" in msg(optimizer="adam",
                                                                       adam_lr=0.1)
    assert msg(lr=0.1).endswith("Nothing was saved (no work_dir).")


def test_bad_training_settings_are_refused(tiny):
    for change, match in [(dict(epochs=0), "epochs must be >= 1"),
                          (dict(optimizer="sgdm"), "optimizer must be 'sgd' or 'adam'"),
                          (dict(seeds=()), "at least one seed"),
                          (dict(seeds=(1, 1)), "seeds must be distinct"),
                          (dict(min_lr=0.2), "need 0 < min_lr <= lr")]:
        with pytest.raises(sgns.SGNSError, match=match):
            train.train(*tiny, TINY_CFG, dataclasses.replace(TINY_TRAIN, **change),
                        progress=False)
    with pytest.raises(sgns.SGNSError, match="the corpus is empty"):
        train.train([np.zeros(0, np.int32)], tiny[1], TINY_CFG, TINY_TRAIN, progress=False)
    with pytest.raises(sgns.SGNSError, match="the vocabulary is empty"):
        train.train(tiny[0], np.zeros(0, np.int64), TINY_CFG, TINY_TRAIN, progress=False)
