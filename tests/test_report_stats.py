"""Statistics of the report: descriptions, Wilcoxon p, win/tie/loss and the paired comparison."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon

from medseg.metrics.aggregate import bootstrap_mean_ci
from medseg.report.stats import (
    PAIRED_BOOTSTRAP_RESAMPLES,
    describe,
    higher_is_better,
    paired_comparison,
    wilcoxon_p,
    win_tie_loss,
)


def test_describe_by_hand() -> None:
    d = describe([1.0, 2.0, 3.0, 4.0, np.nan, np.inf])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["median"] == 2.5
    assert d["sd"] == pytest.approx(np.sqrt(5 / 3))
    assert (d["q1"], d["q3"]) == (1.75, 3.25)  # linear interpolation: 1 + 0.75, 1 + 2.25
    assert d["p5"] == pytest.approx(1.15) and d["p95"] == pytest.approx(3.85)
    assert describe([])["n"] == 0 and np.isnan(describe([])["mean"])
    assert describe([7.0])["sd"] == 0.0


def test_wilcoxon_p_matches_the_exact_distribution_by_hand() -> None:
    # |d| ranks 1..5, W- = 3: subsets of {1..5} with sum <= 3 are {}, {1}, {2}, {3}, {1,2}: 5 of 32,
    # so the two-sided exact p is 2 * 5 / 32
    d = [1.0, 2.0, -3.0, 4.0, 5.0]
    assert wilcoxon_p(d) == pytest.approx(10 / 32)
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="no differences"):
        wilcoxon_p([])


def test_bootstrap_ci_is_seeded_and_matches_a_manual_resample() -> None:
    values = np.array([0.1, 0.4, 0.35, 0.8, 0.5])
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 5, size=(500, 5))].mean(axis=1)
    assert bootstrap_mean_ci(values, n_boot=500, seed=3) == tuple(np.quantile(means, [0.025, 0.975]))
    # the paired comparison uses this one bootstrap, on the differences, with 2000 resamples
    other = values[::-1] * 1.5
    paired = paired_comparison(values, other, "dice", seed=4)
    assert (paired.ci_low, paired.ci_high) == bootstrap_mean_ci(other - values, n_boot=2000, seed=4)
    assert PAIRED_BOOTSTRAP_RESAMPLES == 2000
    assert bootstrap_mean_ci(values, seed=1) == bootstrap_mean_ci(values, seed=1)
    assert bootstrap_mean_ci(values, seed=1) != bootstrap_mean_ci(values, seed=2)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([1.0, np.nan])


def test_win_tie_loss_and_direction() -> None:
    delta = [0.0005, 0.002, -0.01, 0.001, -0.0009]
    assert win_tie_loss(delta, tie_tolerance=1e-3) == (1, 3, 1)
    assert win_tie_loss(delta, tie_tolerance=1e-3, higher_better=False) == (1, 3, 1)
    assert win_tie_loss([0.5, 0.5, -0.5], 0.0, higher_better=False) == (1, 0, 2)
    assert higher_is_better("dice") and not higher_is_better("hd95_mm")
    assert higher_is_better("dice_anterior") and higher_is_better("nsd_mm")
    assert not any(map(higher_is_better, ["hd95", "hd95_anterior", "assd_mm", "hd_mm"]))
    with pytest.raises(ValueError, match="tie_tolerance"):
        win_tie_loss([0.1], -1.0)


def test_paired_comparison_fields() -> None:
    a = np.array([0.5, 0.6, 0.7, 0.8, np.nan])
    b = np.array([0.6, 0.6, 0.9, 0.7, 0.9])
    result = paired_comparison(a, b, "dice", tie_tolerance=1e-3, seed=0)
    assert result.n == 4 and result.mean_delta == pytest.approx(0.05)
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)
    assert result.ci_low <= result.mean_delta <= result.ci_high
    assert result.wilcoxon_p == pytest.approx(wilcoxon([0.1, 0.2, -0.1]).pvalue)
    hd = paired_comparison([5.0, 6.0], [4.0, 7.0], "hd95_mm", tie_tolerance=0.0)
    assert (hd.wins, hd.losses) == (1, 1) and not hd.higher_is_better
    with pytest.raises(ValueError, match="length"):
        paired_comparison([1.0], [1.0, 2.0])
