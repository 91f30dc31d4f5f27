"""Q5's config (:class:`InteractionStudyConfig`): the interaction models' ranking, the
MLP-learns-dot fit and the dual encoders (seed 001)."""

from __future__ import annotations

import dataclasses

from experiments.report import require_positive
from jaxemb import interaction

DATA = ("planted", "ml-100k", "ml-1m")


@dataclasses.dataclass(frozen=True)
class InteractionStudyConfig:
    """Interaction models on planted data (or MovieLens), and whether an MLP learns a dot."""

    data: str = "planted"
    """'planted' (a dot-product truth and a non-linear truth), 'ml-100k' or 'ml-1m' (downloaded
    once into $JAXEMB_CACHE or ~/.cache/jaxemb)."""
    models: tuple[str, ...] = ("dot", "cosine", "gmf", "bilinear", "seed_combo", "mlp",
                               "product_mlp", "neumf")
    """Models to compare (jaxemb.interaction.MODELS)."""
    dim: int = 16
    """Embedding dimension of every model (NeuMF: of each of its two tables)."""
    hidden: tuple[int, ...] = (32, 16)
    """MLP tower widths (mlp, product_mlp, neumf)."""
    epochs: int = 12
    """Passes over the training positives."""
    batch_size: int = 256
    """Positives per step."""
    negatives: int = 4
    """Sampled negatives per positive (NCF: 4)."""
    lrs: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    """Adam rates of the tuning grid (every model gets the same grid)."""
    weight_decays: tuple[float, ...] = (0.0, 1.0)
    """Decoupled weight decays on the embedding tables, the other axis of the grid."""
    seeds: int = 6
    """Seeds of the reported runs (after tuning on seed 0), trained together with vmap. Equal
    to the grid size (3 × 2), both phases share one compilation."""
    k: int = 10
    """Cut-off of HR@k and NDCG@k."""
    sampled: int = 100
    """Negatives of the sampled metric (NCF: 100)."""
    users: int = 300
    """Planted data: users."""
    items: int = 200
    """Planted data: items."""
    per_user: int = 20
    """Planted data: interactions per user."""
    true_dim: int = 8
    """Planted data: dimension of the latent vectors of the truth."""
    temperature: float = 0.5
    """Planted data: users pick items ∝ exp(truth / temperature) (truth has unit variance)."""
    fit_sizes: tuple[int, ...] = (8000, 20000, 60000)
    """MLP-learns-dot: numbers of observed entries."""
    fit_models: tuple[str, ...] = ("dot", "mlp", "product_mlp")
    """MLP-learns-dot: the models fitted (dot first; mlp: NCF's MLP on [u, v]; product_mlp: an
    MLP on u⊙v)."""
    fit_widths: tuple[int, ...] = (32, 128)
    """MLP-learns-dot: first tower widths w (tower w, w/2) tried for each MLP."""
    fit_lrs: tuple[float, ...] = (3e-3, 1e-2)
    """MLP-learns-dot: Adam rates tried for each MLP (× the widths); dot tries as many rates,
    log-spaced over the same range, so every model has the same number of tries."""
    fit_side: int = 256
    """MLP-learns-dot: users = items = this many."""
    fit_rank: int = 8
    """MLP-learns-dot: rank of the true matrix."""
    fit_steps: int = 1200
    """MLP-learns-dot: Adam steps (batch 256) for every size."""
    fit_seeds: int = 5
    """MLP-learns-dot: seeds per (model, size) of the chosen setting (after tuning on seed 0),
    vmapped."""
    enc_scores: tuple[str, ...] = ("dot", "cosine_fixed", "cosine_learned", "neg_sq_euclidean")
    """Dual encoder (seed 001): the scores compared (jaxemb.dual_encoder.SCORES)."""
    enc_users: int = 1000
    """Dual encoder: users of the planted popularity data."""
    enc_items: int = 300
    """Dual encoder: items (Zipf weights; item norms carry log popularity)."""
    enc_true_dim: int = 8
    """Dual encoder: dimension of the true user and item vectors."""
    enc_dim: int = 8
    """Dual encoder: dimension of the learned tables."""
    enc_per_user: int = 12
    """Dual encoder: interactions per user (one held out for test, one for validation)."""
    enc_zipf: float = 1.0
    """Dual encoder: Zipf exponent s of the popularity weights w_i ∝ (i + 1)^(−s)."""
    enc_tail_norm: float = 1.0
    """Dual encoder: norm r of the least popular item's true vector."""
    enc_head: float = 0.1
    """Dual encoder: share of items (the most popular, by planted weight) called the head."""
    enc_epochs: int = 10
    """Dual encoder: passes over the training pairs."""
    enc_batch_size: int = 256
    """Dual encoder: pairs per in-batch softmax (each user's negatives: the other items)."""
    enc_lrs: tuple[float, ...] = (1e-2, 3e-2, 1e-1)
    """Dual encoder: Adam rates of the tuning grid (the same for every score)."""
    enc_temperatures: tuple[float, ...] = (0.1, 0.3)
    """Dual encoder: τ of the grid, logits = score / τ (cosine learned: τ's initial value)."""
    enc_seeds: int = 6
    """Dual encoder: seeds of the reported runs (after tuning on seed 0); equal to the grid size
    so both phases share one compilation."""
    data_seed: int = 0
    """Seed of the planted data."""
    cache_dir: str | None = None
    """Download cache for MovieLens (default: $JAXEMB_CACHE or ~/.cache/jaxemb)."""
    quick: bool = False
    """Smoke-test size: dot, GMF and MLP on 100 users × 80 items, 3 epochs, a 3-point grid,
    3 seeds; one MLP width for the dot fit."""

    def resolved(self) -> InteractionStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, models=("dot", "gmf", "mlp"), epochs=3, lrs=(1e-2,),
                weight_decays=(0.0, 0.3, 1.0), seeds=3, users=100, items=80, per_user=10,
                sampled=50, fit_sizes=(500, 2000), fit_widths=(16,), fit_lrs=(3e-3,),
                fit_models=("dot", "mlp"), fit_side=64, fit_steps=100,
                enc_scores=("dot",), enc_users=200, enc_items=100,
                enc_per_user=8, enc_epochs=3, enc_lrs=(3e-2,), enc_temperatures=(0.3,),
                enc_seeds=2, enc_batch_size=128)
        return self

    def validate(self) -> None:
        if self.data not in DATA:
            raise ValueError(f"--data must be one of {', '.join(DATA)}, got {self.data!r}")
        unknown = [m for m in self.models if m not in interaction.MODELS]
        if unknown or not self.models:
            raise ValueError(f"--models: unknown {unknown or '(none given)'}; known: "
                             f"{', '.join(interaction.MODELS)}")
        require_positive(self, "dim", "epochs", "batch_size", "negatives", "k", "sampled",
                         "users", "items", "per_user", "true_dim", "fit_side", "fit_rank",
                         "fit_steps")
        for name in ("seeds", "fit_seeds"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 2 (for an interval), "
                                 f"got {getattr(self, name)}")
        for name in ("lrs", "fit_sizes", "fit_widths", "fit_lrs", "hidden"):
            v = getattr(self, name)
            if not v or min(v) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive values, got {v}")
        if not self.weight_decays or min(self.weight_decays) < 0:
            raise ValueError(f"--weight-decays must be values >= 0, got {self.weight_decays}")
        if self.temperature <= 0:
            raise ValueError("--temperature must be > 0")
        bad = [m for m in self.fit_models if m not in ("dot", "mlp", "product_mlp")]
        if bad or not self.fit_models or self.fit_models[0] != "dot":
            raise ValueError(f"--fit-models must start with dot and name only dot, mlp, "
                             f"product_mlp; got {self.fit_models}")
        if self.per_user + self.sampled + 2 > self.items:
            raise ValueError(f"--items ({self.items}) must exceed --per-user ({self.per_user}) "
                             f"+ --sampled ({self.sampled}) + 2, or users run out of unseen "
                             "items to sample")
        self._validate_encoder()
        if max(self.fit_sizes) + 2000 > self.fit_side ** 2:
            raise ValueError(f"--fit-sizes up to {max(self.fit_sizes)} need a matrix with more "
                             f"than that + 2000 held-out entries (validation, test); --fit-side "
                             f"{self.fit_side} gives {self.fit_side ** 2}")

    def _validate_encoder(self) -> None:
        from jaxemb.dual_encoder import SCORES

        unknown = [m for m in self.enc_scores if m not in SCORES]
        if unknown or not self.enc_scores:
            raise ValueError(f"--enc-scores: unknown {unknown or '(none given)'}; known: "
                             f"{', '.join(SCORES)}")
        require_positive(self, "enc_users", "enc_items", "enc_true_dim", "enc_dim",
                         "enc_per_user", "enc_epochs")
        if self.enc_seeds < 2:
            raise ValueError(f"--enc-seeds must be >= 2 (for an interval), got {self.enc_seeds}")
        if (self.enc_batch_size < 2 or self.enc_zipf < 0 or not 0 < self.enc_head < 1
                or self.enc_tail_norm <= 0):
            raise ValueError("--enc-batch-size must be >= 2, --enc-zipf >= 0, --enc-tail-norm > 0 "
                             "and --enc-head in (0, 1)")
        if self.enc_per_user + 2 >= self.enc_items or self.enc_per_user < 3:
            raise ValueError(f"--enc-per-user must be >= 3 (one test, one validation, one "
                             f"training pair) and below --enc-items - 2, got "
                             f"{self.enc_per_user}")
        for name in ("enc_lrs", "enc_temperatures"):
            v = getattr(self, name)
            if not v or min(v) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive values, got {v}")
