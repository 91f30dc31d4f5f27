"""Training of the attention models (Q4 of the study) on :mod:`jaxemb.engine`.

Several seeds (and learning rates) are members of one ``jax.vmap``-ed train step, jitted once per
model shape with the state donated, on a ``jax.sharding.Mesh`` over all devices with the batch
axis sharded (params replicated): one code path for one device or many. The evaluator returns
per-position hits and losses, the attention mass on a named position, the largest attention
logits (Wortsman et al. 2023) and one sequence's attention maps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxemb import engine
from jaxemb.engine import TrainingError, TrainingInterrupted  # noqa: F401 (callers catch them here)
from jaxemb.transformer import Transformer


class AttentionStudyError(ValueError):
    """A study setting that cannot run (batch not divisible by the devices, bad sizes)."""


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
    return engine.make_mesh(devices)


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
    dropout key, and the engine's step and first step whose loss was not finite (-1: none).

    Keys: ``key(seed)`` split once by purpose (init, data, dropout); the data key is
    :func:`member_data_key`'s. Each member is initialised eagerly and the results stacked: a
    jitted (or vmapped) flax init compiles every initialiser's random-number code anew for each
    model shape (seconds each), while eager ops are compiled once per shape and reused by every
    later model that shares them.
    """
    tx = protocol.optimizer()
    tokens = jnp.zeros((1, seq_len), jnp.int32)

    def one(seed):
        k_init, _, k_drop = engine.purpose_keys(seed, 3)
        params = model.init(k_init, tokens)["params"]
        return {"params": params, "opt": tx.init(params), "key": jax.random.key_data(k_drop)}

    runs = engine.stack_runs(one, seeds, eager=True)
    return engine.init_tracking({**runs, "lr": np.asarray(lrs, np.float32)}, len(seeds))


def member_data_key(seed: int, task: int) -> jax.Array:
    """The data key of a member for a task: the second purpose key of ``key(seed)``."""
    return jax.random.fold_in(engine.purpose_keys(seed, 3)[1], task)


def make_train_step(model: Transformer, protocol: Protocol, mesh: Mesh,
                    on_trace: Callable[[], None] | None = None):
    """``step(state, batch) -> (state, metrics)``, jitted once, state donated
    (:func:`jaxemb.engine.make_step`).

    ``batch``: inputs, targets [M, B, T] int32 and mask [M, B, T] bool, sharded along B over the
    mesh's ``data`` axis; params replicated (XLA inserts the gradient all-reduce). Metrics: loss
    and accuracy [M] of this step's batch (before the update), left on the device.
    """
    tx = protocol.optimizer()
    dropout = protocol.dropout > 0

    def member(run, step, batch):
        rng = engine.step_key(run["key"], step)

        def loss_fn(p):
            logits = model.apply({"params": p}, batch["inputs"], deterministic=not dropout,
                                 rngs={"dropout": rng} if dropout else None)
            return masked_metrics(logits, batch["targets"], batch["mask"])

        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(run["params"])
        updates, opt = tx.update(grads, run["opt"], run["params"])
        params = optax.apply_updates(run["params"],
                                     jax.tree.map(lambda u: run["lr"] * u, updates))
        return {**run, "params": params, "opt": opt}, {"loss": loss, "accuracy": acc}

    # Small programs, compiled once per score and shape: compilation is most of their cost.
    return engine.make_step(member, (0,), mesh=mesh, arg_shardings=(engine.sharded(mesh, 1),),
                            compiler_options=engine.fast_compile_options(fusion_emitters=False),
                            on_trace=on_trace)


def place(state: dict, batch: dict, mesh: Mesh) -> tuple[dict, dict]:
    """State replicated and batch sharded along B over ``mesh`` (what the step expects)."""
    check_divisible(batch["inputs"].shape[1], mesh)
    return (jax.device_put(state, engine.replicated(mesh)),
            jax.device_put(batch, engine.sharded(mesh, 1)))


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
                   out_shardings=replicated,
                   compiler_options=engine.fast_compile_options(fusion_emitters=False))


def train(model: Transformer, protocol: Protocol, mesh: Mesh, step_fn, seeds: Sequence[int],
          lrs: Sequence[float], data: dict, *, log_every: int, label: str,
          probe: Callable[[dict], dict] | None = None,
          may_diverge: Sequence[bool] | None = None) -> engine.RunsResult:
    """Train the members (one per (seed, lr)) for ``data['inputs'].shape[0]`` steps.

    ``data``: inputs, targets, mask as numpy [steps, M, B, T]; each step's slice is put on the
    mesh sharded along B. Metrics (and ``probe(params)``, a dict of [M] arrays) are pulled to the
    host only every ``log_every`` steps and at the end (``history``: one record per log point,
    the metrics of that step); a non-finite loss raises TrainingError naming the step and
    member, except for members marked in ``may_diverge`` (a learning-rate sweep records the step
    in ``first_bad`` instead).
    """
    steps, M, B, T = data["inputs"].shape
    check_divisible(B, mesh)
    state = jax.device_put(init_state(model, protocol, seeds, lrs, T), engine.replicated(mesh))
    sharding = engine.sharded(mesh, 1)
    history: list[dict] = []

    def on_log(s, state, metrics):
        record = {"step": s + 1, **metrics[-1]}
        if probe is not None:
            record.update(jax.device_get(probe(state["params"])))
        history.append(record)

    def describe(m, step):
        return (f"{label}: the loss became NaN/inf at step {step} (member seed={seeds[m]}, "
                f"lr={lrs[m]:g}); lower --lr or raise --clip")

    t0 = time.perf_counter()
    state = engine.run_steps(
        step_fn, state, steps,
        lambda s: (jax.device_put({k: v[s] for k, v in data.items()}, sharding),),
        log_every=log_every, on_log=on_log,
        fail=lambda bad: engine.check_finite(bad, describe, may_diverge))
    jax.block_until_ready(state["params"])
    first_bad = np.asarray(jax.device_get(state["first_bad"]))
    return engine.RunsResult(state["params"], np.stack([h["loss"] for h in history]),
                             list(zip(seeds, lrs, strict=True)), first_bad,
                             time.perf_counter() - t0, history)


# --- tasks as [steps, M, B, T] arrays ----------------------------------------------------------

TASK_IDS = {"negation": 0, "mqar": 1, "char": 2, "lookup": 3, "negation_far": 4}


def member_stream(make: Callable[[jax.Array, int], dict], seed: int, task: str, steps: int,
                  batch: int) -> dict:
    """One member's stream from its own data key, as {name: [steps, B, T]}."""
    d = make(member_data_key(seed, TASK_IDS[task]), steps * batch)
    return {k: v.reshape(steps, batch, -1) for k, v in d.items()}


def stack_members(make: Callable[[jax.Array, int], dict], seeds: Sequence[int], task: str,
                  steps: int, batch: int) -> dict:
    """Each member's stream from its own data key, as {name: [steps, M, B, T]}."""
    per = [member_stream(make, s, task, steps, batch) for s in seeds]
    return {k: np.stack([p[k] for p in per], axis=1) for k in per[0]}
