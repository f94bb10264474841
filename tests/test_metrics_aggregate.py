"""Tests of medseg.metrics.aggregate: bootstrap determinism and hand-computed summaries (the tables:
test_metrics_evaluation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics import summarize
from medseg.metrics.aggregate import bootstrap_mean_ci


def test_summarize_hand_case() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0], n_boot=2000, seed=0)
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["n"] == 4
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert 1.0 <= s["ci_low"] < 2.5 < s["ci_high"] <= 4.0


def test_summarize_bootstrap_matches_manual_and_is_seeded() -> None:
    v = np.array([0.2, 0.9, 0.4, 0.7, 0.55])
    a = summarize(v, n_boot=500, seed=7)
    b = summarize(v, n_boot=500, seed=7)
    c = summarize(v, n_boot=500, seed=8)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])
    rng = np.random.default_rng(7)
    means = v[rng.integers(0, 5, size=(500, 5))].mean(axis=1)
    assert a["ci_low"] == pytest.approx(np.quantile(means, 0.025))
    assert a["ci_high"] == pytest.approx(np.quantile(means, 0.975))


def test_bootstrap_mean_ci_is_the_summary_ci_and_checks_its_input() -> None:
    v = [0.2, 0.9, 0.4, 0.7, 0.55]
    s = summarize(v, n_boot=300, seed=3)
    assert bootstrap_mean_ci(v, n_boot=300, seed=3) == (s["ci_low"], s["ci_high"])
    assert bootstrap_mean_ci([2.0, 2.0], n_boot=50) == (2.0, 2.0)  # constant data: a zero-width CI
    for bad in ([], [1.0, float("nan")]):
        with pytest.raises(ValueError, match="bootstrap_mean_ci"):
            bootstrap_mean_ci(bad)
    with pytest.raises(ValueError, match="ci must be"):
        bootstrap_mean_ci(v, ci=1.5)


def test_summarize_constant_and_single() -> None:
    s = summarize([0.5], n_boot=10)
    assert s == {"mean": 0.5, "median": 0.5, "std": 0.0, "ci_low": 0.5, "ci_high": 0.5, "n": 1}


def test_summarize_rejects_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="NaN"):
        summarize([0.1, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        summarize([])
    with pytest.raises(ValueError, match="ci"):
        summarize([1.0], ci=1.5)
