"""Benchmark items of the SGNS study, and paired differences of two scorings over them.

Q1 and Q3 compare benchmark scores (WS353 and SimLex Spearman ρ, 3CosAdd accuracy) of two
scorings of the same items over the same seeds. The interval of such a difference is
:func:`jaxemb.stats.item_bootstrap_difference`: the items and the seeds are resampled together,
so it covers both the benchmark's small sample of word pairs or questions and the training seeds
(its docstring says exactly what). The per-item data come from :mod:`jaxemb.evaluate`
(``word_pair_items``, ``analogies(...).total.is_correct``) with the evaluation's protocol (whole
vocabulary, case-insensitive), so an item's mean reproduces the table's figure.
"""

from __future__ import annotations

import contextlib

import numpy as np

from experiments.study.sgns_common import SGNSStudy, in_out_pair_scores
from jaxemb import evaluate, stats
from jaxemb.wordvectors import WordVectors

METRICS = ("ws353", "simlex", "3cosadd")
PAIR_SETS = ("ws353", "simlex")
N_RESAMPLES = 2000
"""Bootstrap resamples of every benchmark difference (numpy seed :data:`BOOTSTRAP_SEED`)."""
BOOTSTRAP_SEED = 0
METHOD_TEXT = (f"percentile bootstrap, {N_RESAMPLES} resamples (numpy seed {BOOTSTRAP_SEED}) "
               f"of the benchmark's items and of the seeds together, paired, widened to contain "
               f"the paired t-interval over seeds (jaxemb.stats.item_bootstrap_difference)")


def items(study: SGNSStudy, variant: str, kind: str, seed_index: int, score: str) -> dict:
    """{"ws353" | "simlex": (gold [n], model score [n]) or None, "3cosadd": correct [q] (0/1)
    or None} of one model's vectors under ``score`` ("cosine" or "dot"); None where the
    evaluation gives NaN (fewer than 3 pairs, constant scores, nothing answerable). Memoised in
    the study's cache (Q1 and Q3 share the dot model's)."""
    key = ("items", variant, kind, seed_index, score)
    if key in study.cache:
        return study.cache[key]
    wv = WordVectors(study.bench.words, study.variants[variant].vectors(seed_index, kind))
    out = {}
    for name in PAIR_SETS:
        out[name] = None
        if study.bench.pairs[name][0].size >= 3:
            with contextlib.suppress(evaluate.EvaluationError):
                it = evaluate.word_pair_items(wv, study.bench.data[name], None, score=score)
                out[name] = (it.gold, it.model) if np.ptp(it.model) > 0 else None
    out["3cosadd"] = None
    if study.bench.answerable:
        r = evaluate.analogies(wv, study.bench.data["analogies"], restrict_vocab=None,
                               method="3cosadd", score=score)
        out["3cosadd"] = r.total.is_correct.astype(np.float64)
    study.cache[key] = out
    return out


def in_out_items(study: SGNSStudy, seed_index: int) -> dict:
    """{"ws353" | "simlex": (gold, in·out score) or None}: the dot model's pairs under the score
    SGNS trained (both directions averaged; :func:`sgns_common.in_out_pair_scores`)."""
    vin, vout = (study.dot.vectors(seed_index, k) for k in ("in", "out"))
    out = {}
    for name in PAIR_SETS:
        ia, ib, gold, _ = study.bench.pairs[name]
        s = in_out_pair_scores(vin, vout, ia, ib) if ia.size >= 3 else None
        ok = s is not None and np.ptp(s) > 0 and np.ptp(gold) > 0
        out[name] = (gold, s) if ok else None
    return out


def samples(its: list[dict], metric: str) -> stats.ItemSamples | None:
    """``metric``'s statistic (ρ against gold, or accuracy) of one scoring, [seeds] of
    :func:`items` dicts, on all items and in every resample (the same draws for every scoring
    of the benchmark); None when a seed lacks the items."""
    if any(x.get(metric) is None for x in its):
        return None
    kw = dict(n_resamples=N_RESAMPLES, seed=BOOTSTRAP_SEED)
    if metric == "3cosadd":
        return stats.item_bootstrap_samples([x[metric] for x in its], "mean", **kw)
    return stats.item_bootstrap_samples([x[metric][1] for x in its], "spearman",
                                        its[0][metric][0], **kw)


def difference(a: stats.ItemSamples | None, b: stats.ItemSamples | None) -> dict | None:
    """{"mean", "low", "high", "n"}: the paired difference a − b averaged over seeds, with its
    item-and-seed bootstrap interval (JSON for the results); None when a side is missing."""
    if a is None or b is None:
        return None
    iv = stats.item_difference(a, b)
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}


def differences(its: dict, pairs) -> dict:
    """{a: {b: {metric: :func:`difference`}}} for each (a, b) of ``pairs`` and every metric both
    scorings have; ``its``: {scoring: [seeds] of :func:`items` dicts}. Each scoring is resampled
    once for all the pairs it is in."""
    smp: dict = {}

    def get(name, metric):
        if (name, metric) not in smp:
            smp[name, metric] = samples(its[name], metric)
        return smp[name, metric]

    out: dict = {}
    for a, b in pairs:
        out.setdefault(a, {})[b] = {m: difference(get(a, m), get(b, m)) for m in METRICS
                                    if m in its[a][0] and m in its[b][0]}
    return out


# --- from the results (render, answer) ---------------------------------------------------------

def interval(d: dict | None) -> stats.Interval | None:
    return None if d is None else stats.Interval(d["mean"], d["low"], d["high"], d["n"])


def verdict(d: dict | None) -> str:
    """The decision rule's word for a stored difference ('indistinguishable' when missing)."""
    return "indistinguishable" if d is None else stats.verdict(interval(d))


def format_difference(d: dict | None, digits: int = 3, scale: float = 1.0) -> str:
    """'+0.012 [−0.010, +0.034]' (scaled), '—' when missing, 'n/a' when not finite."""
    if d is None:
        return "—"
    m, lo, hi = (scale * d[k] for k in ("mean", "low", "high"))
    if not np.isfinite(m):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)) or d["n"] < 2:
        return f"{m:+.{digits}f}"
    return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


DIFFERENCE_HEADER = ("paired difference", "Δ WS353 ρ", "Δ SimLex ρ", "Δ analogy 3CosAdd (points)")
"""The columns of a benchmark-differences table (:func:`difference_cells` fills a row)."""


def difference_cells(d: dict, missing: str = "—") -> tuple[str, str, str]:
    """The Δ WS353, Δ SimLex and Δ 3CosAdd (in points) cells of one comparison's differences
    ``d`` ({benchmark: difference or None}); ``missing`` where ``d`` lacks a benchmark."""
    return tuple(format_difference(d[m], *fmt) if m in d else missing
                 for m, fmt in (("ws353", ()), ("simlex", ()), ("3cosadd", (2, 100))))
