"""The fair search protocol: each method timed in its own process, each library on its fastest
BLAS kernel. Used by ``experiments.bench_search``, ``experiments.bench_ivf`` and Q6 of the study.

Why processes: OpenMP (FAISS) and OpenBLAS worker threads spin for a while after each call,
taking the cores from whatever runs next in the same process, so in one process the order of
the methods changes the winner. ``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP threads sleep, but
it does not reach OpenBLAS's pthreads (numpy's build) and changes how FAISS itself runs: on an
oversubscribed machine (load 6 on 2 cores) it made FAISS 2.8x faster, at load 4 no faster
(probe: 378 vs 368 ms). So each method runs in its own process, and FAISS's wait policy is
probed like its kernel (:func:`_pick_wait_policy`).

Why a kernel probe: faiss-cpu's wheel bundles its own OpenBLAS (0.3.15), which takes some
AVX-512 CPUs for "Barcelona" (no AVX) unless ``OPENBLAS_CORETYPE`` says otherwise, and numpy has
another OpenBLAS. :func:`pick_kernels` runs a short fixed workload per library once per
candidate core type, each in its own process, and keeps the fastest; threadpoolctl's record of
the kernel each process actually ran is kept with the timings.

A child runs ``python -m jaxemb.search_fair TASK_JSON`` (:func:`child`) and prints its result as
one JSON line; :func:`run_task` starts it. The variable ``OPENBLAS_CORETYPE`` is only ever set
in children, never in the calling process.

Also here, for the approximate part: the planted data of the IVF benchmarks
(:func:`make_data`), recall@k (:func:`recall`), and exact-then-IVF timing per library
(:func:`ivf_jaxemb`, :func:`ivf_faiss`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np

from jaxemb import search_timing, timing

PROBE_TIE = 0.05  # kernels within 5% of the fastest probe count as equally fast
LIBRARY = {"jaxemb": "jaxemb", "jaxemb fp32 scan": "jaxemb", "faiss": "faiss", "numpy": "numpy",
           "sgemm bound": "numpy"}  # the library whose BLAS each method runs on
DATASETS = ("gaussian", "clustered")


def _quiet(line: str = "") -> None:
    pass


def have_faiss() -> bool:
    """Whether faiss is installed (without importing it, so its OpenBLAS stays unloaded here)."""
    return importlib.util.find_spec("faiss") is not None


# --- processes and kernels --------------------------------------------------------------------

def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f
                         if line.startswith("flags")), set())
    except OSError:
        return set()


def openblas_coretype_candidates() -> list[str | None]:
    """OpenBLAS core types worth trying on this CPU, widest vectors first; None: OpenBLAS's own
    detection (faiss-cpu's bundled OpenBLAS 0.3.15 takes some AVX-512 CPUs for "Barcelona", no
    AVX, so detection alone is not trusted)."""
    flags = cpu_flags()
    out: list[str | None] = []
    if "avx512f" in flags:
        out.append("SkylakeX")
    if "avx2" in flags:
        out.append("Haswell")
    return out + [None]


def child_env(coretype: str | None, xla_flags: str | None = None,
              extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``OPENBLAS_CORETYPE`` set to ``coretype`` (or removed
    for None), unless None ``XLA_FLAGS`` set to ``xla_flags``, and the variables of ``extra``:
    for a child process only; the parent's own settings are left alone."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    env.update(extra or {})
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def blas_info() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process, with the kernel (``architecture``,
    OpenBLAS's core type) each runs, from ``threadpoolctl`` (empty if it is not installed)."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture",
            "threading_layer")
    return [{k: d.get(k) for k in keep if k in d} for d in threadpoolctl.threadpool_info()]


def run_child(module: str, argv: list[str], env: dict[str, str]) -> dict:
    """Run ``python -m module *argv`` in its own process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise RuntimeError(f"{module} {' '.join(argv)} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_task(task: dict, coretype: str | None, xla_flags: str | None = None,
             extra: dict[str, str] | None = None) -> dict:
    """:func:`child` of ``task`` in a new process with ``OPENBLAS_CORETYPE=coretype`` (and
    ``XLA_FLAGS=xla_flags`` unless None, and the variables of ``extra``)."""
    return run_child("jaxemb.search_fair", [json.dumps(task)],
                     child_env(coretype, xla_flags, extra))


def _openblas(blas: list[dict], library: str) -> list[dict]:
    """The records of ``library``'s OpenBLAS among :func:`blas_info`'s: faiss-cpu's is loaded as
    ``libopenblas``, numpy's as ``libscipy_openblas``."""
    want = "libopenblas" if library == "faiss" else "libscipy_openblas"
    return [b for b in blas if b.get("user_api") == "blas" and b.get("prefix") == want]


def openblas_kernel(blas: list[dict], library: str) -> str:
    """The OpenBLAS of ``library`` ("faiss" or "numpy") among :func:`blas_info`'s records, in
    words: version and core type."""
    return ", ".join(f"OpenBLAS {b.get('version')} {b.get('architecture')}"
                     for b in _openblas(blas, library)) or "?"


def kernel_of(method: str, blas: list[dict]) -> str:
    """The matmul kernel ``method`` ran on, in words."""
    lib = LIBRARY[method]
    return "XLA (own kernels)" if lib == "jaxemb" else openblas_kernel(blas, lib)


def pick_kernels(probe_rows: int, log: Callable[[str], None] = _quiet) -> dict:
    """{library: {"coretype", "probes" per candidate}}: the fastest ``OPENBLAS_CORETYPE`` for
    numpy and (when installed) faiss, each candidate probed in its own process
    (:func:`jaxemb.search_timing.probe_kernel` on ``probe_rows`` rows). OpenBLAS's own
    detection (None) is probed first; a candidate it already detects is the same kernel and is
    not probed again."""
    out = {}
    for lib in ["numpy"] + (["faiss"] if have_faiss() else []):
        cands = openblas_coretype_candidates()
        ran = {}
        for cand in [None, *cands[:-1]]:
            detected = [b.get("architecture") for b in _openblas(ran["None"]["blas"], lib)] \
                if cand is not None else []
            if cand in detected:
                continue
            ran[str(cand)] = run_task({"task": "probe", "library": lib, "rows": probe_rows}, cand)
        # Widest candidate first, so that the tie rule below prefers it.
        probes = {str(c): {"seconds": ran[str(c)]["seconds"],
                           "ran": openblas_kernel(ran[str(c)]["blas"], lib)}
                  for c in cands if str(c) in ran}
        # Fastest wins; within PROBE_TIE of it, the candidate listed first (widest vectors):
        # on a shared machine a 5% gap between two kernels is noise.
        fastest = min(v["seconds"] for v in probes.values())
        best = next(c for c, v in probes.items() if v["seconds"] <= fastest * (1 + PROBE_TIE))
        out[lib] = {"coretype": None if best == "None" else best, "probes": probes}
        log(f"  {lib} kernel probe: " + ", ".join(
            f"OPENBLAS_CORETYPE={c} -> {v['ran']} {v['seconds'] * 1e3:.0f} ms"
            for c, v in probes.items()) + f"; using {best}")
        if lib == "faiss":
            out[lib]["env"] = _pick_wait_policy(probe_rows, out[lib], log)
    return out


def _pick_wait_policy(probe_rows: int, faiss_kernel: dict, log) -> dict[str, str]:
    """FAISS's OpenMP wait policy, probed like its kernel: the same workload on the picked core
    type with ``OMP_WAIT_POLICY=PASSIVE`` in its own process; PASSIVE is kept (as {variable:
    value} for FAISS's processes) only if faster by more than PROBE_TIE than OpenMP's default,
    whose worker threads spin between parallel regions. On an oversubscribed machine (load 6
    on 2 cores, 2026-12-07) the spinning made FAISS 2.8x slower than under PASSIVE."""
    default = faiss_kernel["probes"][str(faiss_kernel["coretype"])]["seconds"]
    passive = run_task({"task": "probe", "library": "faiss", "rows": probe_rows},
                       faiss_kernel["coretype"], extra={"OMP_WAIT_POLICY": "PASSIVE"})["seconds"]
    faiss_kernel["wait_policy_probe"] = {"default": default, "PASSIVE": passive}
    pick = {"OMP_WAIT_POLICY": "PASSIVE"} if passive * (1 + PROBE_TIE) < default else {}
    log(f"  faiss OpenMP wait probe: default {default * 1e3:.0f} ms, OMP_WAIT_POLICY=PASSIVE "
        f"{passive * 1e3:.0f} ms; using {'PASSIVE' if pick else 'the default'}")
    return pick


def env_for(method: str, kernels: dict) -> dict[str, str]:
    """Variables besides the core type for a method's process (FAISS's probed OpenMP wait
    policy, :func:`_pick_wait_policy`)."""
    return dict(kernels.get(LIBRARY[method], {}).get("env", {}))


def coretype_for(method: str, kernels: dict) -> str | None:
    """The ``OPENBLAS_CORETYPE`` a method's process runs with: its library's pick; jaxemb's
    matmuls are XLA's own, so its process keeps this process's setting."""
    lib = LIBRARY[method]
    if lib == "jaxemb":
        return os.environ.get("OPENBLAS_CORETYPE")
    return kernels[lib]["coretype"]


# --- approximate search: data, recall, exact-then-IVF per library -----------------------------

def make_data(kind: str, rows: int, queries: int, dim: int, seed: int, noise: float = 1.0):
    """(database [rows, dim], queries [queries, dim]) float32, queries drawn apart.

    ``gaussian``: i.i.d. standard normal (no structure for a quantizer to find). ``clustered``:
    ``rows / 100`` centres drawn standard normal; each row a random centre plus ``noise`` times
    standard normal noise, scaled by a log-normal factor (sigma 0.25) so that dot and cosine
    rank differently."""
    rng = np.random.default_rng([seed, DATASETS.index(kind)])
    if kind == "gaussian":
        return (rng.standard_normal((rows, dim), dtype=np.float32),
                rng.standard_normal((queries, dim), dtype=np.float32))
    centres = rng.standard_normal((max(1, rows // 100), dim), dtype=np.float32)

    def draw(n):
        X = centres[rng.integers(0, len(centres), n)]
        X += np.float32(noise) * rng.standard_normal((n, dim), dtype=np.float32)
        X *= rng.lognormal(0.0, 0.25, (n, 1)).astype(np.float32)
        return X

    return draw(rows), draw(queries)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (found [n, k], truth [n, k])."""
    hits = [len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


@dataclasses.dataclass(frozen=True)
class IVFSettings:
    """What an exact-then-IVF measurement needs (both libraries use the same)."""

    k: int
    nlist: int
    nprobes: tuple[int, ...]
    iters: int  # k-means iterations
    repeats: int  # timed calls per setting, after one warm-up
    seed: int  # k-means seed (jaxemb's PRNG key, FAISS's cp.seed)


def _times(f, repeats: int):
    warm, out = timing.timed(f)
    times = []
    for _ in range(repeats):
        t, out = timing.timed(f)
        times.append(t)
    return warm, times, out


def ivf_jaxemb(s: IVFSettings, X, Q, score: str, truth_path: str,
               quantizers: tuple[str, ...] = ("direction",)) -> dict:
    """jaxemb's exact search under ``score`` (timed; its top-k, saved to ``truth_path``, is the
    truth of both libraries' recall), then :func:`jaxemb.ivf.build` per quantizer and
    ``ivf.search`` at each nprobe. {"exact", "build_s[_mips]", "lists[_mips]", "ivf[_mips]":
    {str(nprobe): min/median/max, queries_per_s, warmup_s, recall}}."""
    import jax

    from jaxemb import ivf, search

    n = len(Q)
    ex = search.index(X, score)
    warm, times, (_, truth) = _times(lambda: tuple(map(np.asarray, ex.search(Q, s.k))),
                                     s.repeats)
    ex = None  # free the exact index's keys before the IVF's exist
    np.save(truth_path, truth)
    out = {"exact": {**timing.summary(times, queries_per_s=n), "warmup_s": warm}}
    for quantizer in quantizers:
        build_s, index = timing.timed(lambda q=quantizer: ivf.build(
            jax.random.key(s.seed), X, s.nlist, score, iters=s.iters, quantizer=q))
        sizes = index.list_sizes()
        tag = "" if quantizer == "direction" else "_mips"
        out["build_s" + tag] = build_s
        out["lists" + tag] = {"largest": int(sizes.max()), "mean": float(sizes.mean()),
                              "empty": int((sizes == 0).sum()), "window": index.window}
        out["ivf" + tag] = {}
        for p in s.nprobes:
            def run(p=p, ix=index):
                return np.asarray(ivf.search(ix, Q, s.k, p)[1])

            warm, times, idx = _times(run, s.repeats)
            out["ivf" + tag][str(p)] = {**timing.summary(times, queries_per_s=n),
                                        "warmup_s": warm, "recall": recall(idx, truth)}
    return out


def ivf_faiss(s: IVFSettings, X, Q, score: str, truth_path: str) -> dict:
    """FAISS ``IndexFlatIP`` (exact, timed) and ``IndexIVFFlat`` with ``s.nlist`` lists at each
    nprobe, recall against the top-k in ``truth_path``. Cosine: inner product of normalised
    rows; dot: ``METRIC_INNER_PRODUCT`` on the raw rows. Same keys as :func:`ivf_jaxemb`."""
    import faiss

    n, d = Q.shape
    truth = np.load(truth_path)
    if score == "cosine":
        X, Q = search_timing.normalise(X), search_timing.normalise(Q)
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    warm, times, _ = _times(lambda: flat.search(Q, s.k), s.repeats)
    flat.reset()
    out = {"exact": {**timing.summary(times, queries_per_s=n), "warmup_s": warm}}
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, s.nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = s.iters
    index.cp.seed = s.seed

    def build():
        index.train(X)
        index.add(X)

    out["build_s"], _ = timing.timed(build)
    sizes = np.array([index.invlists.list_size(i) for i in range(s.nlist)])
    out["lists"] = {"largest": int(sizes.max()), "mean": float(sizes.mean()),
                    "empty": int((sizes == 0).sum())}
    out["ivf"] = {}
    for p in s.nprobes:
        index.nprobe = p
        warm, times, (_, idx) = _times(lambda: index.search(Q, s.k), s.repeats)
        out["ivf"][str(p)] = {**timing.summary(times, queries_per_s=n), "warmup_s": warm,
                              "recall": recall(idx, truth)}
    return out


# --- what a child process runs ----------------------------------------------------------------

def _method_task(t: dict) -> dict:
    """One method: every size of ``t["sizes"]`` in turn (:func:`search_timing.measure_alone`);
    then, with ``t["roofline"]`` = n, the roofline of the method's library (numpy or jax); then,
    for jaxemb and faiss when ``t["ivf"]`` is given, exact and IVF search on its data."""
    faiss = search_timing.load_faiss()
    sizes = [search_timing.measure_alone(
        t["method"], m, queries=t["queries"], dim=t["dim"], k=t["k"], repeats=t["repeats"],
        seed=t["seed"], faiss=faiss, latency=t.get("latency", search_timing.LATENCY_QUERIES))
        for m in t["sizes"]]
    out = {"method": t["method"], "sizes": sizes}
    lib = {"jaxemb": "jax", "numpy": "numpy"}.get(LIBRARY[t["method"]])
    if t.get("roofline") and lib:
        out["roofline"] = search_timing.roofline(n=t["roofline"], libraries=(lib,))
    spec = t.get("ivf")
    if spec and t["method"] in ("jaxemb", "faiss"):
        s = IVFSettings(k=t["k"], nlist=spec["nlist"], nprobes=tuple(spec["nprobes"]),
                        iters=spec["iters"], repeats=t["repeats"], seed=t["seed"])
        X, Q = make_data(spec["data"], spec["rows"], t["queries"], t["dim"], t["seed"],
                         spec["noise"])
        measure = ivf_jaxemb if t["method"] == "jaxemb" else ivf_faiss
        out["ivf"] = {score: measure(s, X, Q, score, os.path.join(spec["truth_dir"],
                                                                  f"{score}.npy"))
                      for score in spec["scores"]}
    return out


def child(task: dict) -> dict:
    """What one child process measures: ``task["task"]`` is "probe" (library, rows),
    "roofline" (n), "interleaved" (the one-process protocol, :func:`search_timing.measure`) or
    "method" (:func:`_method_task`). The BLAS libraries loaded (:func:`blas_info`) are added."""
    timing.keep_freed_memory()
    kind = task["task"]
    if kind == "probe":
        out = {"seconds": search_timing.probe_kernel(task["library"], task["rows"])}
    elif kind == "roofline":
        out = {**search_timing.roofline(n=task["n"]), "dot_rates": search_timing.dot_rates()}
    elif kind == "interleaved":
        out = {"results": search_timing.measure(
            task["sizes"], queries=task["queries"], dim=task["dim"], k=task["k"],
            repeats=task["repeats"], seed=task["seed"], faiss=search_timing.load_faiss())}
    elif kind == "method":
        out = _method_task(task)
    else:
        raise ValueError(f"unknown task {kind!r}")
    versions = {name: sys.modules[name].__version__ for name in ("numpy", "jax", "jaxlib", "faiss")
                if name in sys.modules}
    return {**out, "blas": blas_info(), "versions": versions,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1])), default=float))
