"""Q5's dual-encoder part (seed 001) from its results: the tables, the head/tail figure and the
measured words (:func:`answer`), plus :data:`BACKGROUND`. No training here
(:mod:`experiments.study.q5_encoder` measures)."""

from __future__ import annotations

import numpy as np

from experiments.report import Run
from jaxemb import stats

SCORE_LABELS = {"dot": "dot", "cosine_fixed": "cosine, τ fixed",
                "cosine_learned": "cosine, τ learned", "neg_sq_euclidean": "−‖q − k‖²"}
CONDITION_LABELS = {"plain": "in-batch softmax",
                    "logq": "in-batch softmax with the log-Q correction"}
VERBS = {"indistinguishable": "is within the noise of", "higher": "is above", "lower": "is below"}
COSINES = ("cosine_fixed", "cosine_learned")


def _fmt(values) -> str:
    return stats.format_interval(values)


def _delta(a, b) -> str:
    """'+m ± h': the paired difference a − b over the shared seeds."""
    iv = stats.paired_difference(a, b)
    return f"{iv.mean:+.3f} ± {iv.half_width:.3f}"


def _conditions(r: dict) -> list[str]:
    return [c for c in CONDITION_LABELS if all(c in m for m in r["scores"].values())]


def render(cfg, r: dict, run: Run) -> str:
    """The section's Markdown: protocol, the recall table, the paired-difference table and the
    head/tail figure."""
    d, k = r["data"], cfg.k
    protocol = (
        f"Planted data: {d['users']} users, {d['items']} items; true vectors of dimension "
        f"{cfg.enc_true_dim}, users X_u ~ N(0, I), item norms ρ_i = √(r² + 2 log(w_i/w_min)) "
        f"from Zipf weights w_i ∝ (i + 1)^−{cfg.enc_zipf:g} (r = {cfg.enc_tail_norm:g}, norms "
        f"{d['norm_range'][0]:.2f} to {d['norm_range'][1]:.2f}), so E[exp(X·Y_i)] ∝ w_i; each "
        f"user draws {cfg.enc_per_user} items without replacement from softmax(X_u·Y). One "
        f"random draw per user is the test pair, one the validation pair, {d['train_pairs']} "
        f"train. Head: the {d['head_items']} items of largest weight ({100 * d['head_share']:.0f}%"
        f" of the training pairs; {d['test_head']} test pairs, {d['test_tail']} tail). Models: "
        f"user and item tables of dimension {cfg.enc_dim}, no biases, the score / τ; "
        f"{cfg.enc_epochs} epochs of batches of {cfg.enc_batch_size} pairs, in-batch softmax "
        f"(a repeated item is not its own negative), with and without the log-Q correction "
        f"(log of the item's share of training pairs subtracted from its logit), Adam. Tuned per "
        f"score and training, the same grid for all: rate in "
        f"{{{', '.join(f'{x:g}' for x in cfg.enc_lrs)}}} × τ in "
        f"{{{', '.join(f'{x:g}' for x in cfg.enc_temperatures)}}} (cosine τ learned: its "
        f"start), on seed 0, chosen by validation recall@{k}; the chosen setting is trained on "
        f"{cfg.enc_seeds} other seeds (the same for every score, vmapped) and reported on the "
        f"test pairs: recall@{k} = share of test pairs whose item ranks in the user's top {k} "
        f"among all items but the user's training and validation items.")
    rows = []
    for c in _conditions(r):
        for s, by in r["scores"].items():
            m = by[c]
            rows.append((SCORE_LABELS[s], CONDITION_LABELS[c],
                         f"{m['lr']:g}, {m['temperature']:g}", _fmt(m["recall"]),
                         _fmt(m["head"]), _fmt(m["tail"]), _fmt(m["norm_corr"]),
                         _fmt(m["tau"])))
    for label, m in r["references"].items():
        rows.append((label, "", "", _fmt(m["all"]), _fmt(m["head"]), _fmt(m["tail"]), "", ""))
    md = run.table("q5_retrieval", ("score", "training", "lr, τ (chosen)", f"recall@{k}",
                                    f"head recall@{k}", f"tail recall@{k}",
                                    "corr(‖item‖, log w)", "τ at the end"), rows,
                   "Dual encoders on planted popularity data (seed 001's case). corr: Pearson "
                   "correlation over items of the learned item vector's norm with the log of "
                   "its planted popularity weight (cosine's score ignores that norm). τ at the "
                   "end: the run's τ over cosine's learned t. Mean ± 95% t-interval over "
                   "seeds. "
                   + protocol)
    md += "\n" + _difference_table(r, run, k) + "\n" + _figure(cfg, r, run)
    return md + "\n" + _arithmetic_table(r, run)


def _arithmetic_table(r: dict, run: Run) -> str:
    rows = [(m["pair"], str(m["q"]), str(m["k"]), str(m["product"]), f"{m['dot']:.3f}",
             f"{m['cosine']:.4f}", f"{m['neg_sq_euclidean']:.3f}") for m in r["arithmetic"]]
    return run.table("q5_seed_arithmetic", ("pair", "q", "k", "q ⊙ k (element-wise)",
                                            "dot = Σ q ⊙ k", "cosine", "−‖q − k‖²"), rows,
                     "Seed 001's example computed with jaxemb.scoring: the element-wise "
                     "product is a vector; the dot product is its sum.")


def _difference_table(r: dict, run: Run, k: int) -> str:
    rows = []
    for c in _conditions(r):
        dot = r["scores"].get("dot", {}).get(c)
        if dot is None:
            continue
        for s, by in r["scores"].items():
            if s != "dot":
                m = by[c]
                rows.append((SCORE_LABELS[s], CONDITION_LABELS[c],
                             *[_delta(m[g], dot[g]) for g in ("recall", "head", "tail")]))
    return run.table("q5_retrieval_vs_dot", ("score", "training", f"Δ recall@{k} vs dot",
                                             "Δ head", "Δ tail"), rows,
                     "Paired differences to dot (same seeds, same training), mean ± 95% "
                     "t-interval of the per-seed differences.")


def _figure(cfg, r: dict, run: Run) -> str:
    from experiments.study.q5_fit_report import pyplot

    plt = pyplot()
    conds = _conditions(r)
    fig, axes = plt.subplots(1, len(conds), figsize=(4.2 * len(conds), 3.2), squeeze=False,
                             sharey=True)
    names = list(r["scores"])
    x = np.arange(len(names))
    for ax, c in zip(axes[0], conds, strict=True):
        for j, (g, label) in enumerate((("head", "head items"), ("tail", "tail items"))):
            st = [stats.mean_half_width(r["scores"][s][c][g]) for s in names]
            ax.bar(x + 0.4 * j, [v[0] for v in st], 0.4, yerr=[v[1] for v in st], capsize=2,
                   label=label)
        ax.set_xticks(x + 0.2, [SCORE_LABELS[s] for s in names], rotation=20, fontsize=8)
        ax.set_title(CONDITION_LABELS[c], fontsize=9)
    axes[0][0].set_ylabel(f"recall@{cfg.k}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return run.figure(fig, "q5_retrieval", f"Recall@{cfg.k} of held-out interactions with "
                      f"popular-head and tail items per score (mean ± 95% interval over "
                      f"{cfg.enc_seeds} seeds; protocol as in the table).")


# --- the answer, from the numbers ------------------------------------------------------------

def answer(r: dict, k: int) -> str:
    """Sentences on the dual encoders: each score's recall against dot's (overall, head, tail;
    paired, :data:`jaxemb.stats.DECISION_RULE`), dot's norm–popularity correlation and the
    verdict on the norm, per training condition."""
    if "dot" not in r["scores"]:
        return ""
    parts = [_condition_sentence(r, c, k) for c in _conditions(r)]
    return " ".join([_arithmetic_sentence(r["arithmetic"]), *parts])


def _arithmetic_sentence(arith: list[dict]) -> str:
    """Which of the seed's two pairs each score puts first."""
    (p1, m1), (p2, m2) = ((m["pair"], m) for m in arith)

    def first(s: str) -> str:
        if m1[s] == m2[s]:
            return "ties them"
        return f"puts ({p1 if m1[s] > m2[s] else p2}) first"

    return (f"Seed 001's arithmetic: dot gives ({p1}) {m1['dot']:.3f} and ({p2}) "
            f"{m2['dot']:.3f}, so dot {first('dot')}; cosine ({m1['cosine']:.4f} vs "
            f"{m2['cosine']:.4f}) {first('cosine')}, and −‖q − k‖² ("
            f"{m1['neg_sq_euclidean']:.3f} vs {m2['neg_sq_euclidean']:.3f}) "
            f"{first('neg_sq_euclidean')}.")


def _condition_sentence(r: dict, c: str, k: int) -> str:
    dot = r["scores"]["dot"][c]
    said = []
    for s, by in r["scores"].items():
        if s == "dot":
            continue
        m = by[c]
        said.append(
            f"{SCORE_LABELS[s]} ({np.mean(m['recall']):.3f}) "
            f"{VERBS[stats.compare(m['recall'], dot['recall'])]} dot "
            f"(Δ {_delta(m['recall'], dot['recall'])}; head "
            f"{_delta(m['head'], dot['head'])}, tail {_delta(m['tail'], dot['tail'])})")
    corr = stats.t_interval(dot["norm_corr"])
    text = (f"Dual encoders with {CONDITION_LABELS[c]}: dot reaches recall@{k} "
            f"{np.mean(dot['recall']):.3f} (head {np.mean(dot['head']):.3f}, tail "
            f"{np.mean(dot['tail']):.3f}); " + "; ".join(said) + ". Dot's learned item norms "
            f"correlate with log popularity at r = {corr.format(2)} (the interval "
            f"{'excludes' if corr.excludes(0.0) else 'includes'} 0). ")
    return text + _verdict(r, c)


def _verdict(r: dict, c: str) -> str:
    """Whether dot's norm helps: dot against every cosine score (which drops the norms)."""
    dot = r["scores"]["dot"][c]["recall"]
    cos = [s for s in COSINES if s in r["scores"]]
    if not cos:
        return ""
    verdicts = {s: stats.compare(dot, r["scores"][s][c]["recall"]) for s in cos}
    against = " and ".join(SCORE_LABELS[s] for s in cos)
    if all(v == "higher" for v in verdicts.values()):
        return (f"With {CONDITION_LABELS[c]}, the norm that dot keeps helps retrieval here: dot "
                f"is above {against}.")
    if all(v == "lower" for v in verdicts.values()):
        return (f"With {CONDITION_LABELS[c]}, the norm that dot keeps hurts retrieval here: dot "
                f"is below {against}.")
    if all(v == "indistinguishable" for v in verdicts.values()):
        return (f"With {CONDITION_LABELS[c]}, keeping the norm makes no measurable difference "
                f"here: dot is within the noise of {against}.")
    return (f"With {CONDITION_LABELS[c]}, the comparison is mixed: dot against " + ", ".join(
        f"{SCORE_LABELS[s]}: {v}" for s, v in verdicts.items()) + ".")


BACKGROUND = """Dual encoders (seed 001): a·b = ‖a‖‖b‖ cos θ, so for one query, ranking items by
dot is ranking them by ‖k‖ cos θ — the item's norm is a per-item boost, the query's norm does not
change the order; cosine drops both norms, and −‖q − k‖² = 2q·k − ‖q‖² − ‖k‖² keeps ‖k‖² as an
item term whose sign penalises long item vectors (in a softmax over items −‖q‖² cancels). With
in-batch negatives every item appears as a negative in proportion to its frequency, which biases
the in-batch softmax against popular items; Yi et al. (2019, "Sampling-Bias-Corrected Neural
Modeling for Large Corpus Item Recommendations") subtract the log of each item's sampling
probability from its logit (the log-Q correction) to remove that bias. The contrastive loss is
InfoNCE (Oord, Li & Vinyals 2018); a cosine logit lies in [−1/τ, 1/τ], so τ must be tuned or
learned (CLIP learns it: Radford et al. 2021). In the seed's example c = d, yet a·b > c·d: the
dot product grows with the vectors' lengths as well as with their alignment, which is why
embeddings compared by dot are often normalised first (then dot is cosine)."""
