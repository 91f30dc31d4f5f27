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
    """The errors of learning a dot product: dot against the best MLP at the largest and the
    smallest N, whether dot is lowest at every N, and the MLP on u⊙v against the MLP on
    [u, v] (paired over seeds)."""
    big, small = max(sizes, key=int), min(sizes, key=int)
    dot_err = np.mean(fit["dot"][big])
    mlps = {m: np.mean(v[big]) for m, v in fit.items() if m != "dot"}
    best = min(mlps, key=mlps.get)
    lowest = all(np.mean(fit["dot"][n]) < min(np.mean(v[n]) for m, v in fit.items()
                                              if m != "dot") for n in sizes)
    text = (f"Learning a dot product from {big} entries (every model tuned over {_budget(cfg)} "
            f"on validation entries), the dot model reaches a relative RMSE of "
            f"{dot_err:.3f} and the best MLP ({best}) {mlps[best]:.3f} "
            f"({mlps[best] / max(dot_err, 1e-12):.1f}× the dot's error); from {small} entries: "
            f"dot {np.mean(fit['dot'][small]):.3f}, {best} {np.mean(fit[best][small]):.3f}. "
            + ("At every size the dot model's error is the lowest." if lowest else
               "The dot model's error is not the lowest at every size."))
    prod, cat = "MLP on u⊙v", "MLP on [u, v]"
    if {prod, cat} <= set(fit):
        said = [f"N = {n}: {_fmt(fit[prod][n])} {VERBS[stats.compare(fit[prod][n], fit[cat][n])]}"
                f" {_fmt(fit[cat][n])}" for n in sizes]
        text += (" Fed the product u⊙v instead of [u, v], the MLP's error (first) against the "
                 "MLP on [u, v] (second): " + "; ".join(said) + ".")
    return text
