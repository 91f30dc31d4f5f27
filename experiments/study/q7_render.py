"""Q7's tables, figures and words, from its results only (:class:`q7.Results`)."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run  # noqa: E402
from experiments.study.q7_answer import answer  # noqa: E402
from experiments.study.q7_measure import BENCH, COMPOSITIONS, TOP_K, relatedness  # noqa: E402
from experiments.study.sgns_common import KINDS, pm, protocol_text, settings_text  # noqa: E402
from jaxemb.stats import paired_difference  # noqa: E402

TITLE = "## Q7. Why do the output weights become word vectors?"
GEOMETRY = ("rho", "norm", "iso", "overlap")
from experiments.study.q7_answer import LARGER  # noqa: E402


def _col(evs: list, key: str) -> list[float]:
    return [e[key] for e in evs]


def render(r, run: Run) -> None:
    for kd, evs in r.evaluation.items():
        for seed, e in zip(r.setup["seeds"], evs, strict=True):
            run.log("q7_evaluation", vectors=kd, seed=seed, **e)
    t_q = run.table(
        "q7_benchmarks", ("vectors", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %",
                          "analogy 3CosMul %"),
        [(kd, pm(_col(evs, "ws353")), pm(_col(evs, "simlex")), pm(_col(evs, "3cosadd"), 2, 100),
          pm(_col(evs, "3cosmul"), 2, 100)) for kd, evs in r.evaluation.items()],
        f"The dot model's input, output and summed vectors (Levy, Goldberg & Dagan 2015); "
        f"{settings_text(r.setup)}; mean ± 95% over seeds. {protocol_text(r.setup, 'the cosine')}")
    t_init = _ablation_tables(r, run)
    t_g = run.table(
        "q7_geometry", ("vectors", "Spearman ρ(‖v‖, log count)", "mean ‖v‖",
                        "mean pairwise cosine", "top-10 neighbours shared with in"),
        [(kd, *(pm(g[key]) for key in GEOMETRY)) for kd, g in r.geometry.items()],
        f"Mean pairwise cosine over all word pairs (0: directions spread evenly; Mu & "
        f"Viswanath 2018 report a common direction in trained vectors). Neighbour overlap: "
        f"cosine top-10 of {r.n_queries} random words (numpy seed 0), query excluded. Dot "
        f"model; mean ± 95% over seeds.")
    parts = [TITLE, "### Quality of in, out and in+out", t_q,
             "### Output vectors initialised at zero (word2vec) or at random", t_init,
             "### Geometry", t_g, _figure(r, run)]
    parts += ["### king − man + woman", _king_queen_table(r, run)]
    parts += ["### Dimension sweep", _sweep_table(r, run)]
    parts += ["### Composing two words: a⊙b, a+b, cos-average", _composition_tables(r, run)]
    run.add("\n\n".join(p.rstrip("\n") for p in parts) + "\n\n" + answer(r) + "\n")


def _ablation_tables(r, run: Run) -> str:
    if r.evaluation_random is None:
        return "(Not measured in this run: --sgns.no-init-ablation.)\n"
    if "error" in r.evaluation_random:
        return f"(dot_out_random failed: {r.evaluation_random['error']})\n"
    inits = {"zero": r.evaluation, "random": r.evaluation_random}
    t1 = run.table(
        "q7_init", ("output init", "vectors", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %"),
        [(init, kd, pm(_col(ev[kd], "ws353")), pm(_col(ev[kd], "simlex")),
          pm(_col(ev[kd], "3cosadd"), 2, 100)) for init, ev in inits.items() for kd in KINDS],
        "Dot trained twice with the same seeds (identical input tables at the start): output "
        "vectors at zero (word2vec) or uniform ±0.5/d like the inputs (dot_out_random). Mean "
        "± 95% over seeds.")
    rows = []
    for init, ev in inits.items():
        for kd in ("out", "in+out"):
            rows.append((f"{init}: {kd} − in", *(paired_difference(
                _col(ev[kd], m), _col(ev["in"], m)).format(3) for m in ("ws353", "simlex"))))
    for kd in KINDS:
        rows.append((f"random − zero: {kd}", *(paired_difference(
            _col(r.evaluation_random[kd], m), _col(r.evaluation[kd], m)).format(3)
            for m in ("ws353", "simlex"))))
    t2 = run.table("q7_init_paired", ("paired difference", "Δ WS353 ρ", "Δ SimLex ρ"), rows,
                   "Per-seed differences, mean ± 95% t-interval (the same seeds on both sides).")
    return t1 + "\n" + t2


def _king_queen_table(r, run: Run) -> str:
    if not r.king_queen:
        return "(king, man or woman is not in the vocabulary.)\n"
    return run.table(
        "q7_king_queen", ("vectors", "method", "top 5 for king − man + woman"),
        [(x["vectors"], x["method"], ", ".join(f"{w} ({s:.3f})" for w, s in x["top"]))
         for x in r.king_queen],
        f"Query words excluded; whole vocabulary; unit-normalised vectors; the corpus has "
        f"{r.setup['n_tokens']:,} tokens. `{LARGER}` trains on text8 (17M tokens).")


def _sweep_table(r, run: Run) -> str:
    ppmi, sg = r.sweep.get("ppmi") or {}, r.sweep.get("sgns") or {}
    dims = sorted({int(d) for d in (*ppmi, *sg)})
    if not dims:
        return "(No dimension sweep: --sgns.no-ppmi-svd and no --sgns.sweep-sgns-dims.)\n"
    top = max((int(d) for d in ppmi), default="largest d")

    def diff(p, name):
        x = p.get(f"d_{name}")
        return "—" if x is None else f"{x[0]:+.3f} [{x[1]:+.3f}, {x[2]:+.3f}]"

    rows = []
    for d in dims:
        p, s = ppmi.get(str(d)), sg.get(str(d))
        rows.append((d, *((f"{p['ws353']:.3f}", f"{p['simlex']:.3f}",
                           f"{100 * p['3cosadd']:.2f}", diff(p, "ws353"), diff(p, "simlex"))
                          if p else ("—",) * 5),
                     *((pm(_col(s, "ws353")), pm(_col(s, "simlex")),
                        pm(_col(s, "3cosadd"), 2, 100)) if s else ("—",) * 3)))
    table = run.table(
        "q7_sweep", ("d", "PPMI-SVD WS353 ρ", "PPMI-SVD SimLex ρ", "PPMI-SVD 3CosAdd %",
                     f"WS353 ρ(d) − ρ({top})", f"SimLex ρ(d) − ρ({top})", "SGNS dot WS353 ρ",
                     "SGNS dot SimLex ρ", "SGNS dot 3CosAdd %"), rows,
        f"PPMI-SVD: U_d·√Σ_d, the first d columns of one SVD of the PPMI matrix (window "
        f"{r.setup['window']}, context counts ^0.75, Levy, Goldberg & Dagan 2015), one "
        f"deterministic run; its differences carry a 95% paired BCa bootstrap interval over the "
        f"benchmark's word pairs. SGNS dot: input vectors, mean ± 95% over seeds (only the "
        f"dimensions trained: --dim and --sweep-sgns-dims). Corpus {r.setup['n_tokens']:,} "
        f"tokens.")
    return table + "\n" + _sweep_figure(r, run, dims, ppmi, sg)


def _sweep_figure(r, run: Run, dims, ppmi: dict, sg: dict) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
    for ax, key, label in zip(axes, BENCH, ("WS353 ρ", "SimLex ρ", "3CosAdd accuracy"),
                              strict=True):
        if ppmi:
            ds = sorted(int(d) for d in ppmi)
            ax.plot(ds, [ppmi[str(d)][key] for d in ds], "o-", label="PPMI-SVD")
        if sg:
            ds = sorted(int(d) for d in sg)
            m = [np.mean(_col(sg[str(d)], key)) for d in ds]
            ax.plot(ds, m, "s--", label="SGNS dot (mean over seeds)")
        ax.set_xscale("log")
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.minorticks_off()
        ax.set_xlabel("dimension d")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return run.figure(fig, "q7_dimension_sweep", f"Q7: benchmarks against the dimension "
                      f"(d = {', '.join(map(str, dims))}); {r.setup['n_tokens']:,} tokens.")


def _composition_tables(r, run: Run) -> str:
    c = r.composition
    skipped = (f" Skipped (a word not in the vocabulary): {', '.join(c['skipped'])}."
               if c["skipped"] else "")
    if not c["pairs"]:
        return f"(No composition pair has both words in the vocabulary.{skipped})\n"
    rows = []
    for label, per_seed in c["results"].items():
        first = per_seed[0]
        for i, (a, b, t) in enumerate(c["pairs"]):
            for how in COMPOSITIONS:
                m = first[how][i]
                rank = "" if m["rank"] is None else f"; {t}: rank {m['rank']}"
                rows.append((label, f"{a}, {b}", how, ", ".join(m["top"][:5]) + rank))
    t1 = run.table("q7_composition_neighbours", ("vectors", "pair", "composition",
                                                 "nearest 5 (a, b excluded); target rank"),
                   rows, f"Cosine neighbours of the composed vector among all words (first "
                   f"seed). a⊙b: element-wise product; a+b: sum; cos-average: (â + b̂)/2.{skipped}")
    rows = []
    for label, per_seed in c["results"].items():
        for how in COMPOSITIONS:
            hits = [sum(m["rank"] is not None and m["rank"] <= TOP_K for m in s[how])
                    for s in per_seed]
            n_t = sum(t is not None for _, _, t in c["pairs"])
            rows.append((label, how, pm(relatedness(per_seed, how)),
                         pm(relatedness(per_seed, how, "base")),
                         pm(relatedness(per_seed, how, "overlap"), 1, 100),
                         f"{np.mean(hits):.1f} / {n_t}"))
    t2 = run.table(
        "q7_composition", ("vectors", "composition", f"mean cos(top-{TOP_K}, a and b)",
                           "mean cos(any word, a and b)", f"% of top-{TOP_K} in a's or b's "
                           f"own top-{TOP_K}", f"targets in top {TOP_K}"), rows,
        f"Over the {len(c['pairs'])} pairs and both words of each; mean ± 95% over seeds "
        f"(PPMI-SVD: one run). Targets: mean count over seeds.")
    return t1 + "\n" + t2


def _figure(r, run: Run) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kd in zip(axes, ("in", "out"), strict=True):
        ax.scatter(np.log(np.asarray(r.counts, np.float64)), r.norms[kd], s=2, alpha=0.3)
        ax.set_xlabel("log corpus count")
        ax.set_ylabel(f"‖{kd} vector‖")
        ax.set_title(f"{kd} (ρ = {r.geometry[kd]['rho'][0]:.2f})")
    fig.tight_layout()
    return run.figure(fig, "q7_norms_in_out", f"Q7: norm vs log count for the in and out "
                      f"vectors of the dot model (seed {r.setup['seeds'][0]}).")
