"""gensim vs jaxemb SGNS on the same corpus and settings, interleaved in one process.

    python -m experiments.bench_sgns                       # Wikipedia sample, epochs 5 and 15
    python -m experiments.bench_sgns --epochs 5 --seeds 2 --json /tmp/sgns.json
    python -m experiments.bench_sgns --corpus lee --epochs 1 --seeds 1   # a quick check
    python -m experiments.bench_sgns --grid --json /tmp/grid.json  # settings grid, + grid.png

For each epoch count and seed, gensim (skip-gram, ``--workers`` threads) and jaxemb train in
turn; both are evaluated by the same code (jaxemb.evaluate: WS353 and SimLex-999 Spearman ρ on
cosine, Google analogies 3CosAdd, vocabulary = the trained vocabulary, case-insensitive as
gensim). Words/s counts training only (gensim's ``train()``; jaxemb after ahead-of-time
compilation, whose time is reported apart). Effective words are the tokens left after
subsampling; raw words all in-vocabulary tokens. Quality is the mean ± the half-width of the
t-interval (95%) over seeds, from ``jaxemb.stats``. ``--json PATH`` writes all runs and the
summary to PATH, atomically; an existing file is never overwritten. Needs gensim:
``pip install -e '.[peer]'``.

``--grid``: every cell of ``--grid-dims`` × ``--grid-windows`` × ``--grid-negatives`` at
``--grid-epochs``, both engines per seed within the cell; one table of jaxemb/gensim effective
words/s (median over seeds) and the jaxemb − gensim differences in WS353, SimLex and analogy
(points), each a paired 95% t-interval over seeds (``jaxemb.stats.paired_difference``); with
``--json PATH`` also one plot, PATH with suffix ``.png``. A jaxemb run that stops on a NaN loss
is recorded (quality NaN) and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path

import numpy as np
import tyro

from experiments.benchkit import check_json_path, write_json_atomically
from experiments.report import environment
from jaxemb import corpus, evaluate, sgns, stats, train
from jaxemb.datasets import load_corpus
from jaxemb.wordvectors import WordVectors


@dataclasses.dataclass(frozen=True)
class Args:
    """Side-by-side SGNS benchmark against gensim."""

    corpus: str = "wiki"
    """'wiki' (gensim's Wikipedia sample), 'lee', 'text8', 'planted', or a text file path."""
    epochs: tuple[int, ...] = (5, 15)
    """Epoch counts to compare at, one after another."""
    seeds: int = 3
    """Seeds per epoch count (0, 1, ...), each trained by both engines."""
    dim: int = 100
    """Vector dimension (both engines)."""
    window: int = 5
    """Maximum context window (both engines; gensim's shrinking window)."""
    negative: int = 5
    """Negative samples per positive pair (both engines)."""
    min_count: int = 5
    """Words rarer than this are dropped (both engines)."""
    sample: float = 1e-3
    """Subsampling threshold of frequent words (both engines)."""
    workers: int = 2
    """gensim worker threads."""
    micro_batch: int = dataclasses.field(default=sgns.SGNSConfig.micro_batch)
    """jaxemb: centres per SGD update (jaxemb.sgns.SGNSConfig)."""
    micro_steps: int = dataclasses.field(default=sgns.SGNSConfig.micro_steps)
    """jaxemb: SGD updates per jitted call (jaxemb.sgns.SGNSConfig)."""
    neg_group: int = dataclasses.field(default=sgns.SGNSConfig.neg_group)
    """jaxemb: centres sharing one pool of negatives (jaxemb.sgns.SGNSConfig)."""
    neg_pool: int = dataclasses.field(default=sgns.SGNSConfig.neg_pool)
    """jaxemb: negatives per group of centres, shared by the group (jaxemb.sgns.SGNSConfig)."""
    negatives: str = dataclasses.field(default=sgns.SGNSConfig.negatives)
    """jaxemb: 'shared' (one pool per group of centres) or 'per_pair' (word2vec's own draws per
    pair, with --neg-group 1; far slower, for comparison)."""
    update: str = dataclasses.field(default=sgns.SGNSConfig.update)
    """jaxemb: row update, 'sequential' (curvature-bounded, the sides in turn), 'implicit' (both
    sides at once), 'damped' or 'sum' (jaxemb.sgns_update)."""
    vectors: str = "in"
    """jaxemb vectors to evaluate: 'in', 'out' or 'in+out' (gensim's are its input vectors)."""
    json: str | None = None
    """Write all results here (refuses to overwrite an existing file)."""
    grid: bool = False
    """Run the settings grid instead (see the module docstring)."""
    grid_dims: tuple[int, ...] = (100, 300)
    grid_windows: tuple[int, ...] = (2, 5, 10)
    grid_negatives: tuple[int, ...] = (5, 15)
    grid_epochs: int = 5


def evaluate_vectors(wv: WordVectors) -> dict:
    ws = evaluate.word_pairs(wv, corpus.gensim_datapath("wordsim353.tsv"))
    sl = evaluate.word_pairs(wv, corpus.gensim_datapath("simlex999.txt"))
    an = evaluate.analogies(wv, corpus.gensim_datapath("questions-words.txt"))
    return {"ws353": ws.spearman, "simlex": sl.spearman, "analogy": an.accuracy,
            "analogy_answered": an.total.answered}


def run_gensim(docs, a: Args, epochs: int, seed: int) -> dict:
    from gensim.models import Word2Vec

    model = Word2Vec(vector_size=a.dim, window=a.window, negative=a.negative, sg=1, hs=0,
                     min_count=a.min_count, sample=a.sample, workers=a.workers, seed=seed)
    model.build_vocab(docs)
    t = time.perf_counter()
    eff, raw = model.train(docs, total_examples=model.corpus_count, epochs=epochs)
    seconds = time.perf_counter() - t
    wv = WordVectors(tuple(model.wv.index_to_key), model.wv.vectors)
    return {"seconds": seconds, "effective_words": eff, "raw_words": raw,
            **evaluate_vectors(wv)}


def jaxemb_config(a: Args) -> sgns.SGNSConfig:
    return sgns.SGNSConfig(dim=a.dim, window=a.window, negative=a.negative, sample=a.sample,
                           micro_batch=a.micro_batch, micro_steps=a.micro_steps,
                           neg_group=a.neg_group, neg_pool=a.neg_pool, negatives=a.negatives,
                           update=a.update)


def run_jaxemb(docs, vocab, ids, a: Args, epochs: int, seed: int) -> dict:
    cfg = jaxemb_config(a)
    try:
        res = train.train(ids, vocab.counts, cfg,
                          train.TrainConfig(epochs=epochs, seeds=(seed,)), progress=False)
    except train.TrainingError as e:  # a diverged run is a result of the benchmark
        nan = float("nan")
        return {"seconds": nan, "compile_seconds": nan, "effective_words": 0, "raw_words": 0,
                "ws353": nan, "simlex": nan, "analogy": nan, "analogy_answered": 0,
                "error": str(e)}
    wv = WordVectors(vocab.words, sgns.export_vectors(res.seed_params(0), a.vectors))
    return {"seconds": res.seconds, "compile_seconds": res.compile_seconds,
            "effective_words": res.effective_words, "raw_words": res.raw_words,
            **evaluate_vectors(wv)}


def summarise(rows: list[dict]) -> dict:
    eff = np.array([r["effective_words"] / r["seconds"] for r in rows])
    raw = np.array([r["raw_words"] / r["seconds"] for r in rows])
    out = {"eff_wps": [float(eff.min()), float(np.median(eff)), float(eff.max())],
           "raw_wps_median": float(np.median(raw)),
           "seconds_median": float(np.median([r["seconds"] for r in rows]))}
    for m in ("ws353", "simlex", "analogy"):
        out[m] = stats.mean_half_width([r[m] for r in rows])
    return out


def check_args(a: Args) -> None:
    """Every bad argument (and every bad jaxemb setting of every grid cell) as one line,
    before the corpus is read."""
    if a.seeds < 1 or not a.epochs or min(a.epochs) < 1:
        raise SystemExit("error: --seeds and every --epochs value must be >= 1")
    if a.grid and (a.grid_epochs < 1 or not (a.grid_dims and a.grid_windows and a.grid_negatives)
                   or min(a.grid_dims + a.grid_windows + a.grid_negatives) < 1):
        raise SystemExit("error: --grid-epochs and every --grid-dims, --grid-windows and "
                         "--grid-negatives value must be >= 1")
    cells = (itertools.product(a.grid_dims, a.grid_windows, a.grid_negatives) if a.grid
             else [(a.dim, a.window, a.negative)])
    try:
        check_json_path(a.json)
        for dim, window, negative in cells:
            jaxemb_config(dataclasses.replace(a, dim=dim, window=window,
                                              negative=negative)).validate()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def main(a: Args) -> dict:
    check_args(a)
    env = environment()
    print(f"corpus {a.corpus}; dim {a.dim}, window {a.window}, negative {a.negative}, "
          f"min_count {a.min_count}, sample {a.sample}; gensim workers {a.workers}")
    print(f"{env['processor']} × {env['cpu_count']}; jax {env['jax']} on {env['devices']}")
    t = time.perf_counter()
    docs = load_corpus(a.corpus)  # the planted corpus is generated here: its time is a figure
    corpus_seconds = time.perf_counter() - t
    vocab = corpus.build_vocabulary(docs, min_count=a.min_count)
    ids = vocab.encode(docs)
    print(f"{len(docs)} documents, {sum(map(len, docs))} tokens, vocabulary {len(vocab)}; "
          f"loaded in {corpus_seconds:.1f} s")
    results = {"args": dataclasses.asdict(a), "environment": env, "runs": [],
               "corpus_seconds": corpus_seconds}
    try:
        import gensim
        results["environment"]["gensim"] = gensim.__version__
    except ImportError:
        raise SystemExit("error: gensim is not installed: pip install -e '.[peer]'") from None
    # warm-up (jaxemb compiles ahead of time anyway; gensim's first run touches memory)
    run_gensim(docs, a, 1, 0)
    if a.grid:
        results.update(run_grid(docs, vocab, ids, a))
        if a.json:
            write_json_atomically(a.json, results)
            plot_grid(results["cells"], Path(a.json).with_suffix(".png"))
        return results
    for epochs in a.epochs:
        for seed in range(a.seeds):
            for name in ("gensim", "jaxemb"):
                out = (run_gensim(docs, a, epochs, seed) if name == "gensim"
                       else run_jaxemb(docs, vocab, ids, a, epochs, seed))
                r = {"method": name, "epochs": epochs, "seed": seed, **out}
                results["runs"].append(r)
                print(f"  {name:6s} epochs {epochs:2d} seed {seed}: "
                      f"{r['effective_words'] / r['seconds']:>10,.0f} eff w/s, "
                      f"WS353 {r['ws353']:.3f}, SimLex {r['simlex']:.3f}, "
                      f"analogy {100 * r['analogy']:.2f}%", flush=True)
    print("\nmethod  epochs  eff words/s (min/med/max)        raw w/s   wall s  "
          "WS353 ρ         SimLex ρ        analogy %")
    summary = {}
    for epochs in a.epochs:
        for name in ("gensim", "jaxemb"):
            s = summarise([r for r in results["runs"]
                           if r["method"] == name and r["epochs"] == epochs])
            summary[f"{name}@{epochs}"] = s
            print(f"{name:6s}  {epochs:6d}  {s['eff_wps'][0]:>9,.0f} {s['eff_wps'][1]:>9,.0f} "
                  f"{s['eff_wps'][2]:>9,.0f}  {s['raw_wps_median']:>9,.0f}  "
                  f"{s['seconds_median']:6.1f}  "
                  f"{s['ws353'][0]:.3f}±{s['ws353'][1]:.3f}  "
                  f"{s['simlex'][0]:.3f}±{s['simlex'][1]:.3f}  "
                  f"{100 * s['analogy'][0]:.2f}±{100 * s['analogy'][1]:.2f}")
        g, j = summary[f"gensim@{epochs}"], summary[f"jaxemb@{epochs}"]
        ratio = j["eff_wps"][1] / g["eff_wps"][1]
        summary[f"ratio@{epochs}"] = {
            "eff_wps_median": ratio, "ws353_diff": j["ws353"][0] - g["ws353"][0],
            "analogy_diff_points": 100 * (j["analogy"][0] - g["analogy"][0])}
        print(f"jaxemb/gensim @ {epochs} epochs: effective words/s ×{ratio:.2f}; "
              f"WS353 {j['ws353'][0] - g['ws353'][0]:+.3f}; "
              f"analogy {100 * (j['analogy'][0] - g['analogy'][0]):+.2f} points")
    print("(± = 95% t-interval over seeds; eval: jaxemb.evaluate, cosine, restrict 300000, "
          "case-insensitive, 3CosAdd)")
    results["summary"] = summary
    if a.json:
        write_json_atomically(a.json, results)
    return results



# --- the settings grid ---------------------------------------------------------------------

GRID_METRICS = (("ws353", "WS353", 1.0), ("simlex", "SimLex", 1.0), ("analogy", "analogy", 100.0))


def run_grid(docs, vocab, ids, a: Args) -> dict:
    """Every cell, both engines per seed in turn; returns {"runs": [...], "cells": [...]}."""
    runs, cells = [], []
    print(f"\ngrid: {a.grid_epochs} epochs, {a.seeds} seeds per cell")
    for dim, window, negative in itertools.product(a.grid_dims, a.grid_windows,
                                                   a.grid_negatives):
        ca = dataclasses.replace(a, dim=dim, window=window, negative=negative)
        cell_runs = []
        for seed in range(a.seeds):
            for name in ("gensim", "jaxemb"):
                out = (run_gensim(docs, ca, a.grid_epochs, seed) if name == "gensim"
                       else run_jaxemb(docs, vocab, ids, ca, a.grid_epochs, seed))
                cell_runs.append({"method": name, "dim": dim, "window": window,
                                  "negative": negative, "epochs": a.grid_epochs, "seed": seed,
                                  **out})
        runs += cell_runs
        cells.append(grid_cell(cell_runs, dim, window, negative))
        print(grid_row(cells[-1]), flush=True)
    print(grid_table(cells))
    return {"runs": runs, "cells": cells}


def grid_cell(cell_runs: list[dict], dim: int, window: int, negative: int) -> dict:
    """One cell's summary: words/s ratios (per seed, median) and paired jaxemb − gensim
    differences (mean, 95% half-width) per metric, analogy in points."""
    g = [r for r in cell_runs if r["method"] == "gensim"]
    j = [r for r in cell_runs if r["method"] == "jaxemb"]
    wps = lambda r: (r["effective_words"] / r["seconds"]  # noqa: E731
                     if r["seconds"] and math.isfinite(r["seconds"]) else float("nan"))
    ratios = [wps(rj) / wps(rg) for rg, rj in zip(g, j, strict=True)]
    cell = {"dim": dim, "window": window, "negative": negative, "ratios": ratios,
            "ratio_median": float(np.median(ratios)),
            "diverged": sum("error" in r for r in j)}
    for m, _, scale in GRID_METRICS:
        a_, b_ = [scale * r[m] for r in j], [scale * r[m] for r in g]
        if np.isfinite(a_).all():
            iv = stats.paired_difference(a_, b_)
            cell[m] = [iv.mean, iv.half_width]
        else:
            cell[m] = [float("nan"), float("nan")]
        cell[f"gensim_{m}"] = float(np.mean(b_))
    return cell


def grid_row(c: dict) -> str:
    diffs = "  ".join(f"{c[m][0]:+7.3f}±{c[m][1]:.3f}" if scale == 1 else
                      f"{c[m][0]:+6.2f}±{c[m][1]:.2f}" for m, _, scale in GRID_METRICS)
    flag = f"  diverged {c['diverged']}" if c["diverged"] else ""
    return (f"{c['dim']:4d} {c['window']:6d} {c['negative']:8d}  ×{c['ratio_median']:5.2f}  "
            f"{diffs}{flag}")


def grid_table(cells: list[dict]) -> str:
    head = ("\n dim window negative  words/s  ΔWS353 ρ        ΔSimLex ρ       Δanalogy pts\n"
            "(jaxemb/gensim effective words/s, median over seeds; Δ = jaxemb − gensim, paired "
            "95% t-interval over seeds)")
    return "\n".join([head, *map(grid_row, cells)])


def plot_grid(cells: list[dict], path: Path) -> None:
    """One figure: words/s ratio and the three quality differences per cell, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"d{c['dim']} w{c['window']} n{c['negative']}" for c in cells]
    x = np.arange(len(cells))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5), sharey=True)
    axes[0].barh(x, [c["ratio_median"] for c in cells])
    axes[0].axvline(1.5, color="k", ls="--", lw=1)
    axes[0].set_xlabel("effective words/s, jaxemb / gensim")
    for ax, (m, label, scale) in zip(axes[1:], GRID_METRICS, strict=True):
        ax.errorbar([c[m][0] for c in cells], x, xerr=[c[m][1] for c in cells], fmt="o")
        tol = 1.0 if scale != 1 else 0.03
        for v in (-tol, 0, tol):
            ax.axvline(v, color="k", ls="--" if v else "-", lw=1)
        ax.set_xlabel(f"Δ {label} (jaxemb − gensim{', points' if scale != 1 else ''})")
    axes[0].set_yticks(x, labels)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

if __name__ == "__main__":
    main(tyro.cli(Args, prog="python -m experiments.bench_sgns", description=__doc__))
