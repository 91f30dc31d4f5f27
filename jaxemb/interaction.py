"""Models that score (user, item) pairs (their training: :mod:`jaxemb.interaction_train`).

Models (``make_model(name, num_users, num_items, dim)``), each with user and item tables P [U, d],
Q [I, d] and, by default, user, item and global biases b_u + b_i + b:

=================  ===============================================================================
dot                P_u · Q_i: matrix factorisation (Rendle, Krichene, Zhang & Anderson 2020)
cosine             t · cos(P_u, Q_i), learned temperature t (else logits stay in [−1, 1])
gmf                h · (P_u ⊙ Q_i): NCF's GMF (He et al. 2017) = diagonal bilinear; h = 1 is dot
bilinear           P_u W Q_i, W [d, d] initialised at the identity (so it starts as dot)
seed_combo         h · ½(P_u ⊙ Q_i + P_u + Q_i) + c: the seed thread's proposal; it is GMF plus a
                   user term ½h·P_u (constant in a user's ranking) and an item term ½h·Q_i (an
                   item bias tied to the embedding)
neg_sq_euclidean   −‖P_u − Q_i‖² (the dual-encoder study of :mod:`jaxemb.dual_encoder`)
mlp                MLP([P_u, Q_i]): NCF's MLP on the concatenation (ReLU tower, then a linear unit)
product_mlp        MLP(P_u ⊙ Q_i): the element-wise product vector fed to an MLP predictor (the
                   proposal of the seed thread's asker; NCF's MLP takes the concatenation)
neumf              h · [P_u ⊙ Q_i, MLP([P'_u, Q'_i])]: NCF's NeuMF (separate GMF and MLP tables)
=================  ===============================================================================

The score's own parameters (cosine ``log_t``, bilinear ``W``, gmf/seed_combo ``w`` = h) sit in
the submodule ``score``, a :class:`jaxemb.learned_score.LearnedScore`.

``model.apply(v, users [B], items [B]) -> logits [B]``; ``model.apply(v, users [B],
method="score_all") -> [B, I]`` scores every item. For dot, cosine, gmf, bilinear and seed_combo
that is the project's central idea: map users through the score's phi_q and all items through
phi_k once (``jaxemb.scoring``), biases as two more feature columns, then one matmul;
``score_pairs`` does the same for a batch of items (in-batch logits). For mlp, product_mlp and
neumf the pair function is vmapped over items.
"""

from __future__ import annotations

import dataclasses
import difflib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import scoring
from jaxemb.learned_score import LearnedScore
from jaxemb.recdata import RecDataError, check_ids

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

    def item_features(self, items: Array | None = None) -> Array:
        """[I, f + 2] (or [B', f + 2] for ``items`` [B']): phi_k(Q_i) of every item (of
        ``items``), then 1 and the item's bias."""
        Q = self.Q if items is None else self.Q[items]
        b_item = self.b_item if items is None else self.b_item[items]
        F = self.score.spec.maps.map_keys(Q, *self.theta())
        bias = jnp.broadcast_to(b_item + self.item_term(Q), Q.shape[:1])
        return jnp.concatenate([F, jnp.ones_like(bias)[:, None], bias[:, None]], axis=1)

    def score_all(self, users: Array) -> Array:
        """[B, I]: every item for each of ``users`` [B], one matmul of feature maps."""
        self._check(users)
        return self.user_features(users) @ self.item_features().T

    def score_pairs(self, users: Array, items: Array) -> Array:
        """[B, B']: every one of ``items`` [B'] for each of ``users`` [B] (in-batch logits of a
        contrastive loss), one matmul of feature maps."""
        self._check(users, items)
        return self.user_features(users) @ self.item_features(items).T


class Dot(FeatureModel):
    score_name = "dot"


class Cosine(FeatureModel):
    """t · cos(P_u, Q_i) + biases; t = exp(log t) is learned from ``temperature``: without it the
    logit is stuck in [−1, 1] and cannot express a confident sigmoid (SigLIP, Zhai et al. 2023)."""

    temperature: float = 5.0
    learn_temperature: bool = True
    score_name = "cosine"

    def score_options(self) -> dict:
        return {"temperature": self.temperature, "learn_temperature": self.learn_temperature}


class GMF(FeatureModel):
    """NCF's generalised MF, h · (P_u ⊙ Q_i): the diagonal bilinear score with w = h. h starts
    at ones (NCF draws it at random), so GMF starts as dot."""

    score_name = "diag_bilinear"


class Bilinear(FeatureModel):
    score_name = "bilinear"


class NegSqEuclidean(FeatureModel):
    """−‖P_u − Q_i‖² + biases: the feature maps [2q, −‖q‖², −1] · [k, 1, ‖k‖²]
    (jaxemb.scoring); in a softmax over items the user's −‖q‖² cancels and the item's −‖k‖²
    is an item bias that penalises long item vectors."""

    score_name = "neg_sq_euclidean"


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
        x = self.tower(self.tower_input(self.P[users], self.Q[items]))
        return self.out(x)[..., 0] + self.b_user[users] + self.b_item[items]

    def tower_input(self, p: Array, q: Array) -> Array:
        """[..., 2k] the concatenation [P_u, Q_i]."""
        return jnp.concatenate([p, q], axis=-1)


class ProductMLP(MLP):
    """MLP(P_u ⊙ Q_i): the element-wise product vector as the input of a ReLU tower, then one
    linear unit (its bias is the global bias). With no hidden layer it would be GMF; the tower
    may also learn non-linear functions of the products."""

    def tower_input(self, p: Array, q: Array) -> Array:
        """[..., k] the element-wise product P_u ⊙ Q_i."""
        return p * q


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
    "neg_sq_euclidean": NegSqEuclidean, "mlp": MLP, "product_mlp": ProductMLP, "neumf": NeuMF}
PAIR_MODELS = ("mlp", "product_mlp", "neumf")
"""Models with an MLP tower (option ``hidden``), whose all-items scoring vmaps the pair
function."""


def make_model(name: str, num_users: int, num_items: int, dim: int, **options
               ) -> InteractionModel:
    """The model called ``name`` (see :data:`MODELS`). ``options``: ``biases``, ``init_std``;
    ``temperature``, ``learn_temperature`` (cosine); ``hidden`` widths (mlp, product_mlp,
    neumf)."""
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


def _check_ids(kind: str, ids, n: int) -> None:
    try:
        check_ids(kind, ids, n)
    except RecDataError as e:
        raise InteractionError(str(e)) from None
