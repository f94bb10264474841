"""medseg.metrics.instances: COCO-style instance AP, the MitoEM reference numbers, file readers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from medseg.data.io import write_volume
from medseg.errors import DataError
from medseg.metrics.instances import (
    COCO_IOU_THRESHOLDS,
    evaluate_instance_files,
    instance_ap,
    instance_overlaps,
    read_instance_scores,
    read_instance_volume,
)


def _row(width: int, segments: dict[int, tuple[int, int]]) -> np.ndarray:
    """A 1×width label image; ``segments`` maps id → (first, last) column, inclusive."""
    out = np.zeros((1, width), np.int32)
    for label, (a, b) in segments.items():
        out[0, a : b + 1] = label
    return out


# Three GT objects of 10 px; prediction 1 = GT 1 exactly (IoU 1), prediction 2 covers 7 px of GT 2
# (IoU 7/10 = 0.7), prediction 3 touches nothing (false positive); GT 3 is missed.
GT3 = _row(70, {1: (0, 9), 2: (20, 29), 3: (40, 49)})
PRED3 = _row(70, {1: (0, 9), 2: (20, 26), 3: (60, 64)})


def test_hand_computed_ap_with_scores() -> None:
    # ranked by score: 1 (IoU 1), 3 (FP), 2 (IoU 0.7)
    res = instance_ap(PRED3, GT3, scores={1: 0.9, 3: 0.8, 2: 0.7})
    # IoU 0.5: TP, FP, TP → recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 → monotone 1, 2/3, 2/3.
    # Recall points 0..0.33 (34 points) read rank 1 → 1; 0.34..0.66 (33 points) read rank 3 → 2/3;
    # 0.67..1 are never reached → 0.  AP50 = (34 + 33 · 2/3) / 101 = 56/101.
    assert res.ap50 == pytest.approx(56 / 101, abs=1e-12)
    # IoU 0.75: TP, FP, FP → recall stays 1/3 → AP75 = 34/101.
    assert res.ap75 == pytest.approx(34 / 101, abs=1e-12)
    # IoU 0.7 exactly equals the threshold 0.70 → TP at 0.50..0.70 (5 thresholds, 56/101 each),
    # miss at 0.75..0.95 (5 thresholds, 34/101 each): mAP = (5·56 + 5·34) / (10·101) = 45/101.
    assert res.map == pytest.approx(45 / 101, abs=1e-12)
    assert res.ap_per_threshold[0.7] == pytest.approx(56 / 101, abs=1e-12)
    assert (res.n_gt, res.n_pred, res.tp50, res.tp75) == (3, 3, 2, 1)
    assert (res.fp50, res.fn50, res.fp75, res.fn75) == (1, 1, 2, 2)
    assert res.ranking == "score"
    assert not res.empty_gt and not res.empty_pred


def test_np_arange_thresholds_are_rounded() -> None:
    # np.arange(0.5, 0.96, 0.05)[4] is 0.7000000000000002 > 7/10: unrounded, the IoU 0.7 would miss
    assert np.arange(0.5, 0.96, 0.05)[4] > 0.7
    a = instance_ap(PRED3, GT3, {1: 0.9, 3: 0.8, 2: 0.7}, iou_thresholds=np.arange(0.5, 0.96, 0.05))
    assert a.map == pytest.approx(45 / 101, abs=1e-12)
    assert a.iou_thresholds == COCO_IOU_THRESHOLDS


def test_size_ranking_is_descending() -> None:
    # no scores: by size 10 (TP), 7 (TP at 0.5), 5 (FP)
    res = instance_ap(PRED3, GT3)
    # IoU 0.5: TP, TP, FP → recall 1/3, 2/3, 2/3; precision 1, 1, 2/3 → recall points 0..0.66 read
    # precision 1 → AP50 = 67/101 (the score ranking above, which puts the FP second, gives 56/101).
    assert res.ap50 == pytest.approx(67 / 101, abs=1e-12)
    assert res.ap75 == pytest.approx(34 / 101, abs=1e-12)
    assert res.ranking == "size"
    assert res.table["pred_id"].tolist()[:3] == [1, 2, 3]
    assert res.table["score"].tolist()[:3] == [10.0, 7.0, 5.0]


def test_ties_go_to_the_lower_id() -> None:
    gt = _row(30, {1: (0, 9)})
    # prediction 1 is a 6 px FP, prediction 2 a 6 px TP (IoU 0.6): equal sizes, id 1 ranks first
    pred = _row(30, {2: (0, 5), 1: (20, 25)})
    # FP, TP → recall 0, 1; precision 0, 1/2 → monotone 1/2, 1/2 → AP = 0.5
    assert instance_ap(pred, gt).ap50 == pytest.approx(0.5)
    assert instance_ap(pred, gt, {1: 0.5, 2: 0.5}).ap50 == pytest.approx(0.5)
    # TP first: precision 1 at recall 1 → AP = 1
    assert instance_ap(pred, gt, {1: 0.4, 2: 0.5}).ap50 == pytest.approx(1.0)


def test_greedy_matching_matches_each_gt_once() -> None:
    gt = _row(30, {1: (0, 9), 2: (10, 19)})
    # prediction 1: 3 px of GT 1 (IoU 3/15 = 0.2), 5 px of GT 2 (IoU 5/13 ≈ 0.385)
    # prediction 2: 5 px of GT 2 and 2 px of background (IoU 5/12 ≈ 0.417)
    pred = _row(30, {1: (7, 14), 2: (15, 21)})
    ov = instance_overlaps(pred, gt)
    pairs = {
        (int(ov["pred_ids"][p]), int(ov["gt_ids"][g])): iou
        for p, g, iou in zip(ov["pair_pred"], ov["pair_gt"], ov["iou"], strict=True)
    }
    assert pairs == pytest.approx({(1, 1): 3 / 15, (1, 2): 5 / 13, (2, 2): 5 / 12})
    res = instance_ap(pred, gt, {1: 0.9, 2: 0.8}, iou_thresholds=[0.1])
    # at IoU 0.1 prediction 1 takes its best GT (2); prediction 2's only candidate is taken → FP.
    # TP, FP with 2 GT → recall 1/2, 1/2 → recall points 0..0.5 (51) read 1 → AP = 51/101
    # (MitoEM's best-IoU rule would count GT 2 twice and report 1.0)
    assert res.ap_per_threshold[0.1] == pytest.approx(51 / 101, abs=1e-12)
    assert res.map == res.ap_per_threshold[0.1]
    assert res.ap50 == 0.0


def test_perfect_prediction_3d_with_other_ids() -> None:
    rng = np.random.default_rng(0)
    gt = np.zeros((6, 20, 20), np.uint16)
    for label, (z, y, x) in enumerate(rng.integers(0, 15, size=(5, 3)), start=1):
        gt[z % 4 : z % 4 + 2, y : y + 5, x : x + 5] = label
    gt_ids = np.unique(gt[gt > 0])
    pred = np.zeros_like(gt, dtype=np.int64)
    for new, old in zip(gt_ids[::-1] * 1000, gt_ids, strict=True):
        pred[gt == old] = new
    res = instance_ap(pred, gt)
    assert res.ap50 == res.ap75 == res.map == 1.0
    assert all(v == 1.0 for v in res.ap_per_threshold.values())
    assert res.tp50 == res.n_gt == res.n_pred == gt_ids.size
    assert (res.table["kind"] == "pred").all()
    assert (res.table["iou"] == 1.0).all()


def test_large_ids_and_many_instances_use_the_sparse_paths() -> None:
    # 6000 one-voxel instances with ids near 2**40 in each volume: 36 M (pred, gt) id pairs, so
    # sizes and overlaps go through np.unique / searchsorted instead of dense histograms
    gt = (np.arange(6000, dtype=np.uint64) * 3 + 2**40).reshape(60, 100)
    pred = gt[::-1].astype(np.int64) + 7  # other ids, same instances
    res = instance_ap(pred, gt)
    assert (res.n_gt, res.n_pred, res.tp75) == (6000, 6000, 6000)
    assert res.map == 1.0
    half = np.where(np.arange(100) < 50, pred, 0)  # half the instances found: precision 1 up to
    assert instance_ap(half, gt).ap50 == pytest.approx(51 / 101, abs=1e-12)  # recall 0.5 → 51/101


def test_empty_policy() -> None:
    empty = np.zeros((4, 5), np.uint8)
    some = _row(5, {1: (0, 2)}).repeat(4, axis=0)[:, :5]
    none_found = instance_ap(empty, some)  # GT, no prediction
    assert (none_found.ap50, none_found.map) == (0.0, 0.0)
    assert none_found.empty_pred and not none_found.empty_gt
    assert none_found.table["kind"].tolist() == ["missed_gt"]
    assert np.isnan(none_found.table["score"].iloc[0]) and none_found.table["pred_id"].iloc[0] == 0
    all_false = instance_ap(some, empty)  # predictions, no GT
    assert (all_false.ap50, all_false.map) == (0.0, 0.0)
    assert all_false.empty_gt and not all_false.empty_pred
    both = instance_ap(empty, empty)
    assert (both.ap50, both.ap75, both.map) == (1.0, 1.0, 1.0)
    assert both.empty_gt and both.empty_pred and len(both.table) == 0


def test_table_rows() -> None:
    res = instance_ap(PRED3, GT3, scores={1: 0.9, 3: 0.8, 2: 0.7})
    t = res.table
    assert t["kind"].tolist() == ["pred", "pred", "pred", "missed_gt"]
    assert t["pred_id"].tolist() == [1, 3, 2, 0]
    assert t["rank"].tolist() == [1, 2, 3, 0]
    assert t["gt_id"].tolist() == [1, 0, 2, 3]
    assert t["iou"].tolist() == pytest.approx([1.0, 0.0, 0.7, 0.0])
    assert t["tp50"].tolist() == [True, False, True, False]
    assert t["tp75"].tolist() == [True, False, False, False]


@pytest.mark.parametrize(
    ("pred", "gt", "match"),
    [
        (
            np.zeros((3, 4), np.int32),
            np.zeros((4, 3), np.int32),
            r"shape mismatch: pred \(3, 4\) vs gt \(4, 3\)",
        ),
        (np.full((3, 4), 1.5), np.zeros((3, 4), np.int32), "pred: non-integer label values"),
        (np.full((3, 4), np.nan), np.zeros((3, 4), np.int32), "pred: labels contain NaN"),
        (np.zeros((3, 4), np.int32), np.full((3, 4), -2), "gt: negative labels"),
        (np.zeros((3, 4), np.int32), np.zeros((3, 4), np.complex64), "gt: labels must be integers"),
        (np.zeros(4, np.int32), np.zeros(4, np.int32), "2D or 3D"),
    ],
)
def test_invalid_labels_raise(pred: np.ndarray, gt: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        instance_ap(pred, gt)


def test_float_labels_with_integer_values_are_accepted() -> None:
    assert instance_ap(PRED3.astype(np.float32), GT3.astype(bool)).n_gt == 1  # bool GT = one instance


def test_invalid_scores_and_thresholds_raise() -> None:
    with pytest.raises(ValueError, match=r"no score for 1 predicted instance\(s\), e.g. ids \[3\]"):
        instance_ap(PRED3, GT3, {1: 0.9, 2: 0.8})
    with pytest.raises(ValueError, match=r"not instances of the prediction, e.g. \[7\]"):
        instance_ap(PRED3, GT3, {1: 0.9, 2: 0.8, 3: 0.1, 7: 0.5})
    with pytest.raises(ValueError, match=r"NaN or inf score for ids \[2\]"):
        instance_ap(PRED3, GT3, {1: 0.9, 2: float("nan"), 3: 0.1})
    with pytest.raises(ValueError, match="IoU thresholds must be in"):
        instance_ap(PRED3, GT3, iou_thresholds=[0.0, 0.5])


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def _volume() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((3, 8, 9), np.uint16)
    gt[:, 1:4, 1:4] = 7
    gt[:, 5:8, 5:9] = 300
    pred = np.zeros((3, 8, 9), np.int64)
    pred[:, 1:4, 1:4] = 2
    pred[:, 5:8, 6:9] = 1  # 27 of GT 300's 36 voxels → IoU 0.75
    return pred, gt


def test_hdf5_and_nifti_round_trip(tmp_path: Path) -> None:
    pred, gt = _volume()
    with h5py.File(tmp_path / "gt.h5", "w") as f:
        f.create_dataset("main", data=gt)
        f.create_dataset("other/labels", data=pred)
    back = read_instance_volume(tmp_path / "gt.h5")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, gt)
    np.testing.assert_array_equal(read_instance_volume(tmp_path / "gt.h5", key="other/labels"), pred)
    write_volume(tmp_path / "pred.nii.gz", pred.astype(np.int32))
    nifti = read_instance_volume(tmp_path / "pred.nii.gz")
    np.testing.assert_array_equal(nifti, pred)  # D×H×W as written, labels untouched
    import tifffile

    tifffile.imwrite(tmp_path / "gt.tif", gt)
    np.testing.assert_array_equal(read_instance_volume(tmp_path / "gt.tif"), gt)


def test_unreadable_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file does not exist") as e:
        read_instance_volume(tmp_path / "absent.h5")
    assert "absent.h5" in str(e.value)
    (tmp_path / "broken.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match="cannot read HDF5") as e:
        read_instance_volume(tmp_path / "broken.h5")
    assert "broken.h5" in str(e.value)
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f.create_dataset("labels", data=np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match=r"no dataset 'main' in the HDF5 file \(datasets: \['labels'\]\)"):
        read_instance_volume(tmp_path / "k.h5")
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="broken.nii.gz"):
        read_instance_volume(tmp_path / "broken.nii.gz")


def test_read_instance_scores(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("id,score\n1,0.9\n2,0.25\n")
    (tmp_path / "s.txt").write_text("# MitoEM N×2\n1 0.9\n2.0 0.25\n")
    (tmp_path / "s.json").write_text(json.dumps({"1": 0.9, "2": 0.25}))
    for name in ("s.csv", "s.txt", "s.json"):
        assert read_instance_scores(tmp_path / name) == {1: 0.9, 2: 0.25}
    (tmp_path / "bad.csv").write_text("1,0.9\n1,0.3\n")
    with pytest.raises(DataError, match="id 1 appears twice"):
        read_instance_scores(tmp_path / "bad.csv")


def test_evaluate_instance_files_writes_json_and_csv(tmp_path: Path) -> None:
    pred, gt = _volume()
    for name, arr in (("pred.h5", pred), ("gt.h5", gt)):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("main", data=arr)
    out = tmp_path / "out"
    summary = evaluate_instance_files(tmp_path / "pred.h5", tmp_path / "gt.h5", out)
    # equal sizes (27 voxels): prediction 1 (IoU exactly 0.75) ranks before prediction 2 (IoU 1).
    # IoU 0.50..0.75 (6 thresholds): both TP → AP 1. IoU 0.80..0.95 (4): FP, TP → recall 0, 1/2;
    # precision 0, 1/2 → monotone 1/2, 1/2 → recall points 0..0.5 (51) read 1/2 → AP 25.5/101.
    assert summary["ap50"] == summary["ap75"] == 1.0
    assert summary["map"] == pytest.approx((6 * 1.0 + 4 * 25.5 / 101) / 10, abs=1e-12)
    assert summary == json.loads((out / "ap.json").read_text())
    assert summary["ranking"] == "size" and summary["n_gt"] == 2 and summary["tp75"] == 2
    assert summary["iou_thresholds"] == list(COCO_IOU_THRESHOLDS)
    table = pd.read_csv(out / "instances.csv")
    assert table[["pred_id", "gt_id"]].values.tolist() == [[1, 300], [2, 7]]  # tie → lower id first
    assert table["iou"].tolist() == pytest.approx([0.75, 1.0])

    (tmp_path / "scores.csv").write_text("id,score\n1,0.1\n2,0.9\n")
    with_scores = evaluate_instance_files(
        tmp_path / "pred.h5", tmp_path / "gt.h5", out, tmp_path / "scores.csv"
    )
    assert with_scores["ranking"] == "score"
    assert pd.read_csv(out / "instances.csv")["pred_id"].tolist() == [2, 1]
    (tmp_path / "wrong.csv").write_text("1,0.1\n")
    with pytest.raises(DataError, match="no score for") as e:
        evaluate_instance_files(tmp_path / "pred.h5", tmp_path / "gt.h5", out, tmp_path / "wrong.csv")
    assert "wrong.csv" in str(e.value)


def test_evaluate_instance_files_names_bad_file(tmp_path: Path) -> None:
    pred, gt = _volume()
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        f.create_dataset("main", data=pred.astype(np.float32) + 0.5)
    with h5py.File(tmp_path / "gt.h5", "w") as f:
        f.create_dataset("main", data=gt[:2])
    with pytest.raises(DataError, match="non-integer label values") as e:
        evaluate_instance_files(tmp_path / "pred.h5", tmp_path / "gt.h5", tmp_path / "o")
    assert "pred.h5" in str(e.value)
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        f.create_dataset("main", data=pred)
    with pytest.raises(DataError, match=r"shape mismatch: pred \(3, 8, 9\)"):
        evaluate_instance_files(tmp_path / "pred.h5", tmp_path / "gt.h5", tmp_path / "o")


@pytest.mark.realdata
def test_lucchi_matches_mitoem_evaluator(shared_dataset: Callable[..., Path]) -> None:
    folder = shared_dataset("em_lucchi_instances")
    res = instance_ap(
        read_instance_volume(folder / "lucchi_pred_UNet_label_test.h5"),
        read_instance_volume(folder / "lucchi_gt_test.h5"),
    )
    # mAP_3Dvolume (demo.py, ranking by size) on the same pair
    assert round(res.ap50, 6) == 0.842313
    assert round(res.ap75, 6) == 0.769129
    assert round(res.map, 6) == 0.628236
    assert (res.n_gt, res.n_pred, res.tp50, res.tp75) == (35, 40, 30, 27)
