from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()


def test_help_on_every_command() -> None:
    for args in (
        ["--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["predict", "--help"],
        ["demo", "--help"],
        ["data", "--help"],
        ["data", "inspect", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output


def test_registry_listings() -> None:
    assert "unet" in runner.invoke(app, ["models"]).output
    assert "dice" in runner.invoke(app, ["losses"]).output
    assert "adamw" in runner.invoke(app, ["optimizers"]).output
    assert "microus" in runner.invoke(app, ["data", "sources"]).output


def test_phantom_inspect_train_predict(tmp_path: Path) -> None:
    root = tmp_path / "microus"
    result = runner.invoke(app, ["data", "phantom", "--out", str(root), "--n-train", "3", "--n-test", "1"])
    assert result.exit_code == 0, result.output
    assert (
        sorted(p.name for p in (root / "train" / "micro_ultrasound_scans").iterdir())[0]
        == "microUS_train_01.nii.gz"
    )
    result = runner.invoke(app, ["data", "inspect", "--source", "microus", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "train_01" in result.output
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--out",
            str(run),
            "--no-progress",
            "--set",
            f"data.options={{root: '{root}', subset: train}}",
            "--set",
            "data.source=microus",
            "--set",
            "data.image_size=[32, 32]",
            "--set",
            "model.options={features: [4, 8]}",
            "--set",
            "train.epochs=1",
            "--set",
            "train.tensorboard=false",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (run / "best.pt").is_file() and (run / "curves.png").is_file()
    scan = root / "test" / "micro_ultrasound_scans" / "microUS_test_01.nii.gz"
    result = runner.invoke(
        app, ["predict", str(run / "best.pt"), str(scan), "--out", str(tmp_path / "pred"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pred" / "microUS_test_01_mask.nii.gz").is_file()


def test_evaluate_pred_gt(tmp_path: Path) -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = 255
    Image.fromarray(mask).save(tmp_path / "p.png")
    Image.fromarray(mask).save(tmp_path / "g.png")
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(tmp_path / "p.png"),
            "--gt",
            str(tmp_path / "g.png"),
            "--spacing",
            "0.5,0.5",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Dice 1.0000" in result.output
    assert (tmp_path / "ev" / "metrics.csv").is_file()


def test_errors_exit_with_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", "--source", "lgg", "--root", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "nope" in result.output
    result = runner.invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "missing.yaml" in result.output
    result = runner.invoke(app, ["evaluate", "--pred", "x", "--gt", "y", "--hd95", "bogus"])
    assert result.exit_code == 2


def test_evaluate_every_label_prints_and_writes_the_per_class_table(tmp_path: Path) -> None:
    gt = np.zeros((20, 20), np.uint8)
    gt[2:8, 2:8], gt[10:18, 10:18] = 1, 2
    pred = gt.copy()
    pred[10:18, 10:14] = 0  # label 2: half found
    Image.fromarray(gt).save(tmp_path / "gt.png")
    Image.fromarray(pred).save(tmp_path / "pred.png")
    args = ["evaluate", "--pred", str(tmp_path / "pred.png"), "--gt", str(tmp_path / "gt.png")]
    result = runner.invoke(
        app, [*args, "--labels", "all", "--spacing", "0.5,0.5", "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 0, result.output
    assert "label 1: Dice 1.0000 (n 1)" in result.output and "label 2: Dice 0.6667" in result.output
    assert (tmp_path / "e" / "metrics_per_class.csv").is_file()
