"""CLI: `medseg predict --model litemedsam --checkpoint W --box ...` and `evaluate --format cvpr24`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.cvpr24 import write_case, write_segs
from medseg.data.io import read_image, write_image, write_volume
from medseg.models import build

TINY = ["--model", "litemedsam", "-o", "variant=tiny", "-o", "img_size=64"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "lite_medsam_tiny.pth"
    torch.save(build("litemedsam", variant="tiny", img_size=64).state_dict(), path)  # flat state dict
    return path


def _predict(*args: str) -> str:
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_predict_png_with_a_box(tmp_path: Path, weights: Path) -> None:
    image = (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8)
    write_image(tmp_path / "img.png", image)
    common = [*TINY, "--checkpoint", str(weights)]
    _predict(*common, "--box", "5,5,30,25", "--out", str(tmp_path / "out"), str(tmp_path / "img.png"))
    labels, _, _ = read_image(tmp_path / "out" / "img_seg.png")
    labels = np.asarray(labels)
    assert labels.shape[:2] == (40, 50) and set(np.unique(labels)) <= {0, 1, 255}


def test_predict_nifti_with_a_3d_box_keeps_the_affine(tmp_path: Path, weights: Path) -> None:
    volume = np.random.default_rng(1).random((6, 32, 32)).astype(np.float32)
    write_volume(tmp_path / "vol.nii.gz", volume, spacing=(2.0, 0.5, 0.5))
    common = [*TINY, "--checkpoint", str(weights)]
    _predict(*common, "--box", "4,4,1,20,20,4", "--out", str(tmp_path / "out"), str(tmp_path / "vol.nii.gz"))
    labels, spacing, _ = read_image(tmp_path / "out" / "vol_seg.nii.gz")
    assert np.asarray(labels).shape[-3:] == (6, 32, 32)
    assert tuple(spacing) == pytest.approx((2.0, 0.5, 0.5))


def test_predict_box_errors(tmp_path: Path, weights: Path) -> None:
    write_image(tmp_path / "img.png", np.zeros((20, 20), np.uint8))
    result = CliRunner().invoke(
        app, ["predict", "--model", "litemedsam", "-o", "variant=tiny", "-o", "img_size=64",
              "--checkpoint", str(weights), "--box", "9,9,3,3", str(tmp_path / "img.png")],
    )  # fmt: skip
    assert result.exit_code == 2 and "box" in result.output


def test_evaluate_cvpr24_format(tmp_path: Path) -> None:
    gts = np.zeros((16, 16), np.uint8)
    gts[2:8, 2:8] = 1
    write_case(tmp_path / "gt" / "2DBox_case.npz", np.zeros((16, 16, 3), np.uint8), gts=gts,
               boxes=np.array([[2, 2, 7, 7]]), spacing=[1.0, 1.0])  # fmt: skip
    write_segs(tmp_path / "pred" / "2DBox_case.npz", gts)
    out = tmp_path / "score"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--format", "cvpr24", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "DSC 1.0000" in result.output and (out / "metrics.csv").is_file()
