"""Benchmark exact top-k cosine search: jaxemb vs numpy vs FAISS ``IndexFlatIP``.

    python -m experiments.bench_search                        # 100k and 1M rows, dim 300
    python -m experiments.bench_search --sizes 100000 --repeats 3 --json /tmp/search.json

The data are random: database rows and queries are i.i.d. standard normal float32 (so cosine
scores concentrate near 0 and the top-k are only a few standard deviations out; real embeddings
are easier for pruning schemes, this is the hard case for them and the usual case for a flat
index). For each database size every method is warmed up once, then the methods run
interleaved (one after another, round after round) in this one process for ``--repeats`` rounds,
so that a slow period of a noisy machine hits them all alike. Reported: min / median / max
seconds and queries/s (on the median) per method, and speed ratios on the medians. The methods
and the agreement check are those of :mod:`jaxemb.search_timing`: jaxemb (index built once,
search timed), numpy (blocked matmul + argpartition), FAISS ``IndexFlatIP`` (skipped when faiss
is not installed) and the "sgemm bound" (numpy's blocked fp32 matmul alone).

``--json PATH`` writes everything printed (and the raw timings) to PATH, atomically; an existing
file is never overwritten.
"""

from __future__ import annotations

import dataclasses
import sys

import tyro

from experiments.benchkit import (
    Printer,
    check_json_path,
    search_environment,
    write_json_atomically,
)
from jaxemb import search_timing, timing


@dataclasses.dataclass(frozen=True)
class Args:
    """Exact top-k cosine search for random normal float32 data: jaxemb (index built once,
    search timed) vs numpy (normalise, blocked matmul + argpartition + sort of the k) vs FAISS
    IndexFlatIP on normalised vectors (skipped if faiss is not installed), plus an 'sgemm bound'
    (numpy's blocked fp32 matmul alone). Each method is warmed up, then all run interleaved for
    --repeats rounds in one process; min/median/max seconds, queries/s and the ratios
    jaxemb/FAISS and jaxemb/numpy (medians) are printed, and the methods' results are checked to
    agree (ties allowed: scores at every rank within 1e-05)."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    """Database sizes (rows) to benchmark, one after another; a 1M x 300 float32 copy is 1.2 GB
    and about four copies are live at once."""
    queries: int = 1000
    """Number of queries."""
    dim: int = 300
    """Vector dimension."""
    k: int = 10
    """Neighbours per query."""
    repeats: int = 5
    """Timed interleaved rounds per size (after one warm-up run per method)."""
    seed: int = 0
    """Seed of the random data."""
    json: str | None = None
    """Also write all results and printed lines to this JSON file (written atomically; refuses
    to overwrite an existing file)."""

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or min(self.queries, self.dim,
                                                        self.repeats) < 1:
            raise ValueError("--sizes, --queries, --dim and --repeats must be positive")
        if not 1 <= self.k <= min(self.sizes):
            raise ValueError(f"--k must be in [1, smallest size = {min(self.sizes)}], got "
                             f"{self.k}")
        check_json_path(self.json)


def main(argv: list[str] | None = None) -> int:
    a = tyro.cli(Args, args=argv, prog="python -m experiments.bench_search", description=__doc__)
    try:
        a.validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    from tqdm import tqdm

    faiss = search_timing.load_faiss()
    memory = timing.keep_freed_memory()  # before the big arrays exist
    log = Printer()
    env = search_environment(faiss, memory)
    log("Exact top-k cosine search: jaxemb vs numpy vs FAISS IndexFlatIP")
    log(f"data: random i.i.d. standard normal float32, seed {a.seed}; {a.queries:,} "
        f"queries, dim {a.dim}, k {a.k}, sizes {', '.join(f'{m:,}' for m in a.sizes)}")
    for key, v in env.items():
        log(f"  {key}: {v}")
    log("note: the sgemm bound is the fp32 matmul alone; jaxemb's exact search first scores the "
        "database in bfloat16 (with a proven error bound) and rescores its candidates in fp32, "
        "so it can run below that bound")
    if faiss is None:
        log("  faiss not installed: the FAISS column is skipped (pip install faiss-cpu)")

    with tqdm(total=search_timing.timed_calls(a.sizes, a.repeats, faiss), desc="bench_search",
              file=sys.stderr, dynamic_ncols=True) as bar:
        per_size = search_timing.measure(a.sizes, queries=a.queries, dim=a.dim, k=a.k,
                                         repeats=a.repeats, seed=a.seed, faiss=faiss, log=log,
                                         bar=bar)
    ok = all(r["agree"] for r in per_size)
    log(f"\nall methods agree (ties allowed): {'yes' if ok else 'NO'}")
    if a.json is not None:
        payload = {"config": dataclasses.asdict(a), "environment": env, "results": per_size,
                   "all_agree": ok, "output": log.lines}
        write_json_atomically(a.json, payload)
        print(f"wrote {a.json}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
