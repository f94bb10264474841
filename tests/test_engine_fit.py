"""`medseg plan` and `medseg fit` end to end on a tiny phantom (seconds, not minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medseg.cli import app
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.fit import available_memory_bytes, data_config, fit, plan_source
from medseg.errors import ConfigError
from medseg.plan import load_plan

PHANTOM = {"n_patients": 5, "seed": 0, "shape": [4, 32, 32]}
GIB = 2**30


def test_fit_plans_trains_validates_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "fit"
    result = fit(
        "phantom", PHANTOM, minutes=0.05, out=out, device="cpu", memory_bytes=2 * GIB, progress=False
    )
    for name in (
        "plan.yaml",
        "config.yaml",
        "best.pt",
        "last.pt",
        "history.csv",
        "metrics.csv",
        "report.html",
    ):
        assert (out / name).is_file(), name
    plan = load_plan(out / "plan.yaml")
    assert plan.data["source"] == "phantom" and plan.model["name"] == "resenc_unet"
    state = load_checkpoint(out / "last.pt")
    assert state["history"][-1]["lr"] == 0.0  # the schedule ended with the 3 s budget
    assert state["config"]["train"]["checkpoint_selection"] == "ema"
    assert result.evaluation.summary["per_patient"]["n"] == 1  # 20 % of 5 patients validate
    # postprocessing decided on the validation patient, stored in best.pt, applied by the evaluation
    decision = load_checkpoint(out / "best.pt")["postprocessing"]
    assert decision["n_cases"] == 1 and [s["step"] for s in decision["steps"]] == ["class 1"]
    assert result.evaluation.summary["postprocessing"].startswith("class 1: ")
    assert "medseg fit --source phantom" in (out / "report.html").read_text()


def test_plan_source_fingerprints_the_training_cases_only(tmp_path: Path) -> None:
    data = data_config("phantom", PHANTOM, val_fraction=0.4)
    plan = plan_source(data, minutes=5, device="cpu", memory_bytes=2 * GIB, out=tmp_path / "p.yaml")
    written = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert written["data"]["split"]["val_fraction"] == 0.4
    assert set(written["reasons"]) >= {"spatial_dims", "batch_size", "model", "total_steps"}
    assert plan.spatial_dims in (2, 3)
    with pytest.raises(ConfigError, match="val_fraction"):
        data_config("phantom", PHANTOM, val_fraction=1.0)


def test_available_memory_is_positive() -> None:
    import torch

    assert available_memory_bytes(torch.device("cpu")) > 0


def _cli_plan_and_train(tmp_path: Path, *plan_options: str) -> Path:
    """`medseg plan` on a tiny phantom, then `medseg train --plan` for 1.2 s; the run folder."""
    runner = CliRunner()
    plan_file = tmp_path / "plan.yaml"
    args = ["plan", "--source", "phantom", "-o", "n_patients=4", "-o", "shape=[4, 32, 32]", *plan_options]
    result = runner.invoke(app, [*args, "--device", "cpu", "--memory-gb", "2", "--out", str(plan_file)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and plan_file.is_file()
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--plan", str(plan_file), "--minutes", "0.02", "--out", str(run), "--no-progress",
         "--set", "train.tensorboard=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run / "best.pt").is_file()
    return run


def test_cli_plan_then_train_from_the_plan_then_evaluate(tmp_path: Path) -> None:
    run = _cli_plan_and_train(tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        app, ["evaluate", str(run / "best.pt"), "--split", "val", "--no-mirror", "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "e" / "config.yaml").read_text())["inference"]["tta_flips"] is False
    result = runner.invoke(app, ["evaluate", "--pred", "a", "--gt", "b", "--mirror"])
    assert result.exit_code != 0 and "apply to a checkpoint" in result.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--device", "cpu"])
    assert result.exit_code == 2 and "CONFIG file or --source" in result.output
    result = runner.invoke(app, ["fit", "--source", "phantom", "--minutes", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--minutes must be positive" in result.output
    result = runner.invoke(app, ["fit", "--source", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output


def test_a_ct_plan_trains_with_its_fixed_intensity_window(tmp_path: Path) -> None:
    data = data_config("phantom", PHANTOM)
    plan = plan_source(data, minutes=5, device="cpu", memory_bytes=2 * GIB, modality="ct")
    assert plan.normalization[0]["scheme"] == "ct" and "CT" in plan.reasons["normalization"]
    run = _cli_plan_and_train(tmp_path, "--modality", "ct")
    window = load_checkpoint(run / "best.pt")["config"]["data"]["intensity"][0]
    assert set(window) == {"clip", "mean", "std"} and window["clip"][0] <= window["clip"][1]
