"""Q4: why does attention use a dot product as relevance, and not cosine, −‖q−k‖² or raw similarity?

The same small causal transformer (jaxemb.transformer) with each query–key score of
jaxemb.attention, trained under one fixed protocol on four tasks (jaxemb.tasks): negation scope
(a sentiment word must attend to a dissimilar negator), successor lookup (a word must point at
its successor in a fixed one-way relation — the direct test of "why does 'don't' attend to
'like'?") with its control, a learned but symmetric score (tied W_Q = W_K) at 1 and 2 layers,
multi-query associative recall (Arora et al. 2023), and a character LM on the Wikipedia sample;
plus a learning-rate sweep, the growth of attention logits (Wortsman et al. 2023) and the
attention maps themselves.

    python -m experiments.run attention                 # ~3 min on a 2-core CPU
    python -m experiments.run attention --quick         # smoke-test size, ~25 s
    python -m experiments.run attention --large         # adds MQAR, widths 32 64 128, 600
                                                        # steps: meant for an accelerator

Measured in the main job (jax 0.10.2, default config, 5 seeds, 2026-12-07, quiet, empty
compilation cache): 122 s on the 2-vCPU AMD EPYC (``docs/main_job/report.md``, the figures
below), 189 s and 343 CPU-s on the 2-vCPU Intel Xeon; there the previous default, 3 seeds
with MQAR at width 64, took 213-241 s, half of its CPU time in MQAR): every score solves the
negation task, raw similarity included (its attention mass on the negator is below scaled
dot's); on successor lookup every score with separate query/key projections reaches 1.000 and
raw similarity 0.148 (chance 0.127); the tied W_Q = W_K control does not solve it at 1 layer
(0.201) nor at 2 (0.180), while scaled dot does at both (1.000). MQAR (3 seeds, earlier run):
at width 64 raw similarity leaves the 1/2 plateau within 300 steps in 3 of 3 seeds — its
lookup is by identity — and every projected score in 0 of 3; with ``--parts mqar --widths 32
64 128 --mqar-steps 600`` (2479 s, shared CPUs) scaled dot, cosine, both bilinears and
QK-LayerNorm solve it at width 128 (3/3 seeds), −‖q−k‖² does not (1/3).

Split in four: this module (the config, the results, the question's entry points),
:mod:`experiments.study.q4_measure` (training; several seeds and learning rates are members of
one ``jax.vmap``-ed, jitted, donated, sharded train step of jaxemb.attention_train),
:mod:`experiments.study.q4_render` (tables and figures) and :mod:`experiments.study.q4_answer`
(the words), both from the results only.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import jax
import tyro

from experiments.report import Run, answer_text, require_positive
from experiments.study import q4_measure, q4_render
from experiments.study.results import Results as _Results
from jaxemb import tasks
from jaxemb.attention import ATTENTION_SCORES
from jaxemb.attention_train import Protocol
from jaxemb.transformer import TransformerConfig

PART = "attention"
TITLE = ("## Q4. Attention: why a dot product as relevance, and not cosine, subtraction or "
         "raw similarity?")
PARTS = ("relevance", "control", "mqar", "char", "far")
# The compared scores: every attention score but the tied (symmetric) control, which runs on
# successor lookup in part control (its grid: --control-scores × --control-depths).
STUDY_SCORES = tuple(s for s in ATTENTION_SCORES if s != "tied_qk")


@dataclasses.dataclass(frozen=True)
class AttentionStudyConfig:
    """Attention scores on negation scope, MQAR and a character LM; LR sweep; attention maps."""

    scores: tuple[str, ...] = STUDY_SCORES
    """Query–key scores to compare (jaxemb.attention.ATTENTION_SCORES)."""
    parts: tuple[str, ...] = ("relevance", "control", "char")
    """Which measurements to run: relevance (negation scope, successor lookup), control (the
    symmetric control on successor lookup), char (character LM, learning-rate sweep, logit
    growth); and, not by default, mqar (the width grid: half of this question's CPU time at 3
    seeds, so it comes with --large, meant for an accelerator) and far (the negator at a random
    distance among distractors, jaxemb.tasks.negation_distance: every score, and the control
    when it runs; needs relevance). Measured at the default 250 steps (2026-12-07) far is
    seed-bimodal — per score 0 to 3 of 3 seeds learn it, some learn nothing (accuracy 0.5) —
    so it separates no score at this size; give it more --steps on an accelerator."""
    control_scores: tuple[str, ...] = ("scaled_dot", "raw", "tied_qk")
    """Scores of the symmetric control on successor lookup: tied_qk (W_Q = W_K, learned but
    symmetric) beside the asymmetric scaled dot and raw similarity, at each --control-depths."""
    control_depths: tuple[int, ...] = (1, 2)
    """Depths of the control (one layer: a symmetric score cannot express a one-way relation;
    deeper, it may). Runs that part relevance already makes (--depth) are reused. Measured
    (2026-12-07, 3 seeds): at 250 steps tied_qk reaches 0.207 at 1 layer and 0.174 at 2 (chance
    0.127; scaled dot 1.000 at both); with ``--parts control --control-depths 2 --steps 1000``
    it reaches 0.446 ± 0.081 at 2 layers (scaled dot 1.000): rising, not solved."""
    seeds: int = 5
    """Seeds per score and task (init and data keys), trained together with vmap; the same for
    every score (paired comparisons)."""
    protocol: Annotated[Protocol, tyro.conf.arg(name="")] = Protocol(steps=250)
    """The optimisation protocol of every run, one flag per field (no prefix): --steps
    (optimiser steps per run: every task, score and learning rate; MQAR has --mqar-steps),
    --warmup (fraction of the steps with a linear warmup, then cosine decay to 0.1 × peak),
    --weight-decay (AdamW, on matrices only), --clip (global gradient norm), --dropout (the
    model's dropout rate; the key is threaded with the step folded in)."""
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
    widths: tuple[int, ...] = (64,)
    """MQAR width grid, for the smallest width at which each score solves it (measured: raw
    similarity 64, most scores 128; width 32, where no score's mean reached 0.99 in 3 seeds,
    and 128 are in --large, meant for an accelerator)."""
    mqar_scores: tuple[str, ...] | None = None
    """Scores of the MQAR grid (None: --scores)."""
    mqar_steps: int = 300
    """Optimiser steps of each MQAR run (the recall circuit forms after a plateau). Measured at
    width 64 (3 seeds, 2026-12-07): within 300 steps raw similarity leaves the plateau in 3/3
    seeds and every projected score in 0/3; within 600 (--large) scaled dot, bilinear and
    per-head bilinear leave it in 1/3."""
    mqar_batch: int = 64
    """Sequences per MQAR step (at batch 32 one seed in two stayed on the plateau at width 64)."""
    mqar_lr: float = 1e-3
    """Peak learning rate of the MQAR runs (at 3e-3 and 1e-2 width 32-64 models stayed on the
    plateau more often)."""
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
    lookup_words: int = 32
    """Words in the one-way cycle of the successor-lookup task (>= seq_len, <= vocab)."""
    char_max_chars: int | None = 1_000_000
    """Use the first N characters of the Wikipedia sample (None: all, ~2.8M); last 10% held out."""
    eval_size: int = 256
    """Held-out sequences per task (must be divisible by the device count)."""
    solve_threshold: float = 0.99
    """MQAR is solved at a width when the seeds' mean held-out accuracy reaches this."""
    relevance_threshold: float = 0.95
    """A relevance task is solved when the mean accuracy (negation: on negated words) reaches
    this."""
    log_every: int = 50
    """Steps between host syncs (loss, NaN check, attention-logit probe)."""
    workers: int = 2
    """Scores trained concurrently in threads (XLA compiles and runs without the GIL); one on a
    mesh of several devices, where concurrent launches of collectives can deadlock."""
    seed: int = 0
    """First seed; seeds are seed, seed+1, ..."""
    quick: bool = False
    """Smoke-test size: 2 scores (scaled dot and the tied control, so the control adds no
    compiled step), 2 seeds, 40 steps, width 16, depth 1, 3 lrs (with part mqar: one MQAR
    width)."""
    large: bool = False
    """Accelerator size (~40 min on a 2-core CPU): adds part mqar, over widths 32, 64, 128 with
    600 steps (the width at which the projected scores solve it: 128, measured in 2479 s on 2
    shared cores)."""

    @property
    def mqar_scores_resolved(self) -> tuple[str, ...]:
        return self.scores if self.mqar_scores is None else self.mqar_scores

    @property
    def mqar_protocol(self) -> Protocol:
        """The MQAR runs' protocol: the main one with its own step count."""
        return dataclasses.replace(self.protocol, steps=self.mqar_steps)

    def model(self, score: str, width: int, depth: int | None = None) -> TransformerConfig:
        """The causal transformer every task shares, with ``score`` at ``width`` (and
        ``depth``, default --depth)."""
        return TransformerConfig(vocab_size=self.vocab, width=width, depth=depth or self.depth,
                                 num_heads=self.heads, score=score, causal=True,
                                 max_len=self.seq_len, dropout_rate=self.protocol.dropout)

    def resolved(self) -> AttentionStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, scores=("scaled_dot", "tied_qk"), seeds=2, width=16, depth=1, batch=16,
                protocol=dataclasses.replace(self.protocol, steps=40),
                lrs=(1e-3, 1e-2, 1.0), widths=(16,), mqar_steps=40, mqar_batch=16,
                char_max_chars=200_000, eval_size=64, log_every=20, control_depths=(1,),
                control_scores=("scaled_dot", "tied_qk"), large=False)
        if self.large:
            parts = self.parts + (() if "mqar" in self.parts else ("mqar",))
            return dataclasses.replace(self, parts=parts, widths=(32, 64, 128), mqar_steps=600,
                                       large=False)
        return self

    def validate(self) -> None:
        p = self.protocol
        require_positive(p, "steps")
        if not self.control_depths or min(self.control_depths) < 1:
            raise ValueError(f"--control-depths must be positive, got {self.control_depths}")
        require_positive(self, "seeds", "width", "depth", "heads", "batch", "seq_len",
                         "vocab", "kv_pairs", "scope", "lookup_words", "eval_size", "log_every",
                         "workers", "mqar_steps", "mqar_batch")
        self._validate_choices()
        if not self.lrs or min(self.lrs) <= 0 or self.lr <= 0 or self.mqar_lr <= 0:
            raise ValueError(f"--lr, --mqar-lr and every --lrs value must be > 0, got "
                             f"lr={self.lr}, mqar_lr={self.mqar_lr}, lrs={self.lrs}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"--widths must be positive, got {self.widths}")
        for w in (self.width, *self.widths):
            if w % self.heads:
                raise ValueError(f"--heads {self.heads} must divide every width, got width {w}")
        if not 0 <= p.warmup < 1 or p.weight_decay < 0 or p.clip <= 0:
            raise ValueError(f"need 0 <= warmup < 1, weight_decay >= 0, clip > 0; got "
                             f"{p.warmup}, {p.weight_decay}, {p.clip}")
        if not 0 <= p.dropout < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {p.dropout}")
        for name in ("solve_threshold", "relevance_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1]")
        n = jax.device_count()
        for name in ("batch", "mqar_batch", "eval_size"):
            if getattr(self, name) % n:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)} must be "
                                 f"divisible by the {n} devices the batch is sharded over")
        self._validate_data()

    def _validate_choices(self) -> None:
        if not self.scores:
            raise ValueError("--scores must name at least one score")
        for flag, scores in (("scores", self.scores), ("control-scores", self.control_scores),
                             ("mqar-scores", self.mqar_scores_resolved)):
            for s in scores:
                if s not in ATTENTION_SCORES:
                    raise ValueError(f"--{flag}: unknown score {s!r}; known: "
                                     f"{', '.join(ATTENTION_SCORES)}")
            if len(set(scores)) != len(scores):
                raise ValueError(f"--{flag} must be distinct, got {scores}")
        if "control" in self.parts and not self.control_scores:
            raise ValueError("--control-scores must name at least one score")
        if not self.parts or any(p not in PARTS for p in self.parts):
            raise ValueError(f"--parts must name some of {', '.join(PARTS)}, got {self.parts}")
        if "far" in self.parts and "relevance" not in self.parts:
            raise ValueError("--parts far needs relevance (its results sit beside negation "
                             "scope's)")

    def _validate_data(self) -> None:
        if self.char_max_chars is not None and self.char_max_chars < 10 * self.seq_len:
            raise ValueError(f"--char-max-chars must be >= 10 × seq_len, got "
                             f"{self.char_max_chars}")
        if self.vocab < len(tasks.CHARS):
            raise ValueError(f"--vocab must be >= {len(tasks.CHARS)} (the character LM shares "
                             f"the model shape), got {self.vocab}")
        # Task arguments: fail here, not after minutes of training.
        tasks.mqar(0, 1, self.seq_len, self.kv_pairs, self.vocab)
        tasks.negation_scope(0, 1, self.seq_len, self.vocab, scope=self.scope)
        tasks.successor_lookup(0, 1, self.seq_len, self.lookup_words)
        if self.lookup_words > self.vocab:
            raise ValueError(f"--lookup-words {self.lookup_words} exceeds --vocab {self.vocab} "
                             f"(the words are token ids of the shared model shape)")

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (what :class:`Results` keeps)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttentionStudyConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        if "control_depths" not in data:  # written before the control part existed
            kw |= {"parts": tuple(p for p in kw.get("parts", PARTS) if p != "control")}
        return cls(**kw | {"protocol": Protocol(**data["protocol"])})


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    """What Q4 measured, as JSON values. Per-seed rows are exactly the ``metrics.jsonl`` records
    (without section and score); a part that did not run is None."""

    config: dict
    """The resolved :class:`AttentionStudyConfig` (:meth:`AttentionStudyConfig.to_json`)."""
    seeds: list
    """The seeds, in member order (the same for every score and task)."""
    devices: int
    """Devices of the mesh the batch was sharded over."""
    seconds: float
    """Wall time of the measurement."""
    cpu_seconds: float
    """Process CPU time of the measurement."""
    relevance: dict | None
    """``negation`` / ``lookup``: {score: [row per seed: seed, accuracy, (negated_accuracy,
    plain_accuracy,) attention_mass, best_layer, best_head, train_loss, seconds]};
    ``baselines``: context-blind accuracy, uniform attention, lookup chance;
    ``examples``: {task: the plotted held-out sequence's ticks, attend [T], scored rows};
    ``maps``: {task: {score: first seed's attention weights [T, T] in its row's best head}}."""
    mqar: dict | None
    """{score: {width (str): [row per seed: seed, accuracy, train_loss, seconds]}}."""
    char: dict | None
    """``vocab``, ``chars`` (symbols and characters used); ``members``: {score: [one per (seed,
    lr): seed, lr, sweep, bits_per_char (None: diverged), diverged_at (-1: never), seconds,
    steps, max_abs_logit, max_logit_range (per log point)]}, main runs first."""
    control: dict | None = None
    """The symmetric control on successor lookup: ``depths``: {depth (str): {score: [row per
    seed, as ``relevance['lookup']``'s]}}; ``maps``: {depth: {score: [T, T]}};
    ``lookup_chance``."""
    part_seconds: dict = dataclasses.field(default_factory=dict)
    """{part: thread-seconds of its jobs, compilation included} (the jobs overlap in threads)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        # Results saved before the control part existed render without it.
        return super().from_json({"control": None, "part_seconds": {}} | data)

    def cfg(self) -> AttentionStudyConfig:
        return AttentionStudyConfig.from_json(self.config)


def measure(config: AttentionStudyConfig, shared: dict, progress) -> Results:
    """Train and evaluate every score on the chosen parts (``shared`` is not used: Q4 shares no
    work with the other questions)."""
    cfg = config.resolved()
    cfg.validate()
    return Results(config=cfg.to_json(), **q4_measure.measure(cfg, progress))


def render(results: Results, run: Run) -> None:
    """The Q4 section: tables, figures and the answer, from ``results`` only."""
    q4_render.render(results, results.cfg(), run)


def answer(results: Results) -> str:
    """The answer: words from ``results`` only, then the background theory it does not test."""
    return answer_text(q4_render.answer(results, results.cfg()), q4_render.BACKGROUND)
