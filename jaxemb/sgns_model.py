"""The SGNS model: its settings (:class:`SGNSConfig`), its two tables and score
(:class:`SGNS`, initialised as :data:`INITS` says) and its logits. Training is in
:mod:`jaxemb.sgns`, which re-exports all of this."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxemb import learned_score
from jaxemb.learned_score import LearnedScore
from jaxemb.sgns_data import SGNSError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SGNSConfig:
    """Model and sampling settings (defaults: gensim's skip-gram defaults)."""

    dim: int = 100
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    score: str = "dot"
    temperature: float = 1.0  # cosine: initial t (logit = t·cos + b)
    learn_temperature: bool = True  # cosine: learn log t
    bias: bool = False  # a learned scalar added to every logit
    init: str = "auto"  # the tables' initialisation (INITS): "auto" is "unit" for cosine and
    # "word2vec" for every other score; "small" is word2vec's in-table draw on both tables
    micro_batch: int = 512  # centres per SGD update
    micro_steps: int = 8  # updates per jitted call
    neg_group: int = 64  # centres sharing one pool of negatives
    neg_pool: int = 0  # negatives per group; 0: negative × 2·window (pool_size)
    negatives: str = "shared"  # "shared": one pool per group, each centre's terms weighted
    # negative·n_pairs/pool; "per_pair": word2vec's own, each pair its own `negative` draws of
    # weight 1 (needs neg_group=1: a centre's pool is its 2·window pairs' draws), for comparison
    update: str = "sequential"  # "sequential": curvature-bounded row steps, input side then
    # output side against the moved inputs; "implicit": the same bound, both sides at once at
    # half a Newton step each; "sum": plain summed SGD; "damped": the summed step of a row
    # repeated c times in a block divided by c^0.3 (the rule before "implicit"; the SGNS study
    # uses it: the curvature bounds steps in feature space, which for cosine (features t·v/‖v‖)
    # is not the rows' own curvature, and on the Wikipedia sample cosine_learned reached WS353
    # 0.14 under "implicit" against 0.45 under "damped")

    def validate(self) -> None:
        for name in ("dim", "window", "negative", "micro_batch", "micro_steps", "neg_group"):
            if getattr(self, name) < 1:
                raise SGNSError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.neg_pool < 0:
            raise SGNSError(f"neg_pool must be >= 1, or 0 for negative × 2·window, "
                            f"got {self.neg_pool}")
        if self.init not in INITS:
            raise SGNSError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.negatives not in NEGATIVES:
            raise SGNSError(f"negatives must be one of {', '.join(NEGATIVES)}, "
                            f"got {self.negatives!r}")
        if self.negatives == "per_pair" and (self.neg_group != 1 or self.neg_pool):
            raise SGNSError(f"negatives='per_pair' draws each pair's own negatives: it needs "
                            f"neg_group=1 and neg_pool=0, got neg_group={self.neg_group}, "
                            f"neg_pool={self.neg_pool}")
        if self.score == "cosine" and self.table_init == "word2vec":
            # Measured: the first step threw the zero out-rows to length ~1e8 (gradient t/eps)
            # and the loss rose to 16–19 per pair, above (1+k)·log 2 (60 words, d 16, t 10).
            raise SGNSError("init 'word2vec' starts the output table at 0, where a cosine is "
                            "undefined (its gradient there is t/eps); use 'small' for "
                            "word2vec's draw on both tables")
        if self.update not in UPDATES:
            raise SGNSError(f"update must be one of {', '.join(UPDATES)}, got {self.update!r}")
        T = positive_tile(self)
        if self.micro_batch % T:
            raise SGNSError(f"micro_batch ({self.micro_batch}) must be a multiple of {T} (the "
                            f"tile of the positive scores for window {self.window})")
        if self.micro_batch % self.neg_group:
            raise SGNSError(f"micro_batch ({self.micro_batch}) must be a multiple of neg_group "
                            f"({self.neg_group})")
        for name in ("sample", "temperature"):
            if not np.isfinite(getattr(self, name)):
                raise SGNSError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.sample < 0:
            raise SGNSError(f"sample must be >= 0 (0 disables subsampling), got {self.sample}")
        if self.temperature <= 0:
            raise SGNSError(f"temperature must be > 0, got {self.temperature}")
        if not learned_score.spec(self.score).pair:
            raise SGNSError(f"{self.score!r} is an attention score (per head); SGNS scores: "
                            f"{', '.join(learned_score.names(pair=True))}")
        if self.score in ("lowrank_bilinear",):
            raise SGNSError("lowrank_bilinear is not an SGNS score here; use 'bilinear' (full) "
                            "or 'diag_bilinear'")

    @property
    def table_init(self) -> str:
        """The initialisation ``init`` stands for ("auto" resolved by the score)."""
        if self.init != "auto":
            return self.init
        return "unit" if self.score == "cosine" else "word2vec"

    @property
    def words_per_call(self) -> int:
        return self.micro_batch * self.micro_steps


UPDATES = ("implicit", "sequential", "sum", "damped")
NEGATIVES = ("shared", "per_pair")
# The tables' initialisations: (in, out) uniform half-widths as functions of d (0: zeros).
INITS = ("auto", "word2vec", "small", "unit")
INIT_SCALES = {"word2vec": (lambda d: 0.5 / d, lambda d: 0.0),
               "small": (lambda d: 0.5 / d, lambda d: 0.5 / d),
               "unit": (lambda d: np.sqrt(3.0 / d), lambda d: np.sqrt(3.0 / d))}


def pool_size(cfg: SGNSConfig) -> int:
    """Negatives per group: ``cfg.neg_pool``, or (0) negative × the most pairs a centre can
    have (2·window), rounded up to a multiple of 8: a centre with n_pairs pairs weighs each
    shared negative by negative·n_pairs/pool ≤ 1, so none of its negative terms is heavier
    (noisier) than one of word2vec's single draws, and even a centre at its full window meets
    as many distinct negatives as word2vec draws for it.

    The earlier default, negative × the *mean* pairs per centre (window + 1), matched word2vec
    only on average: the wide-window centres, which carry most pairs, weighed their negatives
    up to 2w/(w + 1) ≈ 1.8 at window 10, and on gensim's Wikipedia sample (dim 100, window 10,
    negative 5, 5 epochs, 3 seeds, the clipped step of :mod:`jaxemb.sgns_update`) the analogy
    score fell 1.09 points below gensim's, against 0.41 at a pool of 112 (docs/sgns14). The
    larger pool costs speed where the negatives dominate a block's work (window 10)."""
    if cfg.neg_pool:
        return cfg.neg_pool
    if cfg.negatives == "per_pair":  # slots [o·negative, (o + 1)·negative) are slot o's pair's
        return cfg.negative * 2 * cfg.window
    return rounded_pool(cfg.negative * 2 * cfg.window)


def rounded_pool(n: int) -> int:
    """n negatives rounded up to a multiple of 8 (the width of the pool's score matmuls)."""
    return -(-n // 8) * 8


# --- model ---------------------------------------------------------------------------------

class SGNS(nn.Module):
    """Input and output embedding tables and the score that compares them.

    Tables: ``in`` [V, d] (word2vec's uniform ±0.5/d init) and ``out`` [V, d] (zeros, as word2vec,
    for dot-like scores); for cosine, whose normalisation is undefined at 0, both uniform
    ±√(3/d) (length ≈ 1); ``SGNSConfig.init`` chooses another (:data:`INIT_SCALES`). The score's
    parameters live in the submodule ``score`` (:func:`score_module`): ``log_t`` (cosine), ``W``
    (bilinear, init identity so it starts as dot), ``w`` (diagonal bilinear, init ones), ``b``
    (optional bias). So the parameter tree is the training tree, ``{"in", "out", "score": {...}}``
    (see :func:`init_params`).
    """

    vocab_size: int
    config: SGNSConfig

    def setup(self):
        cfg, V, d = self.config, self.vocab_size, self.config.dim

        # Cosine tables start at length ≈ 1 (init "unit", uniform ±√(3/d): E‖v‖² = 1). Its
        # gradient scales as t/‖v‖, so at word2vec's ±0.5/d (‖v‖ ≈ 0.03) the first steps blew
        # the vectors up to ‖v‖ ≈ 40, after which the steps were tiny and learning stalled
        # (measured, t = 10, 5 epochs on the Wikipedia sample: WS353 0.11 at ±0.5/d vs 0.32 at
        # length 1). ``init`` overrides the choice (the SGNS study's controls).
        a_in, a_out = (f(d) for f in INIT_SCALES[cfg.table_init])

        def uniform(a):
            return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -a, a)

        self.table_in = self.param("in", uniform(a_in), (V, d))
        self.table_out = self.param("out", uniform(a_out) if a_out else nn.initializers.zeros,
                                    (V, d))
        # Created after the tables: their draws depend on the order of params in this scope.
        self.score = score_module(cfg)

    def __call__(self, inputs: Array, outputs: Array) -> Array:
        """Logits [...] of (input word, output word) id pairs of matching shape."""
        return _logits(self.score, self.table_in[inputs], self.table_out[outputs])


def init_params(model: SGNS, key: Array) -> dict:
    """The training tree ``{"in": [V, d], "out": [V, d], "score": {...}}`` of ``model``.

    ``score`` is ``{}`` for a score without parameters (flax leaves such a submodule out).
    """
    ids = jnp.zeros((1,), jnp.int32)
    p = model.init(key, ids, ids)["params"]
    return {"in": p["in"], "out": p["out"], "score": p.get("score", {})}


def score_module(cfg: SGNSConfig) -> LearnedScore:
    """The (unbound) score module of ``cfg``: its parameters are a training tree's ``score``."""
    return LearnedScore(cfg.score, cfg.dim, temperature=cfg.temperature,
                        learn_temperature=cfg.learn_temperature, bias=cfg.bias)


def feature_maps(cfg: SGNSConfig, sp: dict):
    """(phi_in, phi_out): row-wise maps [..., d] → [..., f] so that logit = phi_in · phi_out
    (plus the bias), with the score's parameters ``sp``."""
    score = score_module(cfg).bind({"params": sp})
    return score.phi_q, score.phi_k


def _logits(score: LearnedScore, rows_in: Array, rows_out: Array) -> Array:
    return jnp.sum(score.phi_q(rows_in) * score.phi_k(rows_out), axis=-1) + score.offset()


def pair_logits(cfg: SGNSConfig, sp: dict, rows_in: Array, rows_out: Array) -> Array:
    """Logits [...] of rows [..., d] of the input and output tables."""
    return _logits(score_module(cfg).bind({"params": sp}), rows_in, rows_out)


def positive_tile(cfg: SGNSConfig) -> int:
    """Centres per tile of the banded positive-score matmul: the smallest power of two ≥ 8 and
    ≥ 2·window that divides micro_batch (validated in ``SGNSConfig.validate``)."""
    t = 8
    while t < 2 * cfg.window:
        t *= 2
    return t
