"""Tests of medseg.metrics.aggregate: bootstrap determinism, hand-computed summaries, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medseg.metrics import (
    compute_segmentation_metrics,
    metrics_per_volume,
    per_case_table,
    per_patient_table,
    summarize,
    summary_table,
)
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


def _records() -> list[dict]:
    return [
        {
            "case": "p1_s0",
            "patient": "p1",
            "slice_index": 0,
            "metrics": {"dice": 0.8, "hd95_mm": 2.0, "empty_gt": False, "empty_pred": False},
        },
        {
            "case": "p1_s1",
            "patient": "p1",
            "slice_index": 1,
            "metrics": {"dice": 0.6, "hd95_mm": 4.0, "empty_gt": True, "empty_pred": False},
        },
        {
            "case_id": "p2_s0",
            "patient_id": "p2",
            "slice_index": 0,
            "dice": 1.0,
            "hd95_mm": 0.0,
            "empty_gt": True,
            "empty_pred": True,
        },
    ]


def test_per_case_and_per_patient_tables() -> None:
    df = per_case_table(_records())
    assert list(df.columns[:3]) == ["case_id", "patient_id", "slice_index"]
    assert list(df["case_id"]) == ["p1_s0", "p1_s1", "p2_s0"]
    pp = per_patient_table(df)
    p1 = pp.set_index("patient_id").loc["p1"]
    assert p1["n_images"] == 2 and p1["dice"] == pytest.approx(0.7) and p1["hd95_mm"] == pytest.approx(3.0)
    assert p1["n_empty_gt"] == 1 and not p1["empty_gt"]
    assert bool(pp.set_index("patient_id").loc["p2", "empty_gt"])
    with pytest.raises(ValueError, match="case_id"):
        per_case_table([{"dice": 1.0}])


def test_summary_table_counts_and_values() -> None:
    df = per_case_table(_records())
    t = summary_table(df, metrics=["dice", "hd95_mm"], n_boot=100)
    assert t["dice"]["mean"] == pytest.approx(0.8)
    assert t["hd95_mm"]["median"] == pytest.approx(2.0)
    assert t["counts"] == {"n": 3, "empty_gt": 2, "empty_pred": 1}
    with pytest.raises(ValueError, match="not in table"):
        summary_table(df, metrics=["nsd"])
    bad = df.copy()
    bad.loc[0, "dice"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        summary_table(bad, metrics=["dice"])


def test_metrics_per_volume() -> None:
    rng = np.random.default_rng(0)
    gts = {"a": rng.random((6, 10, 12)) > 0.6, "b": np.zeros((4, 5, 6), bool)}
    preds = {"a": rng.random((6, 10, 12)) > 0.6, "b": np.zeros((4, 5, 6), bool)}
    sp = {"a": (3.0, 0.5, 0.5), "b": (2.0, 1.0, 1.0)}
    df = metrics_per_volume(preds, gts, sp, hd95_mode="max", nsd_tolerance_mm=2.0)
    assert isinstance(df, pd.DataFrame) and list(df["case_id"]) == ["a", "b"]
    ref = compute_segmentation_metrics(preds["a"], gts["a"], sp["a"], hd95_mode="max", nsd_tolerance_mm=2.0)
    row = df.set_index("case_id").loc["a"]
    for k, v in ref.items():
        assert row[k] == v
    assert bool(df.set_index("case_id").loc["b", "empty_gt"])
    same_sp = metrics_per_volume(preds, gts, (1.0, 1.0, 1.0))
    assert len(same_sp) == 2
    t = summary_table(df)
    assert t["counts"]["empty_gt"] == 1 and t["dice"]["n"] == 2
    with pytest.raises(ValueError, match="no prediction"):
        metrics_per_volume({"a": preds["a"]}, gts, sp)
