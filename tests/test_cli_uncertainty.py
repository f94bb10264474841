"""CLI: ``medseg predict --uncertainty`` maps and ``medseg evaluate --calibration`` files."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.engine.calibrate import RELIABILITY_COLUMNS, case_columns

runner = CliRunner()


@pytest.fixture()
def checkpoint(dropout_unet_checkpoint: Path) -> Path:
    return dropout_unet_checkpoint


def test_predict_uncertainty_writes_four_maps_with_the_affine(checkpoint: Path, tmp_path: Path) -> None:
    affine = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, 0.4, 0.0, -3.0], [0.6, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((30, 28, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    out = tmp_path / "pred"
    args = ["predict", str(checkpoint), str(tmp_path / "scan.nii.gz"), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(
        app, [*args, "--uncertainty", "mcdropout", "--samples", "3", "--tta-merge", "logits"]
    )
    assert result.exit_code == 0, result.output
    for suffix in ("mask", "prob", "entropy", "expected_entropy", "mi"):
        image = nib.load(out / f"scan_{suffix}.nii.gz")
        np.testing.assert_allclose(image.affine, affine)
        assert image.shape == data.shape
    result = runner.invoke(app, [*args, "--uncertainty", "nope"])
    assert result.exit_code == 2 and "unknown uncertainty method" in result.output


def test_evaluate_calibration_writes_three_files(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", str(checkpoint), "--split", "val", "--device", "cpu", "--out", str(out)]
    result = runner.invoke(app, [*args, "--calibration", "--bins", "12", "--uncertainty", "tta"])
    assert result.exit_code == 0, result.output
    assert "calibration.json" in result.output
    reliability = pd.read_csv(out / "reliability.csv")
    assert list(reliability.columns) == RELIABILITY_COLUMNS and len(reliability) == 24
    assert list(pd.read_csv(out / "calibration_cases.csv").columns) == case_columns(with_mi=True)
    assert (out / "calibration.json").is_file() and (out / "metrics.csv").is_file()
    result = runner.invoke(app, [*args, "--calibration", "--bins", "0"])
    assert result.exit_code == 2 and "bins" in result.output
