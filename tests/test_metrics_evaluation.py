"""Tests of medseg.metrics.evaluation: the metrics object, its tables, CaseDice, the usable-value rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medseg.metrics import compute_segmentation_metrics, summarize
from medseg.metrics.evaluation import (
    METRIC_NAMES,
    METRICS_FILE,
    SUMMARY_FILE,
    CaseDice,
    SegmentationMetrics,
    case_reason,
    summarize_table,
    unusable_reason,
    usable_values,
    write_metric_tables,
)
from medseg.metrics.functional import dice_from_counts


def _square(shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[(slice(None),) * (len(shape) - 2) + (slice(lo, hi), slice(lo, hi))] = True
    return mask


def test_dice_from_counts_hand_values_and_empty_policy() -> None:
    assert dice_from_counts(3, 8) == 0.75  # 2·3 / 8
    assert dice_from_counts(0.0, 0.0) == 1.0  # both masks empty
    assert dice_from_counts(0, 5) == 0.0


def test_a_call_scores_keeps_and_returns_the_row() -> None:
    metrics = SegmentationMetrics("max", 2.0, workers=1)
    pred, gt = _square((8, 8), 2, 6), _square((8, 8), 3, 7)
    row = metrics(pred, gt, (0.5, 0.5), extra={"note": "x"}, level="image", case="a", patient="p")
    assert list(row)[:3] == ["level", "case", "patient"] and list(row)[-1] == "note"
    reference = compute_segmentation_metrics(pred, gt, (0.5, 0.5), hd95_mode="max", nsd_tolerance_mm=2.0)
    assert {k: row[k] for k in reference} == reference
    assert row["dice"] == pytest.approx(2 * 9 / 32)  # 3×3 overlap of two 4×4 squares
    assert metrics.rows == [row]
    with pytest.raises(ValueError, match="'case'"):
        metrics(pred, gt, (1.0, 1.0), patient="p")
    metrics.reset()
    with pytest.raises(ValueError, match="no case"):
        metrics.aggregate()


def test_2d_patients_are_the_mean_of_their_images() -> None:
    metrics = SegmentationMetrics(workers=1)
    full = _square((6, 6), 1, 5)
    empty = np.zeros((6, 6), bool)
    metrics(full, full, (1.0, 1.0), level="image", case="p1/a", patient="p1", slice_index=-1)
    metrics(empty, full, (1.0, 1.0), level="image", case="p1/b", patient="p1", slice_index=-1)
    metrics(empty, empty, (1.0, 1.0), level="image", case="p2/a", patient="p2", slice_index=-1)
    tables = metrics.aggregate()
    assert list(tables.per_case["case"]) == ["p1/a", "p1/b", "p2/a"]
    p1 = tables.per_patient.set_index("patient").loc["p1"]
    assert p1["dice"] == 0.5 and p1["level"] == "patient" and p1["case"] == "p1" and p1["slice_index"] == -1
    assert not p1["empty_gt"] and bool(tables.per_patient.set_index("patient").loc["p2", "empty_gt"])
    assert list(tables.summary) == ["per_patient", "per_case", "hd95_mode", "nsd_tolerance_mm"]
    assert tables.summary["per_case"]["n_empty_pred"] == 2
    assert tables.summary["per_patient"]["dice"]["mean"] == 0.75  # (0.5 + 1) / 2
    assert len(tables.table()) == 5


def test_3d_patient_rows_are_the_volume_rows() -> None:
    metrics = SegmentationMetrics(workers=1)
    gt = _square((2, 6, 6), 1, 4)
    pred = _square((2, 6, 6), 2, 5)
    for z in range(2):
        metrics(pred[z], gt[z], (0.5, 0.5), level="slice", case=f"v_{z:03d}", patient="v", slice_index=z)
    volume = metrics(
        pred, gt, (2.0, 0.5, 0.5), extra={"extra_value": 1.0}, level="patient", case="v", patient="v"
    )
    tables = metrics.aggregate()
    assert len(tables.per_case) == 2 and len(tables.per_patient) == 1
    assert tables.per_patient.iloc[0]["hd95_mm"] == volume["hd95_mm"]
    assert tables.per_patient.iloc[0]["extra_value"] == 1.0


def test_rows_without_patients_have_no_patient_level() -> None:
    metrics = SegmentationMetrics(workers=1)
    metrics(_square((6, 6), 1, 4), _square((6, 6), 1, 4), (1.0, 1.0), case="file")
    tables = metrics.aggregate()
    assert tables.per_patient.empty and "per_patient" not in tables.summary


def test_multi_class_rows_and_the_class_mean() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[1:3, 1:3], gt[3:5, 3:5] = 1, 2
    pred = gt.copy()
    pred[3:5, 3:5] = 0  # class 2 missed: Dice 0 (counts), no HD95 (empty prediction)
    metrics = SegmentationMetrics(num_classes=3, workers=1)
    row = metrics(pred, gt, (1.0, 1.0), case="c")
    assert row["dice"] == 0.5 and row["hd95_mm"] == 0.0  # HD95 of class 1 alone
    assert not row["empty_gt"] and not row["empty_pred"]
    tables = metrics.aggregate()
    assert tables.per_class is not None and list(tables.per_class["class_index"]) == [1, 2]
    assert list(tables.per_class["dice"]) == [1.0, 0.0]
    assert list(tables.per_class["note"]) == ["", "empty prediction"]
    assert tables.summary["per_class"]["label 2"]["hd95_mm"] == {"n": 0}
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(num_classes=1)


def test_summarize_table_counts_flags() -> None:
    frame = pd.DataFrame({"dice": [1.0, 0.5], "empty_gt": [True, False], "empty_pred": [False, False]})
    summary = summarize_table(frame)
    assert summary["n"] == 2 and summary["n_empty_gt"] == 1 and summary["n_empty_pred"] == 0
    assert summary["dice"] == summarize([1.0, 0.5]) and summary["dice"]["mean"] == pytest.approx(0.75)
    assert "iou" not in summary


def test_write_metric_tables(tmp_path: Path) -> None:
    metrics = SegmentationMetrics(workers=1)
    metrics(_square((6, 6), 1, 4), _square((6, 6), 2, 5), (1.0, 1.0), level="image", case="a", patient="a")
    csv_path, json_path = write_metric_tables(metrics.aggregate(), tmp_path / "out")
    assert csv_path.name == METRICS_FILE and json_path.name == SUMMARY_FILE
    table = pd.read_csv(csv_path)
    assert list(table["level"]) == ["patient", "image"]
    assert json.loads(json_path.read_text())["per_case"]["n"] == 1


def test_case_dice_sums_counts_per_case_then_applies_the_policy() -> None:
    dice = CaseDice()
    dice.add_counts("a", 2.0, 6.0)
    dice.add_counts("b", 0.0, 0.0)  # empty in both: Dice 1
    dice.add_counts("a", 1.0, 4.0)  # a: 2·3 / 10
    assert dice.aggregate() == {"a": 0.6, "b": 1.0}
    assert dice.mean() == pytest.approx(0.8)
    scored = CaseDice()
    scored.add_score("v1", 0.25)
    scored.add_score("v2", 0.75)
    assert scored.aggregate() == {"v1": 0.25, "v2": 0.75} and scored.mean() == 0.5
    assert np.isnan(CaseDice().mean())


def test_usable_values_and_case_reasons() -> None:
    base = dict.fromkeys(METRIC_NAMES, 0.5)
    both = {**base, "empty_gt": "True", "empty_pred": "True"}  # flags as read back from a CSV
    missing = {**base, "missing_pred": True, "empty_gt": True, "empty_pred": True}
    assert case_reason(both) == "both empty" and case_reason(missing) == "missing prediction"
    assert case_reason(base) == "" and unusable_reason(both, "specificity") is None
    rows = [{**base, "dice": 0.9}, both, {**base, "dice": 0.1}]
    assert usable_values(rows, "dice").tolist() == [0.9, 0.1]
    assert usable_values(rows, "specificity").tolist() == [0.5, 0.5, 0.5]


def test_unusable_reasons_follow_the_empty_mask_policy() -> None:
    both = {
        "case": "a",
        "dice": 1.0,
        "hd95_mm": 0.0,
        "specificity": 1.0,
        "empty_gt": True,
        "empty_pred": True,
    }
    gt = {
        "case": "b",
        "dice": 0.0,
        "hd95_mm": 50.0,
        "sensitivity": 1.0,
        "empty_gt": True,
        "empty_pred": False,
    }
    pred = {
        "case": "c",
        "dice": 0.0,
        "hd95_mm": 50.0,
        "sensitivity": 0.0,
        "empty_gt": False,
        "empty_pred": True,
    }
    missing = {"case": "d", "dice": 0.0, "empty_gt": False, "empty_pred": True, "missing_pred": True}
    fine = {"case": "e", "dice": 0.9, "hd95_mm": float("nan"), "empty_gt": "False", "empty_pred": "False"}
    assert unusable_reason(both, "dice") == "both empty" and unusable_reason(both, "specificity") is None
    assert unusable_reason(gt, "dice") is None and unusable_reason(gt, "hd95_mm") == "empty GT"
    assert unusable_reason(gt, "sensitivity") == "empty GT"
    assert unusable_reason(pred, "dice") is None and unusable_reason(pred, "hd95_mm") == "empty prediction"
    assert unusable_reason(pred, "sensitivity") is None
    assert unusable_reason(missing, "dice") == "missing prediction"
    assert unusable_reason(fine, "dice") is None and unusable_reason(fine, "hd95_mm") == "no value"
    assert [case_reason(r) for r in (both, gt, pred, missing, fine)] == [
        "both empty",
        "empty GT",
        "empty prediction",
        "missing prediction",
        "no value",
    ]
