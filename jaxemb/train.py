"""SGNS training: one jitted call, several seeds at once (vmap), orbax checkpoints, resume.

State is a pytree with a leading seed axis; the train call is ``jax.vmap`` of
:func:`jaxemb.sgns.train_call` over seeds, jitted once with the state donated. Keys are split
once by purpose (init, subsampling, sampling) and the epoch and call index are folded in, so a
resumed run draws the same negatives and ends with the same parameters as an uninterrupted one.
The host syncs once per epoch (the kept-token count) and at log points (losses, NaN check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import gc
import hashlib
import math
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxemb import sgns
from jaxemb.sgns import SGNSConfig


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, a checkpoint that does not match the run)."""


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
    devices = jax.devices()[: tcfg.devices or None]
    n, m = len(devices), sgns.shard_multiple(cfg)
    if cfg.micro_batch % (n * m):
        raise sgns.SGNSError(
            f"micro_batch ({cfg.micro_batch}) must split evenly over {n} devices in slices of a "
            f"multiple of {m} centres (the positive tile and neg_group); use a micro_batch that "
            f"is a multiple of {n * m}")
    return Mesh(np.array(devices), ("data",))


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
        k_init, k_sub, k_step = jax.random.split(jax.random.key(seed), 3)
        params = sgns.init_params(model, k_init)
        params = {**params, "in": jnp.pad(params["in"], pad), "out": jnp.pad(params["out"], pad)}
        opt_state = opt.init(params) if opt is not None else ()
        return params, opt_state, jax.random.key_data(jnp.stack([k_sub, k_step]))

    return jax.vmap(one)(jnp.asarray(tcfg.seeds))


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
        key = jax.random.fold_in(jax.random.wrap_key_data(epoch_key), call_index)
        start = call_index * cfg.words_per_call
        return sgns.train_call(cfg, opt, params, opt_state, kept, kept_docs, n_kept, neg_cdf,
                               start, key, lr, mesh)

    if len(tcfg.seeds) == 1:
        # One seed: the same function on the squeezed state. A size-1 vmap is not free on CPU
        # (its batched scatters ran ~40% slower here).
        def vm(params, opt_state, kept, kept_docs, n_kept, neg_cdf, call_index, keys, lr):
            sq = functools.partial(jax.tree.map, lambda x: x[0])
            out = call(sq(params), sq(opt_state), kept[0], kept_docs[0], n_kept[0], neg_cdf,
                       call_index, keys[0], lr[0])
            return jax.tree.map(lambda x: x[None], out)
    else:
        vm = jax.vmap(call, in_axes=(0, 0, 0, 0, 0, None, None, 0, 0))
    if shardings is None:
        return jax.jit(vm, donate_argnums=(0, 1))
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(vm, donate_argnums=(0, 1), in_shardings=(*shardings, *[replicated] * 7),
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
    """
    cfg.validate()
    tcfg.validate()
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise sgns.SGNSError("the vocabulary is empty")
    mesh = make_mesh(tcfg, cfg)
    corpus = (encoded_docs if isinstance(encoded_docs, sgns.DeviceCorpus)
              else sgns.device_corpus(encoded_docs, counts, cfg.sample))
    corpus = jax.device_put(corpus, NamedSharding(mesh, PartitionSpec()))
    V, n_seeds = counts.size, len(tcfg.seeds)
    rows = -(-V // mesh.size) * mesh.size if tcfg.shard_vocab else V
    params, opt_state, keys = init_state(V, cfg, tcfg, rows)
    shardings = state_shardings((params, opt_state), mesh, tcfg.shard_vocab, rows)
    params, opt_state = jax.device_put((params, opt_state), shardings)
    k_sub = jax.random.wrap_key_data(keys[:, 0])
    k_step = jax.random.wrap_key_data(keys[:, 1])
    epoch_loss = np.zeros((tcfg.epochs, n_seeds))
    epoch_pairs = np.zeros((tcfg.epochs, n_seeds))
    first_epoch, first_call = 0, 0
    ckpt = _Checkpoints(work_dir, cfg, tcfg, V, rows) if work_dir is not None else None
    if ckpt is not None and ckpt.latest() is not None:
        params, opt_state, first_epoch, first_call, epoch_loss, epoch_pairs = ckpt.restore(
            params, opt_state)
        params, opt_state = jax.device_put((params, opt_state), shardings)
    call = make_call(cfg, tcfg, mesh, shardings)
    wpc = cfg.words_per_call
    expected_kept = float(np.sum(counts * np.asarray(corpus.keep_prob)))
    calls_estimate = math.ceil(expected_kept / wpc)
    # Compile ahead of time so words/s measures training, not XLA (compile time reported apart).
    t_compile = time.perf_counter()
    epoch_keys = jax.vmap(jax.random.fold_in, (0, None))(k_sub, 0)
    subsample = _subsample_seeds.lower(corpus, epoch_keys).compile()
    kept_shape = jax.eval_shape(_subsample_seeds, corpus, epoch_keys)
    call = call.lower(params, opt_state, *kept_shape, corpus.neg_cdf, np.int32(0),
                      jax.random.key_data(epoch_keys),
                      np.zeros(n_seeds, np.float32)).compile()
    compile_seconds = time.perf_counter() - t_compile
    bar = tqdm(total=tcfg.epochs * calls_estimate * wpc, unit="w", unit_scale=True,
               disable=not progress, desc="SGNS", initial=0, smoothing=0.1)
    eff_words = raw_words = 0
    calls_done = 0
    t0 = time.perf_counter()
    with _sigterm_flag() as sigterm:  # SIGTERM: save at the next call boundary, then stop
        for epoch in range(first_epoch, tcfg.epochs):
            kept, kept_docs, n_kept = subsample(
                corpus, jax.vmap(jax.random.fold_in, (0, None))(k_sub, epoch))
            n_seed = np.asarray(n_kept)  # the one host sync per epoch
            n_max = int(n_seed.max())
            n_calls = math.ceil(n_max / wpc)
            step_keys = jax.random.key_data(
                jax.vmap(jax.random.fold_in, (0, None))(k_step, epoch))
            pending = []  # (loss [S], pairs [S]) device arrays; pulled at log points only
            start_call = first_call if epoch == first_epoch else 0
            for c in range(start_call, n_calls):
                # gensim's linear decay over each seed's own progress through its kept tokens
                progress_frac = (epoch + np.minimum(c * wpc / n_seed, 1.0)) / tcfg.epochs
                lr = (tcfg.lr - (tcfg.lr - tcfg.min_lr) * progress_frac).astype(np.float32)
                params, opt_state, loss, pairs = call(params, opt_state, kept, kept_docs,
                                                      n_kept, corpus.neg_cdf, np.int32(c),
                                                      step_keys, lr)
                pending.append((loss, pairs))
                calls_done += 1
                bar.update(min(wpc, max(n_max - c * wpc, 0)))
                last = c == n_calls - 1
                if len(pending) >= tcfg.log_every or last:
                    _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                    bar.set_postfix(
                        loss=f"{epoch_loss[epoch].sum() / epoch_pairs[epoch].sum():.4f}")
                saved = ckpt is not None and (last or (
                    tcfg.checkpoint_every and (c + 1) % tcfg.checkpoint_every == 0))
                if saved:
                    _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                    nxt = (epoch + 1, 0) if last else (epoch, c + 1)
                    ckpt.save(params, opt_state, *nxt, epoch_loss, epoch_pairs)
                stop = stop_after_calls is not None and calls_done >= stop_after_calls
                if stop or sigterm.is_set():
                    if ckpt is not None:
                        if not saved:  # this call's state is on disk already if it just saved
                            _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                            ckpt.save(params, opt_state, epoch, c + 1, epoch_loss, epoch_pairs)
                        ckpt.close()
                    bar.close()
                    if stop:
                        raise StoppedEarlyError()
                    raise TrainingInterrupted(_interrupted_message(ckpt, work_dir, epoch, c))
            eff_words += int(jnp.sum(n_kept)) // n_seeds
            raw_words += corpus.n_tokens
            if on_epoch is not None:
                on_epoch(epoch, epoch_loss[epoch] / np.maximum(epoch_pairs[epoch], 1))
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    bar.close()
    if ckpt is not None:
        ckpt.close()
    mean_loss = epoch_loss / np.maximum(epoch_pairs, 1)
    if jax.process_count() > 1:  # multi-host: every process gets the whole result on its host
        params = multihost_utils.process_allgather(params, tiled=True)
    if rows > V:  # drop the padding rows
        params = {**params, "in": params["in"][:, :V], "out": params["out"][:, :V]}
    return TrainResult(params, mean_loss, seconds, eff_words, raw_words, compile_seconds)


class StoppedEarlyError(Exception):
    """Raised by ``stop_after_calls`` (tests of resume)."""


class TrainingInterrupted(TrainingError):  # noqa: N818 (it is not an error of the run)
    """SIGTERM stopped training at a call boundary, after saving a checkpoint there."""


@contextlib.contextmanager
def _sigterm_flag():
    """A ``threading.Event`` that SIGTERM sets while the block runs; the previous handler is
    restored after. Python handles signals in the main thread only: elsewhere nothing is
    installed and SIGTERM keeps its previous meaning."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        # None: a handler not installed from Python; the default is the best we can restore.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _interrupted_message(ckpt, work_dir, epoch: int, call: int) -> str:
    where = f"stopped by SIGTERM after call {call + 1} of epoch {epoch + 1}"
    if ckpt is None:
        return f"training {where}; nothing was saved (no work_dir)"
    return (f"training {where}; the state is saved in {ckpt.dir}. To resume, run again with "
            f"the same settings and work_dir ({work_dir}); with the experiment CLI: "
            f"--resume {work_dir}")


def _drain(pending, loss_acc, pair_acc, epoch, call) -> None:
    """Pull pending per-call losses to the host and add them up in float64; stop on NaN."""
    if not pending:
        return
    losses = np.asarray(jnp.stack([p[0] for p in pending]), np.float64)
    pairs = np.asarray(jnp.stack([p[1] for p in pending]), np.float64)
    pending.clear()
    if not np.isfinite(losses).all():
        raise TrainingError(
            f"the loss became NaN/inf in epoch {epoch + 1} by call {call} (seed index "
            f"{int(np.argmax(~np.isfinite(losses).all(axis=0)))}). Hint: lower the learning rate "
            "(lr), or for cosine use a smaller temperature; a score without normalisation can "
            "grow without bound at a high lr.")
    loss_acc += losses.sum(axis=0)
    pair_acc += pairs.sum(axis=0)


class _Checkpoints:
    """Orbax checkpoints of the whole training state, keyed by a global call counter.

    Each keeps a digest of its arrays: orbax stores array bytes unchecked, and a flipped byte
    would otherwise restore as silently different parameters. A latest checkpoint that cannot
    be read, or reads as other data, is skipped for the one before it, with a warning.
    """

    def __init__(self, work_dir, cfg: SGNSConfig, tcfg: TrainConfig, vocab_size: int,
                 table_rows: int | None = None):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = Path(work_dir).absolute() / "checkpoints"
        self.meta = {"sgns": dataclasses.asdict(cfg), "seeds": list(tcfg.seeds),
                     "optimizer": tcfg.optimizer,
                     "adam_lr": tcfg.adam_lr if tcfg.optimizer == "adam" else None,
                     "vocab_size": vocab_size,
                     # rows padded for --shard-vocab depend on the device count
                     "table_rows": table_rows or vocab_size,
                     "epochs": tcfg.epochs, "lr": tcfg.lr, "min_lr": tcfg.min_lr}
        try:
            self.mngr = ocp.CheckpointManager(
                self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
                item_names=("state", "meta"))
        except OSError as e:
            raise TrainingError(f"cannot create the checkpoint directory {self.dir}: "
                                f"{_os_reason(e)}") from e
        self._counter = 0 if self.latest() is None else self.latest()

    def latest(self):
        return self.mngr.latest_step()

    def save(self, params, opt_state, epoch, call, epoch_loss, epoch_pairs) -> None:
        ocp = self._ocp
        self._counter += 1
        state = {"params": params, "opt_state": opt_state,
                 "epoch_loss": epoch_loss, "epoch_pairs": epoch_pairs}
        meta = {**self.meta, "epoch": epoch, "call": call, "digest": _digest(state)}
        try:  # a failed asynchronous write of the previous step surfaces here or in close()
            self.mngr.save(self._counter, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        except (OSError, ValueError) as e:  # tensorstore reports I/O errors as ValueError
            raise self._write_error(e) from e

    def restore(self, params, opt_state):
        """(params, opt_state, epoch, call, epoch_loss, epoch_pairs) of the latest readable
        checkpoint; earlier ones are tried when the latest is damaged."""
        failed = []
        for step in sorted(self.mngr.all_steps(), reverse=True):
            out = None
            with warnings.catch_warnings():
                # On a damaged step orbax leaves a coroutine un-awaited: its RuntimeWarning is
                # noise here, so it is collected (and the warning raised) under this filter.
                warnings.filterwarnings("ignore", r"coroutine .* was never awaited",
                                        RuntimeWarning)
                try:
                    out = self._restore(step, params, opt_state)
                except TrainingError:  # written with other settings: not damage
                    raise
                # Damaged files raise FileNotFoundError, JSONDecodeError, tensorstore's
                # ValueError or orbax's bare Exception, depending on which file is hit.
                except Exception as e:
                    failed.append(f"step {step} ({type(e).__name__}: {_first_line(e)})")
                if out is None:
                    gc.collect()
            if out is None:
                continue
            if failed:
                warnings.warn(f"checkpoint {'; '.join(failed)} in {self.dir} cannot be read; "
                              f"resuming from the one before it, step {step}", RuntimeWarning,
                              stacklevel=3)
            return out
        raise TrainingError(f"no checkpoint in {self.dir} can be read: {'; '.join(failed)}. "
                            "Move the directory away to start afresh")

    def _restore(self, step, params, opt_state):
        ocp = self._ocp
        meta = self.mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta["meta"]
        mismatch = {k: (meta.get(k), v) for k, v in self.meta.items() if meta.get(k) != v}
        if mismatch:
            raise TrainingError(
                f"the checkpoint in {self.dir} was written by a run with other settings "
                f"({', '.join(f'{k}: {a} there, {b} here' for k, (a, b) in mismatch.items())}); "
                "use a new work directory")
        target = {"params": params, "opt_state": opt_state,
                  "epoch_loss": np.zeros((self.meta["epochs"], len(self.meta["seeds"]))),
                  "epoch_pairs": np.zeros((self.meta["epochs"], len(self.meta["seeds"])))}
        state = self.mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
        if meta.get("digest") is not None and _digest(state) != meta["digest"]:
            raise ValueError("its arrays differ from those saved (digest mismatch)")
        return (state["params"], state["opt_state"], meta["epoch"], meta["call"],
                np.asarray(state["epoch_loss"]).copy(), np.asarray(state["epoch_pairs"]).copy())

    def _write_error(self, e: Exception) -> TrainingError:
        """The error to raise for a failed write; earlier saves still in flight finish first."""
        with contextlib.suppress(Exception):  # it may fail the same way: ``e`` says why
            self.mngr.wait_until_finished()
        try:  # on disk: orbax forgets the steps it is about to rotate out before the save ends
            kept = sorted(int(p.name) for p in self.dir.iterdir() if p.name.isdigit())
        except OSError:  # the listing is only for the message
            kept = "unknown"
        return TrainingError(f"cannot write a checkpoint to {self.dir}: {_os_reason(e)}. The "
                             f"checkpoints already there (steps {kept}) are kept; free space or "
                             "choose a writable work directory, then run again to resume")

    def close(self) -> None:
        try:
            self.mngr.wait_until_finished()
        except (OSError, ValueError) as e:
            raise self._write_error(e) from e
        finally:
            self.mngr.close()


def _digest(state) -> str | None:
    """A hash of the arrays of a state pytree (dtypes, shapes and bytes); None when some array
    spans other processes (multi-host), whose bytes this process cannot see."""
    leaves = jax.tree.leaves(state)
    if not all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return None
    h = hashlib.blake2b(digest_size=16)
    for leaf in leaves:
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else ""


def _os_reason(e: Exception) -> str:
    """'No space left on device (errno 28, ENOSPC)' from an OSError, or from tensorstore's
    message (it reports the OS error code in its text)."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None and (m := re.search(r"os_error_code='?(\d+)", str(e))):
        code = int(m.group(1))
    if code is None:
        return _first_line(e)
    return f"{os.strerror(code)} (errno {code}, {errno.errorcode.get(code, '?')})"
