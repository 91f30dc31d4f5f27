"""Q4: why does attention use a dot product as relevance, and not cosine, −‖q−k‖² or raw similarity?

The same small causal transformer (jaxemb.transformer) with each query–key score of
jaxemb.attention, trained under one fixed protocol on four tasks (jaxemb.tasks): negation scope
(a sentiment word must attend to a dissimilar negator), successor lookup (a word must point at
its successor in a fixed one-way relation — the direct test of "why does 'don't' attend to
'like'?"), multi-query associative recall (Arora et al. 2023) over a width grid, and a character
LM on the Wikipedia sample; plus a learning-rate sweep, the growth of attention logits (Wortsman
et al. 2023) and the attention maps themselves.

    python -m experiments.run attention                 # ~11 min on a 2-core CPU
    python -m experiments.run attention --quick         # smoke-test size, ~40 s
    python -m experiments.run attention --parts mqar --widths 32 64 128   # one part, wider

Measured on the 2-vCPU dev box (jax 0.10.2, default config, 653 s): every score solves the
negation task, raw similarity included (it uses the position embeddings: its attention mass on
the negator is 0.66 against 0.95 for scaled dot); on successor lookup every score with query/key
projections reaches 1.000 and raw similarity 0.147 (chance 0.127); on MQAR raw similarity is the
one score that solves it at width 64 in 3 of 3 seeds — its lookup is by identity — while the
others leave the 1/2 plateau in at most 1 of 3 seeds within 600 steps. With ``--parts mqar
--widths 32 64 128`` (2479 s, shared CPUs) scaled dot, cosine, both bilinears and QK-LayerNorm
solve it at width 128 (3/3 seeds), −‖q−k‖² does not (1/3).

Training (jaxemb.attention_train): several seeds (and learning rates) are members of one
``jax.vmap``-ed train step, jitted once per model shape and protocol with the state donated, on a
``jax.sharding.Mesh`` over all devices with the batch axis sharded (params replicated).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import jax
import matplotlib
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.bench_sgns import ci95  # noqa: E402
from experiments.report import Run, require_positive  # noqa: E402
from jaxemb import tasks  # noqa: E402
from jaxemb.attention import ATTENTION_SCORES  # noqa: E402
from jaxemb.attention_train import (  # noqa: E402
    TASK_IDS,
    Protocol,
    make_evaluate,
    make_mesh,
    make_train_step,
    member_stream,
    train,
)
from jaxemb.transformer import Transformer, TransformerConfig  # noqa: E402

PARTS = ("relevance", "mqar", "char")


@dataclasses.dataclass(frozen=True)
class AttentionStudyConfig:
    """Attention scores on negation scope, MQAR and a character LM; LR sweep; attention maps."""

    scores: tuple[str, ...] = ATTENTION_SCORES
    """Query–key scores to compare (jaxemb.attention.ATTENTION_SCORES)."""
    parts: tuple[str, ...] = PARTS
    """Which measurements to run: relevance (negation scope, successor lookup), mqar (the width
    grid), char (character LM, learning-rate sweep, logit growth)."""
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
    widths: tuple[int, ...] = (32, 64)
    """MQAR width grid, for the smallest width at which each score solves it (measured: raw
    similarity 64, most scores 128, which --widths 32 64 128 adds at ~3x the time)."""
    mqar_steps: int = 600
    """Optimiser steps of each MQAR run (the recall circuit forms after a plateau: 250 steps
    was too few at every width tried)."""
    mqar_batch: int = 64
    """Sequences per MQAR step (at batch 32 one seed in two stayed on the plateau at width 64)."""
    mqar_lr: float = 1e-3
    """Peak learning rate of the MQAR runs (at 3e-3 and 1e-2 width 32-64 models stayed on the
    plateau more often)."""
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
    """Scores trained concurrently in threads (XLA compiles and runs without the GIL)."""
    seed: int = 0
    """First seed; seeds are seed, seed+1, ..."""
    quick: bool = False
    """Smoke-test size: 2 scores, 2 seeds, 40 steps, width 16, depth 1, one MQAR width, 3 lrs."""

    def resolved(self) -> AttentionStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, scores=("scaled_dot", "raw"), seeds=2, steps=40, width=16, depth=1, batch=16,
                lrs=(1e-3, 1e-2, 1.0), widths=(16,), mqar_steps=40, mqar_batch=16,
                char_max_chars=200_000, eval_size=64, log_every=20)
        return self

    def validate(self) -> None:
        require_positive(self, "seeds", "steps", "width", "depth", "heads", "batch", "seq_len",
                         "vocab", "kv_pairs", "scope", "lookup_words", "eval_size", "log_every",
                         "workers", "mqar_steps", "mqar_batch")
        if not self.scores:
            raise ValueError("--scores must name at least one score")
        for s in self.scores:
            if s not in ATTENTION_SCORES:
                raise ValueError(f"--scores: unknown score {s!r}; known: "
                                 f"{', '.join(ATTENTION_SCORES)}")
        if not self.parts or any(p not in PARTS for p in self.parts):
            raise ValueError(f"--parts must name some of {', '.join(PARTS)}, got {self.parts}")
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
        for name in ("batch", "mqar_batch", "eval_size"):
            if getattr(self, name) % n:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)} must be "
                                 f"divisible by the {n} devices the batch is sharded over")
        # Task arguments: fail here, not after minutes of training.
        tasks.mqar(0, 1, self.seq_len, self.kv_pairs, self.vocab)
        tasks.negation_scope(0, 1, self.seq_len, self.vocab, scope=self.scope)
        tasks.successor_lookup(0, 1, self.seq_len, self.lookup_words)
        if self.lookup_words > self.vocab:
            raise ValueError(f"--lookup-words {self.lookup_words} exceeds --vocab {self.vocab} "
                             f"(the words are token ids of the shared model shape)")


# --- the study ------------------------------------------------------------------------------

def _fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


@dataclasses.dataclass
class _Setup:
    """Everything the runs share: data streams, held-out sets, and the compiled functions (one
    train step per model shape and protocol, one evaluator per shape; the tasks share a shape)."""

    cfg: AttentionStudyConfig
    protocol: Protocol
    mqar_protocol: Protocol
    mesh: Mesh
    seeds: list[int]
    streams: dict          # task -> seed -> {inputs, targets, mask} [steps, B, T]
    evals: dict            # task -> (inputs, targets, attend) [E, T]
    negation: tasks.NegationBatch | None  # held-out relevance data (None: part not run)
    lookup: tasks.LookupBatch | None
    examples: dict         # task -> the held-out sequence whose attention maps are plotted
    char_vocab: int | None  # the character LM's symbols and text length (None: part not run)
    char_chars: int | None
    sweep: list[list[tuple[int, float]]]  # learning-rate sweep members in runs of len(seeds)
    fns: dict = dataclasses.field(default_factory=dict)

    def data(self, task: str, seeds: Sequence[int]) -> dict:
        per = [self.streams[task][s] for s in seeds]
        return {k: np.stack([p[k] for p in per], axis=1) for k in per[0]}

    def functions(self, score: str, width: int, protocol: Protocol | None = None
                  ) -> tuple[Transformer, dict]:
        c, protocol = self.cfg, protocol or self.protocol
        tc = TransformerConfig(vocab_size=c.vocab, width=width, depth=c.depth,
                               num_heads=c.heads, score=score, causal=True, max_len=c.seq_len,
                               dropout_rate=c.dropout)
        model = Transformer(tc)
        key = (tc, protocol)  # per score: each worker thread writes its own keys
        if key not in self.fns:
            self.fns[key] = {"step": make_train_step(model, protocol, self.mesh),
                             "evaluate": make_evaluate(model, self.mesh)}
        return model, self.fns[key]

    def evaluate(self, fns: dict, task: str, params, keys=None) -> dict:
        x, y, attend = self.evals[task]
        out = fns["evaluate"](params, x, y, attend, self.examples.get(task, 0))
        return jax.device_get(out if keys is None else {k: out[k] for k in keys})


def _eval_key(cfg: AttentionStudyConfig, task: str) -> jax.Array:
    # Held-out data: a key no member's training stream uses (members use split(key(s), 3)[1]).
    return jax.random.fold_in(jax.random.key(cfg.seed), 1_000 + TASK_IDS[task])


def _prepare(cfg: AttentionStudyConfig, progress) -> _Setup:
    """Training streams and held-out sets of the tasks that ``cfg.parts`` runs (only those)."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    T, E, V = cfg.seq_len, cfg.eval_size, cfg.vocab
    none = np.full((E, T), -1, np.int32)  # no position a held-out token must attend to
    makers, evals = {}, {}                 # task -> (make, steps, batch); task -> (x, y, attend)
    ev = lk = cd = None
    examples = {}
    with progress(f"Q4 data for {', '.join(cfg.parts)}"):
        if "relevance" in cfg.parts:
            def negation(key, n):
                b = tasks.negation_scope(key, n, T, V, scope=cfg.scope)
                return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

            def lookup(key, n):
                b = tasks.successor_lookup(key, n, T, cfg.lookup_words)
                return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}

            makers |= {"negation": (negation, cfg.steps, cfg.batch),
                       "lookup": (lookup, cfg.steps, cfg.batch)}
            ev = tasks.negation_scope(_eval_key(cfg, "negation"), E, T, V, scope=cfg.scope)
            lk = tasks.successor_lookup(_eval_key(cfg, "lookup"), E, T, cfg.lookup_words)
            evals |= {"negation": (ev.inputs, ev.targets, ev.attend),
                      "lookup": (lk.inputs, lk.targets, lk.attend)}
            examples = {"negation": int(np.argmax(ev.negated[:, :_T_SHOW].sum(1))),
                        "lookup": int(np.argmax(lk.loss_mask[:, :_T_SHOW].sum(1)))}
        if "mqar" in cfg.parts:
            def mqar(key, n):
                x, y, m = tasks.mqar(key, n, T, cfg.kv_pairs, V,
                                     random_non_queries=cfg.mqar_random_fill)
                return {"inputs": x, "targets": y, "mask": m}

            makers["mqar"] = (mqar, cfg.mqar_steps, cfg.mqar_batch)
            mx, my, _ = tasks.mqar(_eval_key(cfg, "mqar"), E, T, cfg.kv_pairs, V,
                                   random_non_queries=cfg.mqar_random_fill)
            evals["mqar"] = (mx, my, none)
        if "char" in cfg.parts:
            cd = tasks.char_data(max_chars=cfg.char_max_chars)

            def char(key, n):
                x, y = cd.windows(key, n, T)
                return {"inputs": x, "targets": y, "mask": np.ones_like(x, bool)}

            makers["char"] = (char, cfg.steps, cfg.batch)
            evals["char"] = (*cd.tiles(E, T), none)
        streams = {task: {s: member_stream(make, s, task, steps, batch) for s in seeds}
                   for task, (make, steps, batch) in makers.items()}
    sweep = [(seeds[0], lr) for lr in cfg.lrs if not math.isclose(lr, cfg.lr)]
    # Runs of len(seeds) members (the last padded with its own last member) so every run has
    # the same shape as the main runs and reuses their compiled step.
    runs = [sweep[i: i + len(seeds)] for i in range(0, len(sweep), len(seeds))]
    runs = [r + [r[-1]] * (len(seeds) - len(r)) for r in runs]
    protocol = Protocol(cfg.steps, cfg.warmup, cfg.weight_decay, cfg.clip, cfg.dropout)
    return _Setup(cfg, protocol, dataclasses.replace(protocol, steps=cfg.mqar_steps),
                  make_mesh(), seeds, streams, evals, ev, lk, examples,
                  None if cd is None else cd.vocab_size,
                  None if cd is None else cd.train.size + cd.validation.size, runs)


_T_SHOW = 24  # positions shown in the attention-map figure


def _mqar_run(st: _Setup, score: str, width: int) -> dict:
    cfg, seeds = st.cfg, st.seeds
    model, fns = st.functions(score, width, st.mqar_protocol)
    tr = train(model, st.mqar_protocol, st.mesh, fns["step"], seeds, [cfg.mqar_lr] * len(seeds),
               st.data("mqar", seeds), log_every=cfg.log_every, label=f"mqar/w{width}/{score}")
    e = st.evaluate(fns, "mqar", tr.params, ("correct",))
    return {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds}


def _main_runs(st: _Setup, score: str) -> dict:
    """The runs of one score at the main width (one compiled step): negation, successor
    lookup, the character LM and its learning-rate sweep."""
    cfg, seeds = st.cfg, st.seeds
    M = len(seeds)
    model, fns = st.functions(score, cfg.width)
    out: dict = {}
    for task in ("negation", "lookup") if "relevance" in cfg.parts else ():
        tr = train(model, st.protocol, st.mesh, fns["step"], seeds, [cfg.lr] * M,
                   st.data(task, seeds), log_every=cfg.log_every, label=f"{task}/{score}")
        e = st.evaluate(fns, task, tr.params, ("correct", "mass", "maps"))
        out[task] = {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds}
    if "char" not in cfg.parts:
        return out
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


def _seed_rows(st: _Setup, r: dict, scored: np.ndarray, run: Run, section: str, score: str,
               **extra_masks: np.ndarray) -> list[dict]:
    """Log one row per seed: accuracy on ``scored`` (and on each extra mask), the largest mean
    attention mass on the position that must be attended to, and where it is."""
    rows = []
    for i, s in enumerate(st.seeds):
        best = np.unravel_index(int(np.argmax(r["mass"][i])), r["mass"][i].shape)
        rows.append(run.log(
            section, score=score, seed=s, accuracy=float(r["correct"][i][scored].mean()),
            **{k: float(r["correct"][i][m].mean()) for k, m in extra_masks.items()},
            attention_mass=float(r["mass"][i][best]), best_layer=int(best[0]),
            best_head=int(best[1]), train_loss=float(r["loss"][i]), seconds=r["seconds"]))
    return rows


def _map_of(r: dict, row: dict):
    """The first seed's attention map in the head its row names, with the head and its mass."""
    layer, head = row["best_layer"], row["best_head"]
    return r["maps"][0][layer, head], (layer, head), row["attention_mass"]


def _relevance_section(st: _Setup, res: dict, run: Run) -> tuple[dict, str]:
    cfg, ev, lk = st.cfg, st.negation, st.lookup
    negated, plain = ev.negated, ev.loss_mask & ~ev.negated
    neg, look, neg_maps, look_maps = {}, {}, {}, {}
    for score, r in res.items():
        rows = _seed_rows(st, r["negation"], ev.loss_mask, run, "q4_relevance", score,
                          negated_accuracy=negated, plain_accuracy=plain)
        neg[score] = {k: ci95([row[k] for row in rows]) for k in
                      ("accuracy", "negated_accuracy", "plain_accuracy", "attention_mass")}
        neg[score]["solved"] = neg[score]["negated_accuracy"][0] >= cfg.relevance_threshold
        neg_maps[score] = _map_of(r["negation"], rows[0])
        rows = _seed_rows(st, r["lookup"], lk.loss_mask, run, "q4_lookup", score)
        look[score] = {k: ci95([row[k] for row in rows]) for k in ("accuracy", "attention_mass")}
        look[score]["solved"] = look[score]["accuracy"][0] >= cfg.relevance_threshold
        look_maps[score] = _map_of(r["lookup"], rows[0])
    # Baselines from the held-out data: a context-blind model predicts each word's own polarity;
    # uniform causal attention puts 1/(t+1) on each token up to t.
    blind = float(1.0 - negated.sum() / ev.loss_mask.sum())
    uniform = float(np.mean(1.0 / (np.nonzero(negated)[1] + 1)))
    chance = tasks.successor_lookup_chance(lk.loss_mask)
    look_uniform = float(np.mean(1.0 / (np.nonzero(lk.loss_mask)[1] + 1)))
    run.log("q4_relevance_baselines", context_blind_accuracy=blind, uniform_attention=uniform,
            lookup_chance=chance, lookup_uniform_attention=look_uniform)
    md = run.table(
        "q4_relevance_table",
        ("score", "accuracy (all sentiment words)", "on negated words", "on other words",
         "attention mass on the negator (best head)", "solved"),
        [(s, _fmt(*r["accuracy"]), _fmt(*r["negated_accuracy"]), _fmt(*r["plain_accuracy"]),
          _fmt(*r["attention_mass"]), "yes" if r["solved"] else "no") for s, r in neg.items()],
        f"Negation scope, held-out: {cfg.eval_size} sequences of T={cfg.seq_len} (vocabulary "
        f"{cfg.vocab}: fillers, 4 negators, 8 positive and 8 negative words; a negator flips the "
        f"words up to {cfg.scope} tokens after it). Mean ± 95% t-interval over "
        f"{len(st.seeds)} seeds; only the score differs ({_protocol_short(cfg)}). Solved: "
        f"accuracy on negated words ≥ {cfg.relevance_threshold}. A context-blind model scores "
        f"{blind:.3f} overall and 0 on negated words; uniform attention would put {uniform:.3f} "
        f"on the negator. Attention mass: mean softmax weight from each negated word to its "
        f"negator, in the layer and head where it is largest.")
    voc = tasks.negation_vocabulary(cfg.vocab)
    md += "\n" + _attention_figure(
        run, st, "negation", neg_maps, ev, ev.negated,
        lambda t: ("N" if t in voc.negators else "+" if t in voc.positive
                   else "−" if t in voc.negative else "·"),
        "Attention weights (rows: queries, columns: keys) on one held-out negation sequence, "
        "first seed, the head with the most mass on negators (the mass is its mean over all "
        "held-out negated words); red circles: the negator each negated word must attend to. "
        "Ticks: N negator, +/− sentiment word, · filler.", "q4_attention_maps")
    md += "\n" + run.table(
        "q4_lookup_table",
        ("score", "accuracy (successor's position)", "attention mass on the successor "
         "(best head)", "solved"),
        [(s, _fmt(*r["accuracy"]), _fmt(*r["attention_mass"]), "yes" if r["solved"] else "no")
         for s, r in look.items()],
        f"Successor lookup (jaxemb.tasks.successor_lookup), held-out: {cfg.eval_size} sequences "
        f"of T={cfg.seq_len} consecutive words of a fixed one-way cycle through "
        f"{cfg.lookup_words} words, in random order; each word whose successor stands earlier "
        f"must output the successor's position. Mean ± 95% t-interval over {len(st.seeds)} "
        f"seeds; only the score differs ({_protocol_short(cfg)}). Solved: accuracy ≥ "
        f"{cfg.relevance_threshold}. Guessing among the earlier positions scores {chance:.3f}; "
        f"uniform attention would put {look_uniform:.3f} on the successor. A symmetric score "
        f"that is largest at the token itself (raw similarity) cannot rank every successor "
        f"above the predecessor and the token itself.")
    md += "\n" + _attention_figure(
        run, st, "lookup", look_maps, lk, lk.loss_mask, str,
        "Attention weights on one held-out successor-lookup sequence, first seed, the head "
        "with the most mass on successors; red circles: the successor each scored word must "
        "attend to. Ticks: word ids (the cycle is fixed; positions are random).",
        "q4_lookup_attention_maps")
    return {"negation": neg, "lookup": look, "lookup_chance": chance}, md


def _protocol_short(cfg: AttentionStudyConfig, lr: float | None = None,
                    steps: int | None = None, batch: int | None = None) -> str:
    return (f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, "
            f"{cfg.steps if steps is None else steps} steps, batch "
            f"{cfg.batch if batch is None else batch}, peak lr {cfg.lr if lr is None else lr:g}")


def _attention_figure(run: Run, st: _Setup, task: str, maps: dict, batch, scored: np.ndarray,
                      tick: Callable[[int], str], caption: str, name: str) -> str:
    ex = st.examples[task]
    T = min(_T_SHOW, st.cfg.seq_len)
    kind = [tick(t) for t in batch.inputs[ex, :T].tolist()]
    cols = min(len(maps), 4)
    fig, axes = plt.subplots(-(-len(maps) // cols), cols, figsize=(3.2 * cols, 3.4 * (
        -(-len(maps) // cols))), squeeze=False)
    rows_t = np.flatnonzero(scored[ex, :T])
    for ax, (score, (w, (layer, head), mass)) in zip(axes.flat, maps.items(), strict=False):
        ax.imshow(np.asarray(w)[:T, :T], cmap="viridis", vmin=0, vmax=1)
        ax.scatter(batch.attend[ex, rows_t], rows_t, s=16, facecolors="none", edgecolors="r")
        ax.set_title(f"{score}\nlayer {layer} head {head}: mass {mass:.2f}", fontsize=8)
        ax.set_xticks(range(T), kind, fontsize=5)
        ax.set_yticks(range(T), kind, fontsize=5)
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    fig.tight_layout()
    return run.figure(fig, name, caption)


def _mqar_section(st: _Setup, res: dict, run: Run) -> tuple[dict, str]:
    cfg = st.cfg
    mask = st.evals["mqar"][1] > 0  # answers are values, never id 0
    widths = sorted(set(cfg.widths))
    acc: dict = {}
    solved_seeds: dict = {}
    for score, r in res.items():
        acc[score], solved_seeds[score] = {}, {}
        for w in widths:
            q = r["mqar"][w]
            vals = [run.log("q4_mqar", score=score, width=w, seed=s,
                            accuracy=float(q["correct"][i][mask].mean()),
                            train_loss=float(q["loss"][i]), seconds=q["seconds"])["accuracy"]
                    for i, s in enumerate(st.seeds)]
            acc[score][w] = ci95(vals)
            solved_seeds[score][w] = sum(v >= cfg.solve_threshold for v in vals)
    smallest = {s: next((w for w in widths if acc[s][w][0] >= cfg.solve_threshold), None)
                for s in acc}
    n = len(st.seeds)
    md = run.table(
        "q4_mqar_table", ("score", *[f"accuracy, width {w} (seeds ≥ {cfg.solve_threshold})"
                                     for w in widths],
                          f"smallest width with mean accuracy ≥ {cfg.solve_threshold}"),
        [(s, *[f"{_fmt(*acc[s][w])} ({solved_seeds[s][w]}/{n})" for w in widths],
          str(smallest[s]) if smallest[s] is not None else f"none ≤ {widths[-1]}")
         for s in acc],
        f"MQAR (Zoology's generator), held-out accuracy at the {cfg.kv_pairs} query positions "
        f"of {cfg.eval_size} sequences, T={cfg.seq_len}, vocabulary {cfg.vocab} (keys and values "
        f"from disjoint halves; fillers {'random' if cfg.mqar_random_fill else 'id 0'}). Mean ± "
        f"95% t-interval over {n} seeds, and how many seeds reached the threshold; only the "
        f"score and width vary (depth {cfg.depth}, {cfg.heads} heads, {cfg.mqar_steps} steps, "
        f"batch {cfg.mqar_batch}, peak lr {cfg.mqar_lr:g}). Answering with a random value of "
        f"the sequence scores 1/{cfg.kv_pairs}: a model that has learned which tokens are values "
        f"but not which key each belongs to sits on that plateau, and leaving it is abrupt and "
        f"seed-dependent, so the seeds column matters as much as the mean.")
    return {"accuracy": acc, "smallest_width": smallest, "solved_seeds": solved_seeds}, md


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


def _raw_sentence(task: str, rel: dict, acc_key: str, what: str) -> str | None:
    """Raw similarity against scaled_dot (or, without it, the best other score) on one task."""
    others = {s: r for s, r in rel.items() if s != "raw"}
    if "raw" not in rel or not others:
        return None
    ref = ("scaled_dot" if "scaled_dot" in others
           else max(others, key=lambda s: others[s][acc_key][0]))
    raw, std = rel["raw"], others[ref]
    verdict = ("failed where learned projections succeeded" if not raw["solved"] and std["solved"]
               else "solved it too" if raw["solved"] else "did not solve it")
    return (f"On {task}, raw similarity (no W_Q, W_K) {verdict}: {_fmt(*raw[acc_key])}, "
            f"{_compare(raw[acc_key], std[acc_key])} {ref} ({_fmt(*std[acc_key])}); its "
            f"attention mass on {what}, {_fmt(*raw['attention_mass'], 2)}, was "
            f"{_compare(raw['attention_mass'], std['attention_mass'])} {ref}'s "
            f"({_fmt(*std['attention_mass'], 2)}).")


def _solved_sentence(task: str, rel: dict, threshold: float, steps: int) -> str:
    solved = [s for s, r in rel.items() if r["solved"]]
    unsolved = [s for s in rel if s not in solved]
    if not solved:
        return f"No score solved {task} (≥ {threshold:.0%}) within {steps} steps."
    return (f"On {task} {', '.join(solved)} reached ≥ {threshold:.0%}"
            + (f"; {', '.join(unsolved)} did not." if unsolved else "."))


def _answer(cfg: AttentionStudyConfig, rel: dict | None, mq: dict | None,
            ch: dict | None) -> str:
    """The short answer; every claim is chosen by comparing the measured numbers."""
    lines = []
    if rel is not None:
        neg_task = "negation scope (a sentiment word must find its negator, a token unlike it)"
        look_task = ("successor lookup (a word must point at its successor in a one-way relation; "
                     f"chance {rel['lookup_chance']:.3f})")
        lines += [_solved_sentence(neg_task + ", accuracy on negated words", rel["negation"],
                                   cfg.relevance_threshold, cfg.steps),
                  _solved_sentence(look_task, rel["lookup"], cfg.relevance_threshold, cfg.steps)]
        lines += [x for x in (
            _raw_sentence("negation scope", rel["negation"], "negated_accuracy", "the negator"),
            _raw_sentence("successor lookup", rel["lookup"], "accuracy", "the successor")) if x]
    if mq is not None:
        lines.append(_mqar_sentence(cfg, mq))
    if ch is not None:
        lines += _char_sentences(ch)
    return " ".join(lines)


def _mqar_sentence(cfg: AttentionStudyConfig, mq: dict) -> str:
    ok = {s: w for s, w in mq["smallest_width"].items() if w is not None}
    if ok:
        never = [s for s in mq["smallest_width"] if s not in ok]
        by_width = {w: [s for s, v in ok.items() if v == w] for w in sorted(set(ok.values()))}
        return (f"MQAR was solved (mean ≥ {cfg.solve_threshold}) "
                + "; ".join(f"from width {w} by {', '.join(ss)}" for w, ss in by_width.items())
                + (f"; not within the grid by {', '.join(never)}" if never else "") + ".")
    best = max(mq["accuracy"], key=lambda s: max(v[0] for v in mq["accuracy"][s].values()))
    top = max(v[0] for v in mq["accuracy"][best].values())
    return (f"No score solved MQAR (mean ≥ {cfg.solve_threshold}) at any width of the grid "
            f"within {cfg.mqar_steps} steps (best: {best}, {top:.3f}; answering with a random "
            f"value of the sequence scores {1 / cfg.kv_pairs:.3f}).")


def _char_sentences(ch: dict) -> list[str]:
    lines = []
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
    return lines


WHY = """\
Why a dot product: after the learned projections, q·k = x_i W_Q W_Kᵀ x_jᵀ is a learned bilinear
form, so *relevance* is learned and need not be *resemblance*: "don't" can score high against
"like" although their embeddings are unlike. The other scores are the same dot product after
other feature maps (jaxemb.scoring): cosine drops the lengths and needs a learned temperature to
express a peaked softmax; −‖q−k‖² = 2q·k − ‖k‖² − ‖q‖², and ‖q‖² cancels in the softmax over keys,
so it is a dot product with a per-key penalty ‖k‖²; the bilinear forms re-parametrise
W_Q W_Kᵀ. Raw similarity (q = k = x) cannot separate relevance from resemblance: a token scores
itself at least as high as any other token of its norm (Cauchy–Schwarz), and its score is
symmetric, so it cannot express a one-way relation ("don't" → "like" but not back): around a
cycle of words the sum of successor scores equals the sum of predecessor scores (the successor
task). MQAR is different: the query is the very token that was stored as a key, so its lookup is
by resemblance. Which of these matter in practice is what the tables above measure."""


def run_attention_study(cfg: AttentionStudyConfig, run: Run, progress) -> dict:
    """Train and evaluate every score on the chosen parts; append the Q4 section to ``run``."""
    cfg = cfg.resolved()
    cfg.validate()
    t0, cpu0 = time.perf_counter(), time.process_time()
    st = _prepare(cfg, progress)
    grid = sorted(set(cfg.widths)) if "mqar" in cfg.parts else []
    main = {"relevance", "char"} & set(cfg.parts)
    what = [*(["negation, successor lookup"] if "relevance" in main else []),
            *(["character LM + lr sweep"] if "char" in main else []),
            *([f"MQAR at widths {grid}"] if grid else [])]
    label = (f"Q4 training: {len(cfg.scores)} scores × ({'; '.join(what)}), {cfg.workers} "
             f"worker thread(s)")
    with progress(label), ThreadPoolExecutor(cfg.workers) as pool:
        # Jobs run concurrently: XLA compiles and executes without the GIL, so on a small CPU
        # the compiles of one job overlap the training of another. One job per model shape and
        # protocol (nothing is compiled twice); the long main-width jobs first, so the pool ends
        # balanced. MQAR runs have their own step count, hence their own compiled steps.
        futures = {pool.submit(_main_runs, st, s): (s, None) for s in cfg.scores if main}
        futures.update({pool.submit(_mqar_run, st, s, w): (s, w) for w in grid
                        for s in cfg.scores})
        done = {}
        for f in tqdm(as_completed(futures), total=len(futures), desc="Q4 runs", leave=False):
            done[futures[f]] = f.result()
    res = {s: {**done.get((s, None), {}), "mqar": {w: done[(s, w)] for w in grid}}
           for s in cfg.scores}
    rel = mq = ch = None
    parts_md = []
    if "relevance" in cfg.parts:
        rel, md = _relevance_section(st, res, run)
        parts_md.append("Relevance: negation scope and a one-way relation\n\n" + md)
    if "mqar" in cfg.parts:
        mq, md = _mqar_section(st, res, run)
        parts_md.append("Multi-query associative recall\n\n" + md)
    if "char" in cfg.parts:
        ch, md = _char_section(st, res, run)
        parts_md.append("Character LM, learning-rate sensitivity, logit growth\n\n" + md)
    answer = _answer(cfg, rel, mq, ch)
    seconds = time.perf_counter() - t0
    run.log("q4_summary", answer=answer, seconds=seconds, devices=st.mesh.size,
            cpu_seconds=time.process_time() - cpu0)
    body = "".join(f"### Q4.{i} {md}\n" for i, md in enumerate(parts_md, 1))
    run.add(
        "## Q4. Attention: why a dot product as relevance, and not cosine, subtraction or raw "
        "similarity?\n\n"
        f"Protocol, the same for every score: a causal pre-LN transformer (jaxemb.transformer; "
        f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, learned positions, T = "
        f"{cfg.seq_len}); AdamW (β = 0.9, 0.95, ε = 1e-8, weight decay {cfg.weight_decay:g} on "
        f"matrices), gradient clipping at {cfg.clip:g}, linear warmup over {cfg.warmup:.0%} of "
        f"{cfg.steps} steps to the peak lr {cfg.lr:g}, then cosine decay to 0.1 × peak; batch "
        f"{cfg.batch} sharded over {st.mesh.size} device(s) (MQAR: its own widths, steps, batch "
        f"and lr, stated with its table); {cfg.seeds} seeds (init and data keys) trained "
        f"together with jax.vmap; fresh training data at every step, held-out data from a "
        f"separate key. Scores: {', '.join(cfg.scores)} (jaxemb.attention). Parts: "
        f"{', '.join(cfg.parts)}. {seconds:.0f} s on this machine.\n\n"
        + body + f"### Q4.{len(parts_md) + 1} Answer\n\n" + WHY + "\n\n**Measured:** "
        + answer + "\n")
    return {"relevance": rel, "mqar": mq, "char": ch, "answer": answer, "seconds": seconds}
