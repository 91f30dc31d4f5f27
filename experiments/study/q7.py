"""Q7 "Why do the output weights become word vectors?": the dot model's in vs out vs in+out vectors:
benchmarks, geometry (norms, isotropy, shared neighbours), king − man + woman."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text  # noqa: E402
from experiments.study.results import Results as _Results  # noqa: E402
from experiments.study.sgns_common import (  # noqa: E402
    KINDS,
    SGNSStudy,
    SGNSStudyConfig,
    pm,
    protocol_text,
    random_queries,
    settings_text,
    setup,
    trained,
    unit,
)
from jaxemb import search  # noqa: E402
from jaxemb.neighbours import neighbours  # noqa: E402
from jaxemb.stats import compare  # noqa: E402
from jaxemb.wordvectors import WordVectors  # noqa: E402

PART = "sgns"
TITLE = "## Q7. Why do the output weights become word vectors?"
METHODS = ("3cosadd", "3cosmul")
GEOMETRY = ("rho", "norm", "iso", "overlap")


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    setup: dict  # sgns_common.setup
    evaluation: dict  # {kind: [evaluate_vectors per seed]} (cosine, 3CosAdd and 3CosMul)
    geometry: dict  # {kind: {rho, norm, iso, overlap: [seeds]}}
    n_queries: int  # random query words of the neighbour overlap
    counts: list  # [V] corpus counts (the plot)
    norms: dict  # {"in" | "out": [V] norms of the first seed (the plot)}
    king_queen: list  # [{vectors, method, top: [[word, score]] }]
    queen_rank: dict  # {"vectors / method": rank of queen in the top 5, or None}


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    ppmi_vectors = study.ppmi_vectors(progress)
    with progress("Q7: in, out and in+out vectors"):
        ev = {kd: [study.evaluation("dot", kd, i, "cosine", METHODS)
                   for i in study.seed_indices] for kd in KINDS}
        queries = random_queries(len(study.vocab), study.config.hub_queries)
        geo = _geometry(study, queries)
        kq = _king_queen(study, ppmi_vectors)
    return Results(
        setup=setup(study), evaluation=ev, geometry=geo, n_queries=len(queries),
        counts=np.asarray(study.vocab.counts).tolist(),
        norms={kd: np.linalg.norm(study.dot.vectors(0, kd), axis=1).astype(np.float64).tolist()
               for kd in ("in", "out")},
        king_queen=kq,
        queen_rank={f"{x['vectors']} / {x['method']}": _rank(x["top"], "queen") for x in kq})


def mean_pairwise_cosine(X: np.ndarray) -> float:
    """Mean cosine over all pairs i ≠ j: (‖Σ u_i‖² − n) / (n(n − 1)); 0 for an isotropic set."""
    U = unit(X.astype(np.float64))
    n = len(U)
    s = U.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def _top_lists(X: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set]:
    """Each query's cosine top-k neighbours (query excluded), as sets of rows."""
    return [set(row.tolist()) for row in neighbours(X, queries, k, "cosine")]


def _overlap(A: list[set], B: list[set], k: int = 10) -> float:
    """Mean share of the top-k lists that A and B have in common."""
    return float(np.mean([len(x & y) / k for x, y in zip(A, B, strict=True)]))


def _geometry(study: SGNSStudy, queries: np.ndarray) -> dict:
    counts = study.vocab.counts
    geo = {kd: {g: [] for g in GEOMETRY} for kd in KINDS}
    for i in study.seed_indices:
        vs = {kd: study.dot.vectors(i, kd) for kd in KINDS}
        in_lists = _top_lists(vs["in"], queries)
        for kd, X in vs.items():
            g = geo[kd]
            g["rho"].append(float(stats.spearmanr(np.linalg.norm(X, axis=1),
                                                  np.log(counts)).statistic))
            g["norm"].append(float(np.linalg.norm(X, axis=1).mean()))
            g["iso"].append(mean_pairwise_cosine(X))
            g["overlap"].append(1.0 if kd == "in" else _overlap(in_lists, _top_lists(X, queries)))
    return geo


def _king_queen(study: SGNSStudy, ppmi_vectors: np.ndarray | None) -> list[dict]:
    """king − man + woman (3CosAdd, 3CosMul) on the dot model's in, out, in+out (first seed)
    and the PPMI-SVD reference; [] when a word is missing."""
    seed = study.config.seeds[0]
    sources = [(f"SGNS dot, {kd} (seed {seed})", study.dot.vectors(0, kd)) for kd in KINDS]
    if ppmi_vectors is not None:
        sources.append((f"PPMI-SVD (d={ppmi_vectors.shape[1]}, same corpus)", ppmi_vectors))
    words = ("man", "king", "woman")
    if not all(w in study.vocab for w in words):
        return []
    return [{"vectors": label, "method": m,
             "top": [[w, float(s)] for w, s in search.analogy(
                 WordVectors(study.vocab.words, X, study.vocab.counts), *words, topn=5,
                 method=m)]}
            for label, X in sources for m in METHODS]


def _rank(top: list, word: str) -> int | None:
    ws = [w for w, _ in top]
    return ws.index(word) + 1 if word in ws else None


# --- render ------------------------------------------------------------------------------------

def render(results: Results, run: Run) -> None:
    r = results
    for kd, evs in r.evaluation.items():
        for seed, e in zip(r.setup["seeds"], evs, strict=True):
            run.log("q7_evaluation", vectors=kd, seed=seed, **e)
    t_q = run.table(
        "q7_benchmarks", ("vectors", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %",
                          "analogy 3CosMul %"),
        [(kd, pm([e["ws353"] for e in evs]), pm([e["simlex"] for e in evs]),
          pm([e["3cosadd"] for e in evs], 2, 100), pm([e["3cosmul"] for e in evs], 2, 100))
         for kd, evs in r.evaluation.items()],
        f"The dot model's input, output and summed vectors (Levy, Goldberg & Dagan 2015); "
        f"{settings_text(r.setup)}; mean ± 95% over seeds. {protocol_text(r.setup, 'the cosine')}")
    t_g = run.table(
        "q7_geometry", ("vectors", "Spearman ρ(‖v‖, log count)", "mean ‖v‖",
                        "mean pairwise cosine", "top-10 neighbours shared with in"),
        [(kd, *(pm(g[key]) for key in GEOMETRY)) for kd, g in r.geometry.items()],
        f"Mean pairwise cosine over all word pairs (0: directions spread evenly; Mu & "
        f"Viswanath 2018 report a common direction in trained vectors). Neighbour overlap: "
        f"cosine top-10 of {r.n_queries} random words (numpy seed 0), query excluded. Dot "
        f"model; mean ± 95% over seeds.")
    f_g = _figure(r, run)
    t_kq = run.table(
        "q7_king_queen", ("vectors", "method", "top 5 for king − man + woman"),
        [(x["vectors"], x["method"], ", ".join(f"{w} ({s:.3f})" for w, s in x["top"]))
         for x in r.king_queen],
        f"Query words excluded; whole vocabulary; unit-normalised vectors. A corpus of "
        f"{r.setup['n_tokens']:,} tokens is small for this analogy: whatever comes out is shown."
        ) if r.king_queen else "(king, man or woman is not in the vocabulary.)\n"
    run.add(TITLE + "\n\n### Quality of in, out and in+out\n\n" + t_q + "\n### Geometry\n\n"
            + t_g + "\n" + f_g + "\n### king − man + woman\n\n" + t_kq + "\n" + answer(r)
            + "\n")


def _figure(r: Results, run: Run) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, kd in zip(axes, ("in", "out"), strict=True):
        ax.scatter(np.log(np.asarray(r.counts, np.float64)), r.norms[kd], s=2, alpha=0.3)
        ax.set_xlabel("log corpus count")
        ax.set_ylabel(f"‖{kd} vector‖")
        ax.set_title(f"{kd} (ρ = {r.geometry[kd]['rho'][0]:.2f})")
    fig.tight_layout()
    return run.figure(fig, "q7_norms_in_out", f"Q7: norm vs log count for the in and out "
                      f"vectors of the dot model (seed {r.setup['seeds'][0]}).")


# --- answer ------------------------------------------------------------------------------------

def answer(r: Results) -> str:
    means = {m: {kd: np.mean([e[m] for e in evs]) for kd, evs in r.evaluation.items()}
             for m in ("ws353", "simlex", "3cosadd")}
    best = {m: max(v, key=v.get) for m, v in means.items()}
    words = {"higher": "better than", "lower": "worse than",
             "indistinguishable": "indistinguishable from"}

    def vs_in(m):
        return words[compare([e[m] for e in r.evaluation["out"]],
                             [e[m] for e in r.evaluation["in"]])]

    geo = {kd: {key: np.mean(v) for key, v in g.items()} for kd, g in r.geometry.items()}
    hits = [f"{x['vectors']} ({x['method']}, rank {rank})" for x in r.king_queen
            if (rank := _rank(x["top"], "queen"))]
    return answer_text(
        f"Out is "
        f"{vs_in('ws353')} in on WS353 and {vs_in('simlex')} in on SimLex (paired 95% interval "
        f"over seeds); the best vectors are {best['ws353']} on WS353, {best['simlex']} on "
        f"SimLex and {best['3cosadd']} on analogies (3CosAdd) (benchmark table). "
        f"Geometry: norm–frequency Spearman {geo['in']['rho']:.2f} "
        f"(in) vs {geo['out']['rho']:.2f} (out), mean pairwise cosine "
        f"{geo['in']['iso']:.3f} vs {geo['out']['iso']:.3f}, and out shares "
        f"{100 * geo['out']['overlap']:.0f}% of in's top-10 neighbours (geometry "
        f"table, plot). king − man + woman gives queen in the top 5 for "
        f"{'; '.join(hits) if hits else 'none of these vectors'} (last table).",
        BACKGROUND)


BACKGROUND = (
    "SGNS's loss depends on the two tables only through the products in_w·out_c. With enough "
    "dimensions its optimum is in_w·out_c = log(#(w,c)·|D| / (#(w)·#(c))) − log k (Levy & "
    "Goldberg 2014), where word2vec draws negatives from the unigram distribution raised to "
    "0.75, so the column (context) marginal is the smoothed one and the row (word) marginal the "
    "plain one (Levy, Goldberg & Dagan 2015): the matrix is not symmetric. And a product "
    "in·outᵀ fixes the tables only up to an invertible matrix A (in·A and out·A⁻ᵀ give the same "
    "scores), so the objective alone does not make an output row describe its word the way an "
    "input row does; word2vec also starts the output vectors at zero and the input vectors at "
    "random. Whether out (or in + out, Levy, Goldberg & Dagan 2015) works as well as in is "
    "therefore an empirical question — the tables above.")
