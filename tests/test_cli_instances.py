"""`medseg evaluate --instances`: AP files written from instance volumes given on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app


def test_evaluate_instances_cli(tmp_path: Path) -> None:
    gt = np.zeros((2, 8, 8), np.uint16)
    gt[:, :4, :4], gt[:, 4:, 4:] = 1, 2
    pred = gt.copy()
    # one of two objects found, perfectly: precision 1 up to recall 0.5, i.e. at 51 of the 101
    # recall points 0, 0.01, ..., 1 → AP = 51/101 at every threshold
    pred[:, 4:, 4:] = 0
    for name, volume in (("gt.h5", gt), ("pred.h5", pred)):
        with h5py.File(tmp_path / name, "w") as handle:
            handle.create_dataset("main", data=volume)
    out = tmp_path / "ap"
    args = ["evaluate", "--instances", "--pred", str(tmp_path / "pred.h5"), "--gt", str(tmp_path / "gt.h5")]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ap.json").read_text())
    for key in ("ap50", "ap75", "map"):
        assert summary[key] == pytest.approx(51 / 101)
    assert (out / "instances.csv").read_text().count("\n") == 3  # header, 1 prediction, 1 missed GT
    missing = CliRunner().invoke(app, ["evaluate", "--instances", "--gt", str(tmp_path / "gt.h5")])
    assert missing.exit_code == 2 and "--pred and --gt" in missing.output
