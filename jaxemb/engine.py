"""One training engine, as small functions every model family composes (no Trainer class).

A family supplies its init (``init_one(seed) -> run state``), its per-run step and its data;
the engine supplies the rest:

- :func:`purpose_keys`, :func:`step_key`: keys split once by purpose, the step folded in, so a
  resumed run draws what an uninterrupted one draws (DESIGN §3.8);
- :func:`stack_runs`: runs (seeds × settings) stacked along a leading axis R;
- :func:`vmap_runs`, :func:`jit_step`, :func:`make_step`: the per-run step vmapped over runs,
  jitted once with the state donated, on a :func:`make_mesh` of 1 or N devices;
- :func:`track_first_bad`: divergence tracked inside the graph, a ``first_bad`` step per run;
- :func:`run_steps`: the loop, pulling metrics to the host only at log points; a diverged run is
  a result (``first_bad``) unless the caller asks to fail (:func:`check_finite`); SIGINT and
  SIGTERM stop it between steps (:mod:`jaxemb.interrupt`), never as a divergence.

Checkpoints are :mod:`jaxemb.checkpoint`'s.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxemb import interrupt
from jaxemb.interrupt import TrainingInterrupted  # noqa: F401 (callers catch it from here)

Array = jax.Array


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, a checkpoint that does not match the run). An
    interruption is not one: it is :class:`~jaxemb.interrupt.TrainingInterrupted`."""


# --- keys and runs -------------------------------------------------------------------------

def purpose_keys(seed, n: int) -> Array:
    """``jax.random.key(seed)`` split into ``n`` keys [n], one per purpose (init, data, ...): the
    one place a run's seed becomes keys. ``seed`` may be traced (inside vmap or jit)."""
    return jax.random.split(jax.random.key(seed), n)


def step_key(key, step) -> Array:
    """The key of one step: ``step`` folded into a purpose key (typed, or its raw key data)."""
    if not _is_typed(key):
        key = jax.random.wrap_key_data(key)
    return jax.random.fold_in(key, step)


def _is_typed(key) -> bool:
    return isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def stack_runs(init_one: Callable, seeds: Sequence[int], *, eager: bool = False):
    """``init_one(seed)`` of every seed, stacked along a leading run axis [R, ...].

    Default: one ``jax.vmap`` (callers may ``jax.jit`` this function to compile the init once).
    ``eager``: each run's init called on its own and the results stacked as numpy on the host —
    for Flax models whose jitted init compiles every initialiser anew per shape (seconds each)
    while eager ops are compiled once per shape and reused.
    """
    if not eager:
        return jax.vmap(init_one)(jnp.asarray(seeds))
    runs = [init_one(s) for s in seeds]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *runs)


# --- devices -------------------------------------------------------------------------------

def make_mesh(devices: int | Sequence | None = None) -> Mesh:
    """A 1-D mesh (axis ``data``) over ``devices``: a list, the first ``n`` devices, or all
    (None or 0) — the same code path for one device or many, CPU, GPU or TPU."""
    if devices is None or isinstance(devices, int):
        devices = jax.devices()[: devices or None]
    return Mesh(np.array(list(devices)), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split along ``axis`` over the mesh's ``data`` axis (e.g. 1 for a batch [R, B, ...])."""
    return NamedSharding(mesh, PartitionSpec(*[None] * axis, "data"))


# --- the step ------------------------------------------------------------------------------

def vmap_runs(run_fn: Callable, in_axes: Sequence, *, squeeze_one: bool = False) -> Callable:
    """``run_fn`` of one run, mapped over the leading run axis of the arguments with
    ``in_axes`` 0 (None: shared by all runs).

    ``squeeze_one``: with a single run, call ``run_fn`` on the squeezed arguments and give the
    outputs a leading axis of 1 instead (a size-1 vmap is not free on CPU: SGNS's batched
    scatters ran ~40% slower). The run count is read from the first mapped argument.
    """
    vm = jax.vmap(run_fn, in_axes=tuple(in_axes))
    if not squeeze_one:
        return vm
    first = [i for i, a in enumerate(in_axes) if a == 0][0]

    def runs(*args):
        if jax.tree.leaves(args[first])[0].shape[0] != 1:
            return vm(*args)
        sq = [jax.tree.map(lambda x: x[0], a) if ax == 0 else a
              for a, ax in zip(args, in_axes, strict=True)]
        return jax.tree.map(lambda x: x[None], run_fn(*sq))

    return runs


def jit_step(step: Callable, *, donate_argnums=(0,), in_shardings=None, out_shardings=None,
             compiler_options: dict | None = None,
             on_trace: Callable[[], None] | None = None) -> Callable:
    """``step`` jitted once, the state (``donate_argnums``) donated, placed by the shardings
    (built from a :func:`make_mesh`); ``on_trace`` is called each time it is traced (tests
    count recompilations with it)."""
    if on_trace is not None:
        inner = step

        @functools.wraps(inner)
        def step(*args):
            on_trace()
            return inner(*args)

    kw = {} if in_shardings is None else {"in_shardings": in_shardings,
                                          "out_shardings": out_shardings}
    return jax.jit(step, donate_argnums=donate_argnums, compiler_options=compiler_options, **kw)


def fast_compile_options(*, fusion_emitters: bool = True) -> dict | None:
    """XLA options for small training programs: on CPU, backend optimisation level 1 without
    LLVM's expensive passes. Measured on a 2-core CPU (interaction models): compile time of an
    epoch 5.0 s → 2.7 s (GMF) and 5.4 s → 3.1 s (MLP) at the same or better speed per epoch;
    compilation is most of the time of small models. Level 0 compiles in 1.8 s but runs 2.6×
    slower.

    ``fusion_emitters=False`` also lowers fusions with XLA's older CPU emitters instead of the
    MLIR fusion emitters: Q4's transformer train step (width 32, 5 vmapped members) compiled
    in a median 4.2 s against 6.0 s with the defaults, and stepped in 32.9 against 31.5 ms (4
    alternating pairs, load 3.5, 2026-12-07): a cold-cache Q4 spent 365 of its 631 CPU-s in
    XLA's backend compiler.

    None (XLA's settings) off CPU, and where ``XLA_FLAGS`` sets the optimisation level itself
    (the test suite's cheaper pipeline): per-program options would override it."""
    if jax.default_backend() != "cpu" or \
            "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return None
    return {"xla_backend_optimization_level": 1, "xla_llvm_disable_expensive_passes": True,
            **({} if fusion_emitters else {"xla_cpu_use_fusion_emitters": False})}


def run_once_options() -> dict | None:
    """XLA options for programs that run once (initialisation): optimisation level 0 on CPU."""
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


RESERVED = ("step", "first_bad")


def make_step(run_step: Callable, arg_axes: Sequence = (), *, mesh: Mesh | None = None,
              arg_shardings: Sequence | None = None, compiler_options: dict | None = None,
              on_trace: Callable[[], None] | None = None) -> Callable:
    """``step(state, *args) -> (state, metrics)`` over stacked runs, jitted once, state donated.

    ``state``: a dict of per-run leaves [R, ...] plus ``step`` (int32 []) and ``first_bad``
    (int32 [R], -1: none; see :func:`init_tracking`). ``run_step(run_state, step, *args) ->
    (run_state, metrics)`` is one run's update; ``metrics["loss"]`` [] is tracked in the graph
    and ``step`` counts up. ``args`` are mapped over runs per ``arg_axes`` (0 or None). With
    ``mesh``, the state is replicated and the args placed by ``arg_shardings``.
    """
    vm = jax.vmap(run_step, in_axes=(0, None, *arg_axes))

    def step(state, *args):
        runs = {k: v for k, v in state.items() if k not in RESERVED}
        runs, metrics = vm(runs, state["step"], *args)
        first_bad = track_first_bad(state["first_bad"], metrics["loss"], state["step"])
        return {**runs, "step": state["step"] + 1, "first_bad": first_bad}, metrics

    if mesh is None:
        return jit_step(step, compiler_options=compiler_options, on_trace=on_trace)
    rep = replicated(mesh)
    return jit_step(step, in_shardings=(rep, *arg_shardings), out_shardings=(rep, rep),
                    compiler_options=compiler_options, on_trace=on_trace)


def init_tracking(runs: dict, n_runs: int) -> dict:
    """The stacked run state with the engine's counters added: ``step`` 0, ``first_bad`` -1."""
    return {**runs, "step": np.zeros((), np.int32), "first_bad": np.full(n_runs, -1, np.int32)}


def track_first_bad(first_bad: Array, loss: Array, step) -> Array:
    """[R]: the first step whose loss [R] was not finite (kept once set; -1: none yet)."""
    bad = (first_bad < 0) & ~jnp.isfinite(loss)
    return jnp.where(bad, step, first_bad)


# --- the loop ------------------------------------------------------------------------------

def is_log_point(step: int, n_steps: int, log_every: int) -> bool:
    """Whether the host pulls metrics after 0-based ``step``: every ``log_every`` and the last."""
    return (step + 1) % log_every == 0 or step + 1 == n_steps


def run_steps(step: Callable, state: dict, n_steps: int, args_at: Callable[[int], tuple], *,
              log_every: int, on_log: Callable | None = None,
              fail: Callable[[np.ndarray], None] | None = None) -> dict:
    """Run ``state, metrics = step(state, *args_at(s))`` for s < ``n_steps``.

    Metrics stay on the device between log points; at each log point the pending ones are
    pulled at once and ``on_log(s, state, [metrics of the steps since the last log point])``
    is called, then ``fail(first_bad [R])`` (e.g. :func:`check_finite`), which may raise.
    SIGINT or SIGTERM (here, or in the main thread while this runs in a worker thread of a
    :func:`jaxemb.interrupt.stop_on_signals` block) stops it before the next step with
    :class:`~jaxemb.interrupt.TrainingInterrupted`; nothing is saved here.
    """
    pending = []
    with interrupt.stop_on_signals() as stop:
        for s in range(n_steps):
            _check_stop(stop, s, n_steps)
            state, metrics = step(state, *args_at(s))
            pending.append(metrics)
            if is_log_point(s, n_steps, log_every):
                if on_log is not None:
                    on_log(s, state, jax.device_get(pending))
                pending = []
                if fail is not None:
                    fail(np.asarray(jax.device_get(state["first_bad"])))
        _check_stop(stop, n_steps, n_steps)  # after the last step too: a signal is never lost
    return state


def _check_stop(stop: interrupt.StopFlag, done: int, n_steps: int) -> None:
    if stop.is_set():
        raise stop.interrupted(f"training stopped by {stop.name} after step {done} of "
                               f"{n_steps}; nothing of it was saved")


def check_finite(first_bad: np.ndarray, describe: Callable[[int, int], str],
                 may_diverge: Sequence[bool] | None = None, error=TrainingError) -> None:
    """Raise ``error(describe(run, step))`` for the run that diverged first (the earliest
    ``first_bad`` >= 0; ties: the lowest run) among those not marked in ``may_diverge`` (a
    learning-rate sweep records the step instead)."""
    first_bad = np.asarray(first_bad)
    allowed = np.zeros(first_bad.shape, bool) if may_diverge is None else np.asarray(may_diverge)
    fatal = (first_bad >= 0) & ~allowed
    if fatal.any():
        runs = np.flatnonzero(fatal)
        r = int(runs[np.argmin(first_bad[runs])])
        raise error(describe(r, int(first_bad[r])))


@dataclasses.dataclass
class RunsResult:
    """Stacked runs after training: ``params`` [R, ...]; ``loss`` [log points, R] (what the
    family logs: per epoch, per log step); ``runs`` the label of each run (e.g. (seed, lr));
    ``first_bad`` [R] the first step with a non-finite loss (-1: none); ``history`` the records
    of the log points."""

    params: dict
    loss: np.ndarray
    runs: list
    first_bad: np.ndarray
    seconds: float
    history: list[dict] = dataclasses.field(default_factory=list)

    def run_params(self, r: int) -> dict:
        return jax.tree.map(lambda x: x[r], self.params)


# --- several runs at once -----------------------------------------------------------------

def run_jobs(jobs: dict[Hashable, Callable[[], Any]], workers: int,
             desc: str = "jobs") -> dict[Hashable, Any]:
    """Run ``jobs`` ({key: function of no arguments}) in ``workers`` threads, in the order given;
    {key: result}. An exception in a job cancels the jobs not yet started and is raised once
    the running ones finish. SIGINT or SIGTERM also stops the running ones at their next
    training step (:func:`jaxemb.interrupt.stop_on_signals`: their ``run_steps`` check the flag
    this thread's handlers set), then ``TrainingInterrupted`` is raised: within a step's time,
    not after every queued job."""
    with interrupt.stop_on_signals() as stop, ThreadPoolExecutor(workers) as pool:
        # A worker freed by a stopped job may take a queued one before this thread cancels
        # the queue: that job stops before it starts.
        futures = {pool.submit(_unless_stopped, stop, fn): key for key, fn in jobs.items()}
        try:
            done = {}
            for f in tqdm(as_completed(futures), total=len(futures), desc=desc, leave=False):
                done[futures[f]] = f.result()
            return done
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def concurrent_workers(workers: int, devices: int) -> int:
    """Threads that may train at once: ``workers`` on one device, 1 on a mesh of several.

    Two threads launching programs with collectives on the same devices can enqueue them in
    different orders on different devices, and each then waits for the other: on 8 fake CPU
    devices this deadlocked until XLA's collective timeout aborted the process (NCCL has the
    same hazard on GPUs). One thread keeps every device's queue in the same order.
    """
    return workers if devices == 1 else 1


def _unless_stopped(stop: interrupt.StopFlag, fn: Callable[[], Any]) -> Any:
    if stop.is_set():
        raise stop.interrupted(f"stopped by {stop.name} before this job started")
    return fn()
