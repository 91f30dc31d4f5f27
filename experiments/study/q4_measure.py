"""Q4's measurement: data, the training jobs and their reduction to JSON results.

Several seeds (and learning rates) are members of one ``jax.vmap``-ed train step
(jaxemb.attention_train), jitted once per model shape and protocol with the state donated,
on a ``jax.sharding.Mesh`` over all devices with the batch axis sharded (params replicated). The
jobs (one per score at the main width, one per score and MQAR width) run in a thread pool: XLA
compiles and executes without the GIL, so on a small CPU one job's compiles overlap another's
training.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxemb import tasks
from jaxemb.attention_train import (
    TASK_IDS,
    Protocol,
    make_evaluate,
    make_mesh,
    make_train_step,
    member_stream,
    train,
)
from jaxemb.engine import concurrent_workers, run_jobs
from jaxemb.transformer import Transformer

T_SHOW = 24  # positions shown in the attention-map figure


def relevance_tasks(cfg) -> tuple[str, ...]:
    """The main width's relevance tasks: negation scope and successor lookup (part relevance),
    and the negator at a random distance (part far, which needs relevance)."""
    return ("negation", "lookup") + (("negation_far",) if "far" in cfg.parts else ())


def control_tasks(cfg) -> tuple[str, ...]:
    """The tasks of the symmetric control: successor lookup, and with part far the negator at
    a random distance."""
    return ("lookup",) + (("negation_far",) if "far" in cfg.parts else ())


@dataclasses.dataclass
class _Setup:
    """Everything the runs share: data streams, held-out sets, and the compiled functions (one
    train step per model shape and protocol, one evaluator per shape; the tasks share a shape)."""

    cfg: Any                # AttentionStudyConfig, resolved and validated
    mesh: Mesh
    seeds: list[int]
    streams: dict           # task -> seed -> {inputs, targets, mask} [steps, B, T]
    evals: dict             # task -> (inputs, targets, attend) [E, T]
    heldout: dict           # task -> the held-out batch (NegationBatch, LookupBatch)
    examples: dict          # task -> the held-out sequence whose attention maps are plotted
    char: tasks.CharData | None  # None: the part does not run
    sweep: list[list[tuple[int, float]]]  # learning-rate sweep members in runs of len(seeds)
    fns: dict = dataclasses.field(default_factory=dict)

    def data(self, task: str, seeds: Sequence[int]) -> dict:
        per = [self.streams[task][s] for s in seeds]
        return {k: np.stack([p[k] for p in per], axis=1) for k in per[0]}

    def functions(self, score: str, width: int, protocol: Protocol, depth: int | None = None
                  ) -> tuple[Transformer, dict]:
        tc = self.cfg.model(score, width, depth)
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


def _eval_key(cfg, task: str) -> jax.Array:
    # Held-out data: a key no member's training stream uses (members use split(key(s), 3)[1]).
    return jax.random.fold_in(jax.random.key(cfg.seed), 1_000 + TASK_IDS[task])


def _batch_dict(b) -> dict:
    return {"inputs": b.inputs, "targets": b.targets, "mask": b.loss_mask}


def _relevance_data(cfg, makers: dict, evals: dict, heldout: dict, examples: dict) -> None:
    """Negation scope (part relevance), successor lookup (parts relevance and control) and the
    negator at a random distance (part far)."""
    T, E, V = cfg.seq_len, cfg.eval_size, cfg.vocab
    steps, batch = cfg.protocol.steps, cfg.batch

    def negation(key, n):
        return _batch_dict(tasks.negation_scope(key, n, T, V, scope=cfg.scope))

    def lookup(key, n):
        return _batch_dict(tasks.successor_lookup(key, n, T, cfg.lookup_words))

    def negation_far(key, n):
        return _batch_dict(tasks.negation_distance(key, n, T, V))

    if "far" in cfg.parts:
        makers["negation_far"] = (negation_far, steps, batch)
        far = tasks.negation_distance(_eval_key(cfg, "negation_far"), E, T, V)
        evals["negation_far"] = (far.inputs, far.targets, far.attend)
        heldout["negation_far"] = far
    makers["lookup"] = (lookup, steps, batch)
    lk = tasks.successor_lookup(_eval_key(cfg, "lookup"), E, T, cfg.lookup_words)
    evals["lookup"] = (lk.inputs, lk.targets, lk.attend)
    heldout["lookup"] = lk
    examples["lookup"] = int(np.argmax(lk.loss_mask[:, :T_SHOW].sum(1)))
    if "relevance" not in cfg.parts:
        return
    makers["negation"] = (negation, steps, batch)
    ev = tasks.negation_scope(_eval_key(cfg, "negation"), E, T, V, scope=cfg.scope)
    evals["negation"] = (ev.inputs, ev.targets, ev.attend)
    heldout["negation"] = ev
    examples["negation"] = int(np.argmax(ev.negated[:, :T_SHOW].sum(1)))


def _mqar_data(cfg, makers: dict, evals: dict, none: np.ndarray) -> None:
    T, V = cfg.seq_len, cfg.vocab

    def mqar(key, n):
        x, y, m = tasks.mqar(key, n, T, cfg.kv_pairs, V, random_non_queries=cfg.mqar_random_fill)
        return {"inputs": x, "targets": y, "mask": m}

    makers["mqar"] = (mqar, cfg.mqar_steps, cfg.mqar_batch)
    mx, my, _ = tasks.mqar(_eval_key(cfg, "mqar"), cfg.eval_size, T, cfg.kv_pairs, V,
                           random_non_queries=cfg.mqar_random_fill)
    evals["mqar"] = (mx, my, none)


def _char_data(cfg, makers: dict, evals: dict, none: np.ndarray) -> tasks.CharData:
    cd = tasks.char_data(max_chars=cfg.char_max_chars)

    def char(key, n):
        x, y = cd.windows(key, n, cfg.seq_len)
        return {"inputs": x, "targets": y, "mask": np.ones_like(x, bool)}

    makers["char"] = (char, cfg.protocol.steps, cfg.batch)
    evals["char"] = (*cd.tiles(cfg.eval_size, cfg.seq_len), none)
    return cd


def prepare(cfg, progress) -> _Setup:
    """Training streams and held-out sets of the tasks that ``cfg.parts`` runs (only those)."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    none = np.full((cfg.eval_size, cfg.seq_len), -1, np.int32)  # no position to attend to
    makers, evals, heldout, examples = {}, {}, {}, {}  # task -> (make, steps, batch), ...
    cd = None
    with progress(f"Q4 data for {', '.join(cfg.parts)}"):
        if {"relevance", "control"} & set(cfg.parts):
            _relevance_data(cfg, makers, evals, heldout, examples)
        if "mqar" in cfg.parts:
            _mqar_data(cfg, makers, evals, none)
        if "char" in cfg.parts:
            cd = _char_data(cfg, makers, evals, none)
        streams = {task: {s: member_stream(make, s, task, steps, batch) for s in seeds}
                   for task, (make, steps, batch) in makers.items()}
    sweep = [(seeds[0], lr) for lr in cfg.lrs if not math.isclose(lr, cfg.lr)]
    # Runs of len(seeds) members (the last padded with its own last member) so every run has
    # the same shape as the main runs and reuses their compiled step.
    runs = [sweep[i: i + len(seeds)] for i in range(0, len(sweep), len(seeds))]
    runs = [r + [r[-1]] * (len(seeds) - len(r)) for r in runs]
    return _Setup(cfg, make_mesh(), seeds, streams, evals, heldout, examples, cd, runs)


# --- the jobs ------------------------------------------------------------------------------

def _mqar_run(st: _Setup, score: str, width: int) -> dict:
    cfg, seeds, t0 = st.cfg, st.seeds, time.perf_counter()
    model, fns = st.functions(score, width, cfg.mqar_protocol)
    tr = train(model, cfg.mqar_protocol, st.mesh, fns["step"], seeds,
               [cfg.mqar_lr] * len(seeds), st.data("mqar", seeds), log_every=cfg.log_every,
               label=f"mqar/w{width}/{score}")
    e = st.evaluate(fns, "mqar", tr.params, ("correct",))
    return {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds,
            "job_seconds": time.perf_counter() - t0}


def _relevance_run(st: _Setup, task: str, score: str, model, fns: dict, label: str) -> dict:
    cfg, seeds = st.cfg, st.seeds
    tr = train(model, cfg.protocol, st.mesh, fns["step"], seeds, [cfg.lr] * len(seeds),
               st.data(task, seeds), log_every=cfg.log_every, label=label)
    e = st.evaluate(fns, task, tr.params, ("correct", "mass", "maps"))
    return {**e, "loss": tr.history[-1]["loss"], "seconds": tr.seconds}


def _main_runs(st: _Setup, score: str) -> dict:
    """The runs of one score at the main width (one compiled step): negation, successor
    lookup, the character LM and its learning-rate sweep; ``job_seconds`` per part (the
    first part's includes the step's compilation)."""
    cfg, t0 = st.cfg, time.perf_counter()
    model, fns = st.functions(score, cfg.width, cfg.protocol)
    out: dict = {"job_seconds": {}}
    if "relevance" in cfg.parts:
        for task in relevance_tasks(cfg):
            out[task] = _relevance_run(st, task, score, model, fns, f"{task}/{score}")
        out["job_seconds"]["relevance"] = time.perf_counter() - t0
    if "char" in cfg.parts:
        t1 = time.perf_counter()
        out["char"] = _char_runs(st, score, model, fns)
        out["job_seconds"]["char"] = time.perf_counter() - t1
    return out


def _control_run(st: _Setup, score: str, depth: int) -> dict:
    """The control's tasks with ``score`` at ``depth`` blocks (one compiled step)."""
    t0 = time.perf_counter()
    model, fns = st.functions(score, st.cfg.width, st.cfg.protocol, depth)
    out = {task: _relevance_run(st, task, score, model, fns, f"{task}/depth{depth}/{score}")
           for task in control_tasks(st.cfg)}
    return {**out, "job_seconds": time.perf_counter() - t0}


def control_jobs(cfg) -> list[tuple[str, int]]:
    """The (score, depth) runs of the control grid that the main runs do not already make
    (with part relevance, every --scores score at --depth runs successor lookup there)."""
    shared = set(cfg.scores) if "relevance" in cfg.parts else set()
    return [(s, d) for d in cfg.control_depths for s in cfg.control_scores
            if not (d == cfg.depth and s in shared)]


def _char_runs(st: _Setup, score: str, model: Transformer, fns: dict) -> list[dict]:
    """The character LM at the main lr (every seed), then the sweep's runs; one member record
    per (seed, lr), with the logit probe at each log point."""
    cfg, M = st.cfg, len(st.seeds)
    members: list[dict] = []

    def probe(params):
        return st.evaluate(fns, "char", params, ("max_abs_logit", "max_logit_range"))

    for r, run in enumerate([[(s, cfg.lr) for s in st.seeds], *st.sweep]):
        tr = train(model, cfg.protocol, st.mesh, fns["step"], [m[0] for m in run],
                   [m[1] for m in run], st.data("char", [m[0] for m in run]),
                   log_every=cfg.log_every, label=f"char/{score}/run{r}", probe=probe,
                   may_diverge=[r > 0] * M)
        ce = st.evaluate(fns, "char", tr.params, ("ce",))["ce"]
        bits = ce.reshape(M, -1).mean(1) / math.log(2)
        for i, (s, lr) in enumerate(run):
            if r > 0 and any(m["seed"] == s and m["lr"] == lr for m in members):
                continue  # padding
            bad = int(tr.first_bad[i])
            members.append({
                "seed": s, "lr": lr, "sweep": r > 0,
                "bits_per_char": float(bits[i]) if bad < 0 else None, "diverged_at": bad,
                "seconds": tr.seconds, "steps": [h["step"] for h in tr.history],
                "max_abs_logit": [float(h["max_abs_logit"][i]) for h in tr.history],
                "max_logit_range": [float(h["max_logit_range"][i]) for h in tr.history]})
    return members


# --- reduction to JSON ---------------------------------------------------------------------

def _seed_rows(st: _Setup, r: dict, scored: np.ndarray, **extra_masks: np.ndarray
               ) -> list[dict]:
    """One row per seed: accuracy on ``scored`` (and on each extra mask), the largest mean
    attention mass on the position that must be attended to and where it is (layer, head), and
    the mass per layer averaged over heads (``layer_mass`` [L]: no choice of head inflates it)."""
    rows = []
    for i, s in enumerate(st.seeds):
        best = np.unravel_index(int(np.argmax(r["mass"][i])), r["mass"][i].shape)
        rows.append({
            "seed": s, "accuracy": float(r["correct"][i][scored].mean()),
            **{k: float(r["correct"][i][m].mean()) for k, m in extra_masks.items()},
            "attention_mass": float(r["mass"][i][best]), "best_layer": int(best[0]),
            "best_head": int(best[1]),
            "layer_mass": [float(x) for x in np.asarray(r["mass"][i]).mean(-1)],
            "train_loss": float(r["loss"][i]),
            "seconds": r["seconds"]})
    return rows


def _example(st: _Setup, task: str, scored: np.ndarray, tick: Callable[[int], str]) -> dict:
    """The plotted held-out sequence: tick labels, the position each token must attend to, and
    the rows that are scored (first ``T_SHOW`` positions)."""
    b, ex, T = st.heldout[task], st.examples[task], min(T_SHOW, st.cfg.seq_len)
    return {"ticks": [tick(t) for t in b.inputs[ex, :T].tolist()],
            "attend": b.attend[ex, :T].tolist(),
            "scored": np.flatnonzero(scored[ex, :T]).tolist()}


def _map(r: dict, row: dict, T: int) -> list:
    """The first seed's attention weights in the head its row names, [T, T]."""
    return np.asarray(r["maps"][0][row["best_layer"], row["best_head"]])[:T, :T].tolist()


def _relevance_results(st: _Setup, res: dict) -> dict:
    ev, lk = st.heldout["negation"], st.heldout["lookup"]
    negated, plain = ev.negated, ev.loss_mask & ~ev.negated
    T = min(T_SHOW, st.cfg.seq_len)
    far = st.heldout.get("negation_far")  # part far only
    out = {"negation": {}, "lookup": {}, "maps": {"negation": {}, "lookup": {}}}
    for score in st.cfg.scores:
        r = res[score]
        if far is not None:
            out.setdefault("negation_far", {})[score] = _seed_rows(
                st, r["negation_far"], far.loss_mask, negated_accuracy=far.negated,
                plain_accuracy=far.loss_mask & ~far.negated)
        out["negation"][score] = rows = _seed_rows(st, r["negation"], ev.loss_mask,
                                                   negated_accuracy=negated,
                                                   plain_accuracy=plain)
        out["maps"]["negation"][score] = _map(r["negation"], rows[0], T)
        out["lookup"][score] = rows = _seed_rows(st, r["lookup"], lk.loss_mask)
        out["maps"]["lookup"][score] = _map(r["lookup"], rows[0], T)
    # Baselines from the held-out data: a context-blind model predicts each word's own polarity;
    # uniform causal attention puts 1/(t+1) on each token up to t.
    out["baselines"] = {
        "context_blind_accuracy": float(1.0 - negated.sum() / ev.loss_mask.sum()),
        "uniform_attention": float(np.mean(1.0 / (np.nonzero(negated)[1] + 1))),
        "lookup_chance": tasks.successor_lookup_chance(lk.loss_mask),
        "lookup_uniform_attention": float(np.mean(1.0 / (np.nonzero(lk.loss_mask)[1] + 1)))}
    if far is not None:
        out["baselines"] |= {
            "far_context_blind_accuracy": float(1.0 - far.negated.sum() / far.loss_mask.sum()),
            "far_uniform_attention": float(np.mean(1.0 / (np.nonzero(far.negated)[1] + 1)))}
    voc = tasks.negation_vocabulary(st.cfg.vocab)
    out["examples"] = {
        "negation": _example(st, "negation", ev.negated, lambda t: (
            "N" if t in voc.negators else "+" if t in voc.positive
            else "−" if t in voc.negative else "·")),
        "lookup": _example(st, "lookup", lk.loss_mask, str)}
    return out


def _control_results(st: _Setup, res: dict, done: dict) -> dict:
    """{task: {depth (str): {score: seed rows}}} for each of :func:`control_tasks`, and
    ``lookup_chance``: the control grid, main runs reused where they are the same run."""
    cfg, lk, far = st.cfg, st.heldout["lookup"], st.heldout.get("negation_far")
    masks = {"lookup": (lk.loss_mask, {})}
    if far is not None:
        masks["negation_far"] = (far.loss_mask, {"negated_accuracy": far.negated,
                                                 "plain_accuracy": far.loss_mask & ~far.negated})
    out: dict = {"lookup_chance": tasks.successor_lookup_chance(lk.loss_mask)}
    for task in control_tasks(cfg):
        scored, extra = masks[task]
        for d in cfg.control_depths:
            for s in cfg.control_scores:
                r = (done.get(("control", s, d)) or res[s])[task]
                out.setdefault(task, {}).setdefault(str(d), {})[s] = _seed_rows(
                    st, r, scored, **extra)
    return out


def _mqar_results(st: _Setup, res: dict) -> dict:
    mask = st.evals["mqar"][1] > 0  # answers are values, never id 0
    return {score: {str(w): [{"seed": s, "accuracy": float(q["correct"][i][mask].mean()),
                              "train_loss": float(q["loss"][i]), "seconds": q["seconds"]}
                             for i, s in enumerate(st.seeds)]
                    for w, q in sorted(r["mqar"].items())}
            for score, r in res.items() if r["mqar"]}


def measure(cfg, progress) -> dict:
    """Train and evaluate every score of ``cfg`` (resolved, validated) on its parts; the
    :class:`~experiments.study.q4.Results` fields other than the config."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    st = prepare(cfg, progress)
    grid = sorted(set(cfg.widths)) if "mqar" in cfg.parts else []
    main = {"relevance", "char"} & set(cfg.parts)
    what = [*(["negation, successor lookup"] if "relevance" in main else []),
            *(["character LM + lr sweep"] if "char" in main else []),
            *([f"MQAR at widths {grid}"] if grid else [])]
    # One job per model shape and protocol (nothing is compiled twice); the long main-width
    # jobs first, so the pool ends balanced. MQAR runs have their own step count, hence their
    # own compiled steps.
    controls = control_jobs(cfg) if "control" in cfg.parts else []
    if controls:
        what.append(f"successor lookup, control grid {controls}")
    jobs = {(s, None): (lambda s=s: _main_runs(st, s)) for s in cfg.scores if main}
    jobs |= {("control", s, d): (lambda s=s, d=d: _control_run(st, s, d)) for s, d in controls}
    jobs |= {(s, w): (lambda s=s, w=w: _mqar_run(st, s, w))
             for w in grid for s in cfg.mqar_scores_resolved}
    workers = concurrent_workers(cfg.workers, st.mesh.size)
    with progress(f"Q4 training: {len(cfg.scores)} scores × ({'; '.join(what)}), "
                  f"{workers} worker thread(s)"):
        done = run_jobs(jobs, workers, "Q4 runs")
    mq = cfg.mqar_scores_resolved if grid else ()
    res = {s: {**done.get((s, None), {}), "mqar": {w: done[(s, w)] for w in grid}}
           for s in dict.fromkeys((*cfg.scores, *mq))}
    # Thread-seconds per part (each job timed in its own thread, compilation included; the
    # jobs overlap in --workers threads, so these add up to more than the wall time).
    part_seconds: dict = {}
    for key, r in done.items():
        part = "control" if key[0] == "control" else None if key[1] is None else "mqar"
        per = r["job_seconds"] if part is None else {part: r["job_seconds"]}  # main: per part
        for p, sec in per.items():
            part_seconds[p] = part_seconds.get(p, 0.0) + sec
    char = None
    if st.char is not None:
        char = {"vocab": st.char.vocab_size,
                "chars": int(st.char.train.size + st.char.validation.size),
                "members": {s: res[s]["char"] for s in cfg.scores}}
    return {"seeds": st.seeds, "devices": st.mesh.size,
            "relevance": _relevance_results(st, res) if "relevance" in cfg.parts else None,
            "control": _control_results(st, res, done) if "control" in cfg.parts else None,
            "part_seconds": part_seconds,
            "mqar": _mqar_results(st, res) if grid else None, "char": char,
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}
