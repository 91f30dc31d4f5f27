"""Q4's section: tables and figures, from the results only (no training); the words are in
:mod:`experiments.study.q4_answer`.

Every table cell is ``jaxemb.stats.format_interval`` of the per-seed values the section also
logs to ``metrics.jsonl``; every comparison in the answer is ``jaxemb.stats.compare`` (paired
over the shared seeds: the one decision rule).
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text  # noqa: E402
from experiments.study.q4_answer import (  # noqa: E402
    BACKGROUND,
    CONTROL_TASKS,
    answer,
    avg,
    fmt,
    lr_sensitivity,
    lr_sweeps,
    smallest_widths,
    vals,
)
from jaxemb import stats  # noqa: E402


def _protocol_short(cfg) -> str:
    return (f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, {cfg.protocol.steps} "
            f"steps, batch {cfg.batch}, peak lr {cfg.lr:g}")


# --- relevance -----------------------------------------------------------------------------

def _relevance(results, cfg, run: Run) -> str:
    rel, n = results.relevance, len(results.seeds)
    for score in rel["negation"]:
        for row in rel["negation"][score]:
            run.log("q4_relevance", score=score, **row)
        for row in rel["lookup"][score]:
            run.log("q4_lookup", score=score, **row)
    base = rel["baselines"]
    run.log("q4_relevance_baselines", **base)
    thr = cfg.relevance_threshold

    def solved(rows, key):
        return "yes" if avg(rows, key) >= thr else "no"

    md = run.table(
        "q4_relevance_table",
        ("score", "accuracy (all sentiment words)", "on negated words", "on other words",
         "attention mass on the negator (best head)", "per layer, mean over heads", "solved"),
        [(s, fmt(r, "accuracy"), fmt(r, "negated_accuracy"), fmt(r, "plain_accuracy"),
          fmt(r, "attention_mass"), _layer_mass(r), solved(r, "negated_accuracy"))
         for s, r in rel["negation"].items()],
        f"Negation scope, held-out: {cfg.eval_size} sequences of T={cfg.seq_len} (vocabulary "
        f"{cfg.vocab}: fillers, 4 negators, 8 positive and 8 negative words; a negator flips the "
        f"words up to {cfg.scope} tokens after it). Mean ± 95% t-interval over {n} seeds; only "
        f"the score differs ({_protocol_short(cfg)}). Solved: accuracy on negated words ≥ "
        f"{thr}. A context-blind model scores {base['context_blind_accuracy']:.3f} overall and "
        f"0 on negated words; uniform attention would put {base['uniform_attention']:.3f} on the "
        f"negator. Attention mass: mean softmax weight from each negated word to its negator, "
        f"in the layer and head where it is largest (a maximum over layers × heads per seed, "
        f"larger by construction), and per layer averaged over heads (layer 0 / 1 / …).")
    md += "\n" + _attention_figure(
        run, rel, "negation",
        "Attention weights (rows: queries, columns: keys) on one held-out negation sequence, "
        "first seed, the head with the most mass on negators (the mass is its mean over all "
        "held-out negated words); red circles: the negator each negated word must attend to. "
        "Ticks: N negator, +/− sentiment word, · filler.", "q4_attention_maps")
    md += "\n" + run.table(
        "q4_lookup_table",
        ("score", "accuracy (successor's position)", "attention mass on the successor "
         "(best head)", "per layer, mean over heads", "solved"),
        [(s, fmt(r, "accuracy"), fmt(r, "attention_mass"), _layer_mass(r),
          solved(r, "accuracy")) for s, r in rel["lookup"].items()],
        f"Successor lookup (jaxemb.tasks.successor_lookup), held-out: {cfg.eval_size} sequences "
        f"of T={cfg.seq_len} consecutive words of a fixed one-way cycle through "
        f"{cfg.lookup_words} words, in random order; each word whose successor stands earlier "
        f"must output the successor's position. Mean ± 95% t-interval over {n} seeds; only the "
        f"score differs ({_protocol_short(cfg)}). Solved: accuracy ≥ {thr}. Guessing among the "
        f"earlier positions scores {base['lookup_chance']:.3f}; uniform attention would put "
        f"{base['lookup_uniform_attention']:.3f} on the successor. Background: within one "
        f"layer a symmetric score cannot rank every successor above the predecessor; the "
        f"control below measures it.")
    md += "\n" + _attention_figure(
        run, rel, "lookup",
        "Attention weights on one held-out successor-lookup sequence, first seed, the head "
        "with the most mass on successors; red circles: the successor each scored word must "
        "attend to. Ticks: word ids (the cycle is fixed; positions are random).",
        "q4_lookup_attention_maps")
    if rel.get("negation_far"):
        md += "\n" + _far_table(rel, cfg, run)
    return md


def _far_table(rel: dict, cfg, run: Run) -> str:
    base, thr, far = rel["baselines"], cfg.relevance_threshold, rel["negation_far"]
    for score, rows in far.items():
        for row in rows:
            run.log("q4_negation_far", score=score, **row)
    return run.table(
        "q4_negation_far_table",
        ("score", "accuracy", "on negated words", "on other words",
         "attention mass on the negator (best head)", "per layer, mean over heads", "solved"),
        [(s, fmt(r, "accuracy"), fmt(r, "negated_accuracy"), fmt(r, "plain_accuracy"),
          fmt(r, "attention_mass"), _layer_mass(r),
          "yes" if avg(r, "negated_accuracy") >= thr else "no") for s, r in far.items()],
        f"The negator at a random distance (jaxemb.tasks.negation_distance), held-out: "
        f"{cfg.eval_size} sequences of T={cfg.seq_len}, one scored sentiment word at the end; "
        f"in about half of them one negator anywhere before it (uniform position, so position "
        f"cannot say whether it is there), the other positions fillers or unscored sentiment "
        f"words (distractors that resemble the scored word). Mean ± 95% t-interval over "
        f"{len(next(iter(far.values())))} seeds; only the score differs "
        f"({_protocol_short(cfg)}). Solved: accuracy on negated words ≥ {thr}. A "
        f"context-blind model scores {base['far_context_blind_accuracy']:.3f} overall and 0 "
        f"on negated words; uniform attention would put {base['far_uniform_attention']:.3f} on "
        f"the negator. Attention mass as in the negation table: best head (a maximum over "
        f"layers × heads) and per layer averaged over heads.")


def _attention_figure(run: Run, rel: dict, task: str, caption: str, name: str) -> str:
    ex, maps = rel["examples"][task], rel["maps"][task]
    first = {s: rows[0] for s, rows in rel[task].items()}
    T, rows_t = len(ex["ticks"]), np.asarray(ex["scored"], int)
    cols = min(len(maps), 4)
    fig, axes = plt.subplots(-(-len(maps) // cols), cols, figsize=(3.2 * cols, 3.4 * (
        -(-len(maps) // cols))), squeeze=False)
    for ax, (score, w) in zip(axes.flat, maps.items(), strict=False):
        row = first[score]
        ax.imshow(np.asarray(w, np.float32)[:T, :T], cmap="viridis", vmin=0, vmax=1)
        ax.scatter(np.asarray(ex["attend"])[rows_t], rows_t, s=16, facecolors="none",
                   edgecolors="r")
        ax.set_title(f"{score}\nlayer {row['best_layer']} head {row['best_head']}: mass "
                     f"{row['attention_mass']:.2f}", fontsize=8)
        ax.set_xticks(range(T), ex["ticks"], fontsize=5)
        ax.set_yticks(range(T), ex["ticks"], fontsize=5)
    for ax in axes.flat[len(maps):]:
        ax.axis("off")
    fig.tight_layout()
    return run.figure(fig, name, caption)


# --- the symmetric control ----------------------------------------------------------------

CONTROL_LABELS = {"scaled_dot": "scaled_dot (W_Q ≠ W_K: asymmetric)",
                  "tied_qk": "tied_qk (W_Q = W_K: learned, symmetric)",
                  "raw": "raw (no W_Q, W_K: symmetric)"}


def _layer_mass(rows: list[dict]) -> str:
    """Per layer, the mass on the target averaged over heads: mean ± 95% over seeds."""
    L = len(rows[0]["layer_mass"])
    return " / ".join(stats.format_interval([r["layer_mass"][layer] for r in rows], 2)
                      for layer in range(L))




def _control(results, cfg, run: Run) -> str:
    ctl, n, thr = results.control, len(results.seeds), cfg.relevance_threshold
    md = []
    for task, (name, key, target) in CONTROL_TASKS.items():
        if task not in ctl:
            continue
        by_depth = sorted(ctl[task].items(), key=lambda x: int(x[0]))
        for depth, by_score in by_depth:
            for score, rows in by_score.items():
                for row in rows:
                    run.log("q4_control", task=task, depth=int(depth), score=score, **row)
        neg = key == "negated_accuracy"
        md.append(run.table(
            f"q4_control_{task}_table",
            ("blocks", "score", "accuracy", *(("on negated words",) if neg else ()),
             f"mass on {target} per layer, mean over heads (layer 0 / 1 / …)",
             "mass, best layer and head", "solved"),
            [(depth, CONTROL_LABELS.get(s, s), fmt(r, "accuracy"),
              *((fmt(r, key),) if neg else ()), _layer_mass(r), fmt(r, "attention_mass"),
              "yes" if avg(r, key) >= thr else "no")
             for depth, by_score in by_depth for s, r in by_score.items()],
            f"The symmetric control on {name} (same data, held-out set and protocol as its "
            f"table above; {_protocol_short(cfg)}; only the score and the number of blocks "
            f"vary). tied_qk projects queries and keys with one learned W (W_Q = W_K), so "
            f"score(x_i, x_j) = score(x_j, x_i); the scaled dot's W_Q and W_K are separate. "
            f"Mean ± 95% t-interval over {n} seeds; solved: "
            f"{'accuracy on negated words' if neg else 'accuracy'} ≥ {thr}"
            + (f"; guessing among the earlier positions scores {ctl['lookup_chance']:.3f}"
               if task == "lookup" else "") +
            f". Per-layer mass: the mean softmax weight from each scored word to {target}, "
            f"averaged over heads (no head chosen after the fact); the best-head column is the "
            f"maximum over layers × heads, larger by construction. Rows at {cfg.depth} blocks "
            f"for scores of the main tables are the same runs."))
    return "\n".join(md)


# --- MQAR ----------------------------------------------------------------------------------


def _mqar(results, cfg, run: Run) -> str:
    thr, n = cfg.solve_threshold, len(results.seeds)
    widths = sorted({int(w) for by_w in results.mqar.values() for w in by_w})
    for score, by_w in results.mqar.items():
        for w in widths:
            for row in by_w[str(w)]:
                run.log("q4_mqar", score=score, width=w, **row)
    smallest = smallest_widths(results.mqar, thr)

    def cell(rows):
        k = sum(a >= thr for a in vals(rows, "accuracy"))
        return f"{fmt(rows, 'accuracy')} ({k}/{n})"

    return run.table(
        "q4_mqar_table", ("score", *[f"accuracy, width {w} (seeds ≥ {thr})" for w in widths],
                          f"smallest width with mean accuracy ≥ {thr}"),
        [(s, *[cell(by_w[str(w)]) for w in widths],
          str(smallest[s]) if smallest[s] is not None else f"none ≤ {widths[-1]}")
         for s, by_w in results.mqar.items()],
        f"MQAR (Zoology's generator), held-out accuracy at the {cfg.kv_pairs} query positions "
        f"of {cfg.eval_size} sequences, T={cfg.seq_len}, vocabulary {cfg.vocab} (keys and values "
        f"from disjoint halves; fillers {'random' if cfg.mqar_random_fill else 'id 0'}). Mean ± "
        f"95% t-interval over {n} seeds, and how many seeds reached the threshold; only the "
        f"score and width vary (depth {cfg.depth}, {cfg.heads} heads, {cfg.mqar_steps} steps, "
        f"batch {cfg.mqar_batch}, peak lr {cfg.mqar_lr:g}). Answering with a random value of "
        f"the sequence scores 1/{cfg.kv_pairs}: a model that has learned which tokens are values "
        f"but not which key each belongs to sits on that plateau, and leaving it is abrupt and "
        f"seed-dependent, so the seeds column matters as much as the mean.")


# --- character LM --------------------------------------------------------------------------


def _curves(members: dict, first_seed: int) -> dict:
    """Per score: the logit probe of the main runs (mean over seeds) and of the first seed's
    run at the largest lr."""
    curves = {}
    for score, ms in members.items():
        base = [m for m in ms if not m["sweep"]]
        top = max((m for m in ms if m["seed"] == first_seed), key=lambda m: m["lr"])
        curves[score] = {"steps": base[0]["steps"],
                         "base": np.mean([m["max_abs_logit"] for m in base], axis=0),
                         "base_range": float(np.mean([m["max_logit_range"][-1] for m in base])),
                         "top": np.asarray(top["max_abs_logit"]), "top_lr": top["lr"],
                         "top_range": top["max_logit_range"][-1]}
    return curves


def _log_char(members: dict, run: Run) -> None:
    for score, ms in members.items():
        for m in ms:
            bad = m["diverged_at"]
            run.log("q4_char", score=score, seed=m["seed"], lr=m["lr"],
                    bits_per_char=m["bits_per_char"] if bad < 0 else None,
                    diverged_at=bad if bad >= 0 else None,
                    final_max_abs_logit=m["max_abs_logit"][-1],
                    final_max_logit_range=m["max_logit_range"][-1], seconds=m["seconds"])


def _char(results, cfg, run: Run) -> str:
    ch, seeds = results.char, results.seeds
    members = ch["members"]
    _log_char(members, run)
    cap = math.log2(cfg.vocab)  # ≈ the loss at initialisation: near-uniform over the outputs
    md = run.table(
        "q4_char_table", ("score", "held-out bits per character"),
        [(s, stats.format_interval([m["bits_per_char"] for m in ms if not m["sweep"]]))
         for s, ms in members.items()],
        f"Character LM on the first {ch['chars']} characters of gensim's Wikipedia sample "
        f"({ch['vocab']} symbols; the last 10% held out), bits per character over "
        f"{cfg.eval_size} evenly spaced held-out windows of T={cfg.seq_len}. Mean ± 95% "
        f"t-interval over {len(seeds)} seeds; only the score differs ({_protocol_short(cfg)}; "
        f"the output layer has the {cfg.vocab} ids of the shared model shape, {ch['vocab']} "
        f"used). A uniform guess over the 29 symbols is {math.log2(ch['vocab']):.2f} bits.")
    sweeps = lr_sweeps(members, seeds[0])
    sens = lr_sensitivity(sweeps, cap)
    lrs = sorted({lr for v in sweeps.values() for lr in v})

    def cell(v):
        return f"diverged (step {v[1]})" if v[1] >= 0 else f"{v[0]:.3f}"

    md += "\n" + run.table(
        "q4_lr_table", ("score", *[f"lr {lr:g}" for lr in lrs], "LR sensitivity (bits)"),
        [(s, *[cell(sweeps[s][lr]) for lr in lrs], f"{sens[s]:.3f}") for s in sweeps],
        f"Held-out bits per character after {cfg.protocol.steps} steps at each peak learning "
        f"rate (seed {seeds[0]}: the same init and data at every lr; the protocol's warmup and "
        f"decay scale with the peak). LR sensitivity (Wortsman et al. 2023): the mean over the "
        f"sweep of min(loss, loss at init) minus the best loss, with the loss at init taken as "
        f"log2({cfg.vocab}) = {cap:.2f} bits (near-uniform outputs); a diverged run counts as "
        f"that.")
    curves = _curves(members, seeds[0])
    md += "\n" + _lr_figure(run, sweeps, cfg, seeds) + "\n" + _logit_figure(run, curves, cfg,
                                                                              seeds)
    top_lr = next(iter(curves.values()))["top_lr"]
    return md + "\n" + run.table(
        "q4_logit_table", ("score", f"largest abs logit, lr {cfg.lr:g}", "largest row range",
                           f"largest abs logit, lr {top_lr:g}", "largest row range"),
        [(s, f"{c['base'][-1]:.1f}", f"{c['base_range']:.1f}", f"{c['top'][-1]:.1f}",
          f"{c['top_range']:.1f}") for s, c in curves.items()],
        f"Attention logits at the end of training, over all layers, heads and causal entries of "
        f"the {cfg.eval_size} held-out windows (mean of {len(seeds)} seeds at lr {cfg.lr:g}; "
        f"seed {seeds[0]} at lr {top_lr:g}). Row range: max − min over one query's keys, "
        f"which is what the softmax sees.")


def _lr_figure(run: Run, sweeps: dict, cfg, seeds: list) -> str:
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
                      f"LM, seed {seeds[0]}, {cfg.protocol.steps} steps; diverged runs omitted).")


def _logit_figure(run: Run, curves: dict, cfg, seeds: list) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for s, c in curves.items():
        axes[0].plot(c["steps"], c["base"], label=s)
        axes[1].plot(c["steps"], c["top"], label=s)
    axes[0].set_title(f"peak lr {cfg.lr:g} (mean of {len(seeds)} seeds)", fontsize=9)
    axes[1].set_title(f"peak lr {next(iter(curves.values()))['top_lr']:g} (seed "
                      f"{seeds[0]})", fontsize=9)
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_yscale("log")
    axes[0].set_ylabel("largest |attention logit|")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return run.figure(fig, "q4_logit_growth",
                      "Growth of the largest attention logit during training (character LM; all "
                      "layers, heads and causal entries of the held-out windows).")


def render(results, cfg, run: Run) -> None:
    """Append the Q4 section (and its metrics) to ``run``."""
    parts_md = []
    if results.relevance is not None:
        parts_md.append("Relevance: negation scope and a one-way relation\n\n"
                        + _relevance(results, cfg, run))
    if results.control is not None:
        parts_md.append("The symmetric control: tied W_Q = W_K on successor lookup\n\n"
                        + _control(results, cfg, run))
    if results.mqar is not None:
        parts_md.append("Multi-query associative recall\n\n" + _mqar(results, cfg, run))
    if results.char is not None:
        parts_md.append("Character LM, learning-rate sensitivity, logit growth\n\n"
                        + _char(results, cfg, run))
    words = answer_text(answer(results, cfg), BACKGROUND)
    run.log("q4_summary", answer=words, seconds=results.seconds, devices=results.devices,
            cpu_seconds=results.cpu_seconds)
    body = "".join(f"### Q4.{i} {md}\n" for i, md in enumerate(parts_md, 1))
    p = cfg.protocol
    run.add(
        "## Q4. Attention: why a dot product as relevance, and not cosine, subtraction or raw "
        "similarity?\n\n"
        f"Protocol, the same for every score: a causal pre-LN transformer (jaxemb.transformer; "
        f"width {cfg.width}, depth {cfg.depth}, {cfg.heads} heads, learned positions, T = "
        f"{cfg.seq_len}); AdamW (β = 0.9, 0.95, ε = 1e-8, weight decay {p.weight_decay:g} on "
        f"matrices), gradient clipping at {p.clip:g}, linear warmup over {p.warmup:.0%} of "
        f"{p.steps} steps to the peak lr {cfg.lr:g}, then cosine decay to 0.1 × peak; batch "
        f"{cfg.batch} sharded over {results.devices} device(s)"
        + (" (MQAR: its own widths, steps, batch and lr, stated with its table)"
           if results.mqar is not None else "") +
        f"; {len(results.seeds)} seeds (init and data keys) "
        f"trained together with jax.vmap; fresh training data at every step, held-out data from "
        f"a separate key. Scores: {', '.join(cfg.scores)} (jaxemb.attention). Parts: "
        f"{', '.join(cfg.parts)}. {results.seconds:.0f} s on this machine"
        + (" (thread-seconds per part, compilation included, jobs overlapping in "
           f"{cfg.workers} threads: " + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                  results.part_seconds.items()) + ")"
           if results.part_seconds else "") + ".\n\n"
        + body + f"### Q4.{len(parts_md) + 1} Answer\n\n" + words + "\n")
