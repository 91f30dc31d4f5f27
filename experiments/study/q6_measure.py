"""Q6's measurement: the kernel probe, one process per method (:mod:`jaxemb.search_fair`), and
the agreement checks against numpy, into :class:`experiments.study.q6.Results`."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from experiments.study.q6 import LIBRARIES, Results, SearchStudyConfig
from jaxemb import search_fair, search_timing


def _task(c: SearchStudyConfig, **task) -> dict:
    return {"queries": c.queries, "dim": c.dim, "k": c.k, "repeats": c.repeats, "seed": c.seed,
            **task}


def measure(config: SearchStudyConfig, progress) -> Results:
    """Probe the kernels, then run each method in its own process over every size (numpy's and
    jaxemb's processes then measure their library's roofline; jaxemb's, then FAISS's, the
    approximate part); check agreement here."""
    c = config
    load = {"cores": len(os.sched_getaffinity(0)), "start": os.getloadavg()[0]}
    methods = [m for m in dict.fromkeys([*c.methods, "numpy"])
               if m != "faiss" or search_fair.have_faiss()]
    log = lambda line="": print(line, flush=True)  # noqa: E731
    with progress("Q6: BLAS kernel probe (one process per library and core type)"):
        kernels = search_fair.pick_kernels(c.probe_rows, log)
    versions, runs = {}, {}
    with tempfile.TemporaryDirectory(prefix="q6-truth-") as truth_dir:
        ivf = None if not c.approx_rows else {
            "data": "clustered", "rows": c.approx_rows, "noise": c.noise, "nlist": c.nlist,
            "scores": c.approx_scores, "nprobes": c.nprobes, "iters": c.iters,
            "truth_dir": truth_dir}
        for m in methods:  # jaxemb first: its exact top-k is the approximate part's truth
            with progress(f"Q6: {m} (own process, {', '.join(f'{n:,}' for n in c.sizes)} rows"
                          + (", IVF" if ivf and m in LIBRARIES else "") + ")"):
                runs[m] = search_fair.run_task(
                    _task(c, task="method", method=m, sizes=c.sizes, latency=c.latency, ivf=ivf,
                          roofline=c.roofline_n if m in ("jaxemb", "numpy") else 0),
                    search_fair.coretype_for(m, kernels))
            versions.update(runs[m].pop("versions"))
        truth_ok = _check_truth(c, truth_dir) if ivf else None
    roof = {**runs["numpy"]["roofline"], **runs["jaxemb"]["roofline"],
            "kernel": search_fair.openblas_kernel(runs["numpy"]["blas"], "numpy")}
    per_size = [_size_result(c, i, size, runs) for i, size in enumerate(c.sizes)]
    approx = None if not ivf else {
        "rows": c.approx_rows, "noise": c.noise, "nlist": c.nlist, "nprobes": list(c.nprobes),
        "iters": c.iters, "truth_agreement": truth_ok,
        "libraries": {lib: runs[lib]["ivf"] for lib in LIBRARIES if lib in runs}}
    return Results(queries=c.queries, dim=c.dim, k=c.k, repeats=c.repeats, seed=c.seed,
                   kernels=kernels, roofline=roof, versions=versions, per_size=per_size,
                   approx=approx, load={**load, "end": os.getloadavg()[0]})


def _size_result(c: SearchStudyConfig, i: int, size: int, runs: dict) -> dict:
    """One size: each method's timings and kernel; agreement with numpy, ties allowed."""
    db, q = search_timing.data(size, c.queries, c.dim, c.seed)
    dbn = search_timing.normalise(db)
    del db
    qn64 = search_timing.normalise(q).astype(np.float64)
    ref = np.asarray(runs["numpy"]["sizes"][i]["indices"], np.int64)
    out, checks = {}, []
    for m, r in runs.items():
        res = r["sizes"][i]
        if res["indices"] is not None and m != "numpy":
            checks.append(search_timing.check_agreement(m, np.asarray(res["indices"]), ref,
                                                        qn64, dbn))
        out[m] = {"batch": res["batch"], "latency": res["latency"], "build_s": res["build_s"],
                  "warmup_s": res["warmup_s"], "kernel": search_fair.kernel_of(m, r["blas"])}
    return {"size": size, "methods": out, "agreement": checks,
            "agree": all(x["ok"] for x in checks)}


def _check_truth(c: SearchStudyConfig, truth_dir: str) -> list[dict]:
    """jaxemb's exact top-k of the approximate part (both libraries' recall truth) against
    numpy's, per score, ties allowed."""
    X, Q = search_fair.make_data("clustered", c.approx_rows, c.queries, c.dim, c.seed, c.noise)
    checks = []
    for score in c.approx_scores:
        # Dot: both sides scaled by their largest norm (the order is unchanged), so the tie
        # tolerance is relative to the largest possible score, as it is for cosine.
        D, q = (search_timing.normalise(X), search_timing.normalise(Q)) if score == "cosine" \
            else (X / np.linalg.norm(X, axis=1).max(), Q / np.linalg.norm(Q, axis=1).max())
        _, ref = search_timing.numpy_topk(q, D, c.k)
        truth = np.load(f"{truth_dir}/{score}.npy")
        checks.append({"score": score, **search_timing.check_agreement(
            "jaxemb", truth, ref, q.astype(np.float64), D)})
    return checks
