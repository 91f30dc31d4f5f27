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


# --- the item-and-seed bootstrap of a paired difference ----------------------------------------

def test_identical_scorings_give_exactly_zero():
    rng = np.random.default_rng(1)
    gold, x = rng.normal(size=50), rng.normal(size=(3, 50))
    for kind, ref, a in (("spearman", gold, x), ("mean", None, x > 0)):
        iv = stats.item_bootstrap_difference(a, a, kind, ref, n_resamples=300)
        assert (iv.mean, iv.low, iv.high, iv.n) == (0.0, 0.0, 0.0, 3)
        assert stats.verdict(iv) == "indistinguishable"


def test_tie_ranks_are_the_ranks_of_the_expanded_resample():
    """The one-sort ranks with counts equal scipy's rankdata of the resample written out."""
    from scipy.stats import rankdata
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, 40).astype(float)  # many ties, as gold ratings have
    y = rng.normal(size=40)
    w = rng.multinomial(40, np.full(40, 1 / 40), size=6).astype(float)
    ranks, ry = stats._tie_ranks(x, w), stats._tie_ranks(y, w)
    r = stats._weighted_pearson(ranks, ry, w)
    for k in range(6):
        c = w[k].astype(int)
        np.testing.assert_allclose(np.repeat(ranks[k], c), rankdata(np.repeat(x, c)))
        assert r[k] == pytest.approx(spearmanr(np.repeat(x, c), np.repeat(y, c)).statistic)


def test_spearman_difference_matches_scipys_percentile_bootstrap():
    """One seed: the same interval as scipy.stats.bootstrap (paired, percentile) of
    ρ(gold, a) − ρ(gold, b) with scipy.stats.spearmanr, up to Monte Carlo error."""
    from scipy.stats import bootstrap
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 11, 150).astype(float)
    a, b = gold + 3 * rng.normal(size=150), gold + 5 * rng.normal(size=150)

    def diff(g, x, y):
        return spearmanr(g, x).statistic - spearmanr(g, y).statistic

    want = bootstrap((gold, a, b), diff, paired=True, vectorized=False, n_resamples=3000,
                     method="percentile", random_state=np.random.default_rng(4))
    iv = stats.item_bootstrap_difference(a, b, "spearman", gold, n_resamples=3000, seed=5)
    assert iv.mean == pytest.approx(diff(gold, a, b), abs=1e-12)
    lo, hi = want.confidence_interval
    assert (iv.low, iv.high) == pytest.approx((lo, hi), abs=0.02)
    assert iv.n == 1 and stats.verdict(iv) == "indistinguishable"  # one seed decides nothing


def test_mean_difference_at_large_n_is_the_normal_interval():
    rng = np.random.default_rng(6)
    n = 20000
    a, b = rng.random(n) < 0.32, rng.random(n) < 0.30  # e.g. analogy correctness
    d = a.astype(float) - b
    half = 1.959964 * d.std(ddof=1) / np.sqrt(n)
    iv = stats.item_bootstrap_difference(a, b, "mean", n_resamples=2000)
    assert iv.mean == pytest.approx(d.mean())
    assert (iv.low, iv.high) == pytest.approx((d.mean() - half, d.mean() + half), abs=0.1 * half)


def test_the_seeds_are_resampled_too():
    """Per-seed offsets that no item resampling can move: only the seed draw gives width,
    and the interval stays within the seeds' range."""
    items = np.zeros(30)
    offsets = np.array([0.1, 0.2, 0.3])
    a, b = items + offsets[:, None], np.zeros((3, 30))
    boot = dict(with_seed_t=False)  # the bootstrap alone
    fixed = stats.item_bootstrap_difference(a, b, n_resamples=500, resample_seeds=False, **boot)
    assert fixed.low == pytest.approx(0.2) and fixed.high == pytest.approx(0.2)
    both = stats.item_bootstrap_difference(a, b, n_resamples=2000, **boot)
    assert both.mean == pytest.approx(0.2)
    assert 0.1 - 1e-12 <= both.low < 0.17 and 0.23 < both.high <= 0.3 + 1e-12
    assert stats.verdict(both) == "higher" and stats.verdict(
        stats.item_bootstrap_difference(b, a, n_resamples=500, **boot)) == "lower"
    # three seeds' bootstrap is narrower than Student's t allows: the default interval is
    # widened to the paired t-interval (0.2 ± 4.303 · 0.1 / √3), which includes 0 here
    iv = stats.item_bootstrap_difference(a, b, n_resamples=500)
    half = T975[2] * 0.1 / math.sqrt(3)
    assert (iv.low, iv.high) == pytest.approx((0.2 - half, 0.2 + half))
    assert stats.verdict(iv) == "indistinguishable"
    assert stats.verdict(stats.item_bootstrap_difference(a * 10 + 1, b, n_resamples=500)) \
        == "higher"
    # the same seed gives the same interval
    assert stats.item_bootstrap_difference(a, b, n_resamples=500, seed=7) == \
        stats.item_bootstrap_difference(a, b, n_resamples=500, seed=7)


def test_item_bootstrap_refuses_what_it_cannot_pair():
    with pytest.raises(stats.StatsError, match="same"):
        stats.item_bootstrap_difference(np.zeros((3, 5)), np.zeros((2, 5)))
    with pytest.raises(stats.StatsError, match="gold"):
        stats.item_bootstrap_difference(np.zeros(5), np.ones(5), "spearman")
    with pytest.raises(stats.StatsError, match="unknown"):
        stats.item_bootstrap_difference(np.zeros(5), np.ones(5), "median")
    with pytest.raises(stats.StatsError, match="two items"):
        stats.item_bootstrap_difference([1.0], [0.0])
    assert "bootstrap" in stats.DECISION_RULE and "items" in stats.DECISION_RULE


def test_samples_drawn_once_pair_with_any_other_scoring():
    """A scoring resampled once (ItemSamples) gives the same difference as the one-call form,
    and samples of other draws are refused."""
    rng = np.random.default_rng(8)
    gold, a, b = rng.normal(size=60), rng.normal(size=(3, 60)), rng.normal(size=(3, 60))
    sa, sb = (stats.item_bootstrap_samples(x, "spearman", gold, n_resamples=300) for x in (a, b))
    assert stats.item_difference(sa, sb) == stats.item_bootstrap_difference(
        a, b, "spearman", gold, n_resamples=300)
    other = stats.item_bootstrap_samples(b, "spearman", gold, n_resamples=300, seed=1)
    with pytest.raises(stats.StatsError, match="same"):
        stats.item_difference(sa, other)
