"""The one place for intervals and comparisons (built on ``scipy.stats``).

Every study reports a mean with its 95% t-interval over seeds, decides "these two differ" with one
declared rule (:data:`DECISION_RULE`, :func:`compare`), and formats "mean ± half-width" with
:func:`format_interval`. Variants in a study share their seeds, so comparisons are paired: the
t-interval of the per-seed differences (Student 1908; the paired t-test, ``scipy.stats.ttest_rel``).
Benchmark items (word pairs, analogy questions) are resampled with :func:`bootstrap_interval`
(``scipy.stats.bootstrap``, BCa; Efron 1987).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95

DECISION_RULE = (
    "Two variants differ when the 95% t-interval of their paired per-seed differences (the same "
    "seeds for every variant) excludes 0; otherwise they are called indistinguishable. With one "
    "seed nothing is called different.")


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


def compare(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> str:
    """'higher', 'lower' or 'indistinguishable': ``a`` against ``b`` by :data:`DECISION_RULE`."""
    d = paired_difference(a, b, confidence)
    if not d.excludes(0.0):
        return "indistinguishable"
    return "higher" if d.mean > 0 else "lower"


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
