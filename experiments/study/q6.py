"""Q6: "computing millions of cosines is slow — how do I speed it up?"

Cosine is a dot product after normalising both sides (``jaxemb.scoring``: phi(x) = x/‖x‖), so
the database is normalised once and every query batch is one matmul plus a top-k. The section
times exact top-k cosine search by jaxemb, numpy and FAISS ``IndexFlatIP`` interleaved in one
process (``jaxemb.search_timing``, the protocol of ``experiments.bench_search``), next to this
machine's fp32 matmul alone (the sgemm bound).

    python -m experiments.run search                 # 100k and 200k rows, ~1 min on 2 cores
    python -m experiments.run search --sizes 1000000 # the bench_search headline size
"""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
from tqdm.auto import tqdm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text, require_positive  # noqa: E402
from experiments.study import results  # noqa: E402
from jaxemb import search_timing  # noqa: E402
from jaxemb.search_timing import METHODS, TIE_TOL  # noqa: E402

PART = "search"
TITLE = '## Q6. "Millions of cosines are slow." How fast can exact search be?'


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


@dataclasses.dataclass(frozen=True)
class Results(results.Results):
    """The search timings: the protocol's settings and, per database size, what
    :func:`jaxemb.search_timing.measure_size` returns (per method min/median/max seconds,
    queries_per_s and the rounds' times; ratios; the agreement checks)."""

    queries: int
    dim: int
    k: int
    repeats: int
    seed: int
    have_faiss: bool
    per_size: list[dict]


def measure(config: SearchStudyConfig, shared: dict, progress) -> Results:
    """Time exact top-k cosine search at each of ``config.sizes`` (``shared`` is not used)."""
    faiss = search_timing.load_faiss()
    total = search_timing.timed_calls(config.sizes, config.repeats, faiss)
    with progress(f"search benchmark ({', '.join(f'{m:,}' for m in config.sizes)} rows)"), \
            tqdm(total=total, desc="search", dynamic_ncols=True) as bar:
        per_size = search_timing.measure(
            config.sizes, queries=config.queries, dim=config.dim, k=config.k,
            repeats=config.repeats, seed=config.seed, faiss=faiss,
            log=lambda line="": print(line, flush=True), bar=bar)
    return Results(queries=config.queries, dim=config.dim, k=config.k, repeats=config.repeats,
                   seed=config.seed, have_faiss=faiss is not None, per_size=per_size)


def table_rows(r: Results) -> list[tuple]:
    """(rows, method, median s, min s, max s, queries/s, time / jaxemb) per size and method."""
    rows = []
    for size in r.per_size:
        st = size["methods"]
        for name in METHODS:
            if name in st:
                rows.append((f"{size['size']:,}", name, st[name]["median_s"], st[name]["min_s"],
                             st[name]["max_s"], st[name]["queries_per_s"],
                             st[name]["median_s"] / st["jaxemb"]["median_s"]))
    return rows


def all_agree(r: Results) -> bool:
    return all(size["agree"] for size in r.per_size)


def answer(r: Results) -> str:
    """The answer's words, from the largest database size's median times."""
    big = r.per_size[-1]
    st = big["methods"]
    jx = st["jaxemb"]["median_s"]
    versus = [f"{st[o]['median_s'] / jx:.2f}× the speed of {o}" for o in
              ("faiss", "numpy", "sgemm bound") if o in st]
    words = (f"At {big['size']:,} rows jaxemb searched at {', '.join(versus)} "
             "(median times, table above).")
    if "sgemm bound" in st:
        words += (" It is faster than the fp32 matmul alone, so it does less fp32 work than "
                  "scoring every row in fp32." if jx < st["sgemm bound"]["median_s"] else
                  " It is no faster than the fp32 matmul alone, so the matmul is the limit.")
    if not r.have_faiss:
        words += " (FAISS is not installed here: `pip install faiss-cpu` adds its column.)"
    return answer_text(words, BACKGROUND)


BACKGROUND = (
    "Cosine is the dot product of unit vectors, so an exact search normalises the database once "
    "and scores each batch of queries with one matrix product and a top-k selection; what "
    "usually matters is batching the queries, selecting with a top-k rather than a sort, and "
    "keeping the database in memory in the layout the matmul wants. jaxemb's first pass scores "
    "in bfloat16 and rescores in float32 only the rows its rounding-error bound cannot rule out; "
    "this run does not ablate that pass (the fp32-only scan is not timed here), so how much of "
    "the speed it gives is not measured in this section.")


def render(r: Results, run: Run) -> None:
    """The Q6 section: the timing table, the agreement check, the throughput plot, the answer."""
    caption = (f"{r.queries} queries × database of random N(0, I) float32 vectors, dim "
               f"{r.dim}, exact top-{r.k} cosine; one warm-up then {r.repeats} rounds "
               "with the methods interleaved in one process; seconds per search call. Only the "
               "method varies. Last column: the method's median time / jaxemb's (> 1: jaxemb "
               "faster). sgemm bound = the fp32 matmul q·Dᵀ alone, no selection.")
    text = [TITLE + "\n",
            "Cosine is the dot product of unit vectors, so normalise the database once and every "
            "query batch becomes one matrix product and a top-k (`jaxemb.search.index(db, "
            "\"cosine\").search(q, k)`). jaxemb scores the database in bfloat16 first, with a "
            "proven bound on the rounding error, and rescores only the candidates that bound "
            "cannot rule out in float32, so its results are exact.\n",
            run.table("q6_search", ("rows", "method", "median s", "min s", "max s",
                                    "queries/s", "time / jaxemb"), table_rows(r), caption)]
    agree = all_agree(r)
    text.append(f"\nAgreement with the numpy reference (ties allowed, float64 cosine at every "
                f"rank within {TIE_TOL:g}): **{'all agree' if agree else 'MISMATCH'}**.\n")
    run.log("q6_agreement", all_agree=agree,
            checks=[c for size in r.per_size for c in size["agreement"]])
    text.append(run.figure(_plot(r.per_size), "q6_search_throughput",
                           "Queries per second by method and database size (medians; higher "
                           "is faster). Same data and protocol as the table."))
    text.append("\n" + answer(r) + "\n")
    run.add("\n".join(text))


def _plot(per_size: list[dict]):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [n for n in METHODS if n in per_size[0]["methods"]]
    width = 0.8 / len(names)
    x = np.arange(len(per_size))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [s["methods"][name]["queries_per_s"] for s in per_size], width,
               label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [f"{s['size']:,} rows" for s in per_size])
    ax.set_ylabel("queries / s")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("exact top-k cosine search")
    return fig
