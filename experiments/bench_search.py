r"""Benchmark exact top-k cosine search fairly: jaxemb vs FAISS ``IndexFlatIP`` vs numpy, each
method in its own process, each library on its fastest BLAS kernel.

    python -m experiments.bench_search --sizes 1000000 --json /tmp/search.json
    python -m experiments.bench_search --sizes 100000 --repeats 3
    python -m experiments.bench_search --isolation passive   # all in one process, for comparison
    python -m experiments.bench_search --sizes 1000000 --methods jaxemb "jaxemb fp32 scan" \
        --xla-flags='--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type='

The last one runs jaxemb on the CPU path without bf16/int8 dot instructions (``--xla-flags``
takes the ``=`` form: tyro reads a value that starts with ``--`` as a flag).

The data are random: database rows and queries i.i.d. standard normal float32 (cosine scores
concentrate near 0 and the top-k are only a few standard deviations out: the hard case for
pruning schemes, the usual case for a flat index).

Protocol (``--isolation process``, the default):

1. Kernels. faiss-cpu's wheel bundles its own OpenBLAS (0.3.15), which takes some AVX-512 CPUs
   for "Barcelona" (no AVX) unless ``OPENBLAS_CORETYPE`` says otherwise, and numpy has another.
   For each library a short fixed workload (best of 5) runs once per candidate core type
   (SkylakeX where the CPU has AVX-512, Haswell where it has AVX2, OpenBLAS's own detection),
   each in its own process (a core type that OpenBLAS's own detection already picks is not
   probed twice); the fastest is used for that library's methods (within 5% of the
   fastest, the widest kernel: on a shared machine such a gap is noise). The core type each process
   actually ran (threadpoolctl's ``architecture``) and the library versions are recorded.
   jaxemb's matmuls are XLA's own (not OpenBLAS), so its process keeps the machine's setting.
   FAISS's OpenMP wait policy is probed the same way (default vs ``OMP_WAIT_POLICY=PASSIVE``,
   on the picked core type) and PASSIVE kept for FAISS's processes only if it is faster.
   The variables are set only in the child processes, never in this one.
2. Roofline: the best of three 4096^3 fp32 sgemms by numpy (best kernel) and by JAX, GFLOP/s;
   and XLA's rate on a search-shaped score block ([1000, 300] x [300, 8192]) in fp32, bf16
   (fp32 accumulation) and int8 (int32 accumulation), under ``--xla-flags`` when given.
3. Each method in its own process: data generated from the seed, index built (not timed), one
   warm-up batch, ``--repeats`` timed batches of all the queries (min / median / max seconds,
   queries/s on the median), then single-query latency (50 queries, one at a time).
4. Agreement: every method's indices against numpy's, ties allowed (float64 cosine at each
   rank equal within 1e-5), checked here after the children exit.

The child processes, the kernel probe and the pick are :mod:`jaxemb.search_fair`'s, shared with
Q6 of the study.

Why processes, with FAISS's wait policy probed: OpenMP (FAISS) and OpenBLAS worker threads
spin for a while after each call, taking the cores from whatever runs next in the same process,
so in one process the order of methods changes the winner (on a quiet machine the interleaved
protocol measured FAISS at median 8.55 s on 1M x 300, against 3.8-4.1 s in its own process).
``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep; it does not reach OpenBLAS's
pthreads (numpy's build), and it changes how FAISS itself runs. Which of the two is faster
depends on the machine's load: on 2 cores at load 6 (2026-12-07, 1M x 300, 1000 queries)
FAISS took median 22.7 s in its own process with OpenMP's default (spinning threads of an
oversubscribed machine waiting for each other) and 8.0 s under PASSIVE in the interleaved
protocol, while jaxemb (XLA's own thread pool, no OpenMP) took 5.0 and 5.1 s. So neither
protocol alone is faithful: separate processes remove the interference between libraries, and
the probe gives FAISS whichever wait policy runs it faster on the machine at hand, as its
kernel. ``--isolation passive`` and ``--isolation shared`` run the old one-process,
interleaved protocol (with and without PASSIVE for every library) in one child, for
comparison.

``--json PATH`` writes everything printed and every timing, atomically; an existing file is
never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Literal

import numpy as np
import tyro

from experiments.benchkit import (
    Printer,
    check_json_path,
    search_environment,
    write_json_atomically,
)
from jaxemb import search_fair, search_timing, timing


@dataclasses.dataclass(frozen=True)
class Args:
    """Exact top-k cosine search on random normal float32 data: jaxemb (bf16 first pass with a
    proven bound, then fp32), jaxemb's plain fp32 scan, FAISS IndexFlatIP, numpy and the sgemm
    bound, each in its own process on its library's fastest BLAS kernel; min/median/max seconds,
    queries/s, single-query latency, the machine's fp32 roofline, and agreement (ties allowed)."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    """Database sizes (rows), one after another (a 1M x 300 float32 copy is 1.2 GB)."""
    queries: int = 1000
    """Number of queries."""
    dim: int = 300
    """Vector dimension."""
    k: int = 10
    """Neighbours per query."""
    repeats: int = 5
    """Timed batches per method (after one warm-up batch)."""
    seed: int = 0
    """Seed of the random data."""
    methods: tuple[str, ...] = search_timing.ISOLATED_METHODS
    """Methods to run (numpy is always run: it is the agreement reference)."""
    isolation: Literal["process", "passive", "shared"] = "process"
    """process: each method in its own process (fair); passive / shared: all methods interleaved
    in one process, with / without OMP_WAIT_POLICY=PASSIVE (for comparison)."""
    json: str | None = None
    """Also write all results and printed lines to this JSON file (refuses to overwrite)."""
    probe_rows: int = 100_000
    """Database rows of the kernel probe (a fixed workload run once per candidate kernel)."""
    roofline_n: int = search_timing.ROOFLINE_N
    """The roofline's sgemm is [n, n] x [n, n]."""
    xla_flags: str | None = None
    """XLA_FLAGS of jaxemb's processes only (recorded with each result); e.g. the CPU path
    without bf16/int8 dot instructions: '--xla_cpu_max_isa=AVX2
    --xla_cpu_experimental_ynn_fusion_type=' (YNNPACK, which runs XLA's CPU dots, picks its own
    kernels whatever --xla_cpu_max_isa says; without it a bf16 dot is converted to fp32)."""

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 1 or min(self.queries, self.dim, self.repeats,
                                                        self.probe_rows, self.roofline_n) < 1:
            raise ValueError("--sizes, --queries, --dim, --repeats, --probe-rows and "
                             "--roofline-n must be positive")
        if not 1 <= self.k <= min(self.sizes):
            raise ValueError(f"--k must be in [1, smallest size = {min(self.sizes)}], got "
                             f"{self.k}")
        unknown = set(self.methods) - set(search_timing.ISOLATED_METHODS)
        if unknown:
            raise ValueError(f"unknown --methods {sorted(unknown)}; known: "
                             f"{', '.join(search_timing.ISOLATED_METHODS)}")
        check_json_path(self.json)


def _task(a: Args, **task) -> dict:
    return {"queries": a.queries, "dim": a.dim, "k": a.k, "repeats": a.repeats,
            "seed": a.seed, **task}


def measure_size(a: Args, size: int, kernels: dict, log) -> dict:
    methods = list(dict.fromkeys([*a.methods, "numpy"]))
    per = {}
    for m in methods:
        print(f"  {size:,} rows: {m} (own process) ...", file=sys.stderr, flush=True)
        jax_child = search_fair.LIBRARY[m] == "jaxemb"
        r = search_fair.run_task(_task(a, task="method", method=m, sizes=[size]),
                                 search_fair.coretype_for(m, kernels),
                                 a.xla_flags if jax_child else None,
                                 search_fair.env_for(m, kernels))
        (per[m],) = r["sizes"]
        per[m]["blas"] = r["blas"]
        per[m]["xla_flags"] = r["xla_flags"]
        per[m]["env"] = search_fair.env_for(m, kernels)
    db, q = search_timing.data(size, a.queries, a.dim, a.seed)
    dbn = search_timing.normalise(db)
    del db
    qn64 = search_timing.normalise(q).astype(np.float64)
    ref = np.asarray(per["numpy"]["indices"], np.int64)
    checks = [search_timing.check_agreement(m, np.asarray(per[m]["indices"]), ref, qn64, dbn)
              for m in methods if per[m]["indices"] is not None and m != "numpy"]
    del dbn
    log(f"\n== {size:,} x {a.dim}, {a.queries:,} queries, k={a.k}, cosine; each method in its "
        f"own process, {a.repeats} batches after a warm-up ==")
    log(f"  {'method':17s} {'kernel':28s} {'min s':>7s} {'median s':>9s} {'max s':>7s} "
        f"{'queries/s':>10s} {'1-query ms (median)':>20s}")
    for m, r in per.items():
        b, lat = r["batch"], r["latency"]
        kern = search_fair.kernel_of(m, r["blas"]) + "".join(
            f", {v} wait" for v in r["env"].values())
        one = "" if lat is None else f"{lat['median_s'] * 1e3:.2f}"
        log(f"  {m:17s} {kern:28s} {b['min_s']:7.3f} {b['median_s']:9.3f} {b['max_s']:7.3f} "
            f"{b['queries_per_s']:10.1f} {one:>20s}")
    ratios = {}
    if "faiss" in per:
        for m in per:
            if m != "faiss":
                ratios[f"{m}/faiss"] = (per["faiss"]["batch"]["median_s"]
                                        / per[m]["batch"]["median_s"])
        for key, v in ratios.items():
            log(f"  queries/s ratio {key:24s} {v:6.3f}  (medians; > 1: faster than FAISS)")
    for c in checks:
        log(f"  agreement {c['method']:17s} vs numpy: {'OK' if c['ok'] else 'MISMATCH'}"
            + (f" (max |score diff| {c['max_score_diff']:.1e})" if "max_score_diff" in c
               else f" ({c.get('why')})"))
    for r in per.values():
        r.pop("indices", None)
    return {"size": size, "methods": per, "ratios": ratios, "agreement": checks,
            "agree": all(c["ok"] for c in checks)}


def main(argv: list[str] | None = None) -> int:
    a = tyro.cli(Args, args=argv, prog="python -m experiments.bench_search", description=__doc__)
    try:
        a.validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    faiss = search_timing.load_faiss()
    log = Printer()
    env = search_environment(faiss, timing.keep_freed_memory())
    log(f"Exact top-k cosine search ({a.isolation}): random i.i.d. standard normal float32, "
        f"seed {a.seed}; {a.queries:,} queries, dim {a.dim}, k {a.k}")
    for key, v in env.items():
        log(f"  {key}: {v}")
    if a.xla_flags is not None:
        log(f"  XLA_FLAGS of jaxemb's processes: {a.xla_flags!r}")
    kernels = search_fair.pick_kernels(a.probe_rows, log)
    payload: dict = {"config": dataclasses.asdict(a), "environment": env, "kernels": kernels}
    roof = search_fair.run_task({"task": "roofline", "n": a.roofline_n},
                                kernels["numpy"]["coretype"], a.xla_flags)
    payload["roofline"] = roof
    per_row = 2.0 * a.queries * a.dim
    kernel = search_fair.openblas_kernel(roof["blas"], "numpy")
    log(f"  fp32 roofline (best {a.roofline_n}^3 sgemm): numpy {roof['numpy_gflop_s']:.0f} GFLOP/s "
        f"({kernel}), JAX {roof['jax_gflop_s']:.0f} GFLOP/s; "
        f"at that rate scoring {max(a.sizes):,} rows costs "
        f"{per_row * max(a.sizes) / roof['numpy_gflop_s'] / 1e9:.2f} s per {a.queries:,} queries")
    rates = roof["dot_rates"]
    log(f"  XLA dot rates on a [{rates['shape'][0]}, {rates['shape'][1]}] x "
        f"[{rates['shape'][1]}, {rates['shape'][2]}] score block, G(FL)OP/s best / median of "
        f"10: " + ", ".join(f"{name} {rates[key + '_gflop_s']:.0f} / "
                             f"{rates[key + '_median_gflop_s']:.0f}" for key, name in
                             [("fp32", "fp32"), ("bf16", "bf16 x bf16 -> fp32"),
                              ("int8", "int8 x int8 -> int32")]))
    if a.isolation == "process":
        results = [measure_size(a, m, kernels, log) for m in a.sizes]
        ok = all(r["agree"] for r in results)
    else:
        env_all = search_fair.child_env(kernels.get("faiss", kernels["numpy"])["coretype"],
                                        a.xla_flags)
        if a.isolation == "passive":
            env_all["OMP_WAIT_POLICY"] = "PASSIVE"
        r = search_fair.run_child("jaxemb.search_fair",
                                  [json.dumps(_task(a, task="interleaved", sizes=a.sizes))],
                                  env_all)
        results = r["results"]
        for res in results:
            log(f"\n== {res['size']:,} rows, one process, interleaved ({a.isolation}) ==")
            for m, st in res["methods"].items():
                log(f"  {m:12s} {st['min_s']:7.3f} {st['median_s']:9.3f} {st['max_s']:7.3f} "
                    f"{st['queries_per_s']:10.1f}")
        ok = all(res["agree"] for res in results)
    log(f"\nall methods agree (ties allowed): {'yes' if ok else 'NO'}")
    if a.json is not None:
        payload.update(results=results, all_agree=ok, output=log.lines)
        write_json_atomically(a.json, payload)
        print(f"wrote {a.json}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
