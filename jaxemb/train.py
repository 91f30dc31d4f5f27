"""SGNS training: one jitted call, several seeds at once (vmap), orbax checkpoints, resume.

State is a pytree with a leading seed axis; the train call is ``jax.vmap`` of
:func:`jaxemb.sgns.train_call` over seeds, jitted once with the state donated. Keys are split
once by purpose (init, subsampling, sampling) and the epoch and call index are folded in, so a
resumed run draws the same negatives and ends with the same parameters as an uninterrupted one.
The host syncs once per epoch (the kept-token count) and at log points (losses, NaN check).
Keys, the vmapped and jitted call and the mesh are :mod:`jaxemb.engine`'s; checkpoints are
:mod:`jaxemb.checkpoint`'s, with SGNS's settings as their metadata; SIGINT and SIGTERM stop at a
call boundary after saving there (:mod:`jaxemb.interrupt`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxemb import checkpoint, engine, interrupt, sgns
from jaxemb.engine import TrainingError
from jaxemb.interrupt import TrainingInterrupted
from jaxemb.sgns import SGNSConfig

__all__ = ["DivergenceError", "StoppedEarlyError", "TrainConfig", "TrainResult", "TrainingError",
           "TrainingInterrupted", "init_state", "make_call", "make_mesh", "state_shardings",
           "train"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; defaults follow gensim (linear decay 0.025 → 0.0001)."""

    epochs: int = 5
    lr: float = 0.025
    min_lr: float = 0.0001
    optimizer: str = "sgd"  # "sgd": word2vec's sparse update; "adam": optax.adam, dense
    adam_lr: float = 1e-3
    seeds: tuple[int, ...] = (0,)
    log_every: int = 50  # calls between host syncs (loss, NaN check)
    checkpoint_every: int = 0  # calls between checkpoints (0: at epoch ends only)
    devices: int = 1  # devices on the mesh's data axis (0: all); each block split across them
    shard_vocab: bool = False  # shard the embedding tables along the vocabulary axis too

    def validate(self) -> None:
        if self.epochs < 1:
            raise sgns.SGNSError(f"epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise sgns.SGNSError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not self.seeds:
            raise sgns.SGNSError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise sgns.SGNSError(f"seeds must be distinct, got {self.seeds}")
        for name in ("lr", "min_lr", "adam_lr"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise sgns.SGNSError(f"{name} must be a finite number > 0, got "
                                     f"{getattr(self, name)}")
        if not 0 < self.min_lr <= self.lr:
            raise sgns.SGNSError(f"need 0 < min_lr <= lr, got lr={self.lr}, "
                                 f"min_lr={self.min_lr}")
        available = len(jax.devices())
        if not 0 <= self.devices <= available:
            raise sgns.SGNSError(f"devices must be between 0 (all) and the {available} "
                                 f"available, got {self.devices}")


def make_mesh(tcfg: TrainConfig, cfg: SGNSConfig) -> Mesh:
    """A 1-D mesh (axis ``data``) over the first ``tcfg.devices`` devices (0: all): the same code
    path for one device or many, CPU, GPU or TPU."""
    mesh = engine.make_mesh(tcfg.devices)
    n, m = mesh.size, sgns.shard_multiple(cfg)
    if cfg.micro_batch % (n * m):
        raise sgns.SGNSError(
            f"micro_batch ({cfg.micro_batch}) must split evenly over {n} devices in slices of a "
            f"multiple of {m} centres (the positive tile and neg_group); use a micro_batch that "
            f"is a multiple of {n * m}")
    return mesh


def state_shardings(state, mesh: Mesh, shard_vocab: bool, vocab_size: int):
    """Where each leaf of the (seed-stacked) state lives: embedding tables [S, V, d] (and the
    optimiser moments shaped like them) split along V when ``shard_vocab``; all else replicated."""
    table = NamedSharding(mesh, PartitionSpec(None, "data", None))
    replicated = NamedSharding(mesh, PartitionSpec())

    def where(x):
        is_table = shard_vocab and jnp.ndim(x) == 3 and jnp.shape(x)[1] == vocab_size
        return table if is_table else replicated

    return jax.tree.map(where, state)


@dataclasses.dataclass
class TrainResult:
    """params: the model's params with a leading seed axis; epoch_loss [epochs, seeds] (mean
    loss per pair, float64); words/s counted on kept (effective) and raw tokens."""

    params: dict
    epoch_loss: np.ndarray
    seconds: float
    effective_words: int
    raw_words: int
    compile_seconds: float = 0.0

    @property
    def effective_words_per_s(self) -> float:
        return self.effective_words / self.seconds

    @property
    def raw_words_per_s(self) -> float:
        return self.raw_words / self.seconds

    def seed_params(self, i: int) -> dict:
        return jax.tree.map(lambda x: x[i], self.params)


def _optimizer(tcfg: TrainConfig):
    return None if tcfg.optimizer == "sgd" else optax.adam(tcfg.adam_lr)


def init_state(vocab_size: int, cfg: SGNSConfig, tcfg: TrainConfig, table_rows: int = 0):
    """(params, opt_state, sample keys) with a leading seed axis.

    ``table_rows`` > vocab_size pads the tables with zero rows (never sampled) so they split
    evenly across devices; the real rows are those of an unpadded run.
    """
    model = sgns.SGNS(vocab_size, cfg)
    opt = _optimizer(tcfg)
    pad = ((0, max(table_rows - vocab_size, 0)), (0, 0))

    def one(seed):
        k_init, k_sub, k_step = engine.purpose_keys(seed, 3)
        params = sgns.init_params(model, k_init)
        params = {**params, "in": jnp.pad(params["in"], pad), "out": jnp.pad(params["out"], pad)}
        opt_state = opt.init(params) if opt is not None else ()
        return params, opt_state, jax.random.key_data(jnp.stack([k_sub, k_step]))

    return engine.stack_runs(one, tcfg.seeds)


def make_call(cfg: SGNSConfig, tcfg: TrainConfig, mesh: Mesh | None = None,
              shardings: tuple | None = None):
    """The jitted, seed-vmapped train call, built once; params and optimiser state donated.

    ``mesh``: each block's centres are split across its ``data`` axis; ``shardings``: the
    (params, opt_state) shardings (:func:`state_shardings`), kept fixed from call to call.
    """
    opt = _optimizer(tcfg)

    def call(params, opt_state, kept, kept_docs, n_kept, neg_cdf, call_index, epoch_key, lr):
        # The call index is folded in here, inside jit: eager key arithmetic per call on the host
        # cost more than the call itself on small corpora.
        key = engine.step_key(epoch_key, call_index)
        start = call_index * cfg.words_per_call
        return sgns.train_call(cfg, opt, params, opt_state, kept, kept_docs, n_kept, neg_cdf,
                               start, key, lr, mesh)

    # One seed: the same function on the squeezed state (a size-1 vmap is not free on CPU).
    vm = engine.vmap_runs(call, (0, 0, 0, 0, 0, None, None, 0, 0),
                          squeeze_one=len(tcfg.seeds) == 1)
    if shardings is None:
        return engine.jit_step(vm, donate_argnums=(0, 1))
    replicated = engine.replicated(mesh)
    return engine.jit_step(vm, donate_argnums=(0, 1), in_shardings=(*shardings, *[replicated] * 7),
                           out_shardings=(*shardings, replicated, replicated))


_subsample_seeds = jax.jit(jax.vmap(sgns.subsample, in_axes=(None, 0)))


def train(encoded_docs: Sequence[np.ndarray], counts: np.ndarray, cfg: SGNSConfig,
          tcfg: TrainConfig, work_dir: str | Path | None = None, progress: bool = True,
          stop_after_calls: int | None = None,
          on_epoch: Callable[[int, np.ndarray], None] | None = None) -> TrainResult:
    """Train SGNS on int32 documents over a vocabulary with ``counts``, one model per seed.

    ``encoded_docs``: a sequence of int32 arrays, or a ready :class:`jaxemb.sgns.DeviceCorpus`
    (e.g. built from a memory-mapped corpus without a host copy).

    With ``work_dir`` the state is checkpointed there (orbax; atomic) and a later call with the
    same settings resumes from the latest checkpoint. ``stop_after_calls`` stops early (after a
    checkpoint) — for tests of resume.

    SIGINT or SIGTERM stops it at the next call boundary: with ``work_dir``, after saving
    there (a second signal does not cut the save short); it raises
    :class:`TrainingInterrupted`, whose message says how to resume.
    """
    cfg.validate()
    tcfg.validate()
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise sgns.SGNSError("the vocabulary is empty")
    # SIGINT, SIGTERM: save at the next call boundary, then stop (one that comes while setting
    # up stops after the first call). The checkpoints close on every path.
    with interrupt.stop_on_signals() as stop, contextlib.ExitStack() as resources:
        run = _start(encoded_docs, counts, cfg, tcfg, work_dir, resources)
        run.stop_after_calls = stop_after_calls
        bar = tqdm(total=tcfg.epochs * run.calls_estimate * cfg.words_per_call, unit="w",
                   unit_scale=True, disable=not progress, desc="SGNS", initial=0,
                   smoothing=0.1)
        resources.callback(bar.close)
        eff_words = raw_words = 0
        t0 = time.perf_counter()
        for epoch in range(run.first_epoch, tcfg.epochs):
            try:
                n_kept = _run_epoch(run, epoch, bar, stop)
            except DivergenceError as e:  # say which setting to change, and what was kept
                if run.ckpt is not None:
                    run.ckpt.wait()
                raise DivergenceError(divergence_message(cfg, tcfg, e, run.ckpt), e.epoch,
                                      e.call, e.seed) from None
            eff_words += int(jnp.sum(n_kept)) // len(tcfg.seeds)
            raw_words += run.corpus.n_tokens
            if on_epoch is not None:
                on_epoch(epoch, run.epoch_loss[epoch] / np.maximum(run.epoch_pairs[epoch], 1))
        jax.block_until_ready(run.params)
        seconds = time.perf_counter() - t0
        if stop.is_set():  # after the last call check: the final checkpoint is written
            if run.ckpt is not None:
                run.ckpt.wait()
            raise stop.interrupted(_interrupted_message(run, stop, tcfg.epochs - 1, None))
    return TrainResult(_gathered_params(run.params, counts.size), run.mean_loss(), seconds,
                       eff_words, raw_words, run.compile_seconds)


@dataclasses.dataclass
class _Run:
    """What the epochs of one :func:`train` call share: the seed-stacked state (on the mesh),
    the compiled subsample and train call, keys, checkpoints and the host-side loss sums."""

    cfg: SGNSConfig
    tcfg: TrainConfig
    corpus: sgns.DeviceCorpus
    params: dict
    opt_state: object
    k_sub: jax.Array  # [S] keys of the subsampling, one per seed
    k_step: jax.Array  # [S] keys of the train calls
    epoch_loss: np.ndarray  # [epochs, S] float64 sums of per-pair losses
    epoch_pairs: np.ndarray  # [epochs, S]
    ckpt: checkpoint.Checkpoints | None
    work_dir: str | Path | None
    first_epoch: int = 0
    first_call: int = 0
    subsample: Callable | None = None
    call: Callable | None = None
    calls_estimate: int = 0
    compile_seconds: float = 0.0
    calls_done: int = 0
    stop_after_calls: int | None = None

    def mean_loss(self) -> np.ndarray:
        return self.epoch_loss / np.maximum(self.epoch_pairs, 1)

    def epoch_keys(self, keys: jax.Array, epoch: int) -> jax.Array:
        return jax.vmap(engine.step_key, (0, None))(keys, epoch)

    def save(self, epoch: int, call: int) -> None:
        state = {"params": self.params, "opt_state": self.opt_state,
                 "epoch_loss": self.epoch_loss, "epoch_pairs": self.epoch_pairs}
        self.ckpt.save(state, {"epoch": epoch, "call": call})


def _start(encoded_docs, counts: np.ndarray, cfg: SGNSConfig, tcfg: TrainConfig,
           work_dir, resources: contextlib.ExitStack) -> _Run:
    """The corpus and the initial (or restored) state on the mesh, and the compiled calls; the
    checkpoints (with ``work_dir``) are closed when ``resources`` is."""
    mesh = make_mesh(tcfg, cfg)
    corpus = (encoded_docs if isinstance(encoded_docs, sgns.DeviceCorpus)
              else sgns.device_corpus(encoded_docs, counts, cfg.sample))
    corpus = jax.device_put(corpus, engine.replicated(mesh))
    V, n_seeds = counts.size, len(tcfg.seeds)
    rows = -(-V // mesh.size) * mesh.size if tcfg.shard_vocab else V
    params, opt_state, keys = init_state(V, cfg, tcfg, rows)
    shardings = state_shardings((params, opt_state), mesh, tcfg.shard_vocab, rows)
    ckpt = (resources.enter_context(
        checkpoint.Checkpoints(work_dir, _checkpoint_meta(cfg, tcfg, V, rows)))
            if work_dir is not None else None)
    run = _Run(cfg, tcfg, corpus, params, opt_state, jax.random.wrap_key_data(keys[:, 0]),
               jax.random.wrap_key_data(keys[:, 1]), np.zeros((tcfg.epochs, n_seeds)),
               np.zeros((tcfg.epochs, n_seeds)), ckpt, work_dir)
    if ckpt is not None and ckpt.latest() is not None:
        (run.params, run.opt_state, run.first_epoch, run.first_call, run.epoch_loss,
         run.epoch_pairs) = _restore(ckpt, params, opt_state)
    run.params, run.opt_state = jax.device_put((run.params, run.opt_state), shardings)
    expected_kept = float(np.sum(counts * np.asarray(corpus.keep_prob)))
    run.calls_estimate = math.ceil(expected_kept / cfg.words_per_call)
    # Compile ahead of time so words/s measures training, not XLA (compile time reported apart).
    t_compile = time.perf_counter()
    epoch_keys = run.epoch_keys(run.k_sub, 0)
    run.subsample = _subsample_seeds.lower(corpus, epoch_keys).compile()
    kept_shape = jax.eval_shape(_subsample_seeds, corpus, epoch_keys)
    run.call = make_call(cfg, tcfg, mesh, shardings).lower(
        run.params, run.opt_state, *kept_shape, corpus.neg_cdf, np.int32(0),
        jax.random.key_data(epoch_keys), np.zeros(n_seeds, np.float32)).compile()
    run.compile_seconds = time.perf_counter() - t_compile
    return run


def _run_epoch(run: _Run, epoch: int, bar, stop: interrupt.StopFlag) -> jax.Array:
    """One epoch's calls (from the resumed call in the first epoch); returns n_kept [S]."""
    tcfg, wpc = run.tcfg, run.cfg.words_per_call
    kept, kept_docs, n_kept = run.subsample(run.corpus, run.epoch_keys(run.k_sub, epoch))
    n_seed = np.asarray(n_kept)  # the one host sync per epoch
    n_max = int(n_seed.max())
    n_calls = math.ceil(n_max / wpc)
    step_keys = jax.random.key_data(run.epoch_keys(run.k_step, epoch))
    pending = []  # (loss [S], pairs [S]) device arrays; pulled at log points only
    loss_acc, pair_acc = run.epoch_loss[epoch], run.epoch_pairs[epoch]
    start_call = run.first_call if epoch == run.first_epoch else 0
    for c in range(start_call, n_calls):
        # gensim's linear decay over each seed's own progress through its kept tokens
        progress_frac = (epoch + np.minimum(c * wpc / n_seed, 1.0)) / tcfg.epochs
        lr = (tcfg.lr - (tcfg.lr - tcfg.min_lr) * progress_frac).astype(np.float32)
        run.params, run.opt_state, loss, pairs = run.call(
            run.params, run.opt_state, kept, kept_docs, n_kept, run.corpus.neg_cdf,
            np.int32(c), step_keys, lr)
        pending.append((loss, pairs))
        run.calls_done += 1
        bar.update(min(wpc, max(n_max - c * wpc, 0)))
        last = c == n_calls - 1
        if len(pending) >= tcfg.log_every or last:
            _drain(pending, loss_acc, pair_acc, epoch, c)
            bar.set_postfix(loss=f"{loss_acc.sum() / pair_acc.sum():.4f}")
        saved = run.ckpt is not None and (last or (
            tcfg.checkpoint_every and (c + 1) % tcfg.checkpoint_every == 0))
        if saved:
            _drain(pending, loss_acc, pair_acc, epoch, c)
            _save_finite(run, epoch, c, *((epoch + 1, 0) if last else (epoch, c + 1)))
        stop_early = run.stop_after_calls is not None and run.calls_done >= run.stop_after_calls
        if stop_early or stop.is_set():
            _stop(run, pending, epoch, c, saved, stop, stop_early)
    return n_kept


def _save_finite(run: _Run, epoch: int, c: int, *at: int) -> None:
    """Save the state as of after call ``c`` (resuming ``at`` (epoch, call)) only if every
    parameter is finite: a finite loss in a call does not mean its last update was; so every
    checkpoint kept is a good one."""
    finite = jax.tree.reduce(jnp.logical_and,
                             jax.tree.map(lambda x: jnp.isfinite(x).all(), run.params))
    if not bool(finite):
        raise DivergenceError(f"the parameters became NaN/inf in epoch {epoch + 1} by call "
                              f"{c + 1}", epoch, c, -1)
    run.save(*at)


def _stop(run: _Run, pending, epoch: int, c: int, saved: bool, stop: interrupt.StopFlag,
          stop_early: bool):
    """Stop after call ``c``: save there (unless this call just saved), wait for the write
    (a failed one is raised as its clear TrainingError) and raise."""
    if run.ckpt is not None:
        if not saved:  # this call's state is on disk already if it just saved
            _drain(pending, run.epoch_loss[epoch], run.epoch_pairs[epoch], epoch, c)
            _save_finite(run, epoch, c, epoch, c + 1)
        run.ckpt.wait()
    if stop_early:
        raise StoppedEarlyError()
    raise stop.interrupted(_interrupted_message(run, stop, epoch, c))


def _gathered_params(params: dict, V: int) -> dict:
    """The params on this host (all of them, multi-host) without the padding rows."""
    if jax.process_count() > 1:  # multi-host: every process gets the whole result on its host
        params = multihost_utils.process_allgather(params, tiled=True)
    if params["in"].shape[1] > V:  # drop the padding rows
        params = {**params, "in": params["in"][:, :V], "out": params["out"][:, :V]}
    return params


class StoppedEarlyError(Exception):
    """Raised by ``stop_after_calls`` (tests of resume)."""


def _interrupted_message(run: _Run, stop: interrupt.StopFlag, epoch: int,
                         call: int | None) -> str:
    """One line: where training stopped, and how to resume (``call`` None: after the last)."""
    where = (f"after call {call + 1} of epoch {epoch + 1}" if call is not None
             else "after its last call")
    where = f"training stopped by {stop.name} {where}"
    if run.ckpt is None:
        return f"{where}; nothing was saved (no work_dir)"
    return (f"{where}; the state is saved in {run.ckpt.dir}. To resume, run again with the "
            f"same settings and work_dir ({run.work_dir}); with the experiment CLI: "
            f"--resume {run.work_dir}")


class DivergenceError(TrainingError):
    """The loss became NaN/inf: ``epoch`` (0-based) and ``call`` of the first bad call, and the
    ``seed`` index (of the run's seeds) that diverged first."""

    def __init__(self, message: str, epoch: int, call: int, seed: int):
        super().__init__(message)
        self.epoch, self.call, self.seed = epoch, call, seed


def _drain(pending, loss_acc, pair_acc, epoch, call) -> None:
    """Pull pending per-call losses [calls, S] (calls ending at ``call``) to the host and add
    them up in float64; stop on NaN with :class:`DivergenceError` naming the first bad call
    (SGNS always fails: a diverged word2vec run has nothing to report). Nothing is added from
    a batch with a bad call, and the caller saves no checkpoint after it."""
    if not pending:
        return
    losses = np.asarray(jnp.stack([p[0] for p in pending]), np.float64)
    pairs = np.asarray(jnp.stack([p[1] for p in pending]), np.float64)
    pending.clear()
    bad = ~np.isfinite(losses)
    if bad.any():
        first = int(np.argmax(bad.any(axis=1)))
        c, seed = call - len(losses) + 1 + first, int(np.argmax(bad[first]))
        raise DivergenceError(f"the loss became NaN/inf in epoch {epoch + 1} at call {c + 1} "
                              f"(seed index {seed})", epoch, c, seed)
    loss_acc += losses.sum(axis=0)
    pair_acc += pairs.sum(axis=0)


def divergence_message(cfg: SGNSConfig, tcfg: TrainConfig, e: DivergenceError,
                       ckpt: checkpoint.Checkpoints | None) -> str:
    """What diverged, the setting most likely responsible with a value that trains, and what
    was kept."""
    lr_hint = min(tcfg.lr / 10, TrainConfig.lr)
    if tcfg.optimizer == "sgd" and tcfg.lr > 10 * TrainConfig.lr:
        cause = (f"the learning rate lr={tcfg.lr:g} is the likely cause (word2vec uses "
                 f"{TrainConfig.lr:g}): use lr={lr_hint:g}")
    elif cfg.update == "sum":
        cause = ("update='sum' is the likely cause (each row's gradients summed over the "
                 f"pairs of a block of {cfg.micro_batch} centres, window {cfg.window} × "
                 f"negative {cfg.negative} terms each, unbounded): use update='sequential' (the "
                 "default), which bounds each row's step by its curvature")
    elif cfg.score == "cosine" and cfg.temperature > 10:
        cause = (f"temperature={cfg.temperature:g} is the likely cause (cosine logits of up to "
                 f"±t): use temperature=5, or lr={lr_hint:g}")
    elif tcfg.optimizer == "adam":
        cause = (f"adam_lr={tcfg.adam_lr:g} is the likely cause: use adam_lr="
                 f"{tcfg.adam_lr / 10:g}")
    else:
        cause = f"the learning rate lr={tcfg.lr:g} is the likely cause: use lr={lr_hint:g}"
    kept = ("Nothing was saved (no work_dir)" if ckpt is None or ckpt.latest() is None else
            f"The last good checkpoint is kept in {ckpt.dir} (no state after the first bad "
            f"call is saved); a run with changed settings needs a new work_dir")
    return f"{e}. Hint: {cause}. {kept}."


def _checkpoint_meta(cfg: SGNSConfig, tcfg: TrainConfig, vocab_size: int,
                     table_rows: int | None = None) -> dict:
    """The settings a checkpoint must have been written with to be resumed."""
    return {"sgns": dataclasses.asdict(cfg), "seeds": list(tcfg.seeds),
            "optimizer": tcfg.optimizer,
            "adam_lr": tcfg.adam_lr if tcfg.optimizer == "adam" else None,
            "vocab_size": vocab_size,
            # rows padded for --shard-vocab depend on the device count
            "table_rows": table_rows or vocab_size,
            "epochs": tcfg.epochs, "lr": tcfg.lr, "min_lr": tcfg.min_lr}


def _restore(ckpt: checkpoint.Checkpoints, params, opt_state):
    """(params, opt_state, epoch, call, epoch_loss, epoch_pairs) of the latest readable
    checkpoint of ``ckpt`` (shaped like ``params``, ``opt_state``)."""
    shape = (ckpt.meta["epochs"], len(ckpt.meta["seeds"]))
    target = {"params": params, "opt_state": opt_state, "epoch_loss": np.zeros(shape),
              "epoch_pairs": np.zeros(shape)}
    state, meta = ckpt.restore(target)
    return (state["params"], state["opt_state"], meta["epoch"], meta["call"],
            np.asarray(state["epoch_loss"]).copy(), np.asarray(state["epoch_pairs"]).copy())
