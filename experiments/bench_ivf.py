"""Approximate search: recall@k against queries/s, jaxemb's IVF (:mod:`jaxemb.ivf`) beside FAISS
``IndexIVFFlat`` with the same number of lists, for cosine and dot, on two kinds of data.

    python -m experiments.bench_ivf --json /tmp/ivf.json --plot /tmp/ivf.png
    python -m experiments.bench_ivf --rows 100000 --nlist 256 --repeats 2 --plot /tmp/ivf-s.png

Data (float32, ``--dim`` columns, queries drawn apart from the database):

* ``gaussian``: i.i.d. standard normal rows and queries: no structure for a quantizer to find,
  the hard case for every IVF.
* ``clustered``: planted clusters: ``rows / 100`` centres drawn standard normal; each row is a
  random centre plus ``--noise`` times standard normal noise (1: noise as large as the centre),
  scaled by a log-normal factor (sigma 0.25) so that dot and cosine rank differently; queries
  the same way.

Each library runs in its own process (FAISS with ``OPENBLAS_CORETYPE`` set to the widest
kernel the CPU has; the kernel each ran on is recorded through threadpoolctl), the jaxemb
process first: it computes the exact top-k (``jaxemb.search``, exact in fp32, ties aside) that
both recalls are measured against and times it (the "exact" speed), then builds the IVF and
times ``ivf.search`` at each ``--nprobes``. The FAISS process times ``IndexFlatIP`` (exact) and
``IndexIVFFlat`` (k-means with ``niter = --iters`` on at most 256 rows per list, its default)
at the same nprobes. Cosine: inner product of normalised rows for both. Dot: jaxemb lifts the
keys with the MIPS map (:data:`jaxemb.scoring.mips`); FAISS uses ``METRIC_INNER_PRODUCT`` on
the raw rows (its own MIPS setup: k-means in L2, probing by inner product). jaxemb's dot runs
twice: k-means on the keys' directions (the default) and on the MIPS-lifted keys
(``quantizer="mips"``, rows "lift np"). Timings: one
warm-up call, then ``--repeats`` calls of all the queries in one batch; min/median/max seconds;
queries/s on the median.

``--json PATH`` and ``--plot PATH`` never overwrite an existing file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from typing import Literal

import tyro

from experiments.benchkit import check_json_path, write_json_atomically
from jaxemb import search_fair
from jaxemb.search_fair import (
    DATASETS,
    blas_info,
    child_env,
    make_data,
    openblas_coretype_candidates,
    run_child,
)

SCORES = ("cosine", "dot")


@dataclasses.dataclass(frozen=True)
class Args:
    """Recall@k against queries/s for jaxemb IVF and FAISS IndexIVFFlat (each in its own
    process), cosine and dot, Gaussian and clustered planted data."""

    rows: int = 1_000_000
    """Database rows."""
    dim: int = 300
    """Vector dimension."""
    queries: int = 1000
    """Queries (searched in one batch)."""
    k: int = 10
    """Neighbours per query (recall@k)."""
    nlist: int = 1024
    """Inverted lists (k-means centroids), the same for both libraries."""
    nprobes: tuple[int, ...] = (1, 4, 16, 64)
    """Lists probed per query."""
    iters: int = 10
    """k-means iterations (both libraries)."""
    datasets: tuple[Literal["gaussian", "clustered"], ...] = DATASETS
    """Which data to run."""
    repeats: int = 3
    """Timed calls per setting (after one warm-up)."""
    noise: float = 1.0
    """Clustered data: the noise's scale relative to the centres' (smaller: tighter clusters)."""
    seed: int = 0
    """Seed of the data and of jaxemb's k-means key (FAISS's k-means seed too)."""
    faiss: bool = True
    """Run FAISS beside jaxemb (skipped if faiss is not installed)."""
    json: str | None = None
    """Write everything to this JSON file (refuses to overwrite)."""
    plot: str | None = None
    """Write the recall–speed plot here (PNG; refuses to overwrite)."""
    child: str | None = None
    """(internal) 'jaxemb' or 'faiss': measure one library on --datasets in this process."""
    truth: str | None = None
    """(internal) directory of the exact top-k files the jaxemb child writes for FAISS."""

    def validate(self) -> None:
        if min(self.rows, self.dim, self.queries, self.repeats, self.iters) < 1:
            raise ValueError("--rows, --dim, --queries, --repeats and --iters must be >= 1")
        if not self.noise > 0:
            raise ValueError(f"--noise must be > 0, got {self.noise}")
        if not 1 <= self.k <= self.rows:
            raise ValueError(f"--k must be in [1, --rows={self.rows}], got {self.k}")
        if not 1 <= self.nlist <= self.rows:
            raise ValueError(f"--nlist must be in [1, --rows={self.rows}], got {self.nlist}")
        if not self.nprobes or not all(1 <= p <= self.nlist for p in self.nprobes):
            raise ValueError(f"--nprobes must lie in [1, --nlist={self.nlist}], got "
                             f"{list(self.nprobes)}")
        check_json_path(self.json)
        check_json_path(self.plot)


def _settings(a: Args) -> search_fair.IVFSettings:
    return search_fair.IVFSettings(k=a.k, nlist=a.nlist, nprobes=a.nprobes, iters=a.iters,
                                   repeats=a.repeats, seed=a.seed)


def _jaxemb(a: Args, kind: str, X, Q, score: str) -> dict:
    # Dot runs twice: the default quantizer (directions) and k-means on the MIPS-lifted keys.
    return search_fair.ivf_jaxemb(_settings(a), X, Q, score, _truth(a, kind, score),
                                  ("direction", "mips") if score == "dot" else ("direction",))


def _faiss(a: Args, kind: str, X, Q, score: str) -> dict:
    return search_fair.ivf_faiss(_settings(a), X, Q, score, _truth(a, kind, score))


def _truth(a: Args, kind: str, score: str) -> str:
    return os.path.join(a.truth, f"{kind}-{score}.npy")


def child(a: Args) -> dict:
    """One library on every dataset and score, in this process."""
    from jaxemb import search_timing, timing

    search_timing.load_faiss()  # loaded in both children, so that blas_info lists its BLAS

    timing.keep_freed_memory()
    measure = _jaxemb if a.child == "jaxemb" else _faiss
    res = {"library": a.child, "blas": blas_info(), "results": {}}
    for kind in a.datasets:
        X, Q = make_data(kind, a.rows, a.queries, a.dim, a.seed, a.noise)
        res["results"][kind] = {score: measure(a, kind, X, Q, score) for score in SCORES}
        del X, Q
    return res


def _argv(a: Args, library: str, truth: str) -> list[str]:
    argv = ["--child", library, "--truth", truth, "--rows", str(a.rows), "--dim", str(a.dim),
            "--queries", str(a.queries), "--k", str(a.k), "--nlist", str(a.nlist),
            "--iters", str(a.iters), "--repeats", str(a.repeats), "--seed", str(a.seed),
            "--noise", str(a.noise),
            "--nprobes", *map(str, a.nprobes), "--datasets", *a.datasets]
    return argv


def render(results: dict) -> list[str]:
    """The table lines: per dataset and score, exact and each nprobe for each library."""
    lines = []
    libs = [r for r in (results.get("jaxemb"), results.get("faiss")) if r]
    for kind in libs[0]["results"]:
        for score in SCORES:
            lines.append(f"\n{kind}, {score}:")
            lines.append(f"  {'library':8s} {'setting':10s} {'recall@k':>8s} {'median s':>9s} "
                         f"{'min s':>7s} {'max s':>7s} {'queries/s':>10s} {'x exact':>8s}")
            for lib in libs:
                r = lib["results"][kind][score]
                ex = r["exact"]
                lines.append(f"  {lib['library']:8s} {'exact':10s} {1.0:8.3f} "
                             f"{ex['median_s']:9.3f} {ex['min_s']:7.3f} {ex['max_s']:7.3f} "
                             f"{ex['queries_per_s']:10.0f} {1.0:8.2f}")
                for tag, name in (("", "nprobe"), ("_mips", "lift np")):
                    if "ivf" + tag not in r:
                        continue
                    for p, v in r["ivf" + tag].items():
                        lines.append(f"  {lib['library']:8s} {name + ' ' + str(p):10s} "
                                     f"{v['recall']:8.3f} {v['median_s']:9.3f} "
                                     f"{v['min_s']:7.3f} {v['max_s']:7.3f} "
                                     f"{v['queries_per_s']:10.0f} "
                                     f"{v['queries_per_s'] / ex['queries_per_s']:8.2f}")
                    lists = r["lists" + tag]
                    lines.append(f"  {lib['library']:8s} {name} build {r['build_s' + tag]:.1f} "
                                 f"s; lists: largest {lists['largest']}, mean "
                                 f"{lists['mean']:.0f}, empty {lists['empty']}")
    return lines


def plot(results: dict, a: Args, path: str) -> None:
    """Recall@k (x) against queries/s (y, log), one panel per dataset and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["jaxemb"]["results"])
    fig, axes = plt.subplots(len(kinds), len(SCORES), figsize=(5.5 * len(SCORES),
                                                               4.2 * len(kinds)), squeeze=False)
    styles = {"jaxemb": ("tab:blue", "o"), "faiss": ("tab:orange", "s")}
    for row, kind in enumerate(kinds):
        for col, score in enumerate(SCORES):
            ax = axes[row][col]
            for lib in ("jaxemb", "faiss"):
                if not results.get(lib):
                    continue
                r = results[lib]["results"][kind][score]
                colour, marker = styles[lib]
                for tag, style, name in (("", "-", "IVF"), ("_mips", ":", "IVF, MIPS lift")):
                    if "ivf" + tag not in r:
                        continue
                    ivf = r["ivf" + tag]
                    xs = [v["recall"] for v in ivf.values()]
                    ys = [v["queries_per_s"] for v in ivf.values()]
                    ax.plot(xs, ys, marker=marker, color=colour, linestyle=style,
                            label=f"{lib} {name}")
                    for p, x, y in zip(ivf, xs, ys, strict=True):
                        ax.annotate(str(p), (x, y), textcoords="offset points", xytext=(4, 4),
                                    fontsize=8, color=colour)
                ax.axhline(r["exact"]["queries_per_s"], color=colour, linestyle="--",
                           label=f"{lib} exact")
            ax.set_yscale("log")
            ax.set_xlabel(f"recall@{a.k}")
            ax.set_ylabel("queries/s")
            ax.set_title(f"{kind}, {score} ({a.rows:,} x {a.dim}, nlist {a.nlist})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("IVF recall against speed (labels: nprobe); dashed: exact search", fontsize=11)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=os.path.dirname(os.path.abspath(path)),
                                     delete=False) as f:
        tmp = f.name
    try:
        fig.savefig(tmp, dpi=110)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
        plt.close(fig)


def main(a: Args) -> dict:
    try:
        a.validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if a.child:
        return child(a)
    from experiments.benchkit import search_environment
    from jaxemb import search_timing, timing

    faiss = search_timing.load_faiss() if a.faiss else None
    kernel = openblas_coretype_candidates()[0]
    results: dict = {"config": dataclasses.asdict(a),
                     "environment": search_environment(faiss, timing.keep_freed_memory()),
                     "faiss_openblas_coretype": kernel}
    with tempfile.TemporaryDirectory(prefix="bench_ivf-") as truth:
        print("jaxemb (own process) ...", file=sys.stderr, flush=True)
        results["jaxemb"] = run_child("experiments.bench_ivf", _argv(a, "jaxemb", truth),
                                      child_env(os.environ.get("OPENBLAS_CORETYPE")))
        if faiss is not None:
            print(f"faiss (own process, OPENBLAS_CORETYPE={kernel}) ...", file=sys.stderr,
                  flush=True)
            results["faiss"] = run_child("experiments.bench_ivf", _argv(a, "faiss", truth),
                                         child_env(kernel))
    lines = [f"IVF recall@{a.k} against speed: {a.rows:,} x {a.dim}, {a.queries:,} queries, "
             f"nlist {a.nlist}, k-means {a.iters} iterations, clustered noise {a.noise}; "
             f"{results['environment']['cpu']}"]
    for lib in ("jaxemb", "faiss"):
        if results.get(lib):
            kernels = ", ".join(f"{b.get('prefix')} {b.get('version')} {b.get('architecture')}"
                                for b in results[lib]["blas"] if b.get("user_api") == "blas")
            lines.append(f"  {lib} process BLAS: {kernels or 'none loaded'}")
    lines += render(results)
    print("\n".join(lines), flush=True)
    results["output"] = lines
    if a.plot:
        plot(results, a, a.plot)
        print(f"wrote {a.plot}", file=sys.stderr)
    if a.json:
        write_json_atomically(a.json, results)
        print(f"wrote {a.json}", file=sys.stderr)
    return results


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m experiments.bench_ivf", description=__doc__)
    out = main(args)
    if args.child:
        print(json.dumps(out, default=float))
