"""Models that score (user, item) pairs, and their training with sampled negatives.

Models (``make_model(name, num_users, num_items, dim)``), each with user and item tables P [U, d],
Q [I, d] and, by default, user, item and global biases b_u + b_i + b:

==============  ===============================================================================
dot             P_u · Q_i: matrix factorisation (Rendle, Krichene, Zhang & Anderson 2020)
cosine          t · cos(P_u, Q_i), learned temperature t (else logits stay in [−1, 1])
gmf             h · (P_u ⊙ Q_i): NCF's GMF (He et al. 2017) = diagonal bilinear; h = 1 is dot
bilinear        P_u W Q_i, W [d, d] initialised at the identity (so it starts as dot)
seed_combo      h · ½(P_u ⊙ Q_i + P_u + Q_i) + c: the seed thread's proposal; it is GMF plus a
                user term ½h·P_u (constant in a user's ranking) and an item term ½h·Q_i (an
                item bias tied to the embedding)
mlp             MLP([P_u, Q_i]): NCF's MLP on the concatenation (ReLU tower, then a linear unit)
neumf           h · [P_u ⊙ Q_i, MLP([P'_u, Q'_i])]: NCF's NeuMF (separate GMF and MLP tables)
==============  ===============================================================================

The score's own parameters (cosine ``log_t``, bilinear ``W``, gmf/seed_combo ``w`` = h) sit in
the submodule ``score``, a :class:`jaxemb.learned_score.LearnedScore`.

``model.apply(v, users [B], items [B]) -> logits [B]``; ``model.apply(v, users [B],
method="score_all") -> [B, I]`` scores every item. For dot, cosine, gmf, bilinear and seed_combo
that is the project's central idea: map users through the score's phi_q and all items through
phi_k once (``jaxemb.scoring``), biases as two more feature columns, then one matmul. For mlp
and neumf the pair function is vmapped over items.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxemb import engine, scoring
from jaxemb.learned_score import LearnedScore
from jaxemb.recdata import Interactions, RecDataError, check_ids

Array = jax.Array


class InteractionError(ValueError):
    """A bad model name, setting or input to an interaction model."""


# --- models --------------------------------------------------------------------------------

class InteractionModel(nn.Module):
    """User and item tables and optional biases; subclasses define the pair score."""

    num_users: int
    num_items: int
    dim: int
    biases: bool = True
    init_std: float = 0.1

    def _tables(self, suffix: str = "") -> tuple[Array, Array]:
        init = nn.initializers.normal(self.init_std)
        return (self.param("user" + suffix, init, (self.num_users, self.dim)),
                self.param("item" + suffix, init, (self.num_items, self.dim)))

    def _biases(self, global_bias: bool = True) -> tuple[Array, Array, Array]:
        """(b_user [U], b_item [I], b []) — zeros without ``biases`` (b also without
        ``global_bias``: models whose last Dense has a bias already)."""
        if not self.biases:
            return jnp.zeros(self.num_users), jnp.zeros(self.num_items), jnp.zeros(())
        z = nn.initializers.zeros
        b = self.param("bias", z, ()) if global_bias else jnp.zeros(())
        return (self.param("user_bias", z, (self.num_users,)),
                self.param("item_bias", z, (self.num_items,)), b)

    def _check(self, users, items=None) -> None:
        # Gathers clamp out-of-range ids silently, so check concrete (eager) inputs; inside jit
        # the host-facing functions below have checked already.
        for kind, ids, n in (("user", users, self.num_users), ("item", items, self.num_items)):
            if ids is not None and not isinstance(ids, jax.core.Tracer):
                try:
                    check_ids(kind, ids, n)
                except RecDataError as e:
                    raise InteractionError(str(e)) from None


class FeatureModel(InteractionModel):
    """logit = score(P_u, Q_i, *θ) + b_u + b_i + b for a score of ``jaxemb.learned_score``,
    whose parameters θ live in the submodule ``score``."""

    score_name = "dot"

    def setup(self):
        self.P, self.Q = self._tables()
        self.b_user, self.b_item, self.b = self._biases()
        # After the tables and biases: their draws depend on the order of params in this scope.
        self.score = LearnedScore(self.score_name, self.dim, **self.score_options())

    def score_options(self) -> dict:
        """Keyword options of this model's :class:`LearnedScore` (e.g. the temperature)."""
        return {}

    def theta(self) -> tuple:
        """The score's parameters as ``jaxemb.scoring``'s score takes them."""
        return self.score.args()

    def user_term(self, Pu: Array) -> Array | float:
        """A logit term of the user alone (rows [n, d] → [n]); none here."""
        return 0.0

    def item_term(self, Qi: Array) -> Array | float:
        """A logit term of the item alone (rows [n, d] → [n]); none here."""
        return 0.0

    def __call__(self, users: Array, items: Array) -> Array:
        """Logits [B] of (``users`` [B], ``items`` [B])."""
        self._check(users, items)
        Pu, Qi = self.P[users], self.Q[items]
        s = scoring.batched(self.score.spec.maps)(Pu, Qi, *self.theta())
        return (s + self.b_user[users] + self.user_term(Pu) + self.b_item[items]
                + self.item_term(Qi) + self.b)

    def user_features(self, users: Array) -> Array:
        """[B, f + 2]: phi_q(P_u), then the user's bias and 1."""
        Pu = self.P[users]
        F = self.score.spec.maps.map_queries(Pu, *self.theta())
        bias = jnp.broadcast_to(self.b_user[users] + self.user_term(Pu) + self.b, users.shape)
        return jnp.concatenate([F, bias[:, None], jnp.ones_like(bias)[:, None]], axis=1)

    def item_features(self) -> Array:
        """[I, f + 2]: phi_k(Q_i) of every item, then 1 and the item's bias."""
        F = self.score.spec.maps.map_keys(self.Q, *self.theta())
        bias = jnp.broadcast_to(self.b_item + self.item_term(self.Q), (self.num_items,))
        return jnp.concatenate([F, jnp.ones_like(bias)[:, None], bias[:, None]], axis=1)

    def score_all(self, users: Array) -> Array:
        """[B, I]: every item for each of ``users`` [B], one matmul of feature maps."""
        self._check(users)
        return self.user_features(users) @ self.item_features().T


class Dot(FeatureModel):
    score_name = "dot"


class Cosine(FeatureModel):
    """t · cos(P_u, Q_i) + biases; t = exp(log t) is learned from ``temperature``: without it the
    logit is stuck in [−1, 1] and cannot express a confident sigmoid (SigLIP, Zhai et al. 2023)."""

    temperature: float = 5.0
    score_name = "cosine"

    def score_options(self) -> dict:
        return {"temperature": self.temperature}


class GMF(FeatureModel):
    """NCF's generalised MF, h · (P_u ⊙ Q_i): the diagonal bilinear score with w = h. h starts
    at ones (NCF draws it at random), so GMF starts as dot."""

    score_name = "diag_bilinear"


class Bilinear(FeatureModel):
    score_name = "bilinear"


class SeedCombo(FeatureModel):
    """h · ½(P_u ⊙ Q_i + P_u + Q_i) + c, c the linear head's bias (= the global bias b).

    ½h · (u ⊙ v) is the diagonal bilinear score with w = ½h, so this is GMF plus ½h·u (one
    number per user: it shifts all of a user's logits alike and cannot change their ranking)
    plus ½h·v (an item bias tied to the embedding). h is the score's ``w``.
    """

    score_name = "diag_bilinear"

    def theta(self) -> tuple:
        return (0.5 * self.score.theta["w"],)

    def user_term(self, Pu):
        return 0.5 * Pu @ self.score.theta["w"]

    def item_term(self, Qi):
        return 0.5 * Qi @ self.score.theta["w"]


# LeCun normal without truncation: Flax's default truncated normal costs ~1.5 s of extra kernel
# compilation on CPU at every start, for no difference that matters here.
_dense_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")


class MLPTower(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, kernel_init=_dense_init)(x))
        return x


class PairModel(InteractionModel):
    """A model whose pair score is not a dot after feature maps; ``score_all`` vmaps over
    items."""

    def score_all(self, users: Array) -> Array:
        """[B, I]: the pair function vmapped over all items."""
        self._check(users)
        return jax.vmap(lambda i: self(users, jnp.broadcast_to(i, users.shape)),
                        out_axes=1)(jnp.arange(self.num_items))


class MLP(PairModel):
    """NCF's MLP: ReLU tower on [P_u, Q_i], then one linear unit (its bias is the global bias)."""

    hidden: tuple[int, ...] = (32, 16)

    def setup(self):
        self.P, self.Q = self._tables()
        self.b_user, self.b_item, _ = self._biases(global_bias=False)
        self.tower = MLPTower(self.hidden)
        self.out = nn.Dense(1, kernel_init=_dense_init)

    def __call__(self, users: Array, items: Array) -> Array:
        self._check(users, items)
        x = self.tower(jnp.concatenate([self.P[users], self.Q[items]], axis=-1))
        return self.out(x)[..., 0] + self.b_user[users] + self.b_item[items]


class NeuMF(PairModel):
    """NCF's NeuMF: h · [P_u ⊙ Q_i, MLP([P'_u, Q'_i])] with separate GMF and MLP tables."""

    hidden: tuple[int, ...] = (32, 16)

    def setup(self):
        self.P, self.Q = self._tables()
        self.P2, self.Q2 = self._tables("_mlp")
        self.b_user, self.b_item, _ = self._biases(global_bias=False)
        self.tower = MLPTower(self.hidden)
        self.out = nn.Dense(1, kernel_init=_dense_init)

    def __call__(self, users: Array, items: Array) -> Array:
        self._check(users, items)
        gmf = self.P[users] * self.Q[items]
        mlp = self.tower(jnp.concatenate([self.P2[users], self.Q2[items]], axis=-1))
        x = jnp.concatenate([gmf, mlp], axis=-1)
        return self.out(x)[..., 0] + self.b_user[users] + self.b_item[items]


MODELS: dict[str, type[InteractionModel]] = {
    "dot": Dot, "cosine": Cosine, "gmf": GMF, "bilinear": Bilinear, "seed_combo": SeedCombo,
    "mlp": MLP, "neumf": NeuMF}


def make_model(name: str, num_users: int, num_items: int, dim: int, **options
               ) -> InteractionModel:
    """The model called ``name`` (see :data:`MODELS`). ``options``: ``biases``, ``init_std``;
    ``temperature`` (cosine); ``hidden`` widths (mlp, neumf)."""
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InteractionError(f"unknown model {name!r}{hint} Known: {', '.join(MODELS)}")
    for label, v in (("num_users", num_users), ("num_items", num_items), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise InteractionError(f"{label} must be a positive integer, got {v!r}")
    cls = MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = set(options) - fields
    if unknown:
        raise InteractionError(f"model {name!r} has no option(s) {sorted(unknown)}; its options: "
                               f"{sorted(fields - {'num_users', 'num_items', 'dim'})}")
    if "hidden" in options:
        options["hidden"] = tuple(int(h) for h in options["hidden"])
        if not options["hidden"] or min(options["hidden"]) < 1:
            raise InteractionError(f"hidden must be a non-empty tuple of widths >= 1, "
                                   f"got {options['hidden']}")
    if options.get("temperature", 1.0) <= 0:
        raise InteractionError(f"temperature must be > 0, got {options['temperature']}")
    return cls(int(num_users), int(num_items), int(dim), **options)


def init_params(model: InteractionModel, key: Array) -> dict:
    """The model's params (``{"params": ...}`` stripped)."""
    z = jnp.zeros((1,), jnp.int32)
    return model.init(key, z, z)["params"]


def score_all(model: InteractionModel, params: dict, users) -> Array:
    """[B, I] scores of every item for ``users`` [B] (ids checked first)."""
    users = np.asarray(users)
    _check_ids("user", users, model.num_users)
    return model.apply({"params": params}, jnp.asarray(users, jnp.int32), method="score_all")


# --- training (on jaxemb.engine) -----------------------------------------------------------

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
    B, n_neg = cfg.batch_size, cfg.negatives

    def loss_fn(params, u, i, y):
        logits = model.apply({"params": params}, u, i)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))

    def epoch(run, e, users, items, seen):
        lr, wd = run["hp"][0], run["hp"][1]
        k_order, k_neg = run["keys"][0], run["keys"][1]
        N = users.shape[0]
        steps = -(-N // B)
        # a random order: argsort of random bits (cheaper to compile than random.permutation)
        perm = jnp.argsort(jax.random.bits(engine.step_key(k_order, e), (N,)))
        y = jnp.concatenate([jnp.ones(B), jnp.zeros(B * n_neg)])

        def step(carry, s):
            params, opt_state = carry
            idx = perm[(s * B + jnp.arange(B)) % N]  # wraps: every step one shape
            u = users[idx]
            # the global step is folded in: a rerun draws the same negatives at each step
            neg = sample_negatives(engine.step_key(k_neg, e * steps + s), u, seen, n_neg)
            uu = jnp.concatenate([u, jnp.repeat(u, n_neg)])
            ii = jnp.concatenate([items[idx], neg.reshape(-1)])
            loss, g = jax.value_and_grad(loss_fn)(params, uu, ii, y)
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
    runs = _init_fn(model)(jnp.asarray([s for s, _, _ in cfg.runs]))
    runs["hp"] = jnp.asarray([(lr, wd) for _, lr, wd in cfg.runs], jnp.float32)
    # on the device, like the step's outputs: the numpy counters would be a second cache entry
    return jax.device_put(engine.init_tracking(runs, len(cfg.runs)))


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
    if data.num_users != model.num_users or data.num_items != model.num_items:
        raise InteractionError(f"the data has {data.num_users} users and {data.num_items} items "
                               f"but the model was built for {model.num_users} and "
                               f"{model.num_items}")
    seen = data.seen()
    if data.num_items - seen.sum(axis=1).max() < 1:
        raise InteractionError("some user has seen every item: no negatives can be sampled")
    epoch_fn = epoch_fn or make_epoch(model, cfg)
    state = init_state(model, cfg)
    args = (jnp.asarray(data.users), jnp.asarray(data.items), jnp.asarray(seen))
    losses = []
    bar = tqdm(total=cfg.epochs, desc=type(model).__name__, disable=not progress, leave=False)

    def on_log(e, state, metrics):
        losses.extend(m["loss"] for m in metrics)
        bar.update(e + 1 - bar.n)

    def describe(r, e):
        return (f"the loss became NaN/inf in epoch {e + 1} for run (seed, lr, weight decay) "
                f"{cfg.runs[r]}; lower the learning rate")

    t0 = time.perf_counter()
    # the host syncs once, at the end (every epoch with a progress bar)
    state = engine.run_steps(
        epoch_fn, state, cfg.epochs, lambda e: args, log_every=1 if progress else cfg.epochs,
        on_log=on_log, fail=None if may_diverge else functools.partial(
            engine.check_finite, describe=describe, error=InteractionError))
    seconds = time.perf_counter() - t0
    bar.close()
    return engine.RunsResult(state["params"], np.asarray(losses, np.float64), cfg.runs,
                             np.asarray(state["first_bad"]), seconds)


def fit_mse(model: InteractionModel, users: Array, items: Array, y: Array, sizes, seeds,
            lr: float, steps: int, batch: int = 256) -> engine.RunsResult:
    """MSE fits of ``model`` to targets ``y`` [N] of pairs (``users``, ``items`` [N]), one
    vmapped run per (size, seed) of ``sizes``, ``seeds`` [R]: Adam(``lr``) for ``steps`` steps,
    each on ``batch`` pairs drawn from the first ``size``. Keys: ``key(seed)`` with 0 folded in
    for the init and step + 1 for each step's batch. ``loss`` [1, R]: the last step's."""
    opt = optax.adam(lr)
    init = jax.jit(functools.partial(
        engine.stack_runs, lambda s: init_params(model, engine.step_key(jax.random.key(s), 0))),
        compiler_options=engine.run_once_options())
    params = init(jnp.asarray(seeds))

    def one(params, size, seed):
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
            upd, state = opt.update(g, state, params)
            first_bad = engine.track_first_bad(first_bad, loss, s)
            return (optax.apply_updates(params, upd), state, first_bad), loss

        carry = (params, opt.init(params), jnp.int32(-1))
        (params, _, first_bad), losses = jax.lax.scan(step, carry, jnp.arange(steps))
        return params, losses[-1], first_bad

    t0 = time.perf_counter()
    fit = engine.jit_step(engine.vmap_runs(one, (0, 0, 0)), donate_argnums=(0,),
                          compiler_options=engine.fast_compile_options())
    params, loss, first_bad = fit(params, jnp.asarray(sizes), jnp.asarray(seeds))
    return engine.RunsResult(params, np.asarray(loss, np.float64)[None],
                             list(zip(np.asarray(sizes).tolist(), np.asarray(seeds).tolist(),
                                      strict=True)),
                             np.asarray(first_bad), time.perf_counter() - t0)


def score_all_runs(model: InteractionModel):
    """``f(params [R, ...], users [b]) -> [R, b, I]``, jitted: every run scores every item."""
    return jax.jit(jax.vmap(lambda p, u: model.apply({"params": p}, u, method="score_all"),
                            in_axes=(0, None)), compiler_options=engine.fast_compile_options())


def _check_ids(kind: str, ids, n: int) -> None:
    try:
        check_ids(kind, ids, n)
    except RecDataError as e:
        raise InteractionError(str(e)) from None
