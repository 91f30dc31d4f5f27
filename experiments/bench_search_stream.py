"""Exact top-k cosine search of a database larger than memory, streamed from a memory-mapped file
(:func:`jaxemb.search_stream.stream_top_k`), with the process's peak resident memory.

    python -m experiments.bench_search_stream --json /tmp/stream.json   # 10M x 300: a 12 GB file
    python -m experiments.bench_search_stream --rows 1000000 --queries 100

The file (``.npy``, float32, i.i.d. standard normal rows from ``--seed``) is written in chunks
into ``--dir`` (default: a temporary directory, removed afterwards), its pages dropped from the
page cache (``posix_fadvise(DONTNEED)``), and searched in a child process so that the peak
resident set (``VmHWM``) is the search's alone. The first ``--check-queries`` queries are then
checked against an independent numpy pass over the file (float64 scores at every rank equal
within 1e-5, ties allowed).

``--json PATH`` never overwrites an existing file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tyro

from experiments.benchkit import check_json_path, write_json_atomically
from jaxemb.search_fair import child_env, run_child

WRITE_ROWS = 1 << 18


@dataclasses.dataclass(frozen=True)
class Args:
    """Streamed exact top-k cosine search of a memory-mapped float32 file; peak RSS reported."""

    rows: int = 10_000_000
    """Database rows (10M x 300 float32 is a 12 GB file)."""
    dim: int = 300
    """Vector dimension."""
    queries: int = 1000
    """Queries, searched together."""
    k: int = 10
    """Neighbours per query."""
    chunk_rows: int = 1 << 18
    """Rows per streamed chunk."""
    check_queries: int = 20
    """Queries checked against an independent numpy pass."""
    seed: int = 0
    """Seed of the data."""
    dir: str | None = None
    """Where the file goes (default: a temporary directory, removed afterwards)."""
    json: str | None = None
    """Write the results here (refuses to overwrite)."""
    child: str | None = None
    """(internal) the file a child process searches."""


def _status_mib(field: str) -> float | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def write_file(path: Path, a: Args) -> None:
    """The .npy file, written ``WRITE_ROWS`` rows at a time (never all in memory), then its pages
    dropped from the page cache so the search reads from the disk."""
    rng = np.random.default_rng(a.seed)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (a.rows, a.dim)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, a.rows, WRITE_ROWS):
            n = min(WRITE_ROWS, a.rows - start)
            f.write(rng.standard_normal((n, a.dim), dtype=np.float32).tobytes())
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def queries(a: Args) -> np.ndarray:
    return np.random.default_rng([a.seed, 1]).standard_normal((a.queries, a.dim),
                                                              dtype=np.float32)


def child(a: Args) -> dict:
    import jax

    from jaxemb import search_stream

    jax.numpy.zeros(1).block_until_ready()
    base = _status_mib("VmRSS")
    D = search_stream.open_vectors(a.child)
    Q = queries(a)
    t = time.perf_counter()
    s, i = search_stream.stream_top_k(D, Q, a.k, "cosine", chunk_rows=a.chunk_rows)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "queries_per_s": a.queries / seconds,
            "rows_per_s": a.rows / seconds, "baseline_rss_mib": base,
            "peak_rss_mib": _status_mib("VmHWM"), "file_gib": D.nbytes / 2**30,
            "indices": i[:a.check_queries].tolist(), "scores": s[:a.check_queries].tolist()}


def check(path: Path, a: Args, idx: np.ndarray) -> dict:
    """Numpy reference over the file for the first queries: float64 scores at each rank equal."""
    from jaxemb.search_stream import open_vectors
    from jaxemb.search_timing import TIE_TOL, normalise

    D = open_vectors(path)
    q = normalise(queries(a)[:len(idx)]).astype(np.float64)
    best = np.full((len(idx), a.k), -np.inf)
    got = np.empty((len(idx), a.k))
    for start in range(0, a.rows, WRITE_ROWS):
        X = D[start:start + WRITE_ROWS].astype(np.float64)
        s = q @ normalise(X).T
        best = -np.sort(-np.concatenate([best, s], axis=1), axis=1)[:, :a.k]
        rows = (idx >= start) & (idx < start + len(X))
        for r, c in zip(*np.nonzero(rows), strict=True):
            got[r, c] = s[r, idx[r, c] - start]
    diff = float(np.abs(best - got).max())
    return {"queries": len(idx), "max_score_diff": diff, "ok": diff <= TIE_TOL}


def main(a: Args) -> dict:
    if a.child:
        return child(a)
    if min(a.rows, a.dim, a.queries, a.k, a.chunk_rows) < 1 or a.k > a.rows:
        raise SystemExit("error: --rows, --dim, --queries, --chunk-rows >= 1 and 1 <= --k <= "
                         "--rows")
    try:
        check_json_path(a.json)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="bench_search_stream-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"vectors-{a.rows}x{a.dim}-{a.seed}.npy"
    out: dict = {"config": dataclasses.asdict(a)}
    try:
        if not path.exists():
            t = time.perf_counter()
            write_file(path, a)
            out["write_s"] = time.perf_counter() - t
        argv = ["--child", str(path), "--rows", str(a.rows), "--dim", str(a.dim), "--queries",
                str(a.queries), "--k", str(a.k), "--chunk-rows", str(a.chunk_rows),
                "--check-queries", str(a.check_queries), "--seed", str(a.seed)]
        r = run_child("experiments.bench_search_stream", argv, child_env(
            os.environ.get("OPENBLAS_CORETYPE")))
        out["search"] = {key: v for key, v in r.items() if key not in ("indices", "scores")}
        out["check"] = check(path, a, np.asarray(r["indices"], np.int64))
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
    s = out["search"]
    lines = [f"streamed exact top-{a.k} cosine: {a.rows:,} x {a.dim} float32 "
             f"({s['file_gib']:.1f} GiB, memory-mapped), {a.queries:,} queries, chunks of "
             f"{a.chunk_rows:,} rows",
             f"  {s['seconds']:.1f} s: {s['queries_per_s']:.1f} queries/s, "
             f"{s['rows_per_s'] / 1e6:.2f}M database rows/s against all the queries",
             f"  peak RSS {s['peak_rss_mib']:.0f} MiB (after importing JAX "
             f"{s['baseline_rss_mib']:.0f} MiB)",
             f"  check of {out['check']['queries']} queries against numpy: "
             f"{'OK' if out['check']['ok'] else 'MISMATCH'} (max |score diff| "
             f"{out['check']['max_score_diff']:.1e})"]
    print("\n".join(lines), flush=True)
    out["output"] = lines
    if a.json:
        write_json_atomically(a.json, out)
    return out


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m experiments.bench_search_stream", description=__doc__)
    res = main(args)
    if args.child:
        print(json.dumps(res, default=float))
    elif not res["check"]["ok"]:
        sys.exit(1)
