"""Q1 "Why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?": the arithmetic, then what norms
encode in trained SGNS vectors, and what changes when dot replaces cosine at evaluation time
(same vectors: neighbours, benchmarks, hubness)."""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import matplotlib
import numpy as np
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text  # noqa: E402
from experiments.study import item_differences  # noqa: E402
from experiments.study.results import Results as _Results  # noqa: E402
from experiments.study.sgns_common import (  # noqa: E402
    SGNSStudyConfig,
    in_out_pair_scores,
    pm,
    protocol_text,
    random_queries,
    settings_text,
    setup,
    trained,
)
from jaxemb import scoring  # noqa: E402
from jaxemb.neighbours import hubness, neighbours  # noqa: E402
from jaxemb.stats import compare  # noqa: E402

PART = "sgns"
TITLE = "## Q1. Why is [0.2,3]·[0.4,3] larger than [0.2,3]·[0.2,3]?"
SEED_A, SEED_B, SEED_C = (0.2, 3.0), (0.4, 3.0), (0.2, 3.0)
"""The vectors of the question: is a·b > a·c although c = a?"""
EVAL_SCORES = ("cosine", "dot")
BENCH_LABELS = {"cosine": "cosine (in, in)", "dot": "dot (in·in)", "in_out": "in·out"}
WORDS = {"higher": "higher than", "lower": "lower than",
         "indistinguishable": "indistinguishable from"}


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    setup: dict  # sgns_common.setup: settings and evaluation protocol
    seed: list  # [{score, a_b, a_c}] the question's arithmetic under each jaxemb score
    rho: list  # [seeds] Spearman ρ(‖in‖, log count) of the dot model
    norms: list  # [V] ‖in‖ of the dot model, first seed (the plot)
    counts: list  # [V] corpus counts
    neighbours: list  # [[word, top 5 by cosine, top 5 by dot]] (first seed)
    benchmarks: dict  # {"cosine" | "dot": [evaluate_vectors per seed] (in·in), "in_out":
    #                   [{"ws353", "simlex": ρ of in·out}] (SGNS's own score; no analogies)}
    differences: dict  # {"dot" | "in_out": {metric: item_differences.difference against cosine}}
    #                    paired over the same items and seeds (item-and-seed bootstrap)
    bootstrap_seconds: dict  # {"items": per-item re-evaluation, "bootstrap": the resampling}
    hubness: dict  # {"cosine" | "dot": [hubness per seed]}
    frequent: int  # how many most frequent words count as hubs
    n_queries: int  # random query words of the hubness measure


def seed_arithmetic(scores=("dot", "cosine", "neg_sq_euclidean")) -> list[dict]:
    """[{score, a_b, a_c}] for a = [0.2, 3], b = [0.4, 3], c = a under each jaxemb score."""
    a, b, c = (jnp.asarray(np.array(v)) for v in (SEED_A, SEED_B, SEED_C))
    return [{"score": name, "a_b": float(scoring.get_score(name)(a, b)),
             "a_c": float(scoring.get_score(name)(a, c))} for name in scores]


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    config = study.config
    counts = study.vocab.counts
    seeds = study.seed_indices
    V = [study.dot.vectors(i, "in") for i in seeds]
    with progress("Q1: norms, neighbours, benchmarks, hubness"):
        rho = [float(stats.spearmanr(np.linalg.norm(v, axis=1), np.log(counts)).statistic)
               for v in V]
        words = [w for w in config.query_words if w in study.vocab]
        rows = [study.vocab.id(w) for w in words]
        by = {s: neighbours(V[0], rows, 5, s) for s in EVAL_SCORES} if rows else {}
        nb = [[w, [study.vocab.words[j] for j in by["cosine"][i]],
               [study.vocab.words[j] for j in by["dot"][i]]] for i, w in enumerate(words)]
        bench = {s: [study.evaluation("dot", "in", i, s) for i in seeds] for s in EVAL_SCORES}
        bench["in_out"] = [_in_out_benchmarks(study, i) for i in seeds]
        diffs, seconds = _differences(study)
        queries = random_queries(len(counts), config.hub_queries)
        frequent = max(1, len(counts) // 100)
        hub = {s: [hubness(v, queries, frequent, s) for v in V] for s in EVAL_SCORES}
    return Results(setup=setup(study), seed=seed_arithmetic(), rho=rho,
                   norms=np.linalg.norm(V[0], axis=1).astype(np.float64).tolist(),
                   counts=np.asarray(counts).tolist(), neighbours=nb, benchmarks=bench,
                   differences=diffs, bootstrap_seconds=seconds, hubness=hub,
                   frequent=frequent, n_queries=len(queries))


def _differences(study) -> tuple[dict, dict]:
    """dot (in·in) and in·out against cosine (in, in) on the same items and seeds: the paired
    differences of the benchmark table, and the seconds they took."""
    t = time.perf_counter()
    seeds = study.seed_indices
    its = {s: [item_differences.items(study, "dot", "in", i, s) for i in seeds]
           for s in EVAL_SCORES}
    its["in_out"] = [item_differences.in_out_items(study, i) for i in seeds]
    t_items = time.perf_counter() - t
    pairs = item_differences.differences(its, [("dot", "cosine"), ("in_out", "cosine")])
    diffs = {a: by["cosine"] for a, by in pairs.items()}
    return diffs, {"items": t_items, "bootstrap": time.perf_counter() - t - t_items}


def _in_out_benchmarks(study, seed_index: int) -> dict:
    """WS353 and SimLex Spearman ρ of the dot model under in·out, the score SGNS trained."""
    vin, vout = (study.dot.vectors(seed_index, kind) for kind in ("in", "out"))
    out = {}
    for name in ("ws353", "simlex"):
        ia, ib, gold, _ = study.bench.pairs[name]
        s = in_out_pair_scores(vin, vout, ia, ib)
        ok = ia.size >= 3 and np.ptp(s) > 0 and np.ptp(gold) > 0  # else ρ is undefined
        out[name] = float(stats.spearmanr(gold, s).statistic) if ok else float("nan")
    return out


# --- render ------------------------------------------------------------------------------------

def _norm_figure(r: Results, run: Run) -> str:
    norms, logf = np.asarray(r.norms), np.log(np.asarray(r.counts, np.float64))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.scatter(logf, norms, s=3, alpha=0.4)
    ax.set_xlabel("log corpus count")
    ax.set_ylabel("‖in vector‖ (dot model, seed 0)")
    ax.set_title(f"vector norm vs frequency (Spearman ρ = {r.rho[0]:.2f})")
    fig.tight_layout()
    return run.figure(fig, "q1_norm_vs_frequency",
                      f"Q1: norm of the dot model's in-vectors vs log count (seed "
                      f"{r.setup['seeds'][0]}), {len(r.counts)} words.")


def _tables(r: Results, run: Run) -> dict[str, str]:
    seeds = r.setup["seeds"]
    out = {"seed": run.table(
        "q1_seed_arithmetic", ("score", "a=[0.2,3], b=[0.4,3]", "a, c=[0.2,3]", "ranks first"),
        [(x["score"], x["a_b"], x["a_c"], "b" if x["a_b"] > x["a_c"] else "c (= a)")
         for x in r.seed], "jaxemb.scoring on the vectors of the question.")}
    out["norm_figure"] = _norm_figure(r, run)
    out["norms"] = run.table(
        "q1_norms", ("vectors", "Spearman ρ(‖v‖, log count)", "per seed"),
        [("SGNS dot, in", pm(r.rho), ", ".join(f"{x:.3f}" for x in r.rho))],
        f"mean ± 95% t-interval over {len(r.rho)} seeds. {settings_text(r.setup)}.")
    out["neighbours"] = run.table(
        "q1_neighbours", ("word", "top 5 by cosine", "top 5 by dot"),
        [(w, ", ".join(c), ", ".join(d)) for w, c, d in r.neighbours],
        f"Same vectors (dot model, in, seed {seeds[0]}), same exact search; "
        "only the score differs. Query word excluded.")
    for s, evs in r.benchmarks.items():
        for seed, e in zip(seeds, evs, strict=True):
            run.log("q1_benchmarks", eval_score=s, seed=seed, **e)
    out["benchmarks"] = run.table(
        "q1_benchmarks", ("evaluation score", "WS353 ρ", "SimLex ρ", "analogy 3CosAdd %"),
        [(BENCH_LABELS.get(s, s), pm([e["ws353"] for e in evs]), pm([e["simlex"] for e in evs]),
          pm([e["3cosadd"] for e in evs], 2, 100) if "3cosadd" in evs[0] else "— (undefined)")
         for s, evs in r.benchmarks.items()],
        f"The dot model's vectors; cosine and dot score in-vectors against in-vectors, in·out "
        f"scores the pair's in-vector against the other word's out-vector (both directions "
        f"averaged), the score SGNS trained; mean ± 95% over {len(seeds)} seeds. "
        f"{protocol_text(r.setup, 'the score')} Under dot, 3CosAdd is argmax_x x·(b − a + c) on "
        f"unnormalised vectors; an analogy under in·out has no standard definition.")
    out["differences"] = differences_table(r, run)
    out["hubness"] = run.table(
        "q1_hubness", ("score", f"top-10 slots taken by the {r.frequent} most frequent words %",
                       "skew of k-occurrence", "max k-occurrence"),
        [(s, pm([h["share_top"] for h in hs], 1, 100), pm([h["k_occurrence_skew"] for h in hs], 2),
          pm([h["max_k_occurrence"] for h in hs], 0)) for s, hs in r.hubness.items()],
        f"{r.n_queries} random query words (numpy seed 0), top-10 over the whole vocabulary "
        f"by exact search, query excluded; uniform chance would be "
        f"{100 * r.frequent / len(r.counts):.1f}%. Dot model in-vectors, mean ± 95% over seeds.")
    return out


def render(results: Results, run: Run) -> None:
    t = _tables(results, run)
    run.add(TITLE + "\n\n### The arithmetic\n\n" + t["seed"]
            + "\n### What the norm encodes in trained SGNS vectors\n\n" + t["norms"] + "\n"
            + t["norm_figure"] + "\n### Nearest neighbours: cosine vs dot\n\n" + t["neighbours"]
            + "\n### Benchmarks: the same vectors scored by cosine or dot\n\n" + t["benchmarks"]
            + "\n" + t["differences"]
            + "\n### Hubness\n\n" + t["hubness"] + "\n" + answer(results) + "\n")


def differences_table(r: Results, run: Run) -> str:
    """Each score minus cosine (in, in) on the same benchmark items and seeds, with the
    item-and-seed bootstrap interval the answer decides by."""
    run.log("q1_benchmark_differences", **r.differences, seconds=r.bootstrap_seconds)
    rows = [(f"{BENCH_LABELS[s]} − cosine",
             *item_differences.difference_cells(d, missing="— (undefined)"))
            for s, d in r.differences.items()]
    return run.table(
        "q1_benchmark_differences", item_differences.DIFFERENCE_HEADER, rows,
        f"The same items scored both ways, mean over {len(r.setup['seeds'])} seeds [95% "
        f"interval: {item_differences.METHOD_TEXT}; it covers the benchmark's sample of items and "
        f"the seeds]. The decision rule (method section) uses this interval.")


# --- answer ------------------------------------------------------------------------------------

def answer(r: Results) -> str:
    dot_seed = next(x for x in r.seed if x["score"] == "dot")
    cos_seed = next(x for x in r.seed if x["score"] == "cosine")

    def mean(key):
        return {s: np.mean([h[key] for h in hs]) for s, hs in r.hubness.items()}

    share, skew, top = mean("share_top"), mean("k_occurrence_skew"), mean("max_k_occurrence")
    rho = np.mean(r.rho)
    trend = ("rises with" if rho > 0.1 else "falls with" if rho < -0.1 else "barely depends on")
    def versus(m):  # "0.312 against 0.451, lower than" (analogy accuracy in %)
        d, c = ([e[m] for e in r.benchmarks[s]] for s in ("dot", "cosine"))
        show = (lambda x: f"{100 * x:.2f}%") if m == "3cosadd" else (lambda x: f"{x:.3f}")
        word = WORDS[item_differences.verdict(r.differences["dot"].get(m))]
        return f"{show(np.mean(d))} against {show(np.mean(c))}, {word}"

    cmp = {m: versus(m) for m in ("ws353", "simlex", "3cosadd")}
    return answer_text(
        f"The dot product grows with length: a·b = {dot_seed['a_b']:.4g} "
        f"{'>' if dot_seed['a_b'] > dot_seed['a_c'] else '≤'} a·a = {dot_seed['a_c']:.4g} with "
        f"‖b‖ = {np.hypot(*SEED_B):.4g} > ‖a‖ = {np.hypot(*SEED_A):.4g}, while cosine "
        f"ranks the identical vector {'first' if cos_seed['a_c'] > cos_seed['a_b'] else 'second'}"
        f" ({cos_seed['a_c']:.4g} vs {cos_seed['a_b']:.4g}; table above). In trained SGNS "
        f"vectors the norm {trend} word frequency (Spearman ρ = {rho:.2f}, mean over seeds; "
        f"plot). Under dot the {r.frequent} most frequent words take {100 * share['dot']:.1f}% "
        f"of the top-10 slots vs {100 * share['cosine']:.1f}% under cosine, and neighbour lists "
        f"are {CONCENTRATED[_hub_compare(r, 'k_occurrence_skew')]} concentrated on a few hubs "
        f"(k-occurrence skew {skew['dot']:.1f} vs {skew['cosine']:.1f}, paired over seeds; the "
        f"largest hub is in "
        f"{top['dot']:.0f} vs {top['cosine']:.0f} of {r.n_queries} lists; hubness table, "
        f"neighbour table). On the benchmarks, scoring the same vectors with dot "
        f"gives WS353 ρ {cmp['ws353']} cosine's; SimLex ρ {cmp['simlex']} cosine's; and "
        f"3CosAdd accuracy {cmp['3cosadd']} cosine's (benchmark and difference tables; "
        f"'indistinguishable': the 95% interval of the paired difference, a bootstrap over the "
        f"benchmark's items and the seeds widened to the seeds' paired t-interval, includes 0). "
        f"Here dot scores input "
        f"vectors against input vectors (in·in), like cosine. {_in_out_sentence(r)}",
        BACKGROUND)


CONCENTRATED = {"higher": "more", "lower": "less",
                "indistinguishable": "neither measurably more nor less"}


def _hub_compare(r: Results, key: str) -> str:
    """dot against cosine on one hubness statistic, paired over seeds (the decision rule)."""
    return compare(*([h[key] for h in r.hubness[s]] for s in ("dot", "cosine")))


def _in_out_sentence(r: Results) -> str:
    """in·out, the score SGNS trained, against cosine (in, in) on the pair benchmarks."""
    if "in_out" not in r.benchmarks:
        return "SGNS itself trained in·out, which this run did not evaluate."
    io, diff = r.benchmarks["in_out"], r.differences.get("in_out", {})
    said = [f"{name} ρ {np.mean([e[key] for e in io]):.3f}, "
            f"{WORDS[item_differences.verdict(diff.get(key))]} cosine's"
            for key, name in (("ws353", "WS353"), ("simlex", "SimLex"))]
    return f"Scored by in·out, the score SGNS trained, the same model gives {' and '.join(said)}."


BACKGROUND = (
    "a·b = ‖a‖‖b‖ cos θ: a dot product ranks by length as well as by angle, and cosine is the "
    "dot product of unit vectors (jaxemb.scoring: the same score after the feature map "
    "v → v/‖v‖). That SGNS vector lengths grow with word frequency was observed by Schnabel et "
    "al. (2015, 'Evaluation methods for unsupervised word embeddings'); hubs — points among the "
    "nearest neighbours of many others — are a general property of nearest-neighbour lists in "
    "high dimension (Radovanović, Nanopoulos & Ivanović 2010, JMLR 11).")
