"""Q5's "can an MLP learn a dot product?" from its results: the figure, the table with each
model's chosen setting, and the measured words (no training; :mod:`experiments.study.q5_fit`
measures)."""

from __future__ import annotations

import numpy as np

from experiments.report import Run
from jaxemb import stats

_fmt = stats.format_interval
VERBS = {"indistinguishable": "is within the noise of", "higher": "is above", "lower": "is below"}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, imported when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tries(cfg) -> int:
    return len(cfg.fit_widths) * len(cfg.fit_lrs)


def _budget(cfg) -> str:
    n = _tries(cfg)
    return f"{n} settings" if n > 1 else "1 setting (nothing tuned)"


def section(cfg, results, run: Run) -> str:
    """The figure and the table of relative errors (cells: mean ± 95% interval and the chosen
    setting)."""
    plt = pyplot()
    res, sizes = results.mlp_learns_dot, [str(s) for s in cfg.fit_sizes]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, by_size in res.items():
        st = [stats.mean_half_width(by_size[s]) for s in sizes]
        ax.errorbar(cfg.fit_sizes, [s[0] for s in st], yerr=[s[1] for s in st], marker="o",
                    capsize=3, label=label, lw=2.5 if label == "dot" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel("observed entries (training examples)")
    ax.set_ylabel("RMSE to the true dot / its std")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.legend(fontsize=8)
    fig.tight_layout()
    protocol = (
        f"Truth: a {cfg.fit_side}×{cfg.fit_side} matrix X Yᵀ of rank {cfg.fit_rank} (entries of "
        f"unit variance); each model learns its own user and item embeddings (dim {cfg.dim}, "
        f"biases) from the first N entries in random order, MSE, Adam, {cfg.fit_steps} steps of "
        f"256 for every N. Equal tuning budget: each model tries {_budget(cfg)} per N on "
        f"seed 0 — the MLPs (tower (w, w/2) on [P_u, Q_i], or on P_u ⊙ Q_i) every w in "
        f"{{{', '.join(str(w) for w in cfg.fit_widths)}}} × rate in "
        f"{{{', '.join(f'{x:g}' for x in cfg.fit_lrs)}}}, dot {_tries(cfg)} rates log-spaced "
        f"over the same range — chosen by the error on 1000 validation entries; the chosen "
        f"setting is trained on {cfg.fit_seeds} other seeds (vmapped) and scored on 1000 other "
        f"entries never seen: RMSE divided by the truth's std (1 = no better than predicting "
        f"0). Mean ± 95% interval over the seeds.")
    md = run.figure(fig, "q5_mlp_learns_dot", "Can an MLP learn a dot product? " + protocol)
    rows = []
    for label, by_size in res.items():
        tuned = results.fit_tuning.get(label, {})
        rows.append((label, *[_fmt(by_size[s]) + _chosen(tuned.get(s)) for s in sizes]))
    md += "\n" + run.table("q5_mlp_learns_dot", ("model", *[f"N = {s}" for s in cfg.fit_sizes]),
                           rows, "Relative RMSE to the true dot product on unseen entries "
                           "(chosen setting in parentheses). " + protocol)
    return md


def _chosen(t: dict | None) -> str:
    if not t:
        return ""
    w = "" if t["width"] is None else f"w {t['width']}, "
    return f" ({w}lr {t['lr']:.2g})"


def sentence(cfg, sizes: list[str], fit: dict) -> str:
    """The errors of learning a dot product: every model at the largest and the smallest N,
    the dot model against each MLP at every N (paired over seeds, no ranking by mean), and the
    MLP on u⊙v against the MLP on [u, v]."""
    big, small = max(sizes, key=int), min(sizes, key=int)
    mlps = [m for m in fit if m != "dot"]

    def errors(n):
        return ", ".join(f"{m} {np.mean(fit[m][n]):.3f}" for m in ["dot", *mlps])

    text = (f"Learning a dot product (every model tuned over {_budget(cfg)} on validation "
            f"entries), the relative RMSE from {big} entries is {errors(big)}; from {small}: "
            f"{errors(small)}.")
    if mlps:
        said = {n: {m: stats.compare(fit["dot"][n], fit[m][n]) for m in mlps} for n in sizes}
        below = [n for n in sizes if set(said[n].values()) == {"lower"}]
        rest = [f"at N = {n} it " + ", ".join(f"{VERBS[v].removeprefix('is ')} {m}'s"
                                              for m, v in said[n].items()).join(("is ", ""))
                for n in sizes if n not in below]
        where = ("at every size" if not rest else
                 "at N = " + ", ".join(below) if below else "at no size")
        text += f" The dot model's error is below every MLP's {where} (paired over seeds)"
        text += "." if not rest else "; " + "; ".join(rest) + "."
    prod, cat = "MLP on u⊙v", "MLP on [u, v]"
    if {prod, cat} <= set(fit):
        said = [f"N = {n}: {_fmt(fit[prod][n])} {VERBS[stats.compare(fit[prod][n], fit[cat][n])]}"
                f" {_fmt(fit[cat][n])}" for n in sizes]
        text += (" Fed the product u⊙v instead of [u, v], the MLP's error (first) against the "
                 "MLP on [u, v] (second): " + "; ".join(said) + ".")
    return text
