import json
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from medseg.engine.demo import demo_config, phantom_recipe, results_table, run_demo


def test_demo_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    evaluation = run_demo(out, n_train=3, n_test=1, epochs=1, progress=False, console=Console(quiet=True))
    for name in (
        "metrics.csv",
        "summary.json",
        "curves.png",
        "overlay.png",
        "best.pt",
        "last.pt",
        "history.csv",
        "case_slices.npz",
        "report.html",
    ):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text()
    assert "test_01" in page and not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)
    table = pd.read_csv(out / "metrics.csv")
    assert set(table["level"]) == {"patient", "slice"}
    assert (table["level"] == "patient").sum() == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_patient"]["n"] == 1 and "ci_low" in summary["per_patient"]["dice"]
    assert results_table(evaluation).row_count == 3  # one patient, mean, median
    assert "microsegnet_dice" in evaluation.per_patient  # both protocols
    # the phantom went through the micro-US layout
    assert (out / "data" / "test" / "expert_annotations" / "expert_annotation_test_01.nii.gz").is_file()


def test_demo_config_reads_the_microus_layout(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path, tmp_path / "data")
    assert cfg.data.source == "microus" and cfg.data.options["subset"] == "train"
    assert cfg.data.test_options["subset"] == "test"


def test_demo_recipes(tmp_path: Path) -> None:
    micro = demo_config(tmp_path, tmp_path / "data")
    assert micro.model.name == "microsegnet" and micro.loss.name == "ag_bce_ds"
    assert micro.eval.protocols == ["volumetric", "microsegnet"]
    assert demo_config(tmp_path, tmp_path / "data", model="unet").model.name == "unet"
    with pytest.raises(ValueError, match="demo model"):
        demo_config(tmp_path, tmp_path / "data", model="vnet")


def test_unet_demo_runs(tmp_path: Path) -> None:
    evaluation = run_demo(
        tmp_path / "u",
        n_train=3,
        n_test=1,
        epochs=1,
        progress=False,
        console=Console(quiet=True),
        model="unet",
    )
    assert len(evaluation.per_patient) == 1


def test_phantom_recipe_options(tmp_path: Path) -> None:
    adamw = phantom_recipe(tmp_path, image_size=64, overrides=["train.epochs=2"])
    assert adamw.optim.name == "adamw" and adamw.data.image_size == [64, 64] and adamw.train.epochs == 2
    assert adamw.data.options["root"] == str(tmp_path) and adamw.data.test_options["subset"] == "test"
    sgd = phantom_recipe(tmp_path, paper_sgd=True)
    assert (sgd.optim.name, sgd.optim.lr, sgd.optim.options) == ("sgd", 0.01, {"momentum": 0.9})
