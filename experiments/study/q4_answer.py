"""Q4's answer: the words, and the per-seed statistics they and the tables share, from the
results only (no training). Every comparison is ``jaxemb.stats.compare`` (paired over the shared
seeds: the one decision rule), against a declared reference score (:data:`REFERENCE`): no score is
ranked by its mean."""

from __future__ import annotations

import math

import numpy as np

from jaxemb import stats

# task: (what the answer calls it, the accuracy that decides "solved", the attended token)
CONTROL_TASKS = {"lookup": ("successor lookup", "accuracy", "the successor"),
                 "negation_far": ("the negator at a random distance", "negated_accuracy",
                                  "the negator")}
_RELATION = {"lower": "below", "higher": "above", "indistinguishable": "indistinguishable from"}
REFERENCE = "scaled_dot"  # the standard score every other one is compared with (Vaswani et al.)


# --- per-seed statistics, shared with the tables (q4_render) ----------------------------------

def vals(rows: list[dict], key: str) -> list[float]:
    """The per-seed values of ``key``."""
    return [row[key] for row in rows]


def avg(rows: list[dict], key: str) -> float:
    """Their mean over seeds."""
    return stats.t_interval(vals(rows, key)).mean


def fmt(rows: list[dict], key: str, digits: int = 3) -> str:
    """Their "mean ± half-width" (95% t-interval over seeds)."""
    return stats.format_interval(vals(rows, key), digits)


def mean_mass(rows: list[dict]) -> list[float]:
    """Per seed, the mass on the target averaged over layers and heads (no selection)."""
    return [float(np.mean(r["layer_mass"])) for r in rows]


def smallest_widths(mqar: dict, threshold: float) -> dict[str, int | None]:
    """Per score, the smallest width whose mean held-out accuracy reaches ``threshold``."""
    return {s: next((int(w) for w, rows in sorted(by_w.items(), key=lambda x: int(x[0]))
                     if avg(rows, "accuracy") >= threshold), None)
            for s, by_w in mqar.items()}


def lr_sweeps(members: dict, first_seed: int) -> dict[str, dict[float, tuple]]:
    """{score: {lr: (bits per char or None, diverged_at)}} of the first seed, by lr."""
    return {s: {m["lr"]: (m["bits_per_char"], m["diverged_at"])
                for m in sorted((m for m in ms if m["seed"] == first_seed),
                                key=lambda m: m["lr"])}
            for s, ms in members.items()}


def lr_sensitivity(sweeps: dict, cap: float) -> dict[str, float]:
    """Wortsman et al. 2023: the mean over the sweep of min(loss, cap) minus the best loss; a
    diverged run counts as ``cap`` (the loss at init)."""
    out = {}
    for s, by_lr in sweeps.items():
        losses = np.array([min(b, cap) if bad < 0 else cap for b, bad in by_lr.values()])
        out[s] = float(np.mean(losses - losses.min()))
    return out


# --- the answer ----------------------------------------------------------------------------

def _raw_sentence(task: str, by_score: dict, key: str, what: str, threshold: float
                  ) -> str | None:
    """Raw similarity against the reference score (:data:`REFERENCE`) on one task; None when
    either did not run."""
    if "raw" not in by_score or REFERENCE not in by_score:
        return None
    ref = REFERENCE
    raw, std = by_score["raw"], by_score[ref]
    raw_ok, std_ok = avg(raw, key) >= threshold, avg(std, key) >= threshold
    verdict = {(False, True): "failed where learned projections succeeded",
               (True, True): "solved it too", (True, False): "solved it where learned "
               "projections did not", (False, False): "did not solve it"}[raw_ok, std_ok]
    acc = _RELATION[stats.compare(vals(raw, key), vals(std, key))]
    mass = _RELATION[stats.compare(vals(raw, "attention_mass"), vals(std, "attention_mass"))]
    return (f"On {task}, raw similarity (no W_Q, W_K) {verdict}: {fmt(raw, key)}, {acc} {ref} "
            f"({fmt(std, key)}); its attention mass on {what}, {fmt(raw, 'attention_mass', 2)}, "
            f"was {mass} {ref}'s ({fmt(std, 'attention_mass', 2)}).")


def _solved_sentence(task: str, by_score: dict, key: str, threshold: float, steps: int) -> str:
    solved = [s for s, rows in by_score.items() if avg(rows, key) >= threshold]
    unsolved = [s for s in by_score if s not in solved]
    if not solved:
        return f"No score solved {task} (≥ {threshold:.0%}) within {steps} steps."
    return (f"On {task} {', '.join(solved)} reached ≥ {threshold:.0%}"
            + (f"; {', '.join(unsolved)} did not." if unsolved else "."))


def _relevance_sentences(rel: dict, cfg) -> list[str]:
    thr, steps = cfg.relevance_threshold, cfg.protocol.steps
    neg_task = "negation scope (a sentiment word must find its negator, a token unlike it)"
    look_task = ("successor lookup (a word must point at its successor in a one-way relation; "
                 f"chance {rel['baselines']['lookup_chance']:.3f})")
    far = rel.get("negation_far")  # absent from results saved before it existed
    far_task = ("the negator at a random distance (one scored word, the negator anywhere "
                "before it among distractors), accuracy on negated words")
    lines = [_solved_sentence(neg_task + ", accuracy on negated words", rel["negation"],
                              "negated_accuracy", thr, steps),
             _solved_sentence(look_task, rel["lookup"], "accuracy", thr, steps),
             *([_solved_sentence(far_task, far, "negated_accuracy", thr, steps)] if far else [])]
    return lines + [x for x in (
        _raw_sentence("negation scope", rel["negation"], "negated_accuracy", "the negator", thr),
        _raw_sentence("successor lookup", rel["lookup"], "accuracy", "the successor", thr),
        far and _raw_sentence("the negator at a random distance", far, "negated_accuracy",
                              "the negator", thr)) if x]


_VERDICT = {(False, True): "the asymmetric score was needed",
            (True, True): "a symmetric score sufficed",
            (True, False): "the symmetric score did better than the asymmetric one",
            (False, False): "neither score solved it, which says nothing about symmetry"}


def _control_task_sentences(task: str, by_depth: dict, cfg) -> list[str]:
    """The tied (symmetric) score against scaled_dot (and raw) at each depth of one task."""
    name, key, target = CONTROL_TASKS[task]
    thr, ref, tied = cfg.relevance_threshold, "scaled_dot", "tied_qk"
    said, verdicts = [], {}  # verdict -> depths, in order
    for depth in sorted(by_depth, key=int):
        by = by_depth[depth]
        if tied not in by:
            continue
        d = int(depth)
        layers = f"{d} layer{'s' if d > 1 else ''}"
        t_ok = avg(by[tied], key) >= thr
        clause = f"with {layers} tied_qk {'solved' if t_ok else 'did not solve'} it " \
                 f"({fmt(by[tied], key)})"
        if ref in by:
            r_ok = avg(by[ref], key) >= thr
            rel = _RELATION[stats.compare(vals(by[tied], key), vals(by[ref], key))]
            clause += f", {rel} scaled_dot ({fmt(by[ref], key)}, " \
                      f"{'solved' if r_ok else 'not solved'})"
            verdicts.setdefault(_VERDICT[t_ok, r_ok], []).append(d)
        # the attention the seed asks about: mass on the target, over all layers and heads
        masses = [f"{s} {stats.format_interval(mean_mass(by[s]), 2)}"
                  for s in (tied, ref, "raw") if s in by]
        clause += f"; mass on {target}, mean over layers and heads: {', '.join(masses)}"
        if ref in by:
            rel = _RELATION[stats.compare(mean_mass(by[tied]), mean_mass(by[ref]))]
            clause += f" (tied_qk {rel} scaled_dot)"
        said.append(clause)
    if not said:
        return []
    acc = "accuracy on negated words" if key == "negated_accuracy" else "accuracy"
    out = [f"Symmetric control on {name} (a learned tied W_Q = W_K, so score(x_i, x_j) = "
           f"score(x_j, x_i); {acc}, {cfg.protocol.steps} steps): " + "; ".join(said) + "."]
    if verdicts:
        out.append(f"So on {name} " + "; ".join(
            f"at {' and '.join(map(str, ds))} layer{'s' if ds != [1] else ''} {v}"
            for v, ds in verdicts.items()) + ".")
    return out


def _control_sentences(ctl: dict, cfg) -> list[str]:
    return [x for task in CONTROL_TASKS if task in ctl
            for x in _control_task_sentences(task, ctl[task], cfg)]


def _mqar_sentence(mqar: dict, cfg) -> str:
    smallest = smallest_widths(mqar, cfg.solve_threshold)
    ok = {s: w for s, w in smallest.items() if w is not None}
    if ok:
        never = [s for s in smallest if s not in ok]
        by_width = {w: [s for s, v in ok.items() if v == w] for w in sorted(set(ok.values()))}
        return (f"MQAR was solved (mean ≥ {cfg.solve_threshold}) "
                + "; ".join(f"from width {w} by {', '.join(ss)}" for w, ss in by_width.items())
                + (f"; not within the grid by {', '.join(never)}" if never else "") + ".")
    widest = {s: max(by_w, key=int) for s, by_w in mqar.items()}
    at = ", ".join(f"{s} {fmt(by_w[widest[s]], 'accuracy')} at width {widest[s]}"
                   for s, by_w in mqar.items())
    return (f"No score solved MQAR (mean ≥ {cfg.solve_threshold}) at any width of the grid "
            f"within {cfg.mqar_steps} steps (accuracy at the widest width: {at}; answering with "
            f"a random value of the sequence scores {1 / cfg.kv_pairs:.3f}).")


def _char_sentences(members: dict, first_seed: int, cfg) -> list[str]:
    """Each score's held-out bits per character against :data:`REFERENCE`'s: the paired
    difference with its 95% t-interval over seeds, grouped by the decision rule; and the
    learning-rate sensitivity of each (first seed only, so listed, not compared)."""
    bits = {s: [m["bits_per_char"] for m in sorted(ms, key=lambda m: m["seed"])
                if not m["sweep"]] for s, ms in members.items()}
    if REFERENCE in bits:
        groups: dict = {}
        for s in bits:
            if s != REFERENCE:
                d = stats.paired_difference(bits[s], bits[REFERENCE])
                groups.setdefault(stats.verdict(d), []).append(
                    f"{s} {d.mean:+.3f} ± {d.half_width:.3f}")
        said = "; ".join(f"{_RELATION[w]} {REFERENCE}: {', '.join(groups[w])}"
                         for w in ("lower", "higher", "indistinguishable") if w in groups)
        lines = [f"On held-out characters {REFERENCE} had "
                 f"{stats.format_interval(bits[REFERENCE])} bits per character"
                 + (f"; the other scores' loss, as the difference from it in bits (paired 95% "
                    f"t-interval over seeds): {said}." if said else ".")]
    else:
        lines = ["On held-out characters: " + ", ".join(
            f"{s} {stats.format_interval(b)}" for s, b in bits.items()) + " bits per character."]
    sens = lr_sensitivity(lr_sweeps(members, first_seed), math.log2(cfg.vocab))
    lines.append("Learning-rate sensitivity (Wortsman et al. 2023; first seed only, so no "
                 "interval and no comparison): " + ", ".join(
                     f"{s} {v:.3f}" for s, v in sens.items()) + " bits.")
    return lines


def answer(results, cfg) -> str:
    """The short answer; every claim is chosen by comparing the measured numbers."""
    lines = []
    if results.relevance is not None:
        lines += _relevance_sentences(results.relevance, cfg)
    if results.control is not None:
        lines += _control_sentences(results.control, cfg)
    if results.mqar is not None:
        lines.append(_mqar_sentence(results.mqar, cfg))
    if results.char is not None:
        lines += _char_sentences(results.char["members"], results.seeds[0], cfg)
    return " ".join(lines)


BACKGROUND = """\
After the learned projections, q·k = x_i W_Q W_Kᵀ x_jᵀ is a learned bilinear form (Vaswani et
al. 2017), so relevance is learned and need not be resemblance: "don't" can score high against
"like" although their embeddings are unlike. The other scores are the same dot product after
other feature maps (jaxemb.scoring): cosine drops the lengths and needs a temperature to express
a peaked softmax; −‖q−k‖² = 2q·k − ‖k‖² − ‖q‖², and ‖q‖² cancels in the softmax over keys, so it
is a dot product with a per-key penalty ‖k‖²; the bilinear forms re-parametrise W_Q W_Kᵀ. In one
layer, raw similarity (q = k = x) cannot separate relevance from resemblance: a token scores
itself at least as high as any other token of its norm (Cauchy–Schwarz), and the score is
symmetric, so around a cycle of words the sum of successor scores equals the sum of predecessor
scores (jaxemb.tasks). That argument holds per layer only: in a deeper model later layers compare
representations that earlier layers and the position embeddings have already mixed, so a network
of raw-similarity layers is not bound to a symmetric relation. A tied projection (W_Q = W_K)
gives a learned score that is still symmetric, (x_i W)·(x_j W), and positive semi-definite, so
within one layer the same cycle argument binds it; only a second layer (or W_Q ≠ W_K) can
break the symmetry. MQAR is different: the query is
the very token that was stored as a key, so its lookup is by resemblance."""
