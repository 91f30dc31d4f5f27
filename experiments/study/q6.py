"""Q6: "computing millions of cosines is slow — how do I speed it up?"

Measured with the fair protocol of :mod:`jaxemb.search_fair`: each method (jaxemb, its plain
fp32 scan, FAISS ``IndexFlatIP``, numpy, the sgemm bound) runs in its own process, one process
per method for every size, and FAISS and numpy run on the OpenBLAS core type a short probe
found fastest (recorded, with the kernel each process actually ran and the library versions).
Measured: the fp32 roofline (numpy's and JAX's sgemm, each in its library's process); exact
search on random Gaussian data at each size (min / median / max of the batches, single-query
latency, agreement with numpy); and approximate search, jaxemb's IVF (:mod:`jaxemb.ivf`) beside
FAISS ``IndexIVFFlat`` at a few nprobe values, for cosine and for dot (the MIPS map), on
clustered planted data: recall@k against each library's exact speed.

    python -m experiments.run search        # 200k rows exact, 100k IVF: under a minute, 2 cores
    python -m experiments.run search --sizes 1000000 --approx-rows 1000000 --nlist 1024
"""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text, require_positive  # noqa: E402
from experiments.study import results  # noqa: E402
from jaxemb.search_timing import ISOLATED_METHODS, TIE_TOL  # noqa: E402

PART = "search"
TITLE = '## Q6. "Millions of cosines are slow." How fast can search be, exact and approximate?'
SCORES = ("cosine", "dot")
LIBRARIES = ("jaxemb", "faiss")  # the libraries of the approximate part


@dataclasses.dataclass(frozen=True)
class SearchStudyConfig:
    """Top-k search: exact (jaxemb, FAISS, numpy, the sgemm bound) and approximate (IVF),
    each method in its own process on its library's fastest BLAS kernel."""

    sizes: tuple[int, ...] = (200_000,)
    """Database rows of the exact part (random i.i.d. normal vectors), one process per method
    for all of them."""
    queries: int = 1000
    """Queries per search call."""
    dim: int = 300
    """Vector dimension."""
    k: int = 10
    """Neighbours per query."""
    repeats: int = 3
    """Timed batches per method and setting (after one warm-up batch)."""
    seed: int = 0
    """Seed of the random data (and of the IVF's k-means)."""
    methods: tuple[str, ...] = ("jaxemb", "jaxemb fp32 scan", "faiss", "numpy")
    """Exact methods, each in its own process (numpy always runs: the agreement reference);
    also "sgemm bound" (numpy's q·Dᵀ alone)."""
    latency: int = 10
    """Single-query calls timed per method and size (0: none)."""
    approx_rows: int = 100_000
    """Database rows of the approximate part (clustered planted data; 0: skip that part)."""
    approx_scores: tuple[str, ...] = SCORES
    """Scores of the approximate part (cosine; dot through the MIPS map)."""
    nlist: int = 256
    """Inverted lists of both libraries' IVF."""
    nprobes: tuple[int, ...] = (1, 8)
    """Lists probed per query."""
    noise: float = 1.0
    """Clustered data: the noise's scale relative to the centres'."""
    iters: int = 10
    """k-means iterations of both IVFs."""
    probe_rows: int = 20_000
    """Database rows of the BLAS kernel probe (run once per candidate core type)."""
    roofline_n: int = 2048
    """The roofline's sgemm is [n, n] x [n, n]."""
    quick: bool = False
    """Smoke-test size: 20,000 rows, 200 queries, 2 batches, no fp32 scan or sgemm bound;
    no single-query latency; IVF with 16 lists, nprobe 2, cosine only."""

    def resolved(self) -> SearchStudyConfig:
        if self.quick:
            return dataclasses.replace(
                self, sizes=(20_000,), queries=200, repeats=2, latency=0, approx_rows=20_000,
                nlist=16, nprobes=(2,), approx_scores=("cosine",), probe_rows=5_000,
                roofline_n=512,
                methods=("jaxemb", "faiss", "numpy"))
        return self

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"--sizes must be positive row counts, got {self.sizes}")
        require_positive(self, "queries", "dim", "k", "repeats", "iters", "probe_rows",
                         "roofline_n")
        if self.k > min(self.sizes):
            raise ValueError(f"--k ({self.k}) must not exceed the smallest size "
                             f"({min(self.sizes)})")
        unknown = set(self.methods) - set(ISOLATED_METHODS)
        if unknown or "jaxemb" not in self.methods:
            raise ValueError(f"--methods must include jaxemb and come from "
                             f"{', '.join(ISOLATED_METHODS)}; got {list(self.methods)}")
        if self.latency < 0 or self.approx_rows < 0:
            raise ValueError("--latency and --approx-rows must be >= 0")
        if self.approx_rows:
            if not self.k <= self.nlist <= self.approx_rows:
                raise ValueError(f"--nlist must lie in [--k, --approx-rows], got {self.nlist}")
            if not self.nprobes or not all(1 <= p <= self.nlist for p in self.nprobes):
                raise ValueError(f"--nprobes must lie in [1, --nlist={self.nlist}], got "
                                 f"{list(self.nprobes)}")
            if not self.approx_scores or set(self.approx_scores) - set(SCORES):
                raise ValueError(f"--approx-scores must come from {SCORES}, got "
                                 f"{list(self.approx_scores)}")
            if not self.noise > 0:
                raise ValueError(f"--noise must be > 0, got {self.noise}")


@dataclasses.dataclass(frozen=True)
class Results(results.Results):
    """The fair search measurements.

    ``kernels``: :func:`jaxemb.search_fair.pick_kernels`; ``roofline``: numpy / JAX GFLOP/s
    with the kernel numpy ran; ``versions``: {library: version} from the child processes;
    ``per_size``: [{"size", "methods": {method: {"batch", "latency" (min/median/max s;
    queries_per_s), "build_s", "warmup_s", "kernel"}}, "agreement", "agree"}];
    ``approx``: None or {"rows", "noise", "nlist", "nprobes", "iters", "truth_agreement",
    "libraries": {library: {score: :func:`jaxemb.search_fair.ivf_jaxemb`'s dict}}}."""

    queries: int
    dim: int
    k: int
    repeats: int
    seed: int
    kernels: dict
    roofline: dict
    versions: dict
    per_size: list[dict]
    approx: dict | None
    load: dict  # {"cores": usable cores, "start" / "end": 1-minute load average}


def measure(config: SearchStudyConfig, shared: dict, progress) -> Results:
    """Probe the kernels, then run each method in its own process (``q6_measure``)."""
    from experiments.study import q6_measure

    return q6_measure.measure(config, progress)


# --- the words ---------------------------------------------------------------------------------

def _q(st: dict) -> float:
    return st["queries_per_s"]


def _overlap(a: dict, b: dict) -> bool:
    """Whether two methods' fastest-to-slowest batch times overlap."""
    return a["min_s"] <= b["max_s"] and b["min_s"] <= a["max_s"]


def _gflops(r: Results, size: int, seconds: float) -> float:
    """fp32-equivalent GFLOP/s of scoring every row: 2 · queries · rows · dim / seconds."""
    return 2.0 * r.queries * size * r.dim / seconds / 1e9


def exact_words(r: Results) -> str:
    """The exact part, from the largest size."""
    big = r.per_size[-1]
    st = big["methods"]
    jx = st["jaxemb"]["batch"]
    words = (f"Exact top-{r.k} cosine search of {r.queries:,} queries in {big['size']:,} random "
             f"Gaussian rows, each method in its own process: jaxemb ran at {_q(jx):,.0f} "
             f"queries/s (median of {r.repeats} batches)")
    if "faiss" in st:
        fx = st["faiss"]["batch"]
        ratio = fx["median_s"] / jx["median_s"]
        words += (f", FAISS IndexFlatIP ({st['faiss']['kernel']}) at {_q(fx):,.0f}: jaxemb at "
                  f"{ratio:.2f}× FAISS's speed")
        if _overlap(jx, fx):
            words += " (their fastest and slowest batches overlap, so this run does not order them)"
    if "numpy" in st:
        words += f"; numpy {_q(st['numpy']['batch']):,.0f} queries/s"
    words += ". "
    eff = _gflops(r, big["size"], jx["median_s"])
    roof = r.roofline["numpy_gflop_s"]
    words += (f"That is {eff:.0f} GFLOP/s of fp32-equivalent scoring against a measured fp32 "
              f"roofline of {roof:.0f} GFLOP/s (numpy sgemm, {r.roofline['kernel']}; JAX "
              f"{r.roofline['jax_gflop_s']:.0f})")
    words += (", more than a full fp32 scan can reach, so jaxemb does less fp32 work than one. "
              if eff > roof else ". ")
    if "jaxemb fp32 scan" in st:
        sc = st["jaxemb fp32 scan"]["batch"]
        words += (f"jaxemb's plain fp32 scan ran at {_q(sc):,.0f} queries/s, so its bfloat16 "
                  f"first pass changed the speed by a factor {sc['median_s'] / jx['median_s']:.2f}"
                  + (" (within the batches' spread). " if _overlap(jx, sc) else ". "))
    lat = {m: v["latency"] for m, v in st.items() if v.get("latency")}
    if "jaxemb" in lat and len(lat) > 1:
        words += ("One query at a time (median latency): " + ", ".join(
            f"{m} {v['median_s'] * 1e3:.1f} ms" for m, v in lat.items()) + ". ")
    words += ("Every exact method returned numpy's neighbours at every size (ties allowed)."
              if all(s["agree"] for s in r.per_size) else
              "**Some method did not return numpy's neighbours** (agreement line below).")
    return words


def _ivf(r: Results, lib: str, score: str) -> dict | None:
    return (r.approx or {}).get("libraries", {}).get(lib, {}).get(score)


def approx_words(r: Results) -> str:
    """Exact vs approximate and cosine vs dot, from jaxemb's IVF."""
    a = r.approx
    parts = []
    for score in SCORES:
        x = _ivf(r, "jaxemb", score)
        if x is None:
            continue
        ex = _q(x["exact"])
        parts.append(f"{score}{' (MIPS map)' if score == 'dot' else ''}: exact "
                     f"{ex:,.0f} queries/s; " + "; ".join(
                         f"nprobe {p}: recall@{r.k} {v['recall']:.3f} at {_q(v) / ex:.1f}× "
                         f"the exact speed" for p, v in x["ivf"].items()))
    words = (f"Approximate search on clustered planted data ({a['rows']:,} rows, jaxemb IVF, "
             f"{a['nlist']} lists, recall against jaxemb's exact top-{r.k}"
             + (", itself checked against numpy" if all(c["ok"] for c in a["truth_agreement"])
                else ", which did NOT match numpy's") + "): " + " — ".join(parts) + ".")
    cos, dot = _ivf(r, "jaxemb", "cosine"), _ivf(r, "jaxemb", "dot")
    if cos and dot:
        diffs = [dot["ivf"][p]["recall"] - cos["ivf"][p]["recall"] for p in cos["ivf"]]
        lo, hi = min(diffs), max(diffs)
        words += (" Dot's recall was " + (
            f"{-hi:.3f} to {-lo:.3f} lower than cosine's" if hi < 0 else
            f"{lo:.3f} to {hi:.3f} higher than cosine's" if lo > 0 else
            f"within {max(abs(lo), abs(hi)):.3f} of cosine's") + " at the same nprobe.")
    return words


def faiss_comparisons(r: Results) -> list[tuple[str, float, str]]:
    """(setting, FAISS speed / jaxemb speed, note) for every setting both measured."""
    out = []
    for s in r.per_size:
        st = s["methods"]
        if "faiss" in st:
            out.append((f"exact batch, {s['size']:,} rows", st["jaxemb"]["batch"]["median_s"]
                        / st["faiss"]["batch"]["median_s"], ""))
            if st["faiss"].get("latency") and st["jaxemb"].get("latency"):
                out.append((f"one query at a time, {s['size']:,} rows",
                            st["jaxemb"]["latency"]["median_s"]
                            / st["faiss"]["latency"]["median_s"], ""))
    for score in SCORES:
        jx, fx = _ivf(r, "jaxemb", score), _ivf(r, "faiss", score)
        if not (jx and fx):
            continue
        for p in jx["ivf"]:
            if p in fx["ivf"]:
                out.append((f"IVF {score}, nprobe {p}", _q(fx["ivf"][p]) / _q(jx["ivf"][p]),
                            f"recall {fx['ivf'][p]['recall']:.3f} vs jaxemb's "
                            f"{jx['ivf'][p]['recall']:.3f}"))
    return out


def faiss_words(r: Results) -> str:
    cmp = faiss_comparisons(r)
    if not cmp:
        return "FAISS is not installed here (`pip install faiss-cpu`), so it was not compared."
    better = [f"{s} ({v:.2f}×{', ' + n if n else ''})" for s, v, n in cmp if v > 1]
    worse = [f"{s} ({1 / v:.2f}×)" for s, v, n in cmp if v <= 1]
    words = ("FAISS was the faster tool for " + "; ".join(better) if better else
             "FAISS was not faster than jaxemb in any setting measured")
    words += (" (medians; FAISS's speed over jaxemb's)" if better else "")
    if worse:
        words += ". jaxemb was faster for " + "; ".join(worse)
    return words + "."


def load_words(r: Results) -> str:
    """A caveat when other work shared the CPUs (load above the usable cores)."""
    ld = r.load
    if max(ld["start"], ld["end"]) <= ld["cores"] + 0.5:
        return ""
    return (f"Other work shared the machine during this run (1-minute load average "
            f"{ld['start']:.1f} at the start and {ld['end']:.1f} at the end, on {ld['cores']} "
            "usable cores), so these timings carry that noise.")


def answer(r: Results) -> str:
    """The answer's words, every one from the results."""
    words = [w for w in (load_words(r), exact_words(r)) if w]
    if r.approx:
        words.append(approx_words(r))
    words.append(faiss_words(r))
    return answer_text(" ".join(words), BACKGROUND)


BACKGROUND = (
    "Cosine is the dot product of unit vectors, so an exact search normalises the database once "
    "and scores each batch of queries with one matrix product and a top-k selection; batching "
    "the queries turns a memory-bound scan into a compute-bound matmul, whose ceiling is the "
    "machine's fp32 rate (the roofline above). An inverted file (IVF; Jégou, Douze & Schmid "
    "2011) clusters the database with k-means and scores only the lists whose centroids are "
    "nearest the query, trading recall for speed; it works when the data have structure for "
    "the clusters to capture, and i.i.d. Gaussian data have none. Maximum inner product search "
    "(dot) becomes a nearest-neighbour search on the unit sphere after the map "
    "[x, √(M² − ‖x‖²)] / M (Bachrach et al. 2014), which is how one IVF serves both scores. "
    "Timing each library in its own process matters because OpenMP and OpenBLAS worker threads "
    "keep spinning after a call and slow whatever runs next in the same process; the OpenBLAS "
    "core type is probed rather than trusted because an older OpenBLAS (faiss-cpu bundles "
    "0.3.15) can misdetect a newer CPU. CPUs with bf16 or int8 dot-product instructions "
    "(AVX512_BF16, AVX512_VNNI, AMX) can exceed the fp32 roofline; this run times only what "
    "the methods above do.")


# --- the section -------------------------------------------------------------------------------

def exact_rows(r: Results) -> list[tuple]:
    """(rows, method, kernel, median s, min s, max s, queries/s, fp32-equiv GFLOP/s,
    1-query ms, speed / FAISS's) per size and method."""
    rows = []
    for s in r.per_size:
        st = s["methods"]
        fx = st.get("faiss", {}).get("batch")
        for m, v in st.items():
            b, lat = v["batch"], v["latency"]
            rows.append((f"{s['size']:,}", m, v["kernel"], b["median_s"], b["min_s"], b["max_s"],
                         b["queries_per_s"], _gflops(r, s["size"], b["median_s"]),
                         "—" if not lat else lat["median_s"] * 1e3,
                         "—" if fx is None else fx["median_s"] / b["median_s"]))
    return rows


def approx_rows(r: Results) -> list[tuple]:
    """(score, library, search, recall@k, median s, min s, max s, queries/s, × exact, build s)."""
    rows = []
    for score in SCORES:
        for lib in LIBRARIES:
            x = _ivf(r, lib, score)
            if x is None:
                continue
            ex = x["exact"]
            rows.append((score, lib, "exact", 1.0, ex["median_s"], ex["min_s"], ex["max_s"],
                         _q(ex), 1.0, "—"))
            for p, v in x["ivf"].items():
                rows.append((score, lib, f"IVF nprobe {p}", v["recall"], v["median_s"],
                             v["min_s"], v["max_s"], _q(v), _q(v) / _q(ex), x["build_s"]))
    return rows


def render(r: Results, run: Run) -> None:
    """The Q6 section: kernels and roofline, the exact table and agreement, the approximate
    table, the figure, the answer."""
    probes = "; ".join(
        f"{lib}: " + ", ".join(f"{c} {v['seconds'] * 1e3:.0f} ms ({v['ran']})"
                               for c, v in k["probes"].items()) + f" → {k['coretype']}"
        for lib, k in r.kernels.items())
    versions = ", ".join(f"{k} {v}" for k, v in sorted(r.versions.items()))
    text = [TITLE + "\n",
            "Cosine is the dot product of unit vectors, so normalise the database once and every "
            "query batch becomes one matrix product and a top-k (`jaxemb.search.index(db, "
            "\"cosine\").search(q, k)`); approximate search probes a few lists of an IVF index "
            "(`jaxemb.ivf.build`, `jaxemb.ivf.search`), for dot through the MIPS map.\n",
            f"Protocol: each method in its own process (one per method for all sizes), FAISS and "
            f"numpy on the OpenBLAS core type a probe found fastest (OPENBLAS_CORETYPE "
            f"candidate: probe time (kernel that ran) — {probes}); versions: {versions}. "
            f"Measured fp32 roofline ({r.roofline['n']}³ sgemm, best of 3, numpy in numpy's "
            f"process and JAX in jaxemb's, after their searches): numpy "
            f"{r.roofline['numpy_gflop_s']:.0f} GFLOP/s ({r.roofline['kernel']}), JAX "
            f"{r.roofline['jax_gflop_s']:.0f} GFLOP/s. 1-minute load average "
            f"{r.load['start']:.1f} at the start, {r.load['end']:.1f} at the end "
            f"({r.load['cores']} usable cores; the run itself keeps up to that many busy).\n"]
    caption = (f"{r.queries} queries × database of random N(0, I) float32 vectors, dim {r.dim}, "
               f"exact top-{r.k} cosine; per method one process, one warm-up then {r.repeats} "
               "batches of all the queries; seconds per batch. Only the method varies. GFLOP/s: "
               "2·queries·rows·dim / median (what a full fp32 scan would do, for comparison with "
               "the roofline). 1-query ms: median latency of single-query calls. Last column: "
               "FAISS's median / the method's (> 1: faster than FAISS). sgemm bound = numpy's "
               "fp32 matmul q·Dᵀ alone, no selection; jaxemb fp32 scan = jaxemb without its "
               "bfloat16 first pass.")
    text.append(run.table("q6_search", ("rows", "method", "kernel", "median s", "min s", "max s",
                                        "queries/s", "GFLOP/s", "1-query ms", "speed / FAISS"),
                          exact_rows(r), caption))
    agree = all(s["agree"] for s in r.per_size)
    text.append(f"\nAgreement with the numpy reference (ties allowed, float64 cosine at every "
                f"rank within {TIE_TOL:g}): **{'all agree' if agree else 'MISMATCH'}**.\n")
    run.log("q6_agreement", all_agree=agree,
            checks=[c for s in r.per_size for c in s["agreement"]])
    if r.approx:
        a = r.approx
        caption = (f"Clustered planted data: {a['rows']:,} rows, dim {r.dim}, {a['rows'] // 100:,}"
                   f" centres + noise × {a['noise']:g}, each row scaled by a log-normal factor so "
                   f"dot and cosine rank differently; {r.queries} queries drawn the same way. "
                   f"IVF with {a['nlist']} lists, k-means {a['iters']} iterations, in each "
                   "library's own process (jaxemb: k-means on the keys' directions, dot through "
                   "the MIPS map; FAISS: IndexIVFFlat, inner product). recall@k against jaxemb's "
                   "exact top-k; × exact: queries/s over the same library's exact search; build s: "
                   f"k-means and list building. One warm-up then {r.repeats} batches.")
        text.append(run.table("q6_approx", ("score", "library", "search", f"recall@{r.k}",
                                            "median s", "min s", "max s", "queries/s",
                                            "× exact", "build s"), approx_rows(r), caption))
        run.log("q6_truth_agreement", checks=a["truth_agreement"])
    text.append(run.figure(_plot(r), "q6_search",
                           "Left: exact search, queries/s by method and size (median; bars: "
                           "fastest to slowest batch). Right: IVF recall@k against queries/s "
                           "(labels: nprobe; dashed: each library's exact search)."))
    text.append("\n" + answer(r) + "\n")
    run.add("\n".join(text))


def _plot(r: Results):
    scores = [s for s in SCORES if _ivf(r, "jaxemb", s)]
    panels = 1 + len(scores)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    ax = axes[0][0]
    names = list(r.per_size[0]["methods"])
    width = 0.8 / len(names)
    x = np.arange(len(r.per_size))
    for i, name in enumerate(names):
        b = [s["methods"][name]["batch"] for s in r.per_size]
        qps = np.array([_q(v) for v in b])
        err = [qps - [r.queries / v["max_s"] for v in b], [r.queries / v["min_s"] for v in b] - qps]
        ax.bar(x + i * width, qps, width, yerr=err, label=name, capsize=2)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [f"{s['size']:,} rows" for s in r.per_size])
    ax.set_ylabel("queries / s")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("exact top-k cosine (own process each)")
    styles = {"jaxemb": ("tab:blue", "o"), "faiss": ("tab:orange", "s")}
    for col, score in enumerate(scores, start=1):
        ax = axes[0][col]
        for lib in LIBRARIES:
            v = _ivf(r, lib, score)
            if v is None:
                continue
            colour, marker = styles[lib]
            xs = [p["recall"] for p in v["ivf"].values()]
            ys = [_q(p) for p in v["ivf"].values()]
            ax.plot(xs, ys, marker=marker, color=colour, label=f"{lib} IVF")
            for p, xx, yy in zip(v["ivf"], xs, ys, strict=True):
                ax.annotate(p, (xx, yy), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=colour)
            ax.axhline(_q(v["exact"]), color=colour, linestyle="--", label=f"{lib} exact")
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{r.k}")
        ax.set_ylabel("queries / s")
        ax.set_title(f"IVF, {score}, clustered, {r.approx['rows']:,} rows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
