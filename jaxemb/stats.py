"""The one place for intervals and comparisons (built on ``scipy.stats``).

Every study reports a mean with its 95% t-interval over seeds, decides "these two differ" with one
declared rule (:data:`DECISION_RULE`, :func:`compare`), and formats "mean ± half-width" with
:func:`format_interval`. Variants in a study share their seeds, so comparisons are paired: the
t-interval of the per-seed differences (Student 1908; the paired t-test, ``scipy.stats.ttest_rel``).
Benchmark items (word pairs, analogy questions) are resampled with :func:`bootstrap_interval`
(``scipy.stats.bootstrap``, BCa; Efron 1987); two scorings of the same items, over the same seeds,
are compared by :func:`item_bootstrap_difference` (items and seeds resampled together), and
:func:`verdict` turns any paired interval into the rule's words.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95

DECISION_RULE = (
    "Two variants differ when the 95% interval of their paired difference excludes 0; otherwise "
    "they are called indistinguishable. The interval is the t-interval of the per-seed "
    "differences (the same seeds for every variant), except for benchmark scores (WS353 and "
    "SimLex ρ, analogy accuracy), where it is a percentile bootstrap that resamples the "
    "benchmark's items and the seeds together (paired: the same items for both scorings), "
    "widened to contain that t-interval of the per-seed differences, so a difference is called "
    "only when neither which word pairs or questions the benchmark holds nor which seeds "
    "trained the model explains it. With one seed nothing is called different.")


class StatsError(ValueError):
    """Values that cannot give an interval (empty, ragged pairs)."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean and its two-sided interval; ``n`` values went in (half-width 0 for one value)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """Whether the interval lies wholly on one side of ``value`` (never for one value or a
        NaN interval: nothing is decided then)."""
        return self.n > 1 and (self.low > value or self.high < value)

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """'m ± h' (scaled by ``scale``); 'm' for one value; 'n/a' when not finite."""
        m, h = scale * self.mean, scale * self.half_width
        if not math.isfinite(m):
            return "n/a"
        return f"{m:.{digits}f}" if self.n < 2 else f"{m:.{digits}f} ± {h:.{digits}f}"


def _values(values) -> np.ndarray:
    x = np.asarray(values, np.float64).ravel()
    if x.size == 0:
        raise StatsError("no values to summarise")
    return x


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` [n] and its Student-t interval (half-width 0 for n = 1)."""
    x = _values(values)
    m = float(x.mean())
    if x.size < 2:
        return Interval(m, m, m, 1)
    sem = float(stats.sem(x))
    if not sem > 0:  # all equal (0) or not finite (NaN): no spread to scale
        return Interval(m, m, m, x.size) if sem == 0 else Interval(m, math.nan, math.nan, x.size)
    lo, hi = stats.t.interval(confidence, x.size - 1, loc=m, scale=sem)
    return Interval(m, float(lo), float(hi), x.size)


def mean_half_width(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval): what tables print as 'mean ± half-width'."""
    iv = t_interval(values)
    return iv.mean, iv.half_width


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = CONFIDENCE) -> Interval:
    """t-interval of the per-seed differences a − b (``a``, ``b`` [n], aligned by seed)."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise StatsError(f"paired values need one value per seed on both sides, got {a.size} "
                         f"and {b.size}")
    return t_interval(a - b, confidence)


def verdict(difference: Interval) -> str:
    """'higher', 'lower' or 'indistinguishable': a paired difference a − b by
    :data:`DECISION_RULE` (its interval excludes 0, and more than one seed went in)."""
    if not difference.excludes(0.0):
        return "indistinguishable"
    return "higher" if difference.mean > 0 else "lower"


def compare(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> str:
    """'higher', 'lower' or 'indistinguishable': ``a`` against ``b`` by :data:`DECISION_RULE`."""
    return verdict(paired_difference(a, b, confidence))


def paired_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``); NaN for n < 2."""
    a, b = _values(a), _values(b)
    if a.size < 2:
        return float("nan")
    return float(stats.ttest_rel(a, b).pvalue)


def bootstrap_interval(statistic: Callable[..., float], *samples: Sequence,
                       confidence: float = CONFIDENCE, n_resamples: int = 2000,
                       seed: int = 0) -> Interval:
    """Interval of ``statistic(*samples)`` by resampling the items (paired across ``samples``:
    the same items are drawn for each), BCa (``scipy.stats.bootstrap``); e.g. a Spearman ρ over
    the word pairs of WS353, or an accuracy over analogy questions."""
    arrays = [np.asarray(s) for s in samples]
    if not arrays or arrays[0].shape[0] < 2:
        raise StatsError("the bootstrap needs at least two items")
    point = float(statistic(*arrays))
    res = stats.bootstrap(tuple(arrays), statistic, paired=True, vectorized=False,
                          n_resamples=n_resamples, confidence_level=confidence,
                          method="BCa", random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return Interval(point, float(lo), float(hi), arrays[0].shape[0])


def format_interval(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """'mean ± half-width' of the 95% t-interval over ``values`` (the one formatter of tables)."""
    x = _values(values)
    if not np.isfinite(x).all():
        return "n/a"
    return t_interval(x).format(digits, scale)


# --- paired differences over benchmark items -------------------------------------------------

ITEM_STATISTICS = ("mean", "spearman")
"""What :func:`item_bootstrap_difference` computes over a benchmark's items: "mean" (e.g. analogy
accuracy from per-question correctness) or "spearman" (ρ between gold ratings and model scores)."""


def _tie_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[m, n] average ranks (1-based, ties averaged, as ``scipy.stats.rankdata``) of the values
    ``x`` [n] in each resample that holds item i ``weights[r, i]`` times (counts [m, n]); an
    item drawn 0 times gets the rank it would have. One sort of ``x`` serves every resample."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first position of each value
    group = np.cumsum(np.r_[False, xs[1:] != xs[:-1]])  # [n] value group of sorted position
    gw = np.add.reduceat(weights[:, order], starts, axis=1)  # [m, groups] copies per value
    gr = np.cumsum(gw, axis=1) - (gw - 1) / 2  # average of the positions the copies occupy
    ranks = np.empty_like(weights, dtype=np.float64)
    ranks[:, order] = gr[:, group]
    return ranks


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[m] Pearson r of ``x``, ``y`` [m, n] with item counts ``w`` [m, n] (NaN when a side is
    constant): r of the resample that repeats item i w[r, i] times."""
    total = w.sum(axis=1, keepdims=True)
    xc = x - (w * x).sum(axis=1, keepdims=True) / total
    yc = y - (w * y).sum(axis=1, keepdims=True) / total
    sxy, sxx, syy = ((w * u * v).sum(axis=1) for u, v in ((xc, yc), (xc, xc), (yc, yc)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((sxx > 0) & (syy > 0), sxy / np.sqrt(sxx * syy), np.nan)


def _item_statistic(kind: str, x: np.ndarray, w: np.ndarray, ref_ranks) -> np.ndarray:
    """[m] the statistic of one scoring's per-item values ``x`` [n] in each resample ``w``."""
    if kind == "mean":
        return w @ x / w.sum(axis=1)
    return _weighted_pearson(_tie_ranks(x, w), ref_ranks, w)


@dataclasses.dataclass(frozen=True, eq=False)
class ItemSamples:
    """One scoring's statistic on a benchmark, per seed, on all items and in every resample
    (:func:`item_bootstrap_samples`); two of them with the same draws give a paired
    difference (:func:`item_difference`)."""

    point: np.ndarray  # [seeds] the statistic on all items
    resampled: np.ndarray  # [n_resamples, seeds] ... on each resample's items
    seed_weights: np.ndarray  # [n_resamples, seeds] how often each seed was drawn / seeds
    draws: tuple  # (n items, seeds, n_resamples, seed, resample_seeds): equal ⇒ same draws


def item_bootstrap_samples(values, statistic: str = "mean", reference=None, *,
                           n_resamples: int = 2000, seed: int = 0, resample_seeds: bool = True,
                           chunk: int = 250) -> ItemSamples:
    """The statistic of one scoring's per-item ``values`` [seeds, n] (or [n]) in each of
    ``n_resamples`` resamples of the items (numpy ``default_rng([seed, 0])``: the same draws for
    every scoring with the same n and seed, so differences are paired) and the seeds' draw
    (``default_rng([seed, 1])``). ``statistic``: "mean", or "spearman" against ``reference``
    [n] (ρ(reference, values), ties averaged as ``scipy.stats.spearmanr``)."""
    if statistic not in ITEM_STATISTICS:
        raise StatsError(f"unknown item statistic {statistic!r}; use one of {ITEM_STATISTICS}")
    x = np.atleast_2d(np.asarray(values, np.float64))
    S, n = x.shape
    if n < 2:
        raise StatsError("the bootstrap needs at least two items")
    if statistic == "spearman":
        if reference is None or np.shape(reference) != (n,):
            raise StatsError(f"spearman needs the gold ratings as reference [{n}]")
        reference = np.asarray(reference, np.float64)
    whole = np.ones((1, n))
    ref1 = None if statistic == "mean" else _tie_ranks(reference, whole)
    point = np.array([_item_statistic(statistic, x[s], whole, ref1)[0] for s in range(S)])
    items_rng, seeds_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    sw = (seeds_rng.multinomial(S, np.full(S, 1 / S), size=n_resamples)
          if resample_seeds and S > 1 else np.ones((n_resamples, S))) / S
    out = []
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        idx = items_rng.integers(0, n, size=(m, n), dtype=np.int32 if n < 2**31 else np.int64)
        if statistic == "mean":
            out.append(x[:, idx].mean(axis=-1).T)  # [m, S]
            continue
        w = np.bincount((idx + n * np.arange(m)[:, None]).ravel(), minlength=m * n)
        w = w.reshape(m, n).astype(np.float64)  # [m, n] how often each item was drawn
        ref = _tie_ranks(reference, w)
        out.append(np.stack([_item_statistic(statistic, x[s], w, ref) for s in range(S)], 1))
    return ItemSamples(point, np.concatenate(out), sw, (n, S, n_resamples, seed, resample_seeds))


def item_difference(a: ItemSamples, b: ItemSamples, confidence: float = CONFIDENCE,
                    with_seed_t: bool = True) -> Interval:
    """Paired difference a − b of two :class:`ItemSamples` drawn alike: the mean over seeds on
    all items, and the percentile interval of the seed-weighted resampled differences, widened
    (``with_seed_t``) to contain the paired t-interval of the per-seed differences on all items
    (:func:`item_bootstrap_difference` says what it covers and why)."""
    if a.draws != b.draws:
        raise StatsError(f"paired items need the same [seeds, items] and draws on both sides, "
                         f"got {a.draws} and {b.draws}")
    S = a.point.size
    point = float(np.mean(a.point - b.point))
    d = a.resampled - b.resampled  # [B, S]
    diffs = np.where(a.seed_weights > 0, d * a.seed_weights, 0.0).sum(axis=1)  # NaN stays NaN
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size < a.resampled.shape[0] / 2:
        return Interval(point, math.nan, math.nan, S)
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(diffs, [alpha, 100 - alpha])
    if with_seed_t and S > 1:
        t = t_interval(a.point - b.point, confidence)
        lo, hi = min(lo, t.low), max(hi, t.high)  # NaN t (NaN points): min/max keep NaN
    return Interval(point, float(lo), float(hi), S)


def item_bootstrap_difference(a, b, statistic: str = "mean", reference=None, *,
                              confidence: float = CONFIDENCE, n_resamples: int = 2000,
                              seed: int = 0, resample_seeds: bool = True,
                              with_seed_t: bool = True, chunk: int = 250) -> Interval:
    """Paired difference stat(a) − stat(b) of two scorings of the same benchmark items, averaged
    over seeds, with a percentile bootstrap interval (seeded numpy resampling).

    ``a``, ``b`` [seeds, n] (or [n]: one seed): per-item values of the two scorings, aligned by
    seed and item — e.g. per-question correctness (0/1) with ``statistic="mean"`` (accuracy), or
    per-pair model scores with ``statistic="spearman"`` and ``reference`` [n] the gold ratings
    (ρ(gold, scores), ties averaged as ``scipy.stats.spearmanr``).

    What the interval covers: each of ``n_resamples`` resamples draws the n items with
    replacement — the same draw for both scorings and every seed (paired) — and, independently
    (``resample_seeds``), as many seeds as there are with replacement; the statistic is
    recomputed on the drawn items for each drawn seed and its difference averaged over them. So
    the interval covers which items the benchmark happens to hold *and* which seeds training
    happened to use (a two-way, "pigeonhole" bootstrap of a crossed items × seeds design,
    mildly conservative when both are many: Owen 2007, Ann. Appl. Stat. 1(2)). With few seeds
    the seed part is coarse (3 seeds give 10 distinct draws) and too narrow: a bootstrap of S
    values spreads like a normal with (S − 1)/S of their variance, where Student's t (4.30 for
    3 seeds) is due. So (``with_seed_t``, the default) the interval is widened to contain the
    paired t-interval of the per-seed differences on all items (:func:`paired_difference`): a
    difference is called only when neither the items nor the seeds explain it. It does not
    cover the choice of benchmark, corpus or hyper-parameters.

    The mean is the difference on all items, averaged over seeds; ``n`` of the result is the
    number of seeds, so that, as :data:`DECISION_RULE` says, one seed decides nothing.
    Resamples where a side's ρ is undefined (constant values) are dropped; an interval from
    fewer than half of them is NaN.
    """
    a, b = (np.atleast_2d(np.asarray(x, np.float64)) for x in (a, b))
    if a.shape != b.shape:
        raise StatsError(f"paired items need the same [seeds, items] on both sides, got "
                         f"{a.shape} and {b.shape}")
    kw = dict(n_resamples=n_resamples, seed=seed, resample_seeds=resample_seeds, chunk=chunk)
    return item_difference(item_bootstrap_samples(a, statistic, reference, **kw),
                           item_bootstrap_samples(b, statistic, reference, **kw), confidence,
                           with_seed_t)
