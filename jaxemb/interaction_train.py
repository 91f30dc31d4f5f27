"""Training of the user–item models (:mod:`jaxemb.interaction`) on :mod:`jaxemb.engine`: BCE
with sampled negatives (NCF: He et al. 2017), Adam with decoupled weight decay on the tables, the
seeds × learning rates × weight decays trained together (vmap); and MSE fits of a model to known
scores (``fit_mse``: can an MLP learn a dot product?).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxemb import engine
from jaxemb.interaction import InteractionError, InteractionModel, init_params
from jaxemb.recdata import Interactions

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class InteractionTrainConfig:
    """BCE with sampled negatives (NCF: 4 per positive), Adam with decoupled weight decay on the
    embedding tables; the ``seeds`` × ``lrs`` × ``weight_decays`` runs are trained together
    (vmap)."""

    epochs: int = 20
    batch_size: int = 256  # positives per step
    negatives: int = 4  # sampled negatives per positive
    lrs: tuple[float, ...] = (1e-3,)
    # Decoupled (AdamW-style: p ← p − lr·(adam + wd·p)) and on the user/item tables only: the L2
    # that matrix factorisation is tuned with (Rendle et al. 2020); biases, temperatures, W, h
    # and MLP weights are not decayed (decay would pull log t, W = I, h = 1 off their meaning).
    weight_decays: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)

    def validate(self) -> None:
        for label in ("epochs", "batch_size", "negatives"):
            if getattr(self, label) < 1:
                raise InteractionError(f"{label} must be >= 1, got {getattr(self, label)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InteractionError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not self.lrs or min(self.lrs) <= 0:
            raise InteractionError(f"lrs must be one or more rates > 0, got {self.lrs}")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise InteractionError(f"weight_decays must be one or more values >= 0, got "
                                   f"{self.weight_decays}")

    @property
    def runs(self) -> list[tuple[int, float, float]]:
        """(seed, lr, weight decay) of each run, in the order of the params' leading axis."""
        return [(s, lr, wd) for s in self.seeds for lr in self.lrs for wd in self.weight_decays]


# Adam without its rate: the step applies −lr·(update + wd·p) with per-run arrays lr, wd, so runs
# with different settings are one vmapped computation (optax.inject_hyperparams does the same
# but measured 2 s more compile time here).
_adam = optax.scale_by_adam()

TABLES = ("user", "item", "user_mlp", "item_mlp")


def _decayed(path) -> bool:
    """Whether a parameter (by its path) is an embedding table, the only ones decayed."""
    return getattr(path[-1], "key", None) in TABLES


def sample_negatives(key: Array, users: Array, seen: Array, n: int, tries: int = 4) -> Array:
    """[B, n] items drawn uniformly from those each of ``users`` [B] has not seen (``seen``
    [U, I] bool), by redrawing seen ones ``tries`` times (NCF redraws until unseen; at the
    densities here a leftover seen item has probability density^(tries+1) < 1e-5): the first
    unseen of ``tries + 1`` draws.

    Items are 32 random bits modulo I (bias < I/2³², nil here): one draw of bits compiles in a
    fraction of the time of ``randint`` on CPU (measured 0.2 s against 0.6 s per call).
    """
    draws = (jax.random.bits(key, (users.shape[0], n, tries + 1))
             % jnp.uint32(seen.shape[1])).astype(jnp.int32)
    first = jnp.argmin(seen[users[:, None, None], draws], axis=-1)  # first unseen (else 0)
    return jnp.take_along_axis(draws, first[..., None], axis=-1)[..., 0]


def make_epoch(model: InteractionModel, cfg: InteractionTrainConfig):
    """One epoch of every run, built once (:func:`jaxemb.engine.make_step`): ``(state, users
    [N], items [N], seen [U, I]) -> (state, {"loss": mean loss [R]})``; the state
    (:func:`init_state`) is donated, its ``step`` is the epoch."""
    n_neg = cfg.negatives

    def batch_loss(params, u, i, key, hp, seen):
        del hp
        B = u.shape[0]
        neg = sample_negatives(key, u, seen, n_neg)
        uu = jnp.concatenate([u, jnp.repeat(u, n_neg)])
        ii = jnp.concatenate([i, neg.reshape(-1)])
        y = jnp.concatenate([jnp.ones(B), jnp.zeros(B * n_neg)])
        logits = model.apply({"params": params}, uu, ii)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    return epoch_step(batch_loss, cfg.batch_size)


def epoch_step(batch_loss, batch_size: int):
    """The engine's step of one epoch over the positives, for any loss of a batch:
    ``batch_loss(params, users [B], items [B], key, hp [h], extra) -> []`` with a key per step
    (the global step folded in) and the run's hyper-parameters ``hp`` (``hp[0]`` the Adam rate,
    ``hp[1]`` the decoupled weight decay of the tables). Returns ``(state, users [N], items
    [N], extra) -> (state, {"loss": mean loss [R]})``, jitted once, the state donated."""
    B = batch_size

    def epoch(run, e, users, items, extra):
        lr, wd = run["hp"][0], run["hp"][1]
        k_order, k_batch = run["keys"][0], run["keys"][1]
        N = users.shape[0]
        steps = -(-N // B)
        # a random order: argsort of random bits (cheaper to compile than random.permutation)
        perm = jnp.argsort(jax.random.bits(engine.step_key(k_order, e), (N,)))

        def step(carry, s):
            params, opt_state = carry
            idx = perm[(s * B + jnp.arange(B)) % N]  # wraps: every step one shape
            # the global step is folded in: a rerun draws the same negatives at each step
            key = engine.step_key(k_batch, e * steps + s)
            loss, g = jax.value_and_grad(batch_loss)(params, users[idx], items[idx], key,
                                                     run["hp"], extra)
            updates, opt_state = _adam.update(g, opt_state, params)
            params = jax.tree_util.tree_map_with_path(
                lambda path, p, d: p - lr * (d + wd * p if _decayed(path) else d), params,
                updates)
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (run["params"], run["opt_state"]),
                                                   jnp.arange(steps))
        return {**run, "params": params, "opt_state": opt_state}, {"loss": jnp.mean(losses)}

    return engine.make_step(epoch, (None, None, None),
                            compiler_options=engine.fast_compile_options())


def init_state(model: InteractionModel, cfg: InteractionTrainConfig) -> dict:
    """The runs' stacked state: params, opt_state, keys [R, 2] (order, negatives), hp [R, 2]
    (lr, weight decay), and the engine's step and first_bad. Runs with one seed share their
    initial params and negatives: settings are compared on one draw."""
    return init_runs(model, [s for s, _, _ in cfg.runs], [(lr, wd) for _, lr, wd in cfg.runs])


def init_runs(model: InteractionModel, seeds, hp) -> dict:
    """The stacked state of runs with ``seeds`` [R] and hyper-parameters ``hp`` [R, h]
    (:func:`epoch_step`: the rate, the weight decay, then the loss's own)."""
    runs = _init_fn(model)(jnp.asarray(seeds))
    runs["hp"] = jnp.asarray(hp, jnp.float32)
    # on the device, like the step's outputs: the numpy counters would be a second cache entry
    return jax.device_put(engine.init_tracking(runs, len(seeds)))


@functools.cache
def _init_fn(model: InteractionModel):
    def one(seed):
        k_init, k_order, k_neg = engine.purpose_keys(seed, 3)
        params = init_params(model, k_init)
        return {"params": params, "opt_state": _adam.init(params),
                "keys": jax.random.key_data(jnp.stack([k_order, k_neg]))}

    # Jitted once per model at XLA's lowest optimisation level: it runs once, and on CPU the
    # eager Flax init (op by op, a kernel compiled per op) took 2-3 s, level 1 ~1-2 s, level 0
    # 0.7-1.5 s.
    return jax.jit(functools.partial(engine.stack_runs, one),
                   compiler_options=engine.run_once_options())


def train(model: InteractionModel, data: Interactions, cfg: InteractionTrainConfig,
          epoch_fn=None, progress: bool = False,
          may_diverge: bool = False) -> engine.RunsResult:
    """Train one model per (seed, lr, weight decay) of ``cfg`` on the positives of ``data``:
    ``loss`` [epochs, runs], ``runs`` [(seed, lr, wd)]. ``epoch_fn``: a :func:`make_epoch` of the
    same model and config, to reuse its compilation. A run whose loss became NaN/inf raises
    InteractionError unless ``may_diverge`` (then its ``first_bad`` epoch says so)."""
    cfg.validate()
    check_sizes(model, data)
    seen = data.seen()
    if data.num_items - seen.sum(axis=1).max() < 1:
        raise InteractionError("some user has seen every item: no negatives can be sampled")
    epoch_fn = epoch_fn or make_epoch(model, cfg)
    args = (jnp.asarray(data.users), jnp.asarray(data.items), jnp.asarray(seen))
    return run_epochs(epoch_fn, init_state(model, cfg), args, cfg.epochs, cfg.runs,
                      "(seed, lr, weight decay)", "the loss", desc=type(model).__name__,
                      progress=progress, may_diverge=may_diverge)


def check_sizes(model: InteractionModel, data: Interactions) -> None:
    """InteractionError unless ``data`` has the users and items ``model`` was built for."""
    if data.num_users != model.num_users or data.num_items != model.num_items:
        raise InteractionError(f"the data has {data.num_users} users and {data.num_items} items "
                               f"but the model was built for {model.num_users} and "
                               f"{model.num_items}")


def run_epochs(epoch_fn, state: dict, args: tuple, epochs: int, runs: list, runs_label: str,
               loss_label: str, desc: str = "", progress: bool = False,
               may_diverge: bool = False) -> engine.RunsResult:
    """``epochs`` of ``epoch_fn`` (:func:`epoch_step`) on the runs' ``state`` with the same
    ``args`` every epoch: ``loss`` [epochs, runs]. A run whose loss became NaN/inf raises
    InteractionError naming it (``runs_label``: what its tuple of ``runs`` holds) unless
    ``may_diverge``."""
    losses = []
    bar = tqdm(total=epochs, desc=desc, disable=not progress, leave=False)

    def on_log(e, state, metrics):
        losses.extend(m["loss"] for m in metrics)
        bar.update(e + 1 - bar.n)

    def describe(r, e):
        return (f"{loss_label} became NaN/inf in epoch {e + 1} for run {runs_label} {runs[r]}; "
                "lower the learning rate")

    t0 = time.perf_counter()
    # the host syncs once, at the end (every epoch with a progress bar)
    state = engine.run_steps(
        epoch_fn, state, epochs, lambda e: args, log_every=1 if progress else epochs,
        on_log=on_log, fail=None if may_diverge else functools.partial(
            engine.check_finite, describe=describe, error=InteractionError))
    seconds = time.perf_counter() - t0
    bar.close()
    return engine.RunsResult(state["params"], np.asarray(losses, np.float64), runs,
                             np.asarray(state["first_bad"]), seconds)


def fit_mse(model: InteractionModel, users: Array, items: Array, y: Array, sizes, seeds,
            lr, steps: int, batch: int = 256) -> engine.RunsResult:
    """MSE fits of ``model`` to targets ``y`` [N] of pairs (``users``, ``items`` [N]), one
    vmapped run per (size, seed, rate) of ``sizes``, ``seeds`` [R] and ``lr`` ([R] or one rate
    for all): Adam for ``steps`` steps, each on ``batch`` pairs drawn from the first ``size``.
    Keys: ``key(seed)`` with 0 folded in for the init and step + 1 for each step's batch.
    ``loss`` [1, R]: the last step's."""
    init = jax.jit(functools.partial(
        engine.stack_runs, lambda s: init_params(model, engine.step_key(jax.random.key(s), 0))),
        compiler_options=engine.run_once_options())
    params = init(jnp.asarray(seeds))
    lrs = jnp.broadcast_to(jnp.asarray(lr, jnp.float32), np.shape(seeds))

    def one(params, size, seed, lr):
        key = jax.random.key(seed)

        def step(carry, s):
            params, state, first_bad = carry
            # 32 random bits mod size: cheaper to compile than randint, bias < size/2³²
            bits = jax.random.bits(engine.step_key(key, s + 1), (batch,))
            idx = (bits % size.astype(jnp.uint32)).astype(jnp.int32)

            def loss_fn(p):
                pred = model.apply({"params": p}, users[idx], items[idx])
                return jnp.mean((pred - y[idx]) ** 2)

            loss, g = jax.value_and_grad(loss_fn)(params)
            upd, state = _adam.update(g, state, params)  # Adam: its direction, times −lr
            first_bad = engine.track_first_bad(first_bad, loss, s)
            params = jax.tree.map(lambda p, d: p - lr * d, params, upd)
            return (params, state, first_bad), loss

        carry = (params, _adam.init(params), jnp.int32(-1))
        (params, _, first_bad), losses = jax.lax.scan(step, carry, jnp.arange(steps))
        return params, losses[-1], first_bad

    t0 = time.perf_counter()
    fit = engine.jit_step(engine.vmap_runs(one, (0, 0, 0, 0)), donate_argnums=(0,),
                          compiler_options=engine.fast_compile_options())
    params, loss, first_bad = fit(params, jnp.asarray(sizes), jnp.asarray(seeds), lrs)
    return engine.RunsResult(params, np.asarray(loss, np.float64)[None],
                             list(zip(np.asarray(sizes).tolist(), np.asarray(seeds).tolist(),
                                      np.asarray(lrs).tolist(), strict=True)),
                             np.asarray(first_bad), time.perf_counter() - t0)


def score_all_runs(model: InteractionModel):
    """``f(params [R, ...], users [b]) -> [R, b, I]``, jitted: every run scores every item."""
    return jax.jit(jax.vmap(lambda p, u: model.apply({"params": p}, u, method="score_all"),
                            in_axes=(0, None)), compiler_options=engine.fast_compile_options())
