"""Benchmark exact top-k cosine search: jaxemb vs numpy vs FAISS ``IndexFlatIP``.

``python -m experiments.bench_search [--sizes 100000 1000000] [--queries 1000] [--dim 300]
[--k 10] [--repeats 5] [--seed 0] [--json PATH]``

The data are random: database rows and queries are i.i.d. standard normal float32 (so cosine
scores concentrate near 0 and the top-k are only a few standard deviations out; real embeddings
are easier for pruning schemes, this is the hard case for them and the usual case for a flat
index). For each database size every method is warmed up once, then the methods run
interleaved (one after another, round after round) in this one process for ``--repeats`` rounds,
so that a slow period of a noisy machine hits them all alike. Reported: min / median / max
seconds and queries/s (on the median) per method, and speed ratios on the medians.

Methods (each returns the k best rows per query, best first):

* ``jaxemb``: ``jaxemb.search.index(db, "cosine")`` built once (build time reported apart, not
  timed, like FAISS's ``add``), then ``Index.search(queries, k)`` timed.
* ``numpy``: normalise, fp32 matmul against database blocks, ``argpartition`` of each block's k
  best, a final ``argpartition`` over the candidates and a sort of the k.
* ``faiss``: ``IndexFlatIP`` over the normalised database (``add`` not timed); skipped with a
  message when faiss is not installed.
* ``sgemm bound``: only the fp32 matmul ``q @ db.T`` by numpy (OpenBLAS) in the same blocks, no
  selection: this machine's matmul cost for the problem, a floor for any method that scores every
  row in fp32.

Correctness: every method's indices are checked against the numpy method's, allowing ties: the
float64 cosine of each returned row must equal the reference's at every rank within 1e-5.

``--json PATH`` writes everything printed (and the raw timings) to PATH, atomically; an existing
file is never overwritten.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

NUMPY_BLOCK_ROWS = 16384  # database rows per numpy block: a [1000, 16384] fp32 block is 64 MiB
TIE_TOL = 1e-5


class Printer:
    """Prints lines and keeps them for the JSON output."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)
        print(line, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.bench_search",
        description=(
            "Exact top-k cosine search for random normal float32 data: jaxemb (index built once, "
            "search timed) vs numpy (normalise, blocked matmul + argpartition + sort of the k) "
            "vs FAISS IndexFlatIP on normalised vectors (skipped if faiss is not installed), plus "
            "an 'sgemm bound' (numpy's blocked fp32 matmul alone). Each method is warmed up, then "
            "all run interleaved for --repeats rounds in one process; min/median/max seconds, "
            "queries/s and the ratios jaxemb/FAISS and jaxemb/numpy (medians) are printed, and "
            "the methods' results are checked to agree (ties allowed: scores at every rank "
            f"within {TIE_TOL:g})."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], metavar="M",
                   help="database sizes (rows) to benchmark, one after another; a 1M x 300 "
                        "float32 copy is 1.2 GB and about four copies are live at once")
    p.add_argument("--queries", type=int, default=1000, help="number of queries")
    p.add_argument("--dim", type=int, default=300, help="vector dimension")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed interleaved rounds per size (after one warm-up run per method)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random data")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write all results and printed lines to this JSON file (written "
                        "atomically; refuses to overwrite an existing file)")
    args = p.parse_args(argv)
    if min(args.sizes) < 1 or args.queries < 1 or args.dim < 1 or args.repeats < 1:
        p.error("--sizes, --queries, --dim and --repeats must be positive")
    if not 1 <= args.k <= min(args.sizes):
        p.error(f"--k must be in [1, smallest size = {min(args.sizes)}], got {args.k}")
    if args.json is not None:
        if os.path.exists(args.json):
            p.error(f"--json {args.json!r} exists; refusing to overwrite it (pick a new path)")
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            p.error(f"--json {args.json!r}: directory {parent!r} does not exist")
    return args


def write_json_atomically(path: str, payload: dict) -> None:
    """Write to a temporary file beside ``path``, then hard-link it into place.

    ``os.link`` fails if ``path`` exists, so a file created meanwhile is not clobbered either,
    and a reader never sees a half-written file.
    """
    parent = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench_search.", suffix=".json.tmp", dir=parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


# --- environment ----------------------------------------------------------------------------

def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory in the process, for reuse, instead of unmapping it.

    Big temporaries (numpy's [1000, 16384] argpartition output is 128 MiB per block) are
    otherwise mmap'd and unmapped on every call, and a page given back costs a page fault to
    touch again: on a VM whose freed memory goes back to the host, ~2 s/GiB. That would time the
    allocator, not the search. Applies to every method alike (numpy, FAISS and XLA all allocate
    through malloc).
    """
    m_trim_threshold, m_mmap_max = -1, -4
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    return ("glibc malloc: no mmap, no trimming (freed memory is reused, not given back)" if ok
            else "default allocator settings (glibc mallopt unavailable)")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
           if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"


def openblas_threads() -> int | None:
    """Threads of the OpenBLAS that numpy loaded (read via ctypes; None if not found)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            if hasattr(handle, sym):
                return int(getattr(handle, sym)())
    return None


def environment(faiss, memory: str) -> dict:
    import jax
    import jaxlib

    env = {
        "device": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "unknown") if faiss else "not installed",
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "os.cpu_count": os.cpu_count(),
        "usable cores (affinity)": len(os.sched_getaffinity(0)),
        "numpy OpenBLAS threads": openblas_threads(),
        "faiss OpenMP threads": faiss.omp_get_max_threads() if faiss else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "memory": memory,
    }
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


# --- methods --------------------------------------------------------------------------------

def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-8))


def numpy_topk(qn: np.ndarray, dbn: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Blocked matmul + argpartition per block, then argpartition and sort of the candidates."""
    n, m = qn.shape[0], dbn.shape[0]
    cand_s, cand_i = [], []
    rows = np.arange(n)[:, None]
    for start in range(0, m, NUMPY_BLOCK_ROWS):
        s = qn @ dbn[start:start + NUMPY_BLOCK_ROWS].T
        kk = min(k, s.shape[1])
        part = np.argpartition(s, s.shape[1] - kk, axis=1)[:, -kk:]  # the kk largest, any order
        cand_s.append(s[rows, part])
        cand_i.append(part + start)
    cs, ci = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
    part = np.argpartition(cs, cs.shape[1] - k, axis=1)[:, -k:]
    cs, ci = cs[rows, part], ci[rows, part]
    order = np.lexsort((ci, -cs), axis=1)  # best first, ties to the lower index
    return cs[rows, order], ci[rows, order]


def sgemm_bound(qn: np.ndarray, dbn: np.ndarray) -> None:
    """Only the fp32 matmul, in the numpy method's blocks, into one reused output buffer."""
    out = np.empty((qn.shape[0], NUMPY_BLOCK_ROWS), np.float32)
    for start in range(0, dbn.shape[0], NUMPY_BLOCK_ROWS):
        blk = dbn[start:start + NUMPY_BLOCK_ROWS]
        np.matmul(qn, blk.T, out=out[:, :blk.shape[0]])


def timed(f: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def check_agreement(name: str, idx: np.ndarray, ref_idx: np.ndarray, qn64: np.ndarray,
                    dbn: np.ndarray) -> dict:
    """Ties allowed: float64 cosine at each rank equal to the reference's within TIE_TOL."""
    idx = np.asarray(idx, np.int64)
    valid = bool(((idx >= 0) & (idx < dbn.shape[0])).all())
    if not valid:
        return {"method": name, "ok": False, "why": "index out of range"}
    s = np.einsum("qd,qkd->qk", qn64, dbn[idx].astype(np.float64))
    s_ref = np.einsum("qd,qkd->qk", qn64, dbn[ref_idx].astype(np.float64))
    diff = float(np.abs(s - s_ref).max())
    same_rows = int((idx == ref_idx).all(axis=1).sum())
    distinct = all(len(set(row)) == idx.shape[1] for row in idx.tolist())
    return {"method": name, "ok": diff <= TIE_TOL and distinct, "max_score_diff": diff,
            "identical_rows": same_rows, "rows": int(idx.shape[0]), "distinct": distinct}


def summary(times: list[float], n: int) -> dict:
    med = statistics.median(times)
    return {"min_s": min(times), "median_s": med, "max_s": max(times),
            "queries_per_s": n / med, "times_s": times}


def bench_size(m: int, args, faiss, log: Printer, bar) -> dict:
    import jax

    from jaxemb import search

    n, d, k = args.queries, args.dim, args.k
    rng = np.random.default_rng([args.seed, m])
    log(f"\n== database {m:,} x {d}, {n:,} queries, k={k}: i.i.d. standard normal float32 "
        f"(seed {args.seed}), cosine ==")
    db = rng.standard_normal((m, d), dtype=np.float32)
    q = rng.standard_normal((n, d), dtype=np.float32)

    builds = {}
    builds["numpy normalise database"], dbn = timed(lambda: normalise(db))
    t, ix = timed(lambda: jax.block_until_ready(search.index(db, "cosine")))
    builds["jaxemb index(db, 'cosine')"] = t
    if faiss is not None:
        fidx = faiss.IndexFlatIP(d)
        builds["faiss IndexFlatIP.add"], _ = timed(lambda: fidx.add(dbn))
    db = None  # jaxemb holds its own mapped keys; free the raw copy
    gc.collect()

    def run_jaxemb():
        s, i = ix.search(q, k)
        return np.asarray(s), np.asarray(i)

    def run_numpy():
        return numpy_topk(normalise(q), dbn, k)

    def run_faiss():
        return fidx.search(normalise(q), k)

    def run_sgemm():
        sgemm_bound(normalise(q), dbn)

    methods: dict[str, Callable[[], object]] = {"jaxemb": run_jaxemb, "numpy": run_numpy}
    if faiss is not None:
        methods["faiss"] = run_faiss
    methods["sgemm bound"] = run_sgemm

    warm, results = {}, {}
    for name, f in methods.items():
        bar.set_postfix_str(f"m={m:,} warm-up {name}")
        warm[name], results[name] = timed(f)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.repeats):
        for name, f in methods.items():
            bar.set_postfix_str(f"m={m:,} round {r + 1}/{args.repeats} {name}")
            t, out = timed(f)
            times[name].append(t)
            if out is not None:
                results[name] = out
            bar.update(1)

    for name, t in builds.items():
        log(f"  build (not timed below): {name:32s} {t:8.3f} s")
    log("  warm-up (first call, incl. compilation): "
        + ", ".join(f"{name} {t:.3f} s" for name, t in warm.items()))
    log(f"  {'method':12s} {'min s':>8s} {'median s':>9s} {'max s':>8s} {'queries/s':>10s}"
        f"   ({args.repeats} interleaved rounds)")
    stats = {name: summary(t, n) for name, t in times.items()}
    for name, st in stats.items():
        log(f"  {name:12s} {st['min_s']:8.3f} {st['median_s']:9.3f} {st['max_s']:8.3f} "
            f"{st['queries_per_s']:10.1f}")

    ratios = {}
    jx = stats["jaxemb"]["median_s"]
    for other in ("faiss", "numpy", "sgemm bound"):
        if other in stats:
            ratios[f"jaxemb/{other}"] = stats[other]["median_s"] / jx
    if "faiss" not in stats:
        log("  faiss: not installed, skipped (pip install faiss-cpu)")
    for key, v in ratios.items():
        other = key.split("/", 1)[1]
        log(f"  speed ratio {key:20s} {v:6.3f}  (queries/s of jaxemb / {other}, medians; "
            f">1: jaxemb faster)")

    qn64 = normalise(q).astype(np.float64)
    ref_idx = np.asarray(results["numpy"][1], np.int64)
    checks = [check_agreement(name, results[name][1], ref_idx, qn64, dbn)
              for name in ("jaxemb", "faiss") if name in results]
    for c in checks:
        if "max_score_diff" in c:
            log(f"  agreement {c['method']:6s} vs numpy: {'OK' if c['ok'] else 'MISMATCH'} "
                f"(identical index rows {c['identical_rows']}/{c['rows']}, max |score diff| "
                f"at any rank {c['max_score_diff']:.2e}, tolerance {TIE_TOL:g})")
        else:
            log(f"  agreement {c['method']:6s} vs numpy: MISMATCH ({c['why']})")
    return {"size": m, "dim": d, "queries": n, "k": k, "build_s": builds, "warmup_s": warm,
            "methods": stats, "ratios": ratios, "agreement": checks,
            "agree": all(c["ok"] for c in checks)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    try:
        import faiss
    except ImportError:
        faiss = None
    memory = keep_freed_memory()  # before the big arrays exist
    log = Printer()
    env = environment(faiss, memory)
    log("Exact top-k cosine search: jaxemb vs numpy vs FAISS IndexFlatIP")
    log(f"data: random i.i.d. standard normal float32, seed {args.seed}; {args.queries:,} "
        f"queries, dim {args.dim}, k {args.k}, sizes {', '.join(f'{m:,}' for m in args.sizes)}")
    for key, v in env.items():
        log(f"  {key}: {v}")
    log("note: the sgemm bound is the fp32 matmul alone; jaxemb's exact search first scores the "
        "database in bfloat16 (with a proven error bound) and rescores its candidates in fp32, "
        "so it can run below that bound")
    if faiss is None:
        log("  faiss not installed: the FAISS column is skipped (pip install faiss-cpu)")

    per_size = []
    n_methods = 3 + (faiss is not None)
    with tqdm(total=len(args.sizes) * args.repeats * n_methods, desc="bench_search",
              file=sys.stderr, dynamic_ncols=True) as bar:
        for m in args.sizes:
            per_size.append(bench_size(m, args, faiss, log, bar))
            gc.collect()  # this size's arrays (1.2 GB per 1M x 300 copy) go before the next
    ok = all(r["agree"] for r in per_size)
    log(f"\nall methods agree (ties allowed): {'yes' if ok else 'NO'}")
    if args.json is not None:
        payload = {"config": vars(args), "environment": env, "results": per_size,
                   "all_agree": ok, "output": log.lines}
        write_json_atomically(args.json, payload)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
