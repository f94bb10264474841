"""Per-class evaluation (medseg.metrics.per_class): hand-computed rows, the empty-class rule, and
agreement with MONAI's DiceMetric / HausdorffDistanceMetric per class on random label maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from scipy.ndimage import gaussian_filter

from medseg.metrics.evaluation import SegmentationMetrics
from medseg.metrics.per_class import (
    EMPTY_CLASS_RULE,
    ClassSpec,
    absent_metrics,
    class_specs,
    complete_classes,
    mask_sizes,
    mean_over_classes,
    summarize_classes,
)


def random_label_map(shape: tuple[int, ...], num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Blobs of every class: the argmax of K smoothed noise fields (each class present)."""
    fields = np.stack([gaussian_filter(rng.normal(size=shape), 2.0) for _ in range(num_classes)])
    labels = fields.argmax(0).astype(np.uint8)
    assert set(np.unique(labels)) == set(range(num_classes))
    return labels


def _one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """B×spatial class indices → B×K×spatial one-hot, as MONAI's metrics take them."""
    tensor = torch.as_tensor(labels, dtype=torch.long)
    return torch.nn.functional.one_hot(tensor, num_classes).movedim(-1, 1).float()


def _per_class_table(
    preds: np.ndarray, gts: np.ndarray, spacing: tuple[float, ...], num_classes: int
) -> pd.DataFrame:
    metrics = SegmentationMetrics("max", num_classes=num_classes, workers=1)
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        metrics(pred, gt, spacing, case=f"c{i}")
    per_class = metrics.aggregate().per_class
    assert per_class is not None
    return per_class


@pytest.mark.parametrize(
    ("shape", "spacing", "num_classes"),
    [((3, 40, 48), (0.7, 1.3), 4), ((2, 12, 20, 16), (2.5, 0.8, 0.6), 3)],
    ids=["2d", "3d"],
)
def test_per_class_dice_and_hd95_equal_monai(
    shape: tuple[int, ...], spacing: tuple[float, ...], num_classes: int
) -> None:
    rng = np.random.default_rng(7)
    gts = np.stack([random_label_map(shape[1:], num_classes, rng) for _ in range(shape[0])])
    preds = np.stack([random_label_map(shape[1:], num_classes, rng) for _ in range(shape[0])])
    table = _per_class_table(preds, gts, spacing, num_classes)

    dice = DiceMetric(include_background=False, reduction="none")
    hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    monai_dice = dice(_one_hot(preds, num_classes), _one_hot(gts, num_classes)).numpy()
    monai_hd95 = hd95(_one_hot(preds, num_classes), _one_hot(gts, num_classes), spacing=list(spacing)).numpy()
    assert monai_dice.shape == (shape[0], num_classes - 1)
    ours_dice = table.pivot(index="case", columns="class_index", values="dice").to_numpy()
    ours_hd95 = table.pivot(index="case", columns="class_index", values="hd95_mm").to_numpy()
    np.testing.assert_allclose(ours_dice, monai_dice, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_hd95, monai_hd95, rtol=1e-5, atol=1e-5)  # MONAI: float32
    assert np.all(ours_hd95 > 0)  # random maps: real distances, not the policy's 0


def test_a_class_absent_from_both_is_left_out_like_monai_ignore_empty() -> None:
    rng = np.random.default_rng(3)
    gts = np.stack([random_label_map((32, 32), 3, rng) for _ in range(3)])
    preds = np.stack([random_label_map((32, 32), 3, rng) for _ in range(3)])
    gts[0][gts[0] == 2] = 0  # case 0: class 2 absent from both
    preds[0][preds[0] == 2] = 0
    metrics = SegmentationMetrics("max", num_classes=3, workers=1)
    rows = [metrics(p, g, (1.0, 1.0), case=f"c{i}") for i, (p, g) in enumerate(zip(preds, gts, strict=True))]
    tables = metrics.aggregate()
    assert tables.per_class is not None
    absent = tables.per_class.set_index(["case", "class_index"]).loc[("c0", 2)]
    assert absent["dice"] == 1.0 and absent["hd95_mm"] == 0.0  # the binary empty-mask policy
    assert bool(absent["empty_gt"]) and bool(absent["empty_pred"]) and absent["note"] == "both empty"
    # MONAI (ignore_empty) gives NaN there; the per-class mean leaves it out as the rule says
    monai = DiceMetric(include_background=False, reduction="none")(_one_hot(preds, 3), _one_hot(gts, 3))
    assert np.isnan(monai[0, 1].item())
    summary = tables.summary["per_class"]["label 2"]
    assert summary["dice"]["n"] == 2 and summary["n_both_empty"] == 1
    assert summary["dice"]["mean"] == pytest.approx(float(np.nanmean(monai[:, 1].numpy())), abs=1e-6)
    # the case's own mean is class 1 alone, not pulled up by the absent class's Dice 1
    assert rows[0]["dice"] == pytest.approx(monai[0, 0].item(), abs=1e-6)
    assert tables.summary["empty_class_rule"] == EMPTY_CLASS_RULE


def test_class_specs_values_and_names() -> None:
    assert class_specs(3) == [ClassSpec(1, 1, "label 1"), ClassSpec(2, 2, "label 2")]
    named = class_specs(3, [0, 3, 5], ["background", "anterior", "posterior"])
    assert named == [ClassSpec(1, 3, "anterior"), ClassSpec(2, 5, "posterior")]
    assert class_specs(3, [0, 3, 5], ["only one"])[0].name == "label 3"  # names that do not fit: unused
    with pytest.raises(ValueError, match="class_values"):
        class_specs(3, [0, 1])
    with pytest.raises(ValueError, match=">= 2"):
        class_specs(1)


def test_mask_sizes_hand_values() -> None:
    pred = np.zeros((2, 4, 4), bool)
    pred[:, :2, :2] = True  # 8 voxels
    gt = np.zeros((2, 4, 4), bool)
    gt[0] = True  # 16 voxels
    sizes = mask_sizes(pred, gt, (2.0, 0.5, 0.5))  # 0.5 mm³ per voxel
    assert sizes == {"volume_pred_ml": 8 * 0.5 / 1000, "volume_gt_ml": 16 * 0.5 / 1000}
    assert mask_sizes(pred[0], gt[0], (0.5, 2.0)) == {"area_pred_mm2": 4.0, "area_gt_mm2": 16.0}


def test_mean_over_classes_uses_the_usable_values() -> None:
    good = {"dice": 0.8, "hd95_mm": 2.0, "empty_gt": False, "empty_pred": False}
    missed = {"dice": 0.0, "hd95_mm": 50.0, "empty_gt": False, "empty_pred": True}
    absent = {"dice": 1.0, "hd95_mm": 0.0, "empty_gt": True, "empty_pred": True}
    full = {m: 0.5 for m in ("iou", "sensitivity", "specificity", "hd_mm", "assd_mm", "nsd")}
    rows = [{**full, **r} for r in (good, missed, absent)]
    mean = mean_over_classes(rows, 2)
    assert mean["dice"] == pytest.approx(0.4)  # (0.8 + 0) / 2: the absent class is left out
    assert mean["hd95_mm"] == 2.0  # only the class with both surfaces
    assert not mean["empty_gt"] and not mean["empty_pred"]
    # no class usable for HD95: the mean of the policy values; no class at all: two empty masks
    assert mean_over_classes([{**full, **missed}], 2)["hd95_mm"] == 50.0
    assert mean_over_classes([], 3) == absent_metrics(3)
    assert absent_metrics(3)["dice"] == 1.0 and absent_metrics(3)["hd95_mm"] == 0.0


def test_complete_classes_fills_absent_classes_and_numbers_label_values() -> None:
    def row(value: int, dice: float) -> dict[str, object]:
        return {"class_index": None, "class_value": value, "class_name": f"label {value}", "dice": dice}

    cases = [
        ({"case": "a", "missing_pred": True}, 3, [row(5, 0.5), row(3, 0.7)]),
        ({"case": "b"}, 2, [row(3, 0.9)]),
        ({"case": "c"}, 2, []),  # no label anywhere
    ]
    table = pd.DataFrame(complete_classes(cases))
    assert list(zip(table["case"], table["class_index"], table["class_value"], strict=True)) == [
        ("a", 1, 3),
        ("a", 2, 5),
        ("b", 1, 3),
        ("b", 2, 5),
        ("c", 1, 3),
        ("c", 2, 5),
    ]
    filled = table.set_index(["case", "class_value"]).loc[("b", 5)]
    assert filled["dice"] == 1.0 and bool(filled["empty_gt"]) and filled["area_gt_mm2"] == 0.0
    assert table.set_index(["case", "class_value"]).loc[("a", 5), "dice"] == 0.5
    assert set(table[table["case"] == "a"]["note"]) == {"missing prediction"}  # the case's flag counts


def test_summarize_classes_counts_and_macro_mean() -> None:
    base = {"iou": 0.5, "sensitivity": 0.5, "specificity": 0.5, "hd_mm": 1.0, "assd_mm": 1.0, "nsd": 0.5}
    rows = [
        {**base, "class_index": 1, "class_value": 1, "class_name": "a", "dice": 0.6, "hd95_mm": 2.0},
        {**base, "class_index": 1, "class_value": 1, "class_name": "a", "dice": 0.8, "hd95_mm": 4.0},
        {**base, "class_index": 2, "class_value": 2, "class_name": "b", "dice": 0.2, "hd95_mm": 6.0},
        {
            **base,
            "class_index": 2,
            "class_value": 2,
            "class_name": "b",
            "dice": 1.0,
            "hd95_mm": 0.0,
            "empty_gt": True,
            "empty_pred": True,
        },
    ]
    frame = pd.DataFrame(rows)
    frame[["empty_gt", "empty_pred"]] = frame[["empty_gt", "empty_pred"]].fillna(False)
    summary = summarize_classes(frame)
    a, b = summary["per_class"]["a"], summary["per_class"]["b"]
    assert a["dice"]["mean"] == pytest.approx(0.7) and a["n"] == 2 and a["n_both_empty"] == 0
    assert b["dice"]["mean"] == pytest.approx(0.2) and b["dice"]["n"] == 1 and b["n_both_empty"] == 1
    assert summary["over_classes"]["dice"] == {"mean": pytest.approx(0.45), "n_classes": 2}
    assert summary["over_classes"]["hd95_mm"]["mean"] == pytest.approx((3.0 + 6.0) / 2)
