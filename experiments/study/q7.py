"""Q7 "Why do the output weights become word vectors?": the dot model's in vs out vs in+out vectors:
benchmarks, geometry (norms, isotropy, shared neighbours), the output-vector initialisation
ablation (word2vec's zeros vs random), king − man + woman on SGNS and PPMI-SVD (seed 003), a
dimension sweep (PPMI-SVD truncations of one SVD; SGNS at --sweep-sgns-dims) and composition of
two words' vectors, a⊙b vs a+b vs cos-average (seed 002).

Split in three: this module (results, measure, geometry, analogies), :mod:`q7_measure` (the
ablation, the sweep, composition) and :mod:`q7_render` (tables, figures and the words)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from scipy import stats

from experiments.study import q7_measure
from experiments.study.q7_answer import BACKGROUND, answer  # noqa: F401  (the question's words)
from experiments.study.q7_render import render  # noqa: F401  (the question's section)
from experiments.study.results import Results as _Results
from experiments.study.sgns_common import (
    KINDS,
    SGNSStudy,
    SGNSStudyConfig,
    random_queries,
    setup,
    trained,
    unit,
)
from jaxemb import search
from jaxemb.neighbours import neighbours
from jaxemb.wordvectors import WordVectors

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
    evaluation_random: dict | None  # {kind: [per seed]} of dot_out_random (None: not run)
    sweep: dict  # {"ppmi": q7_measure.ppmi_sweep or None, "sgns": q7_measure.sgns_sweep}
    composition: dict  # {label: q7_measure.composition} for "sgns" and "ppmi"
    seconds: dict  # wall seconds of Q7's own work (PPMI-SVD, ablation, sweep, composition)


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    c, seconds = study.config, {}

    def timed(name, f):
        t = time.perf_counter()
        out = f()
        seconds[name] = time.perf_counter() - t
        return out

    ppmi = timed("ppmi_svd", lambda: study.ppmi_vectors(progress))
    with progress("Q7: in, out and in+out vectors"):
        ev = {kd: [study.evaluation("dot", kd, i, "cosine", METHODS)
                   for i in study.seed_indices] for kd in KINDS}
        queries = random_queries(len(study.vocab), study.config.hub_queries)
        geo = _geometry(study, queries)
        kq = _king_queen(study, ppmi)
    ablation = timed("init_ablation", lambda: q7_measure.init_ablation(study, progress))
    with progress("Q7: dimension sweep"):
        sweep = {"ppmi": timed("ppmi_sweep", lambda: ppmi and q7_measure.ppmi_sweep(
                     ppmi, study.bench)),
                 "sgns": timed("sgns_sweep", lambda: q7_measure.sgns_sweep(study, progress))}
    sources = {"SGNS dot, in": [study.dot.vectors(i) for i in study.seed_indices]}
    if ppmi and c.dim in ppmi:
        sources[f"PPMI-SVD d={c.dim}"] = [ppmi[c.dim]]
    with progress("Q7: composition"):
        comp = timed("composition", lambda: q7_measure.composition(
            sources, study.vocab.words, c.composition_pairs))
    return Results(
        setup=setup(study), evaluation=ev, geometry=geo, n_queries=len(queries),
        counts=np.asarray(study.vocab.counts).tolist(),
        norms={kd: np.linalg.norm(study.dot.vectors(0, kd), axis=1).astype(np.float64).tolist()
               for kd in ("in", "out")},
        king_queen=kq,
        queen_rank={f"{x['vectors']} / {x['method']}": _rank(x["top"], "queen") for x in kq},
        evaluation_random=ablation, sweep=sweep, composition=comp,
        seconds={**seconds, **{k: v for k, v in study.seconds.items()
                               if k.startswith("train dot")}})


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


def _king_queen(study: SGNSStudy, ppmi: dict | None) -> list[dict]:
    """king − man + woman (3CosAdd, 3CosMul) on the dot model's in, out, in+out (first seed)
    and the PPMI-SVD vectors at each dimension; [] when a word is missing."""
    seed = study.config.seeds[0]
    sources = [(f"SGNS dot, {kd} (seed {seed})", study.dot.vectors(0, kd)) for kd in KINDS]
    sources += [(f"PPMI-SVD d={d}", X) for d, X in (ppmi or {}).items()]
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
