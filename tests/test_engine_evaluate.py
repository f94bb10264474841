from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medseg.config import EvalConfig, load_config
from medseg.data.sample import Sample
from medseg.engine.evaluate import (
    annotator_disagreement,
    case_name,
    evaluate_files,
    evaluate_model,
    match_files,
    segmentation_metrics,
    write_evaluation,
)
from medseg.errors import DataError
from medseg.models import build_from_config

REQUIRED = ["case", "dice", "iou", "hd95_mm", "assd_mm", "nsd", "empty_gt", "empty_pred"]


def _png(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray((mask * 255).astype(np.uint8)).save(path)
    return path


def test_case_name_strips_double_extensions() -> None:
    assert case_name(Path("a/case_01.nii.gz")) == "case_01"
    assert case_name(Path("benign (3).png")) == "benign (3)"


def test_evaluate_png_folders_with_spacing(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    square = np.zeros((20, 20), np.uint8)
    square[5:15, 5:15] = 1
    shifted = np.roll(square, 2, axis=1)
    _png(gt_dir / "a.png", square)
    _png(pred_dir / "a.png", shifted)
    _png(gt_dir / "b.png", square)  # no prediction: counted as empty and flagged
    result = evaluate_files(pred_dir, gt_dir, EvalConfig(), spacing=(0.5, 0.5))
    table = result.per_case.set_index("case")
    assert table.loc["a", "dice"] == pytest.approx(2 * 80 / 200)
    assert table.loc["a", "hd_mm"] == pytest.approx(1.0)  # 2 px × 0.5 mm
    assert bool(table.loc["b", "missing_pred"]) and bool(table.loc["b", "empty_pred"])
    assert table.loc["b", "dice"] == 0.0
    assert result.summary["n_missing_pred"] == 1
    csv_path, json_path = write_evaluation(result, tmp_path / "out")
    columns = pd.read_csv(csv_path).columns
    assert all(c in columns for c in REQUIRED)
    assert json_path.is_file()


def test_png_without_spacing_is_an_error(tmp_path: Path) -> None:
    mask = np.ones((4, 4), np.uint8)
    with pytest.raises(DataError, match="spacing"):
        evaluate_files(_png(tmp_path / "p.png", mask), _png(tmp_path / "g.png", mask), EvalConfig())


def test_nifti_spacing_from_header_and_shape_mismatch(tmp_path: Path) -> None:
    gt = np.zeros((10, 10, 4), np.uint8)
    gt[2:8, 2:8, 1:3] = 1
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(gt, affine), tmp_path / "g.nii.gz")
    nib.save(nib.Nifti1Image(np.roll(gt, 1, axis=2), affine), tmp_path / "p.nii.gz")
    result = evaluate_files(tmp_path / "p.nii.gz", tmp_path / "g.nii.gz", EvalConfig(hd95_mode="max"))
    assert result.per_case.loc[0, "hd_mm"] == pytest.approx(3.0)  # one slice of 3 mm
    nib.save(nib.Nifti1Image(gt[:5], affine), tmp_path / "small.nii.gz")
    with pytest.raises(DataError, match="small.nii.gz"):
        evaluate_files(tmp_path / "small.nii.gz", tmp_path / "g.nii.gz", EvalConfig())


def test_match_files_errors(tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    _png(tmp_path / "pred" / "orphan.png", np.ones((3, 3), np.uint8))
    _png(tmp_path / "gt" / "x.png", np.ones((3, 3), np.uint8))
    with pytest.raises(DataError, match="orphan"):
        match_files(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(DataError, match="not found"):
        match_files(tmp_path / "nope", tmp_path / "gt")


def test_evaluate_model_per_slice_and_per_patient() -> None:
    cfg = load_config(None, ["model.options={features: [4, 8]}"])
    model = build_from_config(cfg).eval()
    gt = np.zeros((3, 16, 16), np.uint8)
    gt[1, 4:12, 4:12] = 1
    volume = Sample(np.random.rand(1, 3, 16, 16), {"expert": gt}, "expert", (2.0, 0.5, 0.5), "pat")
    result, predictions = evaluate_model(
        model, [volume], (16, 16), "zscore", EvalConfig(), torch.device("cpu"), progress=False
    )
    assert len(result.per_case) == 3 and len(result.per_patient) == 1
    assert result.per_case["empty_gt"].sum() == 2
    assert predictions["pat"].shape == gt.shape
    assert result.summary["per_patient"]["n"] == 1
    assert not result.table().isna().any().any()


def test_evaluate_model_reports_both_protocols() -> None:
    cfg = load_config(None, ["model.options={features: [4, 8]}"])
    model = build_from_config(cfg).eval()
    gt = np.zeros((3, 16, 16), np.uint8)
    gt[:, 4:12, 4:12] = 1
    volume = Sample(np.random.rand(1, 3, 16, 16), {"expert": gt}, "expert", (2.0, 0.5, 0.5), "pat")
    both = EvalConfig(protocols=["volumetric", "microsegnet"])
    result, _ = evaluate_model(model, [volume], (16, 16), "zscore", both, torch.device("cpu"), progress=False)
    assert "microsegnet_dice" in result.per_patient
    assert "official MicroSegNet" in result.summary["protocol_microsegnet"]["description"]
    with pytest.raises(ValueError, match="protocol"):
        evaluate_model(
            model, [volume], (16, 16), "zscore", EvalConfig(protocols=["bogus"]), torch.device("cpu")
        )


def test_annotator_disagreement() -> None:
    a = np.array([[1, 1, 0, 0]], np.uint8)
    b = np.array([[1, 0, 1, 0]], np.uint8)
    c = np.array([[1, 1, 0, 1]], np.uint8)
    one = Sample(np.zeros((1, 1, 4)), {"expert": a}, "expert", (1.0, 1.0), "x")
    assert annotator_disagreement(one) is None
    two = Sample(np.zeros((1, 1, 4)), {"expert": a, "non_expert": b}, "expert", (1.0, 1.0), "x")
    assert annotator_disagreement(two).tolist() == [[False, True, True, False]]  # XOR
    three = Sample(np.zeros((1, 1, 4)), {"expert": a, "non_expert": b, "r": c}, "expert", (1.0, 1.0), "x")
    assert annotator_disagreement(three).tolist() == [[False, True, True, True]]  # any disagreement


def test_segmentation_metrics_follow_the_eval_config() -> None:
    metrics = segmentation_metrics(EvalConfig(hd95_mode="max", nsd_tolerance_mm=2.5), num_classes=3)
    assert (metrics.hd95_mode, metrics.nsd_tolerance_mm, metrics.num_classes) == ("max", 2.5, 3)
    assert metrics.workers == -1 and metrics.rows == []
