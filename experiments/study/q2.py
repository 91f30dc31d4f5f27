"""Q2 "Why does 'don't' relate to 'like' if they are not similar?": first-order in·out scores
(co-occurrence, PMI) vs second-order in·in cosine (substitutability); in·out ≈ PMI − log k
(Levy & Goldberg 2014); the planted corpus, whose true PMI is known (Arora et al. 2016)."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np
import scipy.sparse as sp
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.report import Run, answer_text  # noqa: E402
from experiments.study.results import Results as _Results  # noqa: E402
from experiments.study.sgns_common import (  # noqa: E402
    PlantedRun,
    SGNSStudy,
    SGNSStudyConfig,
    in_out_pair_scores,
    pm,
    rowwise,
    settings_text,
    setup,
    trained,
    unit,
)
from jaxemb import ppmi, sgns  # noqa: E402

PART = "sgns"
TITLE = "## Q2. Why does 'don't' relate to 'like' if they are not similar?"
AGGREGATES = ("io_pmi", "ii_pmi", "io_2nd", "ii_2nd", "io_2nd_r", "ii_2nd_r", "io_ws353",
              "ii_ws353", "io_simlex", "ii_simlex")


@dataclasses.dataclass(frozen=True)
class Results(_Results):
    setup: dict  # sgns_common.setup
    settings: dict  # the Q2 settings the captions state (pair_min_count, pair_top_words, ...)
    n_pairs: int  # frequent co-occurring ordered pairs measured (< 3: nothing measured)
    n_random: int  # random pairs of frequent words
    top: int  # the frequent words are the first ``top`` rows
    aggregate: dict  # {AGGREGATES key: [seeds] Spearman ρ}
    fits: list  # [seeds] {slope, intercept, pearson, mean_diff} of in·out on PMI − log k
    bench_pairs: dict  # {"ws353" | "simlex": pairs in the vocabulary}
    examples: list  # [{word, partner, count, pmi, io, ii, rank_io, rank_ii, nearest}]
    shifted_pmi: list  # [n_pairs] PMI − log k of the pairs (the plot)
    io0: list  # [n_pairs] in·out of the first seed (the plot)
    planted: dict | None  # {io, ii: [seeds], empirical, n_pairs, n_tokens, n_words, true0, io0}


def measure(config: SGNSStudyConfig, shared: dict, progress) -> Results:
    study = trained(config, shared, progress)
    config = study.config
    cooc = study.pairs(progress)
    planted = study.planted(progress)
    with progress("Q2: first- and second-order scores"):
        pmi = ppmi.sgns_pmi(cooc, study.vocab.counts).tocsr()
        a, b = _frequent_pairs(cooc, config.pair_min_count, config.pair_top_words)
        settings = {key: getattr(config, key) for key in (
            "pair_min_count", "pair_top_words", "pmi_draws", "example_min_count",
            "planted_docs")}
        if a.size < 3:
            return Results(setup(study), settings, int(a.size), 0, 0, {}, [], {}, [], [], [],
                           None)
        top = min(config.pair_top_words, len(study.vocab))
        agg, fits, n_random = _aggregate(study, pmi, a, b, top)
        p = _entries(pmi, a, b) - np.log(config.negative)
        vin, vout = study.dot.vectors(0, "in"), study.dot.vectors(0, "out")
        return Results(
            setup=setup(study), settings=settings, n_pairs=int(a.size), n_random=n_random,
            top=top, aggregate=agg, fits=fits,
            bench_pairs={n: int(study.bench.pairs[n][0].size) for n in ("ws353", "simlex")},
            examples=_examples(study, cooc, pmi), shifted_pmi=p.tolist(),
            io0=rowwise(vin[a], vout[b]).astype(np.float64).tolist(),
            planted=None if planted is None else _planted_stats(planted, config))


def _entries(M: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n] float64 entries M[a[i], b[i]] (0 where not stored)."""
    return np.asarray(M[a, b], np.float64).reshape(-1)


def _frequent_pairs(cooc: sp.csr_matrix, min_count: float,
                    top: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres, contexts): distinct words among the ``top`` first rows, seen ≥ min_count."""
    c = cooc[:top][:, :top].tocoo()
    keep = (c.data >= min_count) & (c.row != c.col)
    return c.row[keep].astype(np.int64), c.col[keep].astype(np.int64)


def _aggregate(study: SGNSStudy, pmi: sp.csr_matrix, a: np.ndarray, b: np.ndarray,
               top: int) -> tuple[dict, list, int]:
    """Per seed: Spearman of in·out and cos(in, in) with PMI (1st order), with the PPMI-profile
    cosine (2nd order) on the pairs and on random pairs, with human ratings; the fit of in·out
    on PMI − log k."""
    k = study.config.negative
    p = _entries(pmi, a, b)
    ppmi_rows = pmi.maximum(0).tocsr()
    second = ppmi.row_cosine(ppmi_rows, a, b)  # PPMI context profiles
    # random pairs of frequent words, co-occurring or not: substitutes rarely co-occur
    rng = np.random.default_rng(0)
    ra, rb = rng.integers(0, top, size=(2, min(20_000, top * (top - 1))))
    ra, rb = ra[ra != rb], rb[ra != rb]
    second_r = ppmi.row_cosine(ppmi_rows, ra, rb)
    agg = {key: [] for key in AGGREGATES}
    bench_rows = {n: study.bench.pairs[n][:3] for n in ("ws353", "simlex")}
    fits = []

    def rho(x, y):
        return float(stats.spearmanr(x, y).statistic)

    for i in study.seed_indices:
        vin, vout = study.dot.vectors(i, "in"), study.dot.vectors(i, "out")
        uin = unit(vin)
        io, ii = rowwise(vin[a], vout[b]), rowwise(uin[a], uin[b])
        agg["io_pmi"].append(rho(io, p))
        agg["ii_pmi"].append(rho(ii, p))
        agg["io_2nd"].append(rho(io, second))
        agg["ii_2nd"].append(rho(ii, second))
        agg["io_2nd_r"].append(rho(rowwise(vin[ra], vout[rb]), second_r))
        agg["ii_2nd_r"].append(rho(rowwise(uin[ra], uin[rb]), second_r))
        for n, (ia, ib, gold) in bench_rows.items():
            agg[f"io_{n}"].append(rho(gold, in_out_pair_scores(vin, vout, ia, ib)))
            agg[f"ii_{n}"].append(rho(gold, rowwise(uin[ia], uin[ib])))
        fit = stats.linregress(p - np.log(k), io)
        fits.append({"slope": float(fit.slope), "intercept": float(fit.intercept),
                     "pearson": float(fit.rvalue),
                     "mean_diff": float(np.mean(io - (p - np.log(k))))})
    return agg, fits, int(ra.size)


def _examples(study: SGNSStudy, cooc: sp.csr_matrix, pmi: sp.csr_matrix) -> list[dict]:
    """Each query word with one partner drawn uniformly (numpy seed 0) among the words it is
    seen with at least ``example_min_count`` times per epoch (first seed). Drawn, not picked by
    PMI: a partner chosen for its high PMI would rank high by in·out by construction."""
    rng = np.random.default_rng(0)
    vin, vout = study.dot.vectors(0, "in"), study.dot.vectors(0, "out")
    unit_in = unit(vin)
    vocab = study.vocab
    rows = []
    for w in study.config.query_words:
        if w not in vocab:
            continue
        i = vocab.id(w)
        row = cooc[i].toarray().ravel()
        js = np.flatnonzero(row >= study.config.example_min_count)
        js = js[js != i]
        if js.size == 0:
            continue
        j = int(rng.choice(js))
        io_row, ii_row = vout @ vin[i], unit_in @ unit_in[i]
        io_row[i] = ii_row[i] = -np.inf
        rows.append({"word": w, "partner": vocab.words[j], "count": float(cooc[i, j]),
                     "pmi": float(pmi[i, j]), "io": float(io_row[j]), "ii": float(ii_row[j]),
                     "rank_io": int((io_row > io_row[j]).sum()) + 1,
                     "rank_ii": int((ii_row > ii_row[j]).sum()) + 1,
                     "nearest": vocab.words[int(np.argmax(ii_row))]})
    return rows


def _planted_stats(pl: PlantedRun, config: SGNSStudyConfig) -> dict:
    n = len(pl.rows)
    sub = pl.cooc[:n][:, :n].tocoo()
    keep = (sub.data >= config.pair_min_count) & (sub.row != sub.col)
    a, b = sub.row[keep], sub.col[keep]
    true = pl.true_pmi[a, b]
    emp = np.asarray(ppmi.sgns_pmi(pl.cooc, pl.counts).tocsr()[a, b]).ravel()
    io, ii, io_scores = [], [], []
    for i in range(pl.result.epoch_loss.shape[1]):
        p = pl.result.seed_params(i)
        vin, vout = sgns.export_vectors(p, "in"), sgns.export_vectors(p, "out")
        io_scores.append(rowwise(vin[a], vout[b]))
        io.append(float(stats.spearmanr(io_scores[-1], true).statistic))
        ii.append(float(stats.spearmanr(rowwise(unit(vin)[a], unit(vin)[b]), true).statistic))
    return {"io": io, "ii": ii, "empirical": float(stats.spearmanr(emp, true).statistic),
            "n_pairs": int(a.size), "n_tokens": pl.n_tokens, "n_words": n,
            "true0": np.asarray(true, np.float64).tolist(),
            "io0": np.asarray(io_scores[0], np.float64).tolist()}


# --- render ------------------------------------------------------------------------------------

def render(results: Results, run: Run) -> None:
    r = results
    if r.n_pairs < 3:
        run.add(TITLE + "\n\n" + answer(r) + "\n")
        return
    for i, seed in enumerate(r.setup["seeds"]):
        run.log("q2_seed", seed=seed, **{key: v[i] for key, v in r.aggregate.items()},
                **r.fits[i])
    t = _tables(r, run)
    f_q2 = _figure(r, run)
    run.add(TITLE + "\n\n### First-order (in·out) vs second-order (in·in cosine) scores\n\n"
            + t["aggregate"] + "\n### Examples chosen by the data\n\n" + t["pairs"]
            + "\n### Human ratings: relatedness vs similarity\n\n" + t["benchmarks"]
            + "\n### in·out ≈ PMI − log k (Levy & Goldberg 2014)\n\n" + t["fit"] + "\n" + f_q2
            + (("\n### Planted corpus: the true PMI is known\n\n" + t["planted"])
               if r.planted else "")
            + "\n" + answer(r) + "\n")


def _tables(r: Results, run: Run) -> dict[str, str]:
    s, agg, k = r.settings, r.aggregate, r.setup["negative"]
    out = {"aggregate": run.table(
        "q2_aggregate", ("score of the pair (w, c)", "co-occurring pairs: Spearman with PMI "
                         "(1st order)", "co-occurring pairs: Spearman with PPMI-profile cosine "
                         "(2nd order)", "random pairs: Spearman with PPMI-profile cosine"),
        [("in·out (what SGNS trains)", pm(agg["io_pmi"]), pm(agg["io_2nd"]),
          pm(agg["io_2nd_r"])),
         ("cos(in, in) (the usual similarity)", pm(agg["ii_pmi"]), pm(agg["ii_2nd"]),
          pm(agg["ii_2nd_r"]))],
        f"{r.n_pairs:,} ordered pairs of words among the {s['pair_top_words']} most frequent "
        f"that SGNS sees ≥ {s['pair_min_count']:g} times per epoch (expected count; "
        f"{s['pmi_draws']} subsampling draws). PMI = log(#(w,c) / (#(w)·"
        f"P_n(c))), P_n ∝ count^0.75, on those pairs; the 2nd-order score is the cosine of the "
        f"two words' PPMI rows (shared contexts: substitutability). Random pairs: "
        f"{r.n_random:,} pairs of distinct words among the same {r.top} (numpy seed 0), "
        f"co-occurring or not. Dot model; mean ± 95% over {len(r.setup['seeds'])} seeds. "
        f"{settings_text(r.setup)}.")}
    out["benchmarks"] = run.table(
        "q2_benchmarks", ("score of the pair", "WS353 ρ (relatedness and similarity)",
                          "SimLex-999 ρ (similarity only)"),
        [("in·out (both directions averaged)", pm(agg["io_ws353"]), pm(agg["io_simlex"])),
         ("cos(in, in)", pm(agg["ii_ws353"]), pm(agg["ii_simlex"]))],
        f"Human ratings: WordSim-353 rates association as well as similarity (Agirre et al. "
        f"2009); SimLex-999 rates similarity only and scores related but dissimilar pairs "
        f"(e.g. 'coffee'–'cup') low (Hill, Reichart & Korhonen 2015). "
        f"{r.bench_pairs['ws353']} / {r.bench_pairs['simlex']} pairs in the "
        f"vocabulary. Dot model; mean ± 95% over seeds.")
    out["fit"] = run.table(
        "q2_levy_goldberg", ("fit of in·out on PMI − log k", "slope", "intercept",
                             "Pearson r", "mean(in·out − (PMI − log k))"),
        [("dot model, in·out", *(pm([f[key] for f in r.fits])
                                 for key in ("slope", "intercept", "pearson", "mean_diff")))],
        f"Least squares over the same {r.n_pairs:,} pairs; k = {k} so log k = {np.log(k):.3f}. "
        "Levy & Goldberg (2014): at SGNS's optimum, with enough dimensions, in·out = PMI − log "
        "k (slope 1, intercept 0).")
    out["pairs"] = run.table(
        "q2_pairs", ("pair (w → c)", "pairs per epoch", "PMI", "in·out", "cos(in, in)",
                     "rank of c by in·out", "rank of c by cos(in, in)", "w's nearest by cos"),
        [(f"{e['word']} → {e['partner']}", f"{e['count']:.1f}", f"{e['pmi']:.2f}",
          f"{e['io']:.2f}", f"{e['ii']:.2f}", e["rank_io"], e["rank_ii"], e["nearest"])
         for e in r.examples],
        f"For each query word, a partner c drawn at random (numpy seed 0) among the words it "
        f"is seen with ≥ {s['example_min_count']:g} times per epoch, not chosen by PMI. Ranks "
        f"over the {r.setup['vocab_size']:,}-word vocabulary (1 = first); dot model, seed "
        f"{r.setup['seeds'][0]}.")
    if r.planted:
        out["planted"] = _planted_table(r, run)
    return out


def _planted_table(r: Results, run: Run) -> str:
    pl, s = r.planted, r.settings
    return run.table(
        "q2_planted", ("score of the pair", "Spearman with the true PMI"),
        [("in·out", pm(pl["io"])), ("cos(in, in)", pm(pl["ii"])),
         ("PMI counted in the corpus (reference)", f"{pl['empirical']:.3f}")],
        f"Planted corpus (Arora et al. 2016 random-walk model, {s['planted_docs']} "
        f"documents, {pl['n_tokens']:,} tokens): {pl['n_pairs']:,} ordered pairs "
        f"among its {pl['n_words']} most frequent words seen ≥ "
        f"{s['pair_min_count']:g} times per epoch. True PMI = the generative model's "
        f"(Monte Carlo). Same SGNS settings (dot); mean ± 95% over seeds.")


def _figure(r: Results, run: Run) -> str:
    pl = r.planted
    fig, axes = plt.subplots(1, 2 if pl else 1, figsize=(10 if pl else 5, 4), squeeze=False)
    x, io0, fit = np.asarray(r.shifted_pmi), np.asarray(r.io0), r.fits[0]
    ax = axes[0, 0]
    ax.scatter(x, io0, s=2, alpha=0.3)
    lim = [min(x.min(), io0.min()), max(x.max(), io0.max())]
    ax.plot(lim, lim, "k--", lw=1, label="in·out = PMI − log k")
    ax.plot(lim, fit["intercept"] + fit["slope"] * np.array(lim), "r-", lw=1,
            label=f"fit: slope {fit['slope']:.2f}")
    ax.set_xlabel("PMI − log k (pairs SGNS sees)")
    ax.set_ylabel("in·out (dot model, seed 0)")
    ax.legend(fontsize=8)
    if pl:
        ax = axes[0, 1]
        ax.scatter(pl["true0"], pl["io0"], s=2, alpha=0.3)
        ax.set_xlabel("true PMI (planted model)")
        ax.set_ylabel("in·out (seed 0)")
        ax.set_title("planted corpus")
    fig.tight_layout()
    return run.figure(fig, "q2_inout_vs_pmi",
                      f"Q2: in·out against PMI − log k on {r.n_pairs:,} frequent pairs"
                      + (" (left) and against the true PMI of the planted corpus (right)"
                         if pl else "") + ".")


# --- answer ------------------------------------------------------------------------------------

def answer(r: Results) -> str:
    if r.n_pairs < 3:
        return (f"Fewer than 3 word pairs occur {r.settings['pair_min_count']} times; nothing "
                "to measure (lower --pair-min-count or use a larger corpus).")
    agg = {key: np.mean(v) for key, v in r.aggregate.items()}
    slope, pearson, gap = (np.mean([f[key] for f in r.fits])
                           for key in ("slope", "pearson", "mean_diff"))
    first = ("follows PMI more closely than" if agg["io_pmi"] > agg["ii_pmi"] else
             "does not follow PMI more closely than")
    second = ("tracks shared contexts more than" if agg["ii_2nd_r"] > agg["io_2nd_r"] else
              "does not track shared contexts more than")
    shape = ("close to the theory's 1" if abs(slope - 1) < 0.2 else
             f"{'below' if slope < 1 else 'above'} the theory's 1")
    n_split = sum(1 for e in r.examples if e["rank_io"] < e["rank_ii"])
    drop = {n: agg[f"ii_{n}"] - agg[f"io_{n}"] for n in ("ws353", "simlex")}
    text = (
        f"SGNS trains in·out, a first-order score: it {first} cos(in, in) does "
        f"(Spearman {agg['io_pmi']:.2f} vs {agg['ii_pmi']:.2f}), while cos(in, in) {second} "
        f"in·out does (Spearman with the PPMI-profile cosine on random pairs of frequent words "
        f"{agg['ii_2nd_r']:.2f} vs {agg['io_2nd_r']:.2f}; aggregate table). "
        f"Relevance (the words occur together) and similarity (they occur in the same "
        f"contexts) are different scores of the same model: for {n_split} of {len(r.examples)} "
        f"query words a co-occurring partner (drawn at random, not chosen by PMI) ranks "
        f"higher by in·out than by cos(in, in) (pairs table). Against human ratings, "
        f"replacing cos(in, in) by in·out changes "
        f"Spearman by {-drop['simlex']:+.3f} on SimLex (similarity only) and by "
        f"{-drop['ws353']:+.3f} on WS353 (relatedness too), so relative to cos(in, in) in·out "
        f"does {'worse' if drop['simlex'] > drop['ws353'] else 'no worse'} where only "
        f"similarity counts (benchmark table). The fit of in·out on PMI − log k has slope "
        f"{slope:.2f} ({shape}), Pearson r = {pearson:.2f}, and in·out lies {abs(gap):.2f} "
        f"{'above' if gap > 0 else 'below'} PMI − log k on average (fit table, plot; the "
        f"theory's optimum has slope 1 and intercept 0).")
    if r.planted:
        pl = r.planted
        text += (f" On the planted corpus, where the true PMI is known, in·out reaches "
                 f"Spearman {np.mean(pl['io']):.2f} with it and cos(in, in) "
                 f"{np.mean(pl['ii']):.2f}, against {pl['empirical']:.2f} for the PMI "
                 f"counted in the corpus itself (planted table).")
    return answer_text(text, BACKGROUND)


BACKGROUND = (
    "With enough dimensions, SGNS's optimum is in_w·out_c = PMI(w, c) − log k, k the number of "
    "negatives, with the context marginal taken from the smoothed (^0.75) distribution the "
    "negatives are drawn from (Levy & Goldberg 2014; Levy, Goldberg & Dagan 2015): in·out is a "
    "first-order, co-occurrence score. cos(in_a, in_b) compares two words' rows of that matrix, "
    "i.e. the contexts they share: a second-order score (Schütze 1998). Relatedness benchmarks "
    "such as WS353 reward both kinds of association, SimLex-999 only similarity (Hill, "
    "Reichart & Korhonen 2015).")
