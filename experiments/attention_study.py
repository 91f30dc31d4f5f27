"""Q4: why does attention use a dot product as relevance, and not cosine, −‖q−k‖² or raw similarity?

The same small causal transformer (jaxemb.transformer) with each query–key score of
jaxemb.attention, trained under one fixed protocol on three tasks (jaxemb.tasks): negation scope
(a sentiment word must attend to a dissimilar negator), multi-query associative recall (Arora et
al. 2023) and a character LM on the Wikipedia sample; plus a learning-rate sweep and the growth of
attention logits (Wortsman et al. 2023) and the attention maps themselves.

    python -m experiments.run attention            # ~150 s on a 2-core CPU (260 CPU-s)
    python -m experiments.run attention --quick    # smoke-test size, ~15 s
    python -m experiments.run attention --steps 1000 --widths 32 64 128   # a larger size

Measured on the 2-vCPU dev box (shared, so noisy): default 145–170 s wall. Every score solves
the negation task (raw similarity included); no score solves MQAR at widths ≤ 32 within the
default steps, while a width-128, 2-head scaled-dot model learns it (3 of 3 seeds by step ~300
of 600 at lr 1e-3).

Training: several seeds (and learning rates) are members of one ``jax.vmap``-ed train step,
jitted once per model shape with the state donated, on a ``jax.sharding.Mesh`` over all devices
with the batch axis sharded (params replicated): one code path for one device or many.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.bench_sgns import ci95  # noqa: E402
from experiments.report import Run  # noqa: E402
from jaxemb import tasks  # noqa: E402
from jaxemb.attention import ATTENTION_SCORES  # noqa: E402
from jaxemb.train import TrainingError  # noqa: E402
from jaxemb.transformer import Transformer, TransformerConfig  # noqa: E402


class AttentionStudyError(ValueError):
    """A study setting that cannot run (batch not divisible by the devices, bad sizes)."""


@dataclasses.dataclass(frozen=True)
class AttentionStudyConfig:
    """Attention scores on negation scope, MQAR and a character LM; LR sweep; attention maps."""

    scores: tuple[str, ...] = ATTENTION_SCORES
    """Query–key scores to compare (jaxemb.attention.ATTENTION_SCORES)."""
    seeds: int = 3
    """Seeds per score and task (init and data keys), trained together with vmap."""
    steps: int = 250
    """Optimiser steps per run (every task, score and learning rate)."""
    width: int = 32
    """Model width (also the MQAR width the main table reports)."""
    depth: int = 2
    """Transformer blocks."""
    heads: int = 2
    """Attention heads."""
    batch: int = 32
    """Sequences per step (split over the devices: must be divisible by the device count)."""
    lr: float = 1e-2
    """Peak learning rate of the main runs."""
    lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    """Learning-rate sweep (character LM, first seed), run in groups of --seeds members."""
    widths: tuple[int, ...] = (16, 32)
    """MQAR width grid for the smallest width that solves it (width 128 learns T=16, 2 pairs
    within ~300 steps; --widths 32 64 128 --steps 600 is an estimated ~20 min on 2 CPUs)."""
    mqar_lr: float = 1e-3
    """Peak learning rate of the MQAR runs (1e-2 keeps wide models from forming the recall
    circuit; lr is a per-member value, so this reuses the compiled step)."""
    warmup: float = 0.1
    """Fraction of the steps with a linear warmup (then cosine decay to 0.1 × peak)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (on matrices only), coupled to the learning rate as in optax.adamw."""
    clip: float = 1.0
    """Global gradient-norm clipping."""
    dropout: float = 0.0
    """Dropout rate (the dropout key is threaded with the step folded in)."""
    seq_len: int = 16
    """Sequence length of every task (one model shape serves all three)."""
    vocab: int = 64
    """Token ids of the shared model shape (synthetic tasks; the character LM uses 29)."""
    kv_pairs: int = 2
    """MQAR key–value pairs per sequence."""
    mqar_random_fill: bool = False
    """MQAR fillers: random tokens (Zoology's default) or id 0 (Zoology's other option; random
    fillers collide with keys often in a small vocabulary)."""
    scope: int = 3
    """Negation scope: a negator flips the sentiment words up to this many tokens after it."""
    char_max_chars: int | None = 1_000_000
    """Use the first N characters of the Wikipedia sample (None: all, ~2.8M); last 10% held out."""
    eval_size: int = 256
    """Held-out sequences per task (must be divisible by the device count)."""
    solve_threshold: float = 0.99
    """MQAR is solved at a width when the seeds' mean held-out accuracy reaches this."""
    relevance_threshold: float = 0.95
    """The relevance task is solved when the mean accuracy on negated words reaches this."""
    log_every: int = 50
    """Steps between host syncs (loss, NaN check, attention-logit probe)."""
    workers: int = 2
    """Scores trained concurrently in threads (XLA compiles and runs without the GIL)."""
    seed: int = 0
    """First seed; seeds are seed, seed+1, ..."""
    quick: bool = False
    """Smoke-test size: 2 scores, 2 seeds, 40 steps, width 16, depth 1, one MQAR width, 3 lrs."""

    def resolved(self) -> AttentionStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, scores=("scaled_dot", "raw"), seeds=2, steps=40, width=16, depth=1, batch=16,
                lrs=(1e-3, 1e-2, 1.0), widths=(16,), char_max_chars=200_000, eval_size=64,
                log_every=20)
        return self

    def validate(self) -> None:
        for name in ("seeds", "steps", "width", "depth", "heads", "batch", "seq_len", "vocab",
                     "kv_pairs", "scope", "eval_size", "log_every", "workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if not self.scores:
            raise ValueError("--scores must name at least one score")
        for s in self.scores:
            if s not in ATTENTION_SCORES:
                raise ValueError(f"--scores: unknown score {s!r}; known: "
                                 f"{', '.join(ATTENTION_SCORES)}")
        if len(set(self.scores)) != len(self.scores):
            raise ValueError(f"--scores must be distinct, got {self.scores}")
        if not self.lrs or min(self.lrs) <= 0 or self.lr <= 0 or self.mqar_lr <= 0:
            raise ValueError(f"--lr, --mqar-lr and every --lrs value must be > 0, got "
                             f"lr={self.lr}, mqar_lr={self.mqar_lr}, lrs={self.lrs}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"--widths must be positive, got {self.widths}")
        for w in (self.width, *self.widths):
            if w % self.heads:
                raise ValueError(f"--heads {self.heads} must divide every width, got width {w}")
        if not 0 <= self.warmup < 1 or self.weight_decay < 0 or self.clip <= 0:
            raise ValueError(f"need 0 <= warmup < 1, weight_decay >= 0, clip > 0; got "
                             f"{self.warmup}, {self.weight_decay}, {self.clip}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ("solve_threshold", "relevance_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1]")
        if self.char_max_chars is not None and self.char_max_chars < 10 * self.seq_len:
            raise ValueError(f"--char-max-chars must be >= 10 × seq_len, got "
                             f"{self.char_max_chars}")
        if self.vocab < len(tasks.CHARS):
            raise ValueError(f"--vocab must be >= {len(tasks.CHARS)} (the character LM shares "
                             f"the model shape), got {self.vocab}")
        n = jax.device_count()
        for name in ("batch", "eval_size"):
            if getattr(self, name) % n:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)} must be "
                                 f"divisible by the {n} devices the batch is sharded over")
        # Task arguments: fail here, not after minutes of training.
        tasks.mqar(0, 1, self.seq_len, self.kv_pairs, self.vocab)
        tasks.negation_scope(0, 1, self.seq_len, self.vocab, scope=self.scope)


# --- training: one vmapped, sharded, donated step per model shape ----------------------------

@dataclasses.dataclass(frozen=True)
class Protocol:
    """The fixed optimisation protocol: AdamW (β = 0.9, 0.95, ε = 1e-8; Wortsman et al. 2023),
    global-norm clipping, linear warmup then cosine decay to 0.1 × peak; the peak learning rate
    is a per-member value so one compiled step serves a learning-rate sweep."""

    steps: int
    warmup: float = 0.1
    weight_decay: float = 1e-4
    clip: float = 1.0
    dropout: float = 0.0

    def optimizer(self) -> optax.GradientTransformation:
        """AdamW with a unit peak: multiplied by the member's lr it is optax.adamw(lr · sched)."""
        warmup = max(1, round(self.warmup * self.steps))
        sched = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(self.steps, warmup + 1),
                                                   end_value=0.1)
        # Clipping and Adam act on one flat vector (optax.flatten): the same maths, but a few
        # large ops instead of a handful per parameter leaf compile ~2× faster on CPU.
        return optax.chain(
            optax.flatten(optax.chain(optax.clip_by_global_norm(self.clip),
                                      optax.scale_by_adam(b1=0.9, b2=0.95, eps=1e-8))),
            optax.add_decayed_weights(self.weight_decay,
                                      mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)),
            optax.scale_by_learning_rate(sched))


def make_mesh(devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh (axis ``data``) over ``devices`` (default: all)."""
    return Mesh(np.array(jax.devices() if devices is None else list(devices)), ("data",))


def check_divisible(n: int, mesh: Mesh, what: str = "batch") -> None:
    if n % mesh.size:
        raise AttentionStudyError(f"{what} {n} must be divisible by the {mesh.size} devices of "
                                  f"the mesh (the batch axis is sharded over them)")


def masked_metrics(logits, targets, mask):
    """(mean cross-entropy, accuracy) over positions where mask holds; [B, T, O], [B, T], [B, T]."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    w = mask.astype(logits.dtype)
    n = jnp.maximum(jnp.sum(w), 1.0)
    correct = (jnp.argmax(logits, -1) == targets).astype(logits.dtype)
    return jnp.sum(ce * w) / n, jnp.sum(correct * w) / n


def init_state(model: Transformer, protocol: Protocol, seeds: Sequence[int],
               lrs: Sequence[float], seq_len: int) -> dict:
    """The members' stacked state (numpy, on the host): params, optimiser state, peak lr,
    dropout key, step, and the first step whose loss was not finite (-1: none).

    Keys: ``key(seed)`` split once by purpose (init, data, dropout); the data key is
    :func:`member_data_key`'s. Each member is initialised eagerly and the results stacked: a
    jitted (or vmapped) flax init compiles every initialiser's random-number code anew for each
    model shape (seconds each), while eager ops are compiled once per shape and reused by every
    later model that shares them.
    """
    tx = protocol.optimizer()
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    members = []
    for seed in seeds:
        k_init, _, k_drop = jax.random.split(jax.random.key(seed), 3)
        params = model.init(k_init, tokens)["params"]
        members.append((params, tx.init(params), jax.random.key_data(k_drop)))
    params, opt, keys = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                                     *members)
    return {"params": params, "opt": opt, "lr": np.asarray(lrs, np.float32), "key": keys,
            "step": np.zeros((), np.int32), "first_bad": np.full(len(seeds), -1, np.int32)}


def member_data_key(seed: int, task: int) -> jax.Array:
    """The data key of a member for a task: the second purpose key of ``key(seed)``."""
    return jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[1], task)


def make_train_step(model: Transformer, protocol: Protocol, mesh: Mesh,
                    on_trace: Callable[[], None] | None = None):
    """``step(state, batch) -> (state, metrics)``, jitted once, state donated.

    ``batch``: inputs, targets [M, B, T] int32 and mask [M, B, T] bool, sharded along B over the
    mesh's ``data`` axis; params replicated (XLA inserts the gradient all-reduce). Metrics: loss
    and accuracy [M] of this step's batch (before the update), left on the device.
    """
    tx = protocol.optimizer()
    dropout = protocol.dropout > 0

    def member(params, opt, lr, key, step, inputs, targets, mask):
        rng = jax.random.fold_in(jax.random.wrap_key_data(key), step)

        def loss_fn(p):
            logits = model.apply({"params": p}, inputs, deterministic=not dropout,
                                 rngs={"dropout": rng} if dropout else None)
            return masked_metrics(logits, targets, mask)

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, jax.tree.map(lambda u: lr * u, updates))
        return params, opt, loss, acc

    def step(state, batch):
        if on_trace is not None:
            on_trace()
        params, opt, loss, acc = jax.vmap(member, in_axes=(0, 0, 0, 0, None, 0, 0, 0))(
            state["params"], state["opt"], state["lr"], state["key"], state["step"],
            batch["inputs"], batch["targets"], batch["mask"])
        bad = (state["first_bad"] < 0) & ~jnp.isfinite(loss)
        new = {**state, "params": params, "opt": opt, "step": state["step"] + 1,
               "first_bad": jnp.where(bad, state["step"], state["first_bad"])}
        return new, {"loss": loss, "accuracy": acc}

    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(None, "data"))
    return jax.jit(step, in_shardings=(replicated, data), out_shardings=(replicated, replicated),
                   donate_argnums=0)


def place(state: dict, batch: dict, mesh: Mesh) -> tuple[dict, dict]:
    """State replicated and batch sharded along B over ``mesh`` (what the step expects)."""
    check_divisible(batch["inputs"].shape[1], mesh)
    return (jax.device_put(state, NamedSharding(mesh, PartitionSpec())),
            jax.device_put(batch, NamedSharding(mesh, PartitionSpec(None, "data"))))


def make_evaluate(model: Transformer, mesh: Mesh):
    """``f(params [M,...], inputs, targets, attend [E, T], example) -> dict`` for every member on
    one held-out batch (sharded along E):

    - ``ce``, ``correct`` [M, E, T]: cross-entropy and argmax hit per position;
    - ``mass`` [M, L, H]: mean softmax weight from each position with ``attend >= 0`` to the
      position it names (the token it must attend to), per layer and head;
    - ``max_abs_logit``, ``max_logit_range`` [M]: the largest |attention logit| over layers,
      heads and causal entries (Wortsman et al. 2023), and the largest row range (max − min over
      one query's keys: what a softmax sees, so −‖q−k‖²'s ‖q‖² term drops out);
    - ``maps`` [M, L, H, T, T]: the attention weights of sequence ``example``.
    """
    def member(params, inputs, targets, attend, example):
        logits = model.apply({"params": params}, inputs)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        a, w = model.apply({"params": params}, inputs, method=Transformer.attention_maps)
        T = inputs.shape[1]
        valid = jnp.tril(jnp.ones((T, T), bool))
        hi = jnp.where(valid, a, -jnp.inf).max(-1)
        lo = jnp.where(valid, a, jnp.inf).min(-1)
        idx = jnp.broadcast_to(jnp.maximum(attend, 0)[None, :, None, :, None], (*w.shape[:-1], 1))
        on = jnp.take_along_axis(w, idx, axis=-1)[..., 0]          # [L, E, H, T]
        m = (attend >= 0).astype(w.dtype)[None, :, None, :]        # [1, E, 1, T]
        return {"ce": ce, "correct": jnp.argmax(logits, -1) == targets,
                "mass": jnp.sum(on * m, axis=(1, 3)) / jnp.maximum(jnp.sum(m), 1.0),
                "max_abs_logit": jnp.where(valid, jnp.abs(a), 0.0).max(),
                "max_logit_range": (hi - lo).max(),
                "maps": jnp.take(w, example, axis=1)}

    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    return jax.jit(jax.vmap(member, in_axes=(0, None, None, None, None)),
                   in_shardings=(replicated, data, data, data, replicated),
                   out_shardings=replicated)


@dataclasses.dataclass
class Trained:
    params: dict                 # leading member axis
    history: list[dict]          # per log point: step, loss [M], accuracy [M], (logit probe)
    first_bad: np.ndarray        # [M] first step with a non-finite loss, -1 if none
    seconds: float


def train(model: Transformer, protocol: Protocol, mesh: Mesh, step_fn, seeds: Sequence[int],
          lrs: Sequence[float], data: dict, *, log_every: int, label: str,
          probe: Callable[[dict], dict] | None = None,
          may_diverge: Sequence[bool] | None = None) -> Trained:
    """Train the members (one per (seed, lr)) for ``data['inputs'].shape[0]`` steps.

    ``data``: inputs, targets, mask as numpy [steps, M, B, T]; each step's slice is put on the
    mesh sharded along B. Metrics (and ``probe(params)``, a dict of [M] arrays) are pulled to the
    host only every ``log_every`` steps and at the end; a non-finite loss raises TrainingError
    naming the step and member, except for members marked in ``may_diverge`` (a learning-rate
    sweep records the step instead).
    """
    steps, M, B, T = data["inputs"].shape
    check_divisible(B, mesh)
    state = init_state(model, protocol, seeds, lrs, T)
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
    may_diverge = np.zeros(M, bool) if may_diverge is None else np.asarray(may_diverge, bool)
    history: list[dict] = []
    t0 = time.perf_counter()
    for s in range(steps):
        batch = jax.device_put({k: v[s] for k, v in data.items()}, sharding)
        state, metrics = step_fn(state, batch)
        if (s + 1) % log_every == 0 or s + 1 == steps:
            record = {"step": s + 1, **jax.device_get(metrics)}
            if probe is not None:
                record.update(jax.device_get(probe(state["params"])))
            history.append(record)
            bad = np.asarray(jax.device_get(state["first_bad"]))
            fatal = (bad >= 0) & ~may_diverge
            if fatal.any():
                m = int(np.flatnonzero(fatal)[0])
                raise TrainingError(f"{label}: the loss became NaN/inf at step {int(bad[m])} "
                                    f"(member seed={seeds[m]}, lr={lrs[m]:g}); lower --lr or "
                                    f"raise --clip")
    jax.block_until_ready(state["params"])
    return Trained(state["params"], history, np.asarray(jax.device_get(state["first_bad"])),
                   time.perf_counter() - t0)


# --- tasks as [steps, M, B, T] arrays ----------------------------------------------------------

TASK_IDS = {"negation": 0, "mqar": 1, "char": 2}


def stack_members(make: Callable[[jax.Array, int], dict], seeds: Sequence[int], task: str,
                  steps: int, batch: int) -> dict:
    """Each member's stream from its own data key, as {name: [steps, M, B, T]}."""
    per = [make(member_data_key(s, TASK_IDS[task]), steps * batch) for s in seeds]
    return {k: np.stack([p[k].reshape(steps, batch, -1) for p in per], axis=1) for k in per[0]}


# --- the study ------------------------------------------------------------------------------

def _fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


@dataclasses.dataclass
class _Setup:
    """Everything the runs share: data streams, held-out sets, and the compiled functions (one
    train step and one evaluator per model shape; the three tasks share one shape)."""

    cfg: AttentionStudyConfig
    protocol: Protocol
    mesh: Mesh
    seeds: list[int]
    streams: dict          # task -> seed -> {inputs, targets, mask} [steps, B, T]
    evals: dict            # task -> (inputs, targets, attend) [E, T]
    negation: tasks.NegationBatch
    example: int           # the held-out negation sequence whose maps are plotted
    char_vocab: int
    char_chars: int
    sweep: list[list[tuple[int, float]]]  # learning-rate sweep members in runs of len(seeds)
    fns: dict = dataclasses.field(default_factory=dict)

    def data(self, task: str, seeds: Sequence[int]) -> dict:
        per = [self.streams[task][s] for s in seeds]
        return {k: np.stack([p[k] for p in per], axis=1) for k in per[0]}

    def functions(self, score: str, width: int) -> tuple[Transformer, dict]:
        c = self.cfg
        tc = TransformerConfig(vocab_size=c.vocab, width=width, depth=c.depth,
                               num_heads=c.heads, score=score, causal=True, max_len=c.seq_len,
                               dropout_rate=c.dropout)
        model = Transformer(tc)
        if tc not in self.fns:  # keys are per score: each worker thread writes its own
            self.fns[tc] = {"step": make_train_step(model, self.protocol, self.mesh),
                            "evaluate": make_evaluate(model, self.mesh)}
        return model, self.fns[tc]

    def evaluate(self, fns: dict, task: str, params, keys=None) -> dict:
        x, y, attend = self.evals[task]
        out = fns["evaluate"](params, x, y, attend, self.example)
        return jax.device_get(out if keys is None else {k: out[k] for k in keys})


def _eval_key(cfg: AttentionStudyConfig, task: str) -> jax.Array:
    # Held-out data: a key no member's training stream uses (members use split(key(s), 3)[1]).
    return jax.random.fold_in(jax.random.key(cfg.seed), 1_000 + TASK_IDS[task])


def _prepare(cfg: AttentionStudyConfig, progress) -> _Setup:
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    n, T, E, V = cfg.steps * cfg.batch, cfg.seq_len, cfg.eval_size, cfg.vocab
    with progress("Q4 data: negation scope, MQAR, characters of the Wikipedia sample"):
        cd = tasks.char_data(max_chars=cfg.char_max_chars)

        def negation(key, n):
            b = tasks.negation_scope(key, n, T, V, scope=cfg.scope)
            return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

        def mqar(key, n):
            x, y, m = tasks.mqar(key, n, T, cfg.kv_pairs, V,
                                 random_non_queries=cfg.mqar_random_fill)
            return {"inputs": x, "targets": y, "mask": m}

        def char(key, n):
            x, y = cd.windows(key, n, T)
            return {"inputs": x, "targets": y, "mask": np.ones_like(x, bool)}

        streams = {}
        for task, make in (("negation", negation), ("mqar", mqar), ("char", char)):
            streams[task] = {}
            for s in seeds:
                d = make(member_data_key(s, TASK_IDS[task]), n)
                streams[task][s] = {k: v.reshape(cfg.steps, cfg.batch, T) for k, v in d.items()}
        ev = tasks.negation_scope(_eval_key(cfg, "negation"), E, T, V, scope=cfg.scope)
        mx, my, _ = tasks.mqar(_eval_key(cfg, "mqar"), E, T, cfg.kv_pairs, V,
                               random_non_queries=cfg.mqar_random_fill)
        cx, cy = cd.tiles(E, T)
        none = np.full((E, T), -1, np.int32)
        evals = {"negation": (ev.inputs, ev.targets, ev.attend), "mqar": (mx, my, none),
                 "char": (cx, cy, none)}
    sweep = [(seeds[0], lr) for lr in cfg.lrs if not math.isclose(lr, cfg.lr)]
    # Runs of len(seeds) members (the last padded with its own last member) so every run has
    # the same shape as the main runs and reuses their compiled step.
    runs = [sweep[i: i + len(seeds)] for i in range(0, len(sweep), len(seeds))]
    runs = [r + [r[-1]] * (len(seeds) - len(r)) for r in runs]
    example = int(np.argmax(ev.negated[:, :_T_SHOW].sum(1)))
    return _Setup(cfg, Protocol(cfg.steps, cfg.warmup, cfg.weight_decay, cfg.clip, cfg.dropout),
                  make_mesh(), seeds, streams, evals, ev, example, cd.vocab_size,
                  cd.train.size + cd.validation.size, runs)


_T_SHOW = 24  # positions shown in the attention-map figure


def _mqar_run(st: _Setup, score: str, width: int) -> dict:
    cfg, seeds = st.cfg, st.seeds
    model, fns = st.functions(score, width)
    tr = train(model, st.protocol, st.mesh, fns["step"], seeds, [cfg.mqar_lr] * len(seeds),
               st.data("mqar", seeds), log_every=cfg.log_every, label=f"mqar/w{width}/{score}")
    e = st.evaluate(fns, "mqar", tr.params, ("correct",))
    return {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds}


def _main_runs(st: _Setup, score: str) -> dict:
    """The runs of one score at the main width (one compiled step): negation, MQAR, the
    character LM and its learning-rate sweep."""
    cfg, seeds = st.cfg, st.seeds
    M = len(seeds)
    model, fns = st.functions(score, cfg.width)
    out: dict = {}
    tr = train(model, st.protocol, st.mesh, fns["step"], seeds, [cfg.lr] * M,
               st.data("negation", seeds), log_every=cfg.log_every, label=f"negation/{score}")
    e = st.evaluate(fns, "negation", tr.params, ("correct", "mass", "maps"))
    out["negation"] = {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds}
    out["mqar"] = {cfg.width: _mqar_run(st, score, cfg.width)}
    members: list[dict] = []
    ln2 = math.log(2)

    def probe(params):
        return st.evaluate(fns, "char", params, ("max_abs_logit", "max_logit_range"))

    for r, run in enumerate([[(s, cfg.lr) for s in seeds], *st.sweep]):
        tr = train(model, st.protocol, st.mesh, fns["step"], [m[0] for m in run],
                   [m[1] for m in run], st.data("char", [m[0] for m in run]),
                   log_every=cfg.log_every, label=f"char/{score}/run{r}", probe=probe,
                   may_diverge=[r > 0] * M)
        bits = st.evaluate(fns, "char", tr.params, ("ce",))["ce"].reshape(M, -1).mean(1) / ln2
        for i, (s, lr) in enumerate(run):
            if r > 0 and any(m["seed"] == s and m["lr"] == lr for m in members):
                continue  # padding
            members.append({
                "seed": s, "lr": lr, "sweep": r > 0, "bits_per_char": float(bits[i]),
                "diverged_at": int(tr.first_bad[i]), "seconds": tr.seconds,
                "steps": [h["step"] for h in tr.history],
                "max_abs_logit": [float(h["max_abs_logit"][i]) for h in tr.history],
                "max_logit_range": [float(h["max_logit_range"][i]) for h in tr.history]})
    out["char"] = members
    return out


def _relevance_section(st: _Setup, res: dict, run: Run) -> tuple[dict, str]:
    cfg, ev = st.cfg, st.negation
    negated, plain = ev.negated, ev.loss_mask & ~ev.negated
    out, maps = {}, {}
    for score, r in res.items():
        n = r["negation"]
        rows = []
        for i, s in enumerate(st.seeds):
            best = np.unravel_index(int(np.argmax(n["mass"][i])), n["mass"][i].shape)
            rows.append(run.log(
                "q4_relevance", score=score, seed=s,
                accuracy=float(n["correct"][i][ev.loss_mask].mean()),
                negated_accuracy=float(n["correct"][i][negated].mean()),
                plain_accuracy=float(n["correct"][i][plain].mean()),
                attention_mass=float(n["mass"][i][best]), best_layer=int(best[0]),
                best_head=int(best[1]), train_loss=float(n["loss"][i]), seconds=n["seconds"]))
        out[score] = {k: ci95([row[k] for row in rows]) for k in
                      ("accuracy", "negated_accuracy", "plain_accuracy", "attention_mass")}
        out[score]["solved"] = out[score]["negated_accuracy"][0] >= cfg.relevance_threshold
        layer, head = rows[0]["best_layer"], rows[0]["best_head"]
        maps[score] = (n["maps"][0][layer, head], (layer, head), rows[0]["attention_mass"])
    # Baselines from the held-out data: a context-blind model predicts each word's own polarity;
    # uniform causal attention puts 1/(t+1) on each earlier token.
    blind = float(1.0 - negated.sum() / ev.loss_mask.sum())
    uniform = float(np.mean(1.0 / (np.nonzero(negated)[1] + 1)))
    run.log("q4_relevance_baselines", context_blind_accuracy=blind, uniform_attention=uniform)
    md = run.table(
        "q4_relevance_table",
        ("score", "accuracy (all sentiment words)", "on negated words", "on other words",
         "attention mass on the negator (best head)", "solved"),
        [(s, _fmt(*r["accuracy"]), _fmt(*r["negated_accuracy"]), _fmt(*r["plain_accuracy"]),
          _fmt(*r["attention_mass"]), "yes" if r["solved"] else "no") for s, r in out.items()],
        f"Negation scope, held-out: {cfg.eval_size} sequences of T={cfg.seq_len} (vocabulary "
        f"{cfg.vocab}: fillers, 4 negators, 8 positive and 8 negative words; a negator flips the "
        f"words up to {cfg.scope} tokens after it). Mean ± 95% t-interval over "
        f"{len(st.seeds)} seeds; only the score differs ({_protocol_short(cfg)}). Solved: "
        f"accuracy on negated words ≥ {cfg.relevance_threshold}. A context-blind model scores "
        f"{blind:.3f} overall and 0 on negated words; uniform attention would put {uniform:.3f} "
        f"on the negator. Attention mass: mean softmax weight from each negated word to its "
        f"negator, in the layer and head where it is largest.")
    return out, md + "\n" + _attention_figure(run, st, maps)


def _protocol_short(cfg: AttentionStudyConfig, lr: float | None = None) -> str:
    return (f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, {cfg.steps} steps, batch "
            f"{cfg.batch}, peak lr {cfg.lr if lr is None else lr:g}")


def _attention_figure(run: Run, st: _Setup, maps: dict) -> str:
    ev, ex = st.negation, st.example
    T = min(_T_SHOW, st.cfg.seq_len)
    voc = tasks.negation_vocabulary(st.cfg.vocab)
    kind = ["N" if t in voc.negators else "+" if t in voc.positive else "−" if t in voc.negative
            else "·" for t in ev.inputs[ex, :T].tolist()]
    cols = min(len(maps), 4)
    fig, axes = plt.subplots(-(-len(maps) // cols), cols, figsize=(3.2 * cols, 3.4 * (
        -(-len(maps) // cols))), squeeze=False)
    neg_t = np.flatnonzero(ev.negated[ex, :T])
    for ax, (score, (w, (layer, head), mass)) in zip(axes.flat, maps.items(), strict=False):
        ax.imshow(np.asarray(w)[:T, :T], cmap="viridis", vmin=0, vmax=1)
        ax.scatter(ev.attend[ex, neg_t], neg_t, s=16, facecolors="none", edgecolors="r")
        ax.set_title(f"{score}\nlayer {layer} head {head}: mass {mass:.2f}", fontsize=8)
        ax.set_xticks(range(T), kind, fontsize=5)
        ax.set_yticks(range(T), kind, fontsize=5)
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    fig.tight_layout()
    return run.figure(
        fig, "q4_attention_maps",
        "Attention weights (rows: queries, columns: keys) on one held-out negation sequence, "
        "first seed, the head with the most mass on negators (the mass is its mean over all "
        "held-out negated words); red circles: the negator each negated word must attend to. "
        "Ticks: N negator, +/− sentiment word, · filler.")


def _mqar_section(st: _Setup, res: dict, run: Run) -> tuple[dict, str]:
    cfg = st.cfg
    mask = st.evals["mqar"][1] > 0  # answers are values, never id 0
    widths = sorted(set(cfg.widths) | {cfg.width})
    acc: dict = {}
    for score, r in res.items():
        acc[score] = {}
        for w in widths:
            q = r["mqar"][w]
            vals = [run.log("q4_mqar", score=score, width=w, seed=s,
                            accuracy=float(q["correct"][i][mask].mean()),
                            train_loss=float(q["loss"][i]), seconds=q["seconds"])["accuracy"]
                    for i, s in enumerate(st.seeds)]
            acc[score][w] = ci95(vals)
    smallest = {s: next((w for w in widths if acc[s][w][0] >= cfg.solve_threshold), None)
                for s in acc}
    md = run.table(
        "q4_mqar_table", ("score", *[f"accuracy, width {w}" for w in widths],
                          f"smallest width with accuracy ≥ {cfg.solve_threshold}"),
        [(s, *[_fmt(*acc[s][w]) for w in widths],
          str(smallest[s]) if smallest[s] is not None else f"none ≤ {widths[-1]}")
         for s in acc],
        f"MQAR (Zoology's generator), held-out accuracy at the {cfg.kv_pairs} query positions "
        f"of {cfg.eval_size} sequences, T={cfg.seq_len}, vocabulary {cfg.vocab} (keys and values "
        f"from disjoint halves; fillers {'random' if cfg.mqar_random_fill else 'id 0'}). Mean ± "
        f"95% t-interval over {len(st.seeds)} seeds; only the score and width vary "
        f"({_protocol_short(cfg, cfg.mqar_lr)}). Answering with a random value "
        f"of the sequence scores 1/{cfg.kv_pairs}.")
    return {"accuracy": acc, "smallest_width": smallest}, md


def _char_section(st: _Setup, res: dict, run: Run) -> tuple[dict, str]:
    cfg = st.cfg
    cap = math.log2(cfg.vocab)  # ≈ the loss at initialisation: near-uniform over the outputs
    bpc, sweeps, curves = {}, {}, {}
    for score, r in res.items():
        for m in r["char"]:
            run.log("q4_char", score=score, seed=m["seed"], lr=m["lr"],
                    bits_per_char=m["bits_per_char"] if m["diverged_at"] < 0 else None,
                    diverged_at=m["diverged_at"] if m["diverged_at"] >= 0 else None,
                    final_max_abs_logit=m["max_abs_logit"][-1],
                    final_max_logit_range=m["max_logit_range"][-1], seconds=m["seconds"])
        base = [m for m in r["char"] if not m["sweep"]]
        bpc[score] = ci95([m["bits_per_char"] for m in base])
        first = [m for m in r["char"] if m["seed"] == st.seeds[0]]
        sweeps[score] = {m["lr"]: (m["bits_per_char"], m["diverged_at"])
                         for m in sorted(first, key=lambda m: m["lr"])}
        top = max(first, key=lambda m: m["lr"])
        curves[score] = {"steps": base[0]["steps"],
                         "base": np.mean([m["max_abs_logit"] for m in base], axis=0),
                         "base_range": float(np.mean([m["max_logit_range"][-1] for m in base])),
                         "top": np.asarray(top["max_abs_logit"]), "top_lr": top["lr"],
                         "top_range": top["max_logit_range"][-1]}
    md = run.table(
        "q4_char_table", ("score", "held-out bits per character"),
        [(s, _fmt(*bpc[s])) for s in bpc],
        f"Character LM on the first {st.char_chars} characters of gensim's Wikipedia sample "
        f"({st.char_vocab} symbols; the last 10% held out), bits per character over "
        f"{cfg.eval_size} evenly spaced held-out windows of T={cfg.seq_len}. Mean ± 95% "
        f"t-interval over {len(st.seeds)} seeds; only the score differs ({_protocol_short(cfg)}; "
        f"the output layer has the {cfg.vocab} ids of the shared model shape, {st.char_vocab} "
        f"used). A uniform guess over the 29 symbols is {math.log2(st.char_vocab):.2f} bits.")
    sens = _lr_sensitivity(sweeps, cap)
    lrs = sorted({lr for v in sweeps.values() for lr in v})

    def cell(v):
        return f"diverged (step {v[1]})" if v[1] >= 0 else f"{v[0]:.3f}"

    md += "\n" + run.table(
        "q4_lr_table", ("score", *[f"lr {lr:g}" for lr in lrs], "LR sensitivity (bits)"),
        [(s, *[cell(sweeps[s][lr]) for lr in lrs], f"{sens[s]:.3f}") for s in sweeps],
        f"Held-out bits per character after {cfg.steps} steps at each peak learning rate (seed "
        f"{st.seeds[0]}: the same init and data at every lr; the protocol's warmup and decay "
        f"scale with the peak). LR sensitivity (Wortsman et al. 2023): the mean over the sweep "
        f"of min(loss, loss at init) minus the best loss, with the loss at init taken as "
        f"log2({cfg.vocab}) = {cap:.2f} bits (near-uniform outputs); a diverged run counts as "
        f"that.")
    md += "\n" + _lr_figure(run, sweeps, st) + "\n" + _logit_figure(run, curves, st)
    top_lr = next(iter(curves.values()))["top_lr"]
    md += "\n" + run.table(
        "q4_logit_table", ("score", f"largest abs logit, lr {cfg.lr:g}", "largest row range",
                           f"largest abs logit, lr {top_lr:g}", "largest row range"),
        [(s, f"{c['base'][-1]:.1f}", f"{c['base_range']:.1f}", f"{c['top'][-1]:.1f}",
          f"{c['top_range']:.1f}") for s, c in curves.items()],
        f"Attention logits at the end of training, over all layers, heads and causal entries of "
        f"the {cfg.eval_size} held-out windows (mean of {len(st.seeds)} seeds at lr {cfg.lr:g}; "
        f"seed {st.seeds[0]} at lr {top_lr:g}). Row range: max − min over one query's keys, "
        f"which is what the softmax sees.")
    return {"bits_per_char": bpc, "lr_sweep": sweeps, "lr_sensitivity": sens,
            "logits": {s: {"base": float(c["base"][-1]), "top": float(c["top"][-1])}
                       for s, c in curves.items()}}, md


def _lr_sensitivity(sweeps: dict, cap: float) -> dict:
    out = {}
    for s, by_lr in sweeps.items():
        losses = np.array([min(b, cap) if bad < 0 else cap for b, bad in by_lr.values()])
        out[s] = float(np.mean(losses - losses.min()))
    return out


def _lr_figure(run: Run, sweeps: dict, st: _Setup) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for s, by_lr in sweeps.items():
        ax.plot(list(by_lr), [b if bad < 0 else np.nan for b, bad in by_lr.values()], "o-",
                label=s)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("held-out bits per character")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return run.figure(fig, "q4_lr_sweep",
                      f"Final held-out loss vs peak learning rate, one line per score (character "
                      f"LM, seed {st.seeds[0]}, {st.cfg.steps} steps; diverged runs omitted).")


def _logit_figure(run: Run, curves: dict, st: _Setup) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for s, c in curves.items():
        axes[0].plot(c["steps"], c["base"], label=s)
        axes[1].plot(c["steps"], c["top"], label=s)
    axes[0].set_title(f"peak lr {st.cfg.lr:g} (mean of {len(st.seeds)} seeds)", fontsize=9)
    axes[1].set_title(f"peak lr {next(iter(curves.values()))['top_lr']:g} (seed "
                      f"{st.seeds[0]})", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0].set_ylabel("largest |attention logit|")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return run.figure(fig, "q4_logit_growth",
                      "Growth of the largest attention logit during training (character LM; all "
                      "layers, heads and causal entries of the held-out windows).")


def _compare(a: tuple[float, float], b: tuple[float, float]) -> str:
    """How mean ± half-width ``a`` stands to ``b``: separated only if the intervals are."""
    if a[0] + a[1] < b[0] - b[1]:
        return "below"
    if a[0] - a[1] > b[0] + b[1]:
        return "above"
    return "not separable at 95% from"


def _answer(cfg: AttentionStudyConfig, rel: dict, mq: dict, ch: dict) -> str:
    """The short answer; every claim is chosen by comparing the measured numbers."""
    solved = [s for s, r in rel.items() if r["solved"]]
    unsolved = [s for s in rel if s not in solved]
    lines = []
    if solved:
        lines.append(f"On the relevance task (a sentiment word must find its negator, a token "
                     f"unlike it) {', '.join(solved)} reached ≥ {cfg.relevance_threshold:.0%} "
                     f"accuracy on negated words"
                     + (f"; {', '.join(unsolved)} did not." if unsolved else "."))
    else:
        lines.append(f"No score reached {cfg.relevance_threshold:.0%} accuracy on negated words "
                     f"within {cfg.steps} steps.")
    others = {s: r for s, r in rel.items() if s != "raw"}
    if "raw" in rel and others:
        # Raw similarity against the standard score (or, without it, the best other one).
        ref = ("scaled_dot" if "scaled_dot" in others
               else max(others, key=lambda s: others[s]["negated_accuracy"][0]))
        raw, std = rel["raw"], others[ref]
        acc = _compare(raw["negated_accuracy"], std["negated_accuracy"])
        verdict = ("failed where learned projections succeeded" if not raw["solved"] and solved
                   else "solved it too" if raw["solved"] else "did not solve it either")
        lines.append(f"Raw similarity (no W_Q, W_K) {verdict}: {_fmt(*raw['negated_accuracy'])} "
                     f"on negated words, {acc} {ref} ({_fmt(*std['negated_accuracy'])}); "
                     f"its attention mass on the negator, {_fmt(*raw['attention_mass'], 2)}, was "
                     f"{_compare(raw['attention_mass'], std['attention_mass'])} {ref}'s "
                     f"({_fmt(*std['attention_mass'], 2)}).")
    ok = {s: w for s, w in mq["smallest_width"].items() if w is not None}
    if ok:
        w_min = min(ok.values())
        never = [s for s in mq["smallest_width"] if s not in ok]
        lines.append(f"MQAR was solved (≥ {cfg.solve_threshold}) from width {w_min} by "
                     f"{', '.join(s for s, w in ok.items() if w == w_min)}"
                     + (f"; not within the grid by {', '.join(never)}" if never else "") + ".")
    else:
        best = max(mq["accuracy"], key=lambda s: max(v[0] for v in mq["accuracy"][s].values()))
        top = max(v[0] for v in mq["accuracy"][best].values())
        lines.append(f"No score solved MQAR (≥ {cfg.solve_threshold}) at any width of the grid "
                     f"within {cfg.steps} steps (best: {best}, {top:.3f}; answering with a "
                     f"random value of the sequence scores {1 / cfg.kv_pairs:.3f}).")
    bpc = ch["bits_per_char"]
    best = min(bpc, key=lambda s: bpc[s][0])
    tied = [s for s in bpc if s != best and bpc[s][0] - bpc[s][1] <= bpc[best][0] + bpc[best][1]]
    lines.append(f"On held-out characters {best} had the lowest loss ({bpc[best][0]:.3f} bits)"
                 + (f"; {', '.join(tied)} overlap it at 95%" if tied else
                    ", separated from every other score at 95%") + ".")
    sens = ch["lr_sensitivity"]
    order = sorted(sens, key=sens.get)
    lines.append(f"Across the learning-rate sweep the least sensitive score was {order[0]} "
                 f"({sens[order[0]]:.3f} bits), the most {order[-1]} ({sens[order[-1]]:.3f}).")
    return " ".join(lines)


WHY = """\
Why a dot product: after the learned projections, q·k = x_i W_Q W_Kᵀ x_jᵀ is a learned bilinear
form, so *relevance* is learned and need not be *resemblance*: "don't" can score high against
"like" although their embeddings are unlike. The other scores are the same dot product after
other feature maps (jaxemb.scoring): cosine drops the lengths and needs a learned temperature to
express a peaked softmax; −‖q−k‖² = 2q·k − ‖k‖² − ‖q‖², and ‖q‖² cancels in the softmax over keys,
so it is a dot product with a per-key penalty ‖k‖²; the bilinear forms re-parametrise
W_Q W_Kᵀ. Raw similarity (q = k = x) cannot separate relevance from resemblance: a token scores
itself at least as high as any other token of its norm (Cauchy–Schwarz). Which of these matter in
practice is what the tables above measure."""


def run_attention_study(cfg: AttentionStudyConfig, run: Run, progress) -> dict:
    """Train and evaluate every score on the three tasks; append the Q4 section to ``run``."""
    cfg = cfg.resolved()
    cfg.validate()
    t0, cpu0 = time.perf_counter(), time.process_time()
    st = _prepare(cfg, progress)
    res: dict = {}
    label = (f"Q4 training: {len(cfg.scores)} scores × (negation, MQAR at widths "
             f"{sorted(set(cfg.widths) | {cfg.width})}, character LM + lr sweep), "
             f"{cfg.workers} worker thread(s)")
    grid = [w for w in sorted(set(cfg.widths)) if w != cfg.width]
    with progress(label), ThreadPoolExecutor(cfg.workers) as pool:
        # Jobs run concurrently: XLA compiles and executes without the GIL, so on a small CPU
        # the compiles of one job overlap the training of another. One job per model shape (no
        # shape is compiled twice); the long main-width jobs first, so the pool ends balanced.
        futures = {pool.submit(_main_runs, st, s): (s, None) for s in cfg.scores}
        futures.update({pool.submit(_mqar_run, st, s, w): (s, w) for w in grid
                        for s in cfg.scores})
        done = {}
        for f in tqdm(as_completed(futures), total=len(futures), desc="Q4 runs", leave=False):
            done[futures[f]] = f.result()
    res = {s: done[(s, None)] for s in cfg.scores}
    for s in cfg.scores:
        res[s]["mqar"].update({w: done[(s, w)] for w in grid})
    rel, rel_md = _relevance_section(st, res, run)
    mq, mq_md = _mqar_section(st, res, run)
    ch, ch_md = _char_section(st, res, run)
    answer = _answer(cfg, rel, mq, ch)
    seconds = time.perf_counter() - t0
    run.log("q4_summary", answer=answer, seconds=seconds, devices=st.mesh.size,
            cpu_seconds=time.process_time() - cpu0)
    run.add(
        "## Q4. Attention: why a dot product as relevance, and not cosine, subtraction or raw "
        "similarity?\n\n"
        f"Protocol, the same for every score: a causal pre-LN transformer (jaxemb.transformer; "
        f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, learned positions, T = "
        f"{cfg.seq_len}); AdamW (β = 0.9, 0.95, ε = 1e-8, weight decay {cfg.weight_decay:g} on "
        f"matrices), gradient clipping at {cfg.clip:g}, linear warmup over {cfg.warmup:.0%} of "
        f"{cfg.steps} steps to the peak lr {cfg.lr:g}, then cosine decay to 0.1 × peak; batch "
        f"{cfg.batch} sharded over {st.mesh.size} device(s); {cfg.seeds} seeds (init and data "
        f"keys) trained together with jax.vmap; fresh training data at every step, held-out data "
        f"from a separate key. Scores: {', '.join(cfg.scores)} (jaxemb.attention). "
        f"{seconds:.0f} s on this machine.\n\n"
        "### Q4.1 Relevance: negation scope\n\n" + rel_md
        + "\n### Q4.2 Multi-query associative recall\n\n" + mq_md
        + "\n### Q4.3 Character LM, learning-rate sensitivity, logit growth\n\n" + ch_md
        + "\n### Q4.4 Answer\n\n" + WHY + "\n\n**Measured:** " + answer + "\n")
    return {"relevance": rel, "mqar": mq, "char": ch, "answer": answer, "seconds": seconds}
