"""jaxemb.stats against closed forms and numpy: intervals, paired comparisons, bootstrap."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from jaxemb import stats

# Student t quantiles (two-sided 95%) from tables: df 1, 2, 4
T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105}


@pytest.mark.parametrize("values", [[1.0, 3.0], [0.41, 0.38, 0.45], [2.0, 2.5, 1.0, 4.0, 3.5]])
def test_t_interval_is_the_textbook_formula(values):
    x = np.asarray(values)
    n = x.size
    half = T975[n - 1] * x.std(ddof=1) / math.sqrt(n)
    iv = stats.t_interval(values)
    assert iv.mean == pytest.approx(x.mean())
    assert iv.half_width == pytest.approx(half, rel=1e-8)
    assert (iv.low, iv.high) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-8)
    assert stats.mean_half_width(values) == pytest.approx((x.mean(), half), rel=1e-8)


def test_one_value_and_constant_values_have_no_width():
    assert stats.t_interval([0.5]) == stats.Interval(0.5, 0.5, 0.5, 1)
    assert stats.t_interval([2.0, 2.0, 2.0]).half_width == 0.0
    with pytest.raises(stats.StatsError, match="no values"):
        stats.t_interval([])


def test_format_interval():
    assert stats.format_interval([1.0, 3.0], digits=2) == f"2.00 ± {T975[1] / 1:.2f}"
    assert stats.format_interval([0.25]) == "0.250"
    assert stats.format_interval([0.1, 0.2], digits=1, scale=100) == "15.0 ± 63.5"
    assert stats.format_interval([0.1, float("nan")]) == "n/a"


def test_compare_is_paired():
    # Each seed of a is 0.1 above the same seed of b, while the seeds themselves spread widely:
    # unpaired intervals overlap, the paired difference does not.
    b = np.array([0.2, 0.5, 0.8, 0.3, 0.6])
    a = b + 0.1 + np.array([0.001, -0.002, 0.0, 0.002, -0.001])
    assert stats.compare(a, b) == "higher"
    assert stats.compare(b, a) == "lower"
    assert stats.t_interval(a).low < stats.t_interval(b).high  # unpaired would call a tie
    assert stats.compare(a, a[::-1]) == "indistinguishable"
    assert stats.compare([1.0], [0.0]) == "indistinguishable"  # one seed decides nothing
    nan = float("nan")
    assert stats.compare([nan] * 3, [0.0] * 3) == "indistinguishable"  # NaN decides nothing
    d = stats.paired_difference(a, b)
    assert d.mean == pytest.approx(0.1)
    with pytest.raises(stats.StatsError, match="one value per seed"):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_paired_test_matches_the_t_statistic():
    a, b = np.array([1.0, 2.0, 3.1, 4.2]), np.array([0.9, 1.7, 3.0, 3.8])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / 2)
    from scipy.stats import t as student
    assert stats.paired_test(a, b) == pytest.approx(2 * student.sf(abs(t), 3))


def test_bootstrap_interval_covers_the_statistic_and_shrinks_with_items():
    rng = np.random.default_rng(0)

    def rho(x, y):
        return spearmanr(x, y).statistic

    widths = []
    for n in (40, 400):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        iv = stats.bootstrap_interval(rho, x, y, n_resamples=400)
        assert iv.low < rho(x, y) < iv.high
        assert iv.mean == pytest.approx(rho(x, y))
        widths.append(iv.half_width)
    assert widths[1] < widths[0] / 2  # ~1/sqrt(n): 10× the items, ~3× narrower
