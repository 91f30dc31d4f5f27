"""Timing exact top-k cosine search: jaxemb vs numpy vs FAISS ``IndexFlatIP`` vs the matmul alone.

The measurement behind ``experiments.bench_search`` and Q6 of the study. The data are random:
database rows and queries i.i.d. standard normal float32 (cosine scores concentrate near 0 and the
top-k are only a few standard deviations out: the hard case for pruning schemes, the usual case
for a flat index). :func:`measure_alone` times one method in the calling process: the fair
protocol runs it in a process of its own per method (:mod:`jaxemb.search_fair`).
:func:`measure` is the older one-process protocol, kept for comparison: per database size every
method is warmed up once, then the methods run interleaved for ``repeats`` rounds
(:mod:`jaxemb.timing`), where one library's spinning threads slow the next.

Methods (each returns the k best rows per query, best first):

* ``jaxemb``: ``jaxemb.search.index(db, "cosine")`` built once (build time reported apart, not
  timed, like FAISS's ``add``), then ``Index.search(queries, k)`` timed.
* ``numpy``: normalise, fp32 matmul against database blocks, ``argpartition`` of each block's k
  best, a final ``argpartition`` over the candidates and a sort of the k.
* ``faiss``: ``IndexFlatIP`` over the normalised database (``add`` not timed); skipped when faiss
  is not installed.
* ``sgemm bound``: only the fp32 matmul ``q @ db.T`` by numpy (OpenBLAS) in the same blocks, no
  selection: the machine's matmul cost for the problem, a floor for any method that scores every
  row in fp32.

Correctness: every method's indices are checked against the numpy method's, allowing ties: the
float64 cosine of each returned row must equal the reference's at every rank within
:data:`TIE_TOL`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from types import ModuleType

import numpy as np

from jaxemb import timing

NUMPY_BLOCK_ROWS = 16384  # database rows per numpy block: a [1000, 16384] fp32 block is 64 MiB
TIE_TOL = 1e-5
METHODS = ("jaxemb", "faiss", "numpy", "sgemm bound")  # the order of tables and plots


def load_faiss() -> ModuleType | None:
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` [n, d] scaled to unit length (rows of norm < 1e-8 divided by 1e-8)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-8))


def numpy_topk(qn: np.ndarray, dbn: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [n, k], indices [n, k]), best first, ties to the lower index: blocked matmul and
    argpartition per block, then argpartition and sort of the candidates."""
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


def _quiet(line: str = "") -> None:
    pass


def measure_size(size: int, *, queries: int, dim: int, k: int, repeats: int, seed: int,
                 faiss: ModuleType | None = None, log: Callable[[str], None] = _quiet,
                 bar: timing.ProgressBar | None = None) -> dict:
    """Time every method on a random database of ``size`` rows; lines describing the run go to
    ``log``. Returns {"size", "dim", "queries", "k", "build_s", "warmup_s", "methods" (per
    method: min/median/max seconds, queries_per_s, times_s), "ratios" (other's median / jaxemb's:
    > 1 means jaxemb is faster), "agreement" (per method, :func:`check_agreement`), "agree"}."""
    import jax

    from jaxemb import search

    m, n, d = size, queries, dim
    rng = np.random.default_rng([seed, m])
    log(f"\n== database {m:,} x {d}, {n:,} queries, k={k}: i.i.d. standard normal float32 "
        f"(seed {seed}), cosine ==")
    db = rng.standard_normal((m, d), dtype=np.float32)
    q = rng.standard_normal((n, d), dtype=np.float32)

    builds = {}
    builds["numpy normalise database"], dbn = timing.timed(lambda: normalise(db))
    t, ix = timing.timed(lambda: jax.block_until_ready(search.index(db, "cosine")))
    builds["jaxemb index(db, 'cosine')"] = t
    if faiss is not None:
        fidx = faiss.IndexFlatIP(d)
        builds["faiss IndexFlatIP.add"], _ = timing.timed(lambda: fidx.add(dbn))
    db = None  # jaxemb holds its own mapped keys; free the raw copy
    gc.collect()

    def run_jaxemb():
        s, i = ix.search(q, k)
        return np.asarray(s), np.asarray(i)

    methods: dict[str, Callable[[], object]] = {
        "jaxemb": run_jaxemb, "numpy": lambda: numpy_topk(normalise(q), dbn, k)}
    if faiss is not None:
        methods["faiss"] = lambda: fidx.search(normalise(q), k)
    methods["sgemm bound"] = lambda: sgemm_bound(normalise(q), dbn)

    label = f"m={m:,} "
    warm, results = timing.warm_up(methods, bar, label)
    times, last = timing.interleave(methods, repeats, bar, label)
    results.update(last)
    stats = {name: timing.summary(t, queries_per_s=n) for name, t in times.items()}
    ratios = {f"jaxemb/{other}": stats[other]["median_s"] / stats["jaxemb"]["median_s"]
              for other in ("faiss", "numpy", "sgemm bound") if other in stats}
    _log_times(log, builds, warm, stats, ratios, repeats)

    qn64 = normalise(q).astype(np.float64)
    ref_idx = np.asarray(results["numpy"][1], np.int64)
    checks = [check_agreement(name, results[name][1], ref_idx, qn64, dbn)
              for name in ("jaxemb", "faiss") if name in results]
    _log_checks(log, checks)
    return {"size": m, "dim": d, "queries": n, "k": k, "build_s": builds, "warmup_s": warm,
            "methods": stats, "ratios": ratios, "agreement": checks,
            "agree": all(c["ok"] for c in checks)}


def measure(sizes, *, queries: int, dim: int, k: int, repeats: int, seed: int,
            faiss: ModuleType | None = None, log: Callable[[str], None] = _quiet,
            bar: timing.ProgressBar | None = None) -> list[dict]:
    """:func:`measure_size` for each of ``sizes`` in turn (each size's arrays are freed before
    the next: a 1M x 300 float32 copy is 1.2 GB)."""
    out = []
    for m in sizes:
        out.append(measure_size(m, queries=queries, dim=dim, k=k, repeats=repeats, seed=seed,
                                faiss=faiss, log=log, bar=bar))
        gc.collect()
    return out


def timed_calls(sizes, repeats: int, faiss: ModuleType | None) -> int:
    """How many timed calls :func:`measure` makes (a progress bar's total)."""
    return len(sizes) * repeats * (3 + (faiss is not None))


def _log_times(log, builds: dict, warm: dict, stats: dict, ratios: dict, repeats: int) -> None:
    for name, t in builds.items():
        log(f"  build (not timed below): {name:32s} {t:8.3f} s")
    log("  warm-up (first call, incl. compilation): "
        + ", ".join(f"{name} {t:.3f} s" for name, t in warm.items()))
    log(f"  {'method':12s} {'min s':>8s} {'median s':>9s} {'max s':>8s} {'queries/s':>10s}"
        f"   ({repeats} interleaved rounds)")
    for name, st in stats.items():
        log(f"  {name:12s} {st['min_s']:8.3f} {st['median_s']:9.3f} {st['max_s']:8.3f} "
            f"{st['queries_per_s']:10.1f}")
    if "faiss" not in stats:
        log("  faiss: not installed, skipped (pip install faiss-cpu)")
    for key, v in ratios.items():
        other = key.split("/", 1)[1]
        log(f"  speed ratio {key:20s} {v:6.3f}  (queries/s of jaxemb / {other}, medians; "
            f">1: jaxemb faster)")


def _log_checks(log, checks: list[dict]) -> None:
    for c in checks:
        if "max_score_diff" in c:
            log(f"  agreement {c['method']:6s} vs numpy: {'OK' if c['ok'] else 'MISMATCH'} "
                f"(identical index rows {c['identical_rows']}/{c['rows']}, max |score diff| "
                f"at any rank {c['max_score_diff']:.2e}, tolerance {TIE_TOL:g})")
        else:
            log(f"  agreement {c['method']:6s} vs numpy: MISMATCH ({c['why']})")


# --- one method per process (the fair protocol, jaxemb.search_fair) ---------------------------

ISOLATED_METHODS = ("jaxemb", "jaxemb fp32 scan", "faiss", "numpy", "sgemm bound")
LATENCY_QUERIES = 50  # single-query calls timed per method (each a different query)
ROOFLINE_N = 4096  # the roofline's sgemm is [N, N] x [N, N]


def data(size: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database [size, dim], queries [queries, dim]): the random data of :func:`measure_size`,
    the same in every process for the same arguments."""
    rng = np.random.default_rng([seed, size])
    db = rng.standard_normal((size, dim), dtype=np.float32)
    return db, rng.standard_normal((queries, dim), dtype=np.float32)


def _method(name: str, db: np.ndarray, k: int, faiss: ModuleType | None):
    """(build seconds, batch search f(q [n, d]) -> indices [n, k] or None)."""
    if name.startswith("jaxemb"):
        import jax

        from jaxemb import search

        build, ix = timing.timed(lambda: jax.block_until_ready(search.index(db, "cosine")))
        two_stage = name == "jaxemb"
        return build, lambda q: np.asarray(ix.search(q, k, two_stage=two_stage)[1])
    build, dbn = timing.timed(lambda: normalise(db))
    if name == "faiss":
        if faiss is None:
            raise RuntimeError("faiss is not installed (pip install faiss-cpu)")
        fidx = faiss.IndexFlatIP(db.shape[1])
        t, _ = timing.timed(lambda: fidx.add(dbn))
        return build + t, lambda q: fidx.search(normalise(q), k)[1]
    if name == "numpy":
        return build, lambda q: numpy_topk(normalise(q), dbn, k)[1]
    if name == "sgemm bound":
        return build, lambda q: sgemm_bound(normalise(q), dbn)
    raise ValueError(f"unknown method {name!r}; known: {', '.join(ISOLATED_METHODS)}")


def measure_alone(name: str, size: int, *, queries: int, dim: int, k: int, repeats: int,
                  seed: int, faiss: ModuleType | None = None,
                  latency: int = LATENCY_QUERIES) -> dict:
    """Time one method in this process: build, one warm-up batch, ``repeats`` batches of all the
    queries, then single-query latency over ``latency`` queries (one warm-up; 0: skipped).
    Returns {"method", "build_s", "warmup_s", "batch" (min/median/max, queries_per_s),
    "latency" (min/median/max seconds of one query; None for the sgemm bound), "indices"}."""
    db, q = data(size, queries, dim, seed)
    build, run = _method(name, db, k, faiss)
    db = None
    gc.collect()
    warm, idx = timing.timed(lambda: run(q))
    times = [timing.timed(lambda: run(q))[0] for _ in range(repeats)]
    out = {"method": name, "build_s": build, "warmup_s": warm,
           "batch": timing.summary(times, queries_per_s=queries), "latency": None,
           "indices": None if idx is None else np.asarray(idx).tolist()}
    if name != "sgemm bound" and latency > 0:
        one = [q[i % queries][None] for i in range(latency + 1)]
        lat = [timing.timed(lambda x=x: run(x))[0] for x in one]
        out["latency"] = timing.summary(lat[1:])
    return out


def roofline(repeats: int = 3, n: int = ROOFLINE_N,
             libraries: tuple[str, ...] = ("numpy", "jax")) -> dict:
    """The machine's measured fp32 matmul rate: the best of ``repeats`` [n, n] x [n, n] sgemms,
    by numpy (its OpenBLAS) and by JAX (XLA, precision HIGHEST), in GFLOP/s: {"n",
    "numpy_gflop_s", "jax_gflop_s"} for those of ``libraries`` measured."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    out: dict = {"n": n}
    if "numpy" in libraries:
        np.matmul(a, b)
        best = min(timing.timed(lambda: np.matmul(a, b))[0] for _ in range(repeats))
        out["numpy_gflop_s"] = flops / best / 1e9
    if "jax" in libraries:
        import jax
        import jax.numpy as jnp

        mm = jax.jit(lambda x, y: jnp.matmul(x, y, precision=jax.lax.Precision.HIGHEST))
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        mm(ja, jb).block_until_ready()
        best = min(timing.timed(lambda: mm(ja, jb).block_until_ready())[0]
                   for _ in range(repeats))
        out["jax_gflop_s"] = flops / best / 1e9
    return out


DOT_SHAPE = (1000, 300, 8192)  # [queries, dim] x [dim, keys]: a search's score block


def dot_rates(repeats: int = 10, shape: tuple[int, int, int] = DOT_SHAPE) -> dict:
    """XLA's CPU matmul rate per input dtype on a search-shaped [n, d] x [d, m] product, best
    and median of ``repeats``, in G(FL)OP/s: fp32 (precision HIGHEST), bf16 x bf16 with fp32
    accumulation (what the two-stage first pass runs) and int8 x int8 -> int32. Which
    instructions run is XLA's choice (jax 0.10's CPU dots go to YNNPACK, which picks bf16/int8
    dot-product or AMX kernels where the CPU has them, whatever ``--xla_cpu_max_isa`` says);
    ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` in the process switches YNNPACK off
    (a bf16 dot is then converted to fp32)."""
    import jax
    import jax.numpy as jnp

    n, d, m = shape
    rng = np.random.default_rng(2)
    a = rng.standard_normal((n, d), dtype=np.float32)
    b = rng.standard_normal((m, d), dtype=np.float32)
    dims = (((1,), (1,)), ((), ()))
    cases = {
        "fp32": (jnp.float32, jnp.float32, jax.lax.Precision.HIGHEST),
        "bf16": (jnp.bfloat16, jnp.float32, None),
        "int8": (jnp.int8, jnp.int32, None),
    }
    out: dict = {"shape": list(shape)}
    for name, (dt, acc, prec) in cases.items():
        scale = 40.0 if dt == jnp.int8 else 1.0  # int8: normal values to about +-127
        x, y = (jnp.asarray(np.clip(v * scale, -127, 127)).astype(dt) for v in (a, b))
        f = jax.jit(lambda x, y, acc=acc, prec=prec: jax.lax.dot_general(
            x, y, dims, precision=prec, preferred_element_type=acc))
        f(x, y).block_until_ready()
        times = sorted(timing.timed(lambda f=f, x=x, y=y: f(x, y).block_until_ready())[0]
                       for _ in range(repeats))
        out[f"{name}_gflop_s"] = 2.0 * n * d * m / times[0] / 1e9  # best run
        out[f"{name}_median_gflop_s"] = 2.0 * n * d * m / times[len(times) // 2] / 1e9
    return out


def probe_kernel(library: str, rows: int = 100_000) -> float:
    """Seconds of a short fixed workload on ``library``'s BLAS ("faiss": IndexFlatIP search of
    1000 queries in ``rows`` x 300; "numpy": [1000, 300] x [300, rows] sgemm), best of 5: to
    pick the fastest OpenBLAS core type, run once per candidate in its own process."""
    rng = np.random.default_rng(1)
    db = normalise(rng.standard_normal((rows, 300), dtype=np.float32))
    q = normalise(rng.standard_normal((1000, 300), dtype=np.float32))
    if library == "faiss":
        faiss = load_faiss()
        if faiss is None:
            raise RuntimeError("faiss is not installed")
        fidx = faiss.IndexFlatIP(300)
        fidx.add(db)
        f = lambda: fidx.search(q, 10)  # noqa: E731
    else:
        f = lambda: q @ db.T  # noqa: E731
    f()
    return min(timing.timed(f)[0] for _ in range(5))
