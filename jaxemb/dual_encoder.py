"""Dual encoders trained contrastively, on planted data whose item norms carry popularity.

A dual encoder maps queries (users) and keys (items) separately and scores them with one score of
:mod:`jaxemb.scoring`; here the towers are embedding tables (``jaxemb.interaction``'s feature
models without biases), so retrieval is one matmul of feature maps. Training is the in-batch
softmax (InfoNCE, Oord, Li & Vinyals 2018; in-batch negatives for recommenders: Yi et al. 2019,
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations"): each user in a
batch of B positive pairs must pick its own item among the batch's B items,

    loss = mean_a [ −L_aa + log Σ_b exp L_ab ],   L_ab = s(user_a, item_b) / τ,

columns holding the row's own item again (a popular item twice in a batch) left out, and in the
runs with the log-Q correction the log of each item's share of the training pairs subtracted from
its column (Yi et al. 2019: in-batch negatives are drawn ∝ popularity, so without it the softmax
learns s ≈ log p(i | u) − log q(i) + c(u), popularity divided out).

Scores (:data:`SCORES`): dot; cosine with τ fixed; cosine with τ learned (its ``log_t``, from
τ); −‖q − k‖². Every score's logits are divided by the run's τ (a tuning axis shared by all).

Planted data (:func:`planted_popularity`): users X_u ~ N(0, σ² I_d); item i has a Zipf weight
w_i ∝ (i + 1)^(−s) (item 0 the most popular) and the vector Y_i = ρ_i e_i, e_i uniform on the unit
sphere, ρ_i² = r² + 2 log(w_i / w_min) / σ², so that E_X[exp(X·Y_i)] = exp(σ² ρ_i² / 2) ∝ w_i:
the item's norm carries its popularity. Each user's interactions are ``per_user`` draws without
replacement from softmax(X_u Yᵀ) (Gumbel top-k; the first draw is exactly the softmax).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import engine, interaction, interaction_train, ranking, recdata
from jaxemb.interaction import InteractionError, InteractionModel

Array = jax.Array

SCORES: dict[str, tuple[str, dict]] = {
    "dot": ("dot", {}),
    "cosine_fixed": ("cosine", {"temperature": 1.0, "learn_temperature": False}),
    "cosine_learned": ("cosine", {"temperature": 1.0}),
    "neg_sq_euclidean": ("neg_sq_euclidean", {}),
}
"""Dual-encoder score → (the ``jaxemb.interaction`` model, its options). Cosine's own t starts
at 1 (fixed or learned); the run's τ divides every score."""


# --- planted data ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class PlantedPopularity:
    """True user vectors ``users`` X [U, d], item vectors ``items`` Y [I, d], Zipf weights
    ``weight`` w [I] (sum 1, decreasing: item 0 the most popular), σ, r and the drawn
    interactions ``data`` (timestamps: a random order within each user)."""

    users: np.ndarray
    items: np.ndarray
    weight: np.ndarray
    sigma: float
    tail_norm: float
    data: recdata.Interactions

    def logits(self) -> np.ndarray:
        """[U, I] the true scores X Yᵀ."""
        return self.users @ self.items.T

    def probs(self) -> np.ndarray:
        """[U, I] softmax(X Yᵀ) over items: the distribution of each user's first draw."""
        z = self.logits()
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def head(self, fraction: float) -> np.ndarray:
        """bool [I]: the ⌈fraction · I⌉ items of largest weight (the popular head)."""
        n = max(1, int(np.ceil(fraction * len(self.weight))))
        return np.arange(len(self.weight)) < n


def popularity_norms(weight: np.ndarray, tail_norm: float, sigma: float) -> np.ndarray:
    """[I] ρ_i = sqrt(r² + 2 log(w_i / w_min) / σ²): the norm at which E_X[exp(X·Y_i)] ∝ w_i
    for X ~ N(0, σ² I) (E exp(X·y) = exp(σ² ‖y‖² / 2))."""
    w = np.asarray(weight, np.float64)
    return np.sqrt(tail_norm ** 2 + 2 * np.log(w / w.min()) / sigma ** 2)


def planted_popularity(num_users: int, num_items: int, dim: int, per_user: int,
                       zipf: float = 1.0, tail_norm: float = 1.0, sigma: float = 1.0,
                       seed: int = 0) -> PlantedPopularity:
    """Interactions drawn from softmax(X Yᵀ) with item norms set by Zipf popularity (module
    docstring)."""
    if per_user >= num_items or min(num_users, num_items, dim, per_user) < 1:
        raise InteractionError(f"need 1 <= per_user < num_items and positive sizes, got "
                               f"{num_users} users, {num_items} items, dim {dim}, per_user "
                               f"{per_user}")
    if tail_norm <= 0 or sigma <= 0 or zipf < 0:
        raise InteractionError("tail_norm and sigma must be > 0 and zipf >= 0")
    rng = np.random.default_rng(seed)
    w = (np.arange(num_items) + 1.0) ** -zipf
    w /= w.sum()
    e = rng.standard_normal((num_items, dim))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    Y = e * popularity_norms(w, tail_norm, sigma)[:, None]
    X = sigma * rng.standard_normal((num_users, dim))
    # Gumbel top-k: the k largest of logits + Gumbel noise are k draws without replacement
    # from the softmax (Kool, van Hoof & Welling 2019), the first exactly softmax-distributed
    picks = np.argsort(-(X @ Y.T + rng.gumbel(size=(num_users, num_items))), axis=1)
    picks = picks[:, :per_user]
    order = rng.permuted(np.tile(np.arange(per_user), (num_users, 1)), axis=1)
    n = num_users * per_user
    data = recdata.Interactions(np.repeat(np.arange(num_users), per_user).astype(np.int32),
                                picks.ravel().astype(np.int32), np.ones(n, np.float32),
                                order.ravel().astype(np.int64), num_users, num_items)
    return PlantedPopularity(X, Y, w, float(sigma), float(tail_norm), data)


# --- the loss ----------------------------------------------------------------------------------

def info_nce(logits: Array, items: Array, log_q: Array | None = None) -> Array:
    """In-batch softmax cross-entropy: ``logits`` [B, B] (row a: user a against the batch's
    items, its positive on the diagonal), ``items`` [B] the batch's item ids (a column with row
    a's item off the diagonal is left out), ``log_q`` [B] subtracted from each column if given.
    Returns the mean over rows []."""
    B = logits.shape[0]
    if log_q is not None:
        logits = logits - log_q[None, :]
    same = (items[:, None] == items[None, :]) & ~jnp.eye(B, dtype=bool)
    masked = jnp.where(same, -jnp.inf, logits)
    return jnp.mean(jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits))


# --- training ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
    """In-batch softmax training; the ``seeds`` × ``logq`` × ``lrs`` × ``temperatures`` runs are
    trained together (vmap). Adam, no weight decay."""

    epochs: int = 10
    batch_size: int = 256
    lrs: tuple[float, ...] = (1e-2,)
    temperatures: tuple[float, ...] = (0.1,)  # τ: logits = score / τ
    seeds: tuple[int, ...] = (0,)
    logq: tuple[bool, ...] = (False,)  # without / with Yi et al. 2019's log-Q correction

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise InteractionError(f"epochs must be >= 1 and batch_size >= 2, got "
                                   f"{self.epochs}, {self.batch_size}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise InteractionError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not self.logq or len(set(self.logq)) != len(self.logq):
            raise InteractionError(f"logq must be distinct flags, at least one, got {self.logq}")
        for label in ("lrs", "temperatures"):
            v = getattr(self, label)
            if not v or min(v) <= 0:
                raise InteractionError(f"{label} must be one or more values > 0, got {v}")

    @property
    def runs(self) -> list[tuple[int, bool, float, float]]:
        """(seed, log-Q correction, lr, τ) of each run, in the order of the params' leading
        axis."""
        return [(s, c, lr, t) for s in self.seeds for c in self.logq for lr in self.lrs
                for t in self.temperatures]


def make_encoder(score: str, num_users: int, num_items: int, dim: int,
                 init_std: float = 0.1) -> InteractionModel:
    """The dual encoder of ``score`` (:data:`SCORES`): user and item tables, no biases."""
    if score not in SCORES:
        raise InteractionError(f"unknown dual-encoder score {score!r}; known: "
                               f"{', '.join(SCORES)}")
    name, opts = SCORES[score]
    return interaction.make_model(name, num_users, num_items, dim, biases=False,
                                  init_std=init_std, **opts)


def make_epoch(model: InteractionModel, cfg: ContrastiveConfig):
    """One epoch of every run (:func:`jaxemb.interaction_train.epoch_step` with the in-batch
    softmax): ``(state, users [N], items [N], log_q [I]) -> (state, {"loss": [R]})``; the
    run's hp: (lr, 0, τ, 1 with the log-Q correction else 0)."""
    def batch_loss(params, u, i, key, hp, log_q):
        del key
        logits = model.apply({"params": params}, u, i, method="score_pairs") / hp[2]
        return info_nce(logits, i, hp[3] * log_q[i])

    return interaction_train.epoch_step(batch_loss, cfg.batch_size)


def train(model: InteractionModel, data: recdata.Interactions, cfg: ContrastiveConfig,
          epoch_fn=None, runs: list | None = None) -> engine.RunsResult:
    """Train one encoder per (seed, logq, lr, τ) of ``runs`` (default ``cfg.runs``) on the
    pairs of ``data``: ``loss`` [epochs, runs]; InteractionError if a loss became NaN/inf."""
    cfg.validate()
    runs = cfg.runs if runs is None else [tuple(r) for r in runs]
    interaction_train.check_sizes(model, data)
    epoch_fn = epoch_fn or make_epoch(model, cfg)
    state = interaction_train.init_runs(model, [r[0] for r in runs],
                                        [(lr, 0.0, t, float(c)) for _, c, lr, t in runs])
    args = (jnp.asarray(data.users), jnp.asarray(data.items), jnp.asarray(log_share(data)))
    return interaction_train.run_epochs(epoch_fn, state, args, cfg.epochs, runs,
                                        "(seed, logq, lr, τ)", "the in-batch softmax")


def log_share(data: recdata.Interactions) -> np.ndarray:
    """[I] log of each item's share of the pairs (the chance it fills a batch slot); items never
    seen get log(0.5 / N)."""
    counts = np.bincount(data.items, minlength=data.num_items).astype(np.float64)
    return np.log(np.maximum(counts, 0.5) / len(data)).astype(np.float32)


# --- evaluation --------------------------------------------------------------------------------

def pair_ranks(score_all, users, items, exclude, block: int = 256) -> np.ndarray:
    """[..., n] 1-based ranks (:func:`jaxemb.ranking.rank_of`: ties and NaN pessimistic) of
    held-out pairs (``users``, ``items`` [n]) among all items but ``exclude`` [n, I] (the user's
    known positives). ``score_all(users [b]) -> [..., b, I]``, in blocks of ``block`` pairs
    (:func:`jaxemb.ranking.block_ranks`)."""
    return np.asarray(ranking.block_ranks(score_all, users, items, exclude, block=block)[0])


def recall_by_group(ranks: np.ndarray, items, groups: dict[str, np.ndarray],
                    k: int) -> dict[str, np.ndarray]:
    """Recall@k of held-out pairs from their ``ranks`` [..., n] (:func:`pair_ranks`): the share
    of pairs whose item ranks in the top ``k``, for all pairs (``"all"``) and for the pairs
    whose item (``items`` [n]) is in each of ``groups`` ({name: bool [I]}); {name: [...]}."""
    hit = np.asarray(ranks) <= k
    out = {"all": hit.mean(axis=-1)}
    for name, member in groups.items():
        rows = np.asarray(member)[np.asarray(items)]
        if not rows.any():
            raise InteractionError(f"no held-out pair has an item in group {name!r}")
        out[name] = hit[..., rows].mean(axis=-1)
    return out


def norm_correlation(item_tables: Array, log_popularity: np.ndarray) -> np.ndarray:
    """[R] Pearson correlation over items of the learned norm ‖Q_i‖ (``item_tables`` [R, I, d])
    with ``log_popularity`` [I]."""
    norms = np.linalg.norm(np.asarray(item_tables, np.float64), axis=-1)
    x = norms - norms.mean(axis=1, keepdims=True)
    y = np.asarray(log_popularity, np.float64) - np.mean(log_popularity)
    return (x @ y) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y))


def temperatures(params: dict, runs: list) -> np.ndarray:
    """[R] the effective τ of each of ``runs`` [(seed, logq, lr, τ)]: the run's τ over
    cosine's t = exp(log t) (1 for scores without a learned t)."""
    tau = np.asarray([r[-1] for r in runs], np.float64)
    log_t = params.get("score", {}).get("log_t")
    return tau if log_t is None else tau / np.exp(np.asarray(log_t, np.float64))
