"""`medseg plan` and `medseg fit` end to end on a tiny phantom (seconds, not minutes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from plan_fingerprints import volume_fingerprint
from typer.testing import CliRunner

import medseg.engine.dims_trial as dims_trial
from medseg.cli import app
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.dims_trial import TRIAL_MIN_MINUTES, choose_by_trial, trial_applies
from medseg.engine.fit import available_memory_bytes, data_config, fit, plan_source
from medseg.errors import ConfigError
from medseg.plan import Budget, load_plan, make_plan

PHANTOM = {"n_patients": 5, "seed": 0, "shape": [4, 32, 32]}
GIB = 2**30


def test_fit_plans_trains_validates_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "fit"
    typed = f"medseg fit --source phantom --root /data/R --minutes 0.05 --out {out}"
    result = fit(
        "phantom",
        PHANTOM,
        minutes=0.05,
        out=out,
        device="cpu",
        memory_bytes=2 * GIB,
        progress=False,
        command=typed,
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
    assert typed in (out / "report.html").read_text()  # the command as typed, not rebuilt


def test_the_cli_passes_the_command_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import medseg.engine.fit

    seen: dict[str, object] = {}
    monkeypatch.setattr(medseg.engine.fit, "fit", lambda *args, **kwargs: seen.update(kwargs))
    args = [
        "fit",
        "--source",
        "msd",
        "--root",
        "/data/hippocampus mr",
        "--minutes",
        "15",
        "--out",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/medseg", *args])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["command"] == (
        f"medseg fit --source msd --root '/data/hippocampus mr' --minutes 15 --out {tmp_path}"
    )


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
    """`medseg plan` on a tiny phantom, then `medseg train --plan` for 6 s; the run folder."""
    runner = CliRunner()
    plan_file = tmp_path / "plan.yaml"
    args = ["plan", "--source", "phantom", "-o", "n_patients=4", "-o", "shape=[4, 32, 32]", *plan_options]
    result = runner.invoke(app, [*args, "--device", "cpu", "--memory-gb", "2", "--out", str(plan_file)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and plan_file.is_file()
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "--plan", str(plan_file), "--minutes", "0.1", "--out", str(run), "--no-progress",
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
    assert result.exit_code == 2 and "--minutes 0: expected a positive" in result.output
    result = runner.invoke(app, ["fit", "--source", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "nope" in result.output


def test_a_ct_plan_trains_with_its_fixed_intensity_window(tmp_path: Path) -> None:
    data = data_config("phantom", PHANTOM)
    plan = plan_source(data, minutes=5, device="cpu", memory_bytes=2 * GIB, modality="ct")
    assert plan.normalization[0]["scheme"] == "ct" and "CT" in plan.reasons["normalization"]
    run = _cli_plan_and_train(tmp_path, "--modality", "ct")
    window = load_checkpoint(run / "best.pt")["config"]["data"]["intensity"][0]
    assert set(window) == {"clip", "mean", "std"} and window["clip"][0] <= window["clip"][1]


def test_choose_by_trial_keeps_the_better_dims_and_records_why() -> None:
    fp = volume_fingerprint()
    budget = Budget(memory_bytes=2 * GIB, minutes=60, step_seconds=0.1)
    plan_3d, plan_2d = make_plan(fp, budget, spatial_dims=3), make_plan(fp, budget, spatial_dims=2)
    plan_3d = replace(plan_3d, reasons={**plan_3d.reasons, "spatial_dims": "isotropic"})
    better_2d = choose_by_trial(plan_3d, plan_2d, {"3d": 0.70, "2d": 0.75})
    assert better_2d.spatial_dims == 2 and better_2d.dims_trial == {"3d": 0.70, "2d": 0.75}
    assert (
        "3d Dice 0.7000, 2d Dice 0.7500 → 2D (the rule said 3D: isotropic)"
        in better_2d.reasons["spatial_dims"]
    )
    assert choose_by_trial(plan_3d, plan_2d, {"3d": 0.75, "2d": 0.75}).spatial_dims == 3  # a tie: the rule
    assert choose_by_trial(plan_3d, plan_2d, {"3d": float("nan"), "2d": 0.5}).spatial_dims == 2
    assert choose_by_trial(plan_3d, plan_2d, {"3d": 0.5, "2d": float("nan")}).spatial_dims == 3


def test_trial_applies_to_long_3d_budgets_only() -> None:
    fp = volume_fingerprint()
    assert trial_applies(fp, TRIAL_MIN_MINUTES) is None
    assert "under 60 min" in trial_applies(fp, 15)
    assert "2D" in trial_applies(replace(fp, spatial_dims=2), 600)


def test_fit_runs_the_2d_3d_trial_when_the_budget_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dims_trial, "TRIAL_MIN_MINUTES", 0.0)
    volumes = {"n_patients": 5, "seed": 0, "shape": [16, 32, 32]}
    result = fit(
        "phantom",
        volumes,
        minutes=0.1,
        out=tmp_path / "fit",
        device="cpu",
        memory_bytes=2 * GIB,
        progress=False,
    )
    plan = load_plan(tmp_path / "fit" / "plan.yaml")
    assert set(plan.dims_trial) == {"2d", "3d"} and "trial of both" in plan.reasons["spatial_dims"]
    assert (tmp_path / "fit" / "trial_2d" / "last.pt").is_file() and (
        tmp_path / "fit" / "trial_3d" / "last.pt"
    ).is_file()
    assert result.plan.spatial_dims == plan.spatial_dims
