"""Q7's words, generated from its results only (:class:`q7.Results`); each sentence turns with
the numbers (tests/test_q7.py feeds the opposite outcomes)."""

from __future__ import annotations

import numpy as np

from experiments.report import answer_text
from experiments.study.q7_measure import relatedness
from experiments.study.sgns_common import pm
from jaxemb.stats import compare, paired_difference

LARGER = "python -m experiments.run study --only q7 --sgns.corpus text8"
WORDS = {"higher": "better than", "lower": "worse than",
         "indistinguishable": "indistinguishable from"}


def _col(evs: list, key: str) -> list[float]:
    return [e[key] for e in evs]


def _rank(top: list, word: str) -> int | None:
    ws = [w for w, _ in top]
    return ws.index(word) + 1 if word in ws else None


def _vs(ev: dict, kd: str, m: str, ref: str = "in") -> str:
    return WORDS[compare(_col(ev[kd], m), _col(ev[ref], m))]


def answer(r) -> str:
    return answer_text(" ".join(s for s in (
        _in_out(r), _ablation(r), _geometry(r), _king_queen(r), _sweep(r), _composition(r))
        if s), BACKGROUND)


def _in_out(r) -> str:
    ev = r.evaluation
    return (f"Out is {_vs(ev, 'out', 'ws353')} in on WS353 and {_vs(ev, 'out', 'simlex')} in "
            f"on SimLex, and in+out is {_vs(ev, 'in+out', 'ws353')} in on WS353, "
            f"{_vs(ev, 'in+out', 'simlex')} it on SimLex and {_vs(ev, 'in+out', '3cosadd')} it "
            f"on analogies (3CosAdd) (paired 95% intervals over seeds; benchmark table).")


def _ablation(r) -> str:
    ev = r.evaluation_random
    if ev is None:
        return "The initialisation ablation did not run (--sgns.no-init-ablation)."
    if "error" in ev:
        return f"The initialisation ablation failed: {ev['error']}."

    def delta(kd, m):
        d = paired_difference(_col(ev[kd], m), _col(r.evaluation[kd], m))
        return (f"{WORDS[compare(_col(ev[kd], m), _col(r.evaluation[kd], m))]} those of zero "
                f"init ({d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}])")

    return (f"With random output vectors instead of zeros, out is {_vs(ev, 'out', 'ws353')} in "
            f"on WS353 and {_vs(ev, 'out', 'simlex')} in on SimLex; its out vectors are "
            f"{delta('out', 'ws353')} on WS353 and {delta('out', 'simlex')} on SimLex, and its "
            f"in vectors are {delta('in', 'ws353')} on WS353 (initialisation tables).")


def _geometry(r) -> str:
    geo = {kd: {key: np.mean(v) for key, v in g.items()} for kd, g in r.geometry.items()}
    return (f"Geometry: norm–frequency Spearman {geo['in']['rho']:.2f} (in) vs "
            f"{geo['out']['rho']:.2f} (out), mean pairwise cosine {geo['in']['iso']:.3f} vs "
            f"{geo['out']['iso']:.3f}, and out shares {100 * geo['out']['overlap']:.0f}% of "
            f"in's top-10 neighbours (geometry table, plot).")


def _king_queen(r) -> str:
    if not r.king_queen:
        return "king, man or woman is not in the vocabulary, so the analogy was not asked."
    hits = [f"{x['vectors']} ({x['method']}, rank {rank})" for x in r.king_queen
            if (rank := _rank(x["top"], "queen"))]
    if hits:
        return (f"king − man + woman gives queen in the top 5 for {'; '.join(hits)} "
                f"({r.setup['n_tokens']:,} tokens; analogy table).")
    return (f"king − man + woman gives queen in the top 5 for none of these "
            f"{len({x['vectors'] for x in r.king_queen})} sets of vectors: on this corpus of "
            f"{r.setup['n_tokens']:,} tokens the analogy is not found; `{LARGER}` trains on "
            f"text8 (17M tokens).")


def _decide(x: list | None) -> str:
    """'lower', 'higher' or 'indistinguishable' from [mean, low, high] (interval excludes 0)."""
    if x is None or not (x[1] > 0 or x[2] < 0):
        return "indistinguishable"
    return "higher" if x[0] > 0 else "lower"


def _sweep(r) -> str:
    ppmi = r.sweep.get("ppmi") or {}
    if len(ppmi) < 2:
        return ("The PPMI-SVD dimension sweep did not run (fewer than two dimensions below the "
                "vocabulary size, or --sgns.no-ppmi-svd).")
    ds = sorted(int(d) for d in ppmi)
    lo, hi = str(ds[0]), str(ds[-1])
    verdict = {m: _decide(ppmi[lo][f"d_{m}"]) for m in ("ws353", "simlex")}
    word = {"lower": "lower than", "higher": "higher than",
            "indistinguishable": "indistinguishable from"}
    gist = {"lower": f"compressing to d = {lo} loses similarity here rather than packing it",
            "higher": f"compressing to d = {lo} helps here, as the packing argument predicts",
            "indistinguishable": f"the word pairs cannot tell d = {lo} from d = {hi}"}
    kinds = set(verdict.values())
    summary = (gist[kinds.pop()] if len(kinds) == 1 else
               f"the two benchmarks disagree on whether compressing to d = {lo} helps")

    def row(m):
        return ", ".join(f"{ppmi[str(d)][m]:.3f}" for d in ds)

    middle = [f"d = {d} is {word[v]} d = {hi} on {name}" for d in ds[1:-1]
              for m, name in (("ws353", "WS353"), ("simlex", "SimLex"))
              if (v := _decide(ppmi[str(d)][f"d_{m}"])) != "indistinguishable"]
    rest = (f"; in between, {'; '.join(middle)}" if middle else
            f"; no other d differs from d = {hi} either" if len(ds) > 2 else "")
    return (f"PPMI-SVD at d = {', '.join(map(str, ds))}: WS353 ρ {row('ws353')}, SimLex ρ "
            f"{row('simlex')}; d = {lo} "
            f"is {word[verdict['ws353']]} d = {hi} on WS353 and {word[verdict['simlex']]} it "
            f"on SimLex (paired bootstrap over word pairs), so {summary}{rest} (sweep table, "
            f"plot).")


def _composition(r) -> str:
    c = r.composition
    if not c["pairs"]:
        return "No composition pair has both words in the vocabulary."
    label = next(iter(c["results"]))
    per = c["results"][label]
    rel = {how: relatedness(per, how) for how in ("a⊙b", "a+b", "cos-average")}
    base = relatedness(per, "a⊙b", "base")
    ov = {how: np.mean(relatedness(per, how, "overlap")) for how in ("a⊙b", "a+b")}
    vs_sum = compare(rel["a⊙b"], rel["a+b"])
    vs_base = compare(rel["a⊙b"], base)
    word = {"higher": "more related to", "lower": "less related to",
            "indistinguishable": "not measurably more or less related to"}
    d = paired_difference(rel["a⊙b"], rel["a+b"])
    return (f"Composition on {label} ({len(c['pairs'])} pairs): the top-10 neighbours of a⊙b "
            f"have mean cosine {pm(rel['a⊙b'])} to the two words, against {pm(rel['a+b'])} "
            f"for a+b (⊙ − + = {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]), "
            f"{pm(rel['cos-average'])} for the cos-average and {pm(base)} for any word: ⊙'s "
            f"neighbours are "
            f"{word[vs_sum]} the words than +'s, and {word[vs_base]} them than a random "
            f"word (paired over seeds); {100 * ov['a⊙b']:.0f}% of ⊙'s top-10 are among the "
            f"words' own top-10 neighbours, {100 * ov['a+b']:.0f}% of +'s (composition "
            f"tables).")


BACKGROUND = (
    "SGNS's loss depends on the two tables only through the products in_w·out_c. If every "
    "product could be set freely, its optimum is in_w·out_c = log(#(w,c) / (#(w)·P_n(c))) − log"
    " k (Levy & Goldberg 2014), with #(w) = Σ_c #(w,c) the plain count of w as a centre and "
    "P_n(c) ∝ #(c)^0.75 the distribution negatives are drawn from (context-distribution "
    "smoothing, Levy, Goldberg & Dagan 2015): rows are normalised by plain counts and columns "
    "by smoothed ones, so the matrix is not symmetric although the pair counts are; pairs never"
    " seen have target −∞. A product in·outᵀ fixes the two tables only up to an invertible d×d "
    "matrix A (in·A and out·A⁻ᵀ give the same products), so the objective alone does not make "
    "output rows describe words the way input rows do; what they become depends on the "
    "optimiser and the start. word2vec starts input vectors uniform in ±0.5/d and output "
    "vectors at zero, so an input vector gets no gradient (it is proportional to the output "
    "vectors it meets) until those output vectors have moved. Levy, Goldberg & Dagan (2015) "
    "report that in + out can help on similarity benchmarks. The analogy king − man + woman ≈ "
    "queen is from Mikolov, Yih & Zweig (2013); Levy & Goldberg (2014b) found it in explicit "
    "PPMI vectors as well and proposed 3CosMul. A truncated SVD U_d·Σ_d·V_dᵀ is the best rank-d"
    " approximation of the matrix in squared error (Eckart & Young 1936), so a smaller d keeps "
    "the directions of largest singular value. Mitchell & Lapata (2008, 2010) compared additive"
    " and multiplicative (element-wise) composition on count-based vectors, whose components "
    "are non-negative; in SGNS or SVD vectors the components take either sign.")
