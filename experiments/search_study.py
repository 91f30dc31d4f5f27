"""Q6 of the main report: "computing millions of cosines is slow — how do I speed it up?"

Cosine is a dot product after normalising both sides (``jaxemb.scoring``: phi(x) = x/‖x‖), so
the database is normalised once and every query batch is one matmul plus a top-k. The section
times exact top-k cosine search by jaxemb, numpy and FAISS ``IndexFlatIP`` interleaved in one
process (the protocol of ``experiments.bench_search``, whose functions it reuses), next to this
machine's fp32 matmul alone (the sgemm bound).

    python -m experiments.run search                 # 100k and 200k rows, ~1 min on 2 cores
    python -m experiments.run search --sizes 1000000 # the bench_search headline size
"""

from __future__ import annotations

import argparse
import dataclasses
import gc

import matplotlib
import numpy as np
from tqdm.auto import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments import bench_search  # noqa: E402
from experiments.report import Run, require_positive  # noqa: E402

METHODS = ("jaxemb", "faiss", "numpy", "sgemm bound")


@dataclasses.dataclass(frozen=True)
class SearchStudyConfig:
    """Exact top-k cosine search: jaxemb vs numpy vs FAISS vs the matmul alone."""

    sizes: tuple[int, ...] = (100_000, 200_000)
    """Database rows (random i.i.d. normal vectors)."""
    queries: int = 1000
    """Queries per search call."""
    dim: int = 300
    """Vector dimension."""
    k: int = 10
    """Neighbours per query."""
    repeats: int = 3
    """Interleaved timing rounds (after one warm-up round)."""
    seed: int = 0
    """Seed of the random data."""
    quick: bool = False
    """Smoke-test size: 20,000 rows, 200 queries, 2 rounds."""

    def resolved(self) -> SearchStudyConfig:
        if self.quick:
            return dataclasses.replace(self, sizes=(20_000,), queries=200, repeats=2)
        return self

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"--sizes must be positive row counts, got {self.sizes}")
        require_positive(self, "queries", "dim", "k", "repeats")
        if self.k > min(self.sizes):
            raise ValueError(f"--k ({self.k}) must not exceed the smallest size "
                             f"({min(self.sizes)})")


def run_search_study(cfg: SearchStudyConfig, run: Run, progress) -> dict:
    try:
        import faiss
    except ImportError:
        faiss = None
    args = argparse.Namespace(queries=cfg.queries, dim=cfg.dim, k=cfg.k, repeats=cfg.repeats,
                              seed=cfg.seed)
    log = bench_search.Printer()
    results = []
    n_methods = 3 + (faiss is not None)
    with progress(f"search benchmark ({', '.join(f'{m:,}' for m in cfg.sizes)} rows)"), \
            tqdm(total=len(cfg.sizes) * cfg.repeats * n_methods, desc="search",
                 dynamic_ncols=True) as bar:
        for m in cfg.sizes:
            results.append(bench_search.bench_size(m, args, faiss, log, bar))
            gc.collect()
    return _section(cfg, run, results, faiss is not None)


def _section(cfg: SearchStudyConfig, run: Run, results: list[dict], have_faiss: bool) -> dict:
    rows = []
    for r in results:
        st = r["methods"]
        for name in METHODS:
            if name in st:
                rows.append((f"{r['size']:,}", name, st[name]["median_s"], st[name]["min_s"],
                             st[name]["max_s"], st[name]["queries_per_s"],
                             st[name]["median_s"] / st["jaxemb"]["median_s"]))
    caption = (f"{cfg.queries} queries × database of random N(0, I) float32 vectors, dim "
               f"{cfg.dim}, exact top-{cfg.k} cosine; one warm-up then {cfg.repeats} rounds "
               "with the methods interleaved in one process; seconds per search call. Only the "
               "method varies. Last column: the method's median time / jaxemb's (> 1: jaxemb "
               "faster). sgemm bound = the fp32 matmul q·Dᵀ alone, no selection.")
    text = ["## Q6. \"Millions of cosines are slow.\" How fast can exact search be?\n",
            "Cosine is the dot product of unit vectors, so normalise the database once and every "
            "query batch becomes one matrix product and a top-k (`jaxemb.search.index(db, "
            "\"cosine\").search(q, k)`). jaxemb scores the database in bfloat16 first, with a "
            "proven bound on the rounding error, and rescores only the candidates that bound "
            "cannot rule out in float32, so its results are exact.\n",
            run.table("q6_search", ("rows", "method", "median s", "min s", "max s",
                                    "queries/s", "time / jaxemb"), rows, caption)]
    agree = all(r["agree"] for r in results)
    text.append(f"\nAgreement with the numpy reference (ties allowed, float64 cosine at every "
                f"rank within {bench_search.TIE_TOL:g}): **{'all agree' if agree else 'MISMATCH'}"
                "**.\n")
    run.log("q6_agreement", all_agree=agree,
            checks=[c for r in results for c in r["agreement"]])
    text.append(run.figure(_plot(results), "q6_search_throughput",
                           "Queries per second by method and database size (medians; higher "
                           "is faster). Same data and protocol as the table."))
    big = results[-1]
    st = big["methods"]
    jx = st["jaxemb"]["median_s"]
    versus = [f"{st[o]['median_s'] / jx:.2f}× the speed of {o}" for o in
              ("faiss", "numpy", "sgemm bound") if o in st]
    answer = (f"**Answer.** At {big['size']:,} rows jaxemb searched at {', '.join(versus)} "
              "(median times, table above). ")
    if "sgemm bound" in st:
        answer += ("It is faster than the fp32 matmul alone because most of the scoring runs in "
                   "bfloat16; " if jx < st["sgemm bound"]["median_s"] else
                   "It is no faster than the fp32 matmul alone, so the matmul is the limit; ")
    answer += ("what matters is: normalise once, batch the queries into one matmul, select "
               "with a top-k rather than a sort, and keep the database in memory in the layout "
               "the matmul wants.")
    if not have_faiss:
        answer += " (FAISS is not installed here: `pip install faiss-cpu` adds its column.)"
    text.append("\n" + answer + "\n")
    run.add("\n".join(text))
    return {"results": results, "agree": agree}


def _plot(results: list[dict]):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [n for n in METHODS if n in results[0]["methods"]]
    width = 0.8 / len(names)
    x = np.arange(len(results))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [r["methods"][name]["queries_per_s"] for r in results], width,
               label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [f"{r['size']:,} rows" for r in results])
    ax.set_ylabel("queries / s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("exact top-k cosine search")
    return fig
