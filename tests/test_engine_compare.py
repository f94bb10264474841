"""`medseg compare`: grid expansion, fixed split/seed, convergence epoch, tables, figures, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import Config
from medseg.engine.compare import (
    build_grid,
    comparable_config,
    convergence_epoch,
    load_grid,
    read_grid_file,
    run_grid,
    run_row,
    same_run_config,
)
from medseg.engine.train import train
from medseg.errors import ConfigError

QUIET = Console(quiet=True)

BASE = {
    "data": {"options": {"n_patients": 4, "seed": 0, "shape": [4, 32, 32]}, "image_size": [32, 32]},
    "model": {"options": {"features": [4, 8]}},
    "train": {"epochs": 2, "batch_size": 4, "progress": False, "tensorboard": False},
    "optim": {"scheduler": "constant"},
}


def _grid_tree(tmp_path: Path) -> dict:
    return {
        "name": "toy",
        "output_dir": str(tmp_path / "grid"),
        "base": BASE,
        "axes": {
            "loss": {"dice": {"loss.name": "dice"}, "bce": {"loss.name": "bce"}},
            "optim": {
                "adam": {"optim.name": "adam", "optim.lr": 1e-3},
                "sgd": {"optim.name": "sgd", "optim.lr": 1e-2},
            },
        },
        "exclude": [{"loss": "bce", "optim": "sgd"}],
        "overlay_cases": 2,
    }


def test_convergence_epoch_by_hand() -> None:
    # best 0.80; within 1% means ≥ 0.792: epoch 3 (0.795) is the first.
    assert convergence_epoch([0.5, 0.7, 0.795, 0.80, 0.79]) == 3
    assert convergence_epoch([0.5, 0.7, 0.795, 0.80], tolerance=0.0) == 4
    assert convergence_epoch([float("nan"), 0.4]) == 2
    with pytest.raises(ValueError, match="finite"):
        convergence_epoch([float("nan")])


def test_grid_expansion_exclude_and_shared_split(tmp_path: Path) -> None:
    grid = build_grid(_grid_tree(tmp_path))
    assert [r.name for r in grid.runs] == ["dice-adam", "dice-sgd", "bce-adam"]
    seeds = {(r.config.train.seed, r.config.data.split.seed) for r in grid.runs}
    assert seeds == {(0, 0)}
    run = grid.runs[1]
    assert run.config.optim.name == "sgd" and run.config.loss.name == "dice"
    assert run.config.output_dir == str(tmp_path / "grid" / "runs" / "dice-sgd")
    # overrides from the CLI reach every run
    grid = build_grid(_grid_tree(tmp_path), ["train.epochs=7"])
    assert {r.config.train.epochs for r in grid.runs} == {7}


def test_grid_refuses_a_variant_that_changes_the_split_or_seed(tmp_path: Path) -> None:
    tree = _grid_tree(tmp_path)
    tree["axes"]["loss"]["dice"]["train.seed"] = 3
    with pytest.raises(ConfigError, match="same data, patient split and seed"):
        build_grid(tree)
    tree = _grid_tree(tmp_path)
    tree["axes"]["loss"]["dice"]["data.split.seed"] = 3
    with pytest.raises(ConfigError, match="train.seed|data.split"):
        build_grid(tree)


def test_grid_errors(tmp_path: Path) -> None:
    tree = _grid_tree(tmp_path)
    tree["exclude"] = [{"loss": "dice"}, {"loss": "bce"}]
    with pytest.raises(ConfigError, match="every combination is excluded"):
        build_grid(tree)
    with pytest.raises(ConfigError, match="axes"):
        build_grid({"base": BASE})
    tree = _grid_tree(tmp_path)
    tree["exclude"] = [{"architecture": "x"}]
    with pytest.raises(ConfigError, match="exclude rule"):
        build_grid(tree)
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: {}\nepochs: 3\n")
    with pytest.raises(ConfigError, match="unknown grid key"):
        read_grid_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_grid_file(tmp_path / "missing.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        read_grid_file(loop)


def test_extends_merges_base_and_replaces_axes_one_by_one(tmp_path: Path) -> None:
    parent = tmp_path / "parent.yaml"
    parent.write_text(yaml.safe_dump(_grid_tree(tmp_path) | {"set": ["train.epochs=3"]}, sort_keys=False))
    child = tmp_path / "child.yaml"
    child.write_text(
        yaml.safe_dump(
            {
                "extends": "parent.yaml",
                "name": "child",
                "base": {"data": {"image_size": [16, 16]}},
                "set": ["train.batch_size=2"],
                "axes": {"optim": {"adam": {"optim.name": "adam", "optim.lr": 1e-3}}},
            }
        )
    )
    grid = load_grid(child)
    assert grid.name == "child"
    assert [r.name for r in grid.runs] == ["dice-adam", "bce-adam"]  # loss axis kept, optim replaced
    cfg = grid.runs[0].config
    assert cfg.data.image_size == [16, 16] and cfg.data.options["n_patients"] == 4
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 2


def test_the_paper004_grids_expand_to_the_papers_runs() -> None:
    repo = Path(__file__).resolve().parents[1]
    full = load_grid(repo / "configs" / "compare_lgg_paper004.yaml")
    names = [r.name for r in full.runs]
    assert len(names) == 10
    assert {n for n in names if n.startswith("unetpp")} == {"unetpp-dice-adam", "unetpp-logcosh_dice-adam"}
    sgd = next(r for r in full.runs if r.name == "unet-bce-sgd").config
    assert (sgd.optim.lr, sgd.optim.weight_decay, sgd.optim.options["momentum"]) == (1e-3, 1e-4, 0.9)
    adam = next(r for r in full.runs if r.name == "unet-dice-adam").config
    assert adam.optim.lr == 1e-4 and adam.data.image_size == [256, 256]
    assert (adam.augment.rotate_deg, adam.augment.scale) == (15.0, 0.05)
    cpu = load_grid(repo / "configs" / "compare_lgg_paper004_cpu.yaml")
    assert [r.name for r in cpu.runs] == names
    assert {tuple(r.config.data.image_size) for r in cpu.runs} == {(128, 128)}


def test_run_grid_writes_tables_and_figures_and_skips_finished_runs(tmp_path: Path) -> None:
    grid = build_grid(_grid_tree(tmp_path))
    table = run_grid(grid, console=QUIET, progress=False)
    out = tmp_path / "grid"
    assert sorted(table["run"]) == ["bce-adam", "dice-adam", "dice-sgd"]
    assert (out / "compare.csv").is_file()
    md = (out / "compare.md").read_text()
    for header in ("best val mean DSC", "conv. epoch", "train time (min)", "DSC median (vol)", "HD95 median"):
        assert header in md
    for figure in ("loss_curves.png", "val_dice.png", "dice_distribution.png", "overlays.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    row = table.set_index("run").loc["dice-sgd"]
    assert row["optimizer"] == "sgd" and row["max_epoch"] == 2 and row["epochs_run"] == 2
    assert 1 <= row["convergence_epoch"] <= 2 and 0.0 <= row["dice_median"] <= 1.0
    # a second call trains nothing: every run is finished
    stamp = (out / "runs" / "dice-adam" / "best.pt").stat().st_mtime_ns
    run_grid(grid, console=QUIET, progress=False)
    assert (out / "runs" / "dice-adam" / "best.pt").stat().st_mtime_ns == stamp
    # a run stored before a key existed (here train.dtype) still counts as done
    result_path = out / "runs" / "dice-adam" / "result.json"
    payload = json.loads(result_path.read_text())
    del payload["config"]["train"]["dtype"]
    result_path.write_text(json.dumps(payload))
    run_grid(grid, console=QUIET, progress=False)
    assert (out / "runs" / "dice-adam" / "best.pt").stat().st_mtime_ns == stamp
    # the same folder with a changed grid is refused instead of mixing configs
    changed = build_grid(_grid_tree(tmp_path), ["train.batch_size=2"])
    with pytest.raises(ConfigError, match="different config"):
        run_grid(changed, console=QUIET, progress=False)


def test_run_grid_resumes_a_half_done_run(tmp_path: Path) -> None:
    tree = _grid_tree(tmp_path)
    tree["axes"] = {"loss": {"dice": {"loss.name": "dice"}}}
    tree["exclude"] = []
    grid = build_grid(tree)
    run = grid.runs[0]
    # simulate a run killed after its first epoch: last.pt holds epoch 1 of 2
    cfg = run.config
    cfg.train.epochs = 1
    first = train(cfg, console=QUIET)
    cfg.train.epochs = 2
    assert len(first.history) == 1 and not (Path(cfg.output_dir) / "result.json").exists()
    run_grid(grid, console=QUIET, progress=False)
    payload = json.loads((Path(cfg.output_dir) / "result.json").read_text())
    assert [h["epoch"] for h in payload["history"]] == [1, 2]
    assert payload["history"][0]["train_loss"] == pytest.approx(first.history[0]["train_loss"])
    assert payload["config"] == comparable_config(cfg)


def test_same_run_config_reads_missing_keys_at_their_defaults() -> None:
    current = comparable_config(Config())
    older = json.loads(json.dumps(current))
    del older["train"]["accumulate_steps"]
    assert same_run_config(older, current)
    older["train"]["epochs"] = 999
    assert not same_run_config(older, current)
    assert not same_run_config(None, current) and not same_run_config({"train": {"nope": 1}}, current)


def test_run_row_columns() -> None:
    grid = build_grid({"base": BASE, "axes": {"loss": {"dice": {"loss.name": "dice"}}}})
    history = [
        {"epoch": 1, "val_dice": 0.5, "elapsed_s": 60.0},
        {"epoch": 2, "val_dice": 0.9, "elapsed_s": 120.0},
        {"epoch": 3, "val_dice": 0.895, "elapsed_s": 180.0},
    ]
    summary = {"per_patient": {"n": 3, "dice": {"mean": 0.8, "median": 0.85}, "hd95_mm": {"median": 2.0}}}
    row = run_row(grid.runs[0], history, summary, 0.01)
    assert row["convergence_epoch"] == 2 and row["convergence_min"] == pytest.approx(2.0)
    assert row["train_min"] == pytest.approx(3.0) and row["min_per_epoch"] == pytest.approx(1.0)
    assert row["best_val_dice"] == 0.9 and row["best_epoch"] == 2 and row["hd95_mm_median"] == 2.0


def test_cli_compare_dry_run_and_errors(tmp_path: Path) -> None:
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(_grid_tree(tmp_path)))
    result = CliRunner().invoke(app, ["compare", str(grid_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.output and "dice-sgd" in result.output
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_base_options_replace_the_default_options(tmp_path: Path) -> None:
    tree = _grid_tree(tmp_path)
    tree["base"] = {**BASE, "data": {"source": "lgg", "options": {"root": "somewhere"}}}
    grid = build_grid(tree)
    assert grid.runs[0].config.data.options == {"root": "somewhere"}  # no phantom n_patients left
