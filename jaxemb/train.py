"""SGNS training: one jitted call, several seeds at once (vmap), orbax checkpoints, resume.

State is a pytree with a leading seed axis; the train call is ``jax.vmap`` of
:func:`jaxemb.sgns.train_call` over seeds, jitted once with the state donated. Keys are split
once by purpose (init, subsampling, sampling) and the epoch and call index are folded in, so a
resumed run draws the same negatives and ends with the same parameters as an uninterrupted one.
The host syncs once per epoch (the kept-token count) and at log points (losses, NaN check).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
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

    def validate(self) -> None:
        if self.epochs < 1:
            raise sgns.SGNSError(f"epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise sgns.SGNSError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if not self.seeds:
            raise sgns.SGNSError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise sgns.SGNSError(f"seeds must be distinct, got {self.seeds}")
        if not 0 < self.min_lr <= self.lr:
            raise sgns.SGNSError(f"need 0 < min_lr <= lr, got lr={self.lr}, "
                                 f"min_lr={self.min_lr}")


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


def init_state(vocab_size: int, cfg: SGNSConfig, tcfg: TrainConfig):
    """(params, opt_state, sample keys) with a leading seed axis."""
    model = sgns.SGNS(vocab_size, cfg)
    opt = _optimizer(tcfg)

    def one(seed):
        k_init, k_sub, k_step = jax.random.split(jax.random.key(seed), 3)
        params = model.init(k_init, jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))
        params = params["params"]
        params = {"in": params["in"], "out": params["out"],
                  "score": {k: v for k, v in params.items() if k not in ("in", "out")}}
        opt_state = opt.init(params) if opt is not None else ()
        return params, opt_state, jax.random.key_data(jnp.stack([k_sub, k_step]))

    return jax.vmap(one)(jnp.asarray(tcfg.seeds))


def make_call(cfg: SGNSConfig, tcfg: TrainConfig):
    """The jitted, seed-vmapped train call, built once; params and optimiser state donated."""
    opt = _optimizer(tcfg)

    def call(params, opt_state, kept, kept_docs, n_kept, neg_cdf, call_index, epoch_key, lr):
        # The call index is folded in here, inside jit: eager key arithmetic per call on the host
        # cost more than the call itself on small corpora.
        key = jax.random.fold_in(jax.random.wrap_key_data(epoch_key), call_index)
        start = call_index * cfg.words_per_call
        return sgns.train_call(cfg, opt, params, opt_state, kept, kept_docs, n_kept, neg_cdf,
                               start, key, lr)

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
    return jax.jit(vm, donate_argnums=(0, 1))


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
    corpus = (encoded_docs if isinstance(encoded_docs, sgns.DeviceCorpus)
              else sgns.device_corpus(encoded_docs, counts, cfg.sample))
    V, n_seeds = counts.size, len(tcfg.seeds)
    params, opt_state, keys = init_state(V, cfg, tcfg)
    k_sub = jax.random.wrap_key_data(keys[:, 0])
    k_step = jax.random.wrap_key_data(keys[:, 1])
    epoch_loss = np.zeros((tcfg.epochs, n_seeds))
    epoch_pairs = np.zeros((tcfg.epochs, n_seeds))
    first_epoch, first_call = 0, 0
    ckpt = _Checkpoints(work_dir, cfg, tcfg, V) if work_dir is not None else None
    if ckpt is not None and ckpt.latest() is not None:
        params, opt_state, first_epoch, first_call, epoch_loss, epoch_pairs = ckpt.restore(
            params, opt_state)
    call = make_call(cfg, tcfg)
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
    for epoch in range(first_epoch, tcfg.epochs):
        kept, kept_docs, n_kept = subsample(
            corpus, jax.vmap(jax.random.fold_in, (0, None))(k_sub, epoch))
        n_seed = np.asarray(n_kept)  # the one host sync per epoch
        n_max = int(n_seed.max())
        n_calls = math.ceil(n_max / wpc)
        step_keys = jax.random.key_data(jax.vmap(jax.random.fold_in, (0, None))(k_step, epoch))
        pending = []  # (loss [S], pairs [S]) device arrays; pulled at log points only
        start_call = first_call if epoch == first_epoch else 0
        for c in range(start_call, n_calls):
            # gensim's linear decay over each seed's own progress through its kept tokens
            progress_frac = (epoch + np.minimum(c * wpc / n_seed, 1.0)) / tcfg.epochs
            lr = (tcfg.lr - (tcfg.lr - tcfg.min_lr) * progress_frac).astype(np.float32)
            params, opt_state, loss, pairs = call(params, opt_state, kept, kept_docs, n_kept,
                                                  corpus.neg_cdf, np.int32(c), step_keys, lr)
            pending.append((loss, pairs))
            calls_done += 1
            bar.update(min(wpc, max(n_max - c * wpc, 0)))
            last = c == n_calls - 1
            if len(pending) >= tcfg.log_every or last:
                _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                bar.set_postfix(loss=f"{epoch_loss[epoch].sum() / epoch_pairs[epoch].sum():.4f}")
            if ckpt is not None and (last or (tcfg.checkpoint_every
                                             and (c + 1) % tcfg.checkpoint_every == 0)):
                _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                nxt = (epoch + 1, 0) if last else (epoch, c + 1)
                ckpt.save(params, opt_state, *nxt, epoch_loss, epoch_pairs)
            if stop_after_calls is not None and calls_done >= stop_after_calls:
                if ckpt is not None:
                    _drain(pending, epoch_loss[epoch], epoch_pairs[epoch], epoch, c)
                    ckpt.save(params, opt_state, epoch, c + 1, epoch_loss, epoch_pairs)
                    ckpt.close()
                bar.close()
                raise StoppedEarlyError()
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
    return TrainResult(params, mean_loss, seconds, eff_words, raw_words, compile_seconds)


class StoppedEarlyError(Exception):
    """Raised by ``stop_after_calls`` (tests of resume)."""


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
    """Orbax checkpoints of the whole training state, keyed by a global call counter."""

    def __init__(self, work_dir, cfg: SGNSConfig, tcfg: TrainConfig, vocab_size: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.dir = Path(work_dir).absolute() / "checkpoints"
        self.meta = {"sgns": dataclasses.asdict(cfg), "seeds": list(tcfg.seeds),
                     "optimizer": tcfg.optimizer,
                     "adam_lr": tcfg.adam_lr if tcfg.optimizer == "adam" else None,
                     "vocab_size": vocab_size,
                     "epochs": tcfg.epochs, "lr": tcfg.lr, "min_lr": tcfg.min_lr}
        self.mngr = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
            item_names=("state", "meta"))
        self._counter = 0 if self.latest() is None else self.latest()

    def latest(self):
        return self.mngr.latest_step()

    def save(self, params, opt_state, epoch, call, epoch_loss, epoch_pairs) -> None:
        ocp = self._ocp
        self._counter += 1
        state = {"params": params, "opt_state": opt_state,
                 "epoch_loss": epoch_loss, "epoch_pairs": epoch_pairs}
        self.mngr.save(self._counter, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({**self.meta, "epoch": epoch, "call": call})))

    def restore(self, params, opt_state):
        ocp = self._ocp
        step = self.latest()
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
        return (state["params"], state["opt_state"], meta["epoch"], meta["call"],
                np.asarray(state["epoch_loss"]).copy(), np.asarray(state["epoch_pairs"]).copy())

    def close(self) -> None:
        self.mngr.wait_until_finished()
        self.mngr.close()
