"""Reading a run or evaluation folder for the report (medseg.report.results)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_report_html import _cases, write_eval_dir

from medseg.errors import DataError
from medseg.metrics.calibration import CALIBRATION_CASES_FILE, RELIABILITY_FILE
from medseg.metrics.evaluation import METRICS_FILE
from medseg.report.html import build_report
from medseg.report.results import HISTORY_FILE, load_result_dir, report_level, uncertainty_column


def test_load_result_dir_levels_and_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_result_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics.csv"):
        load_result_dir(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.csv").write_text("case,score\na,1\n")
    with pytest.raises(DataError, match="missing column"):
        load_result_dir(tmp_path / "bad")
    assert report_level(pd.DataFrame({"level": ["patient", "slice"]})) == "patient"
    assert report_level(pd.DataFrame({"level": ["patient", "image"]})) == "image"
    assert report_level(pd.DataFrame({"case": ["a"]})) is None
    run = write_eval_dir(tmp_path / "run", _cases(3))
    assert load_result_dir(run).level == "image" and load_result_dir(run, level="patient").level == "patient"
    with pytest.raises(DataError, match="no rows of level"):
        load_result_dir(run, level="slice")
    with pytest.raises(DataError, match="no run or evaluation"):
        build_report([], tmp_path / "x.html")


def test_a_folder_reads_every_file_it_has(tmp_path: Path) -> None:
    run = write_eval_dir(tmp_path / "run", _cases(3), config={"train": {"seed": 3}}, history=True)
    result = load_result_dir(run, name="mine")
    assert (result.name, result.kind, list(result.cases["case"])) == ("mine", "run", _cases(3))
    assert result.config == {"train": {"seed": 3}} and result.summary["hd95_mode"] == "pooled"
    assert result.history is not None and len(result.history) == 3 and set(result.slices) == set(_cases(3))
    assert result.reliability is None and result.calibration is None
    assert (run / METRICS_FILE).is_file() and (run / HISTORY_FILE).is_file()
    (run / RELIABILITY_FILE).write_text("region,bin\nwhole,0\n")
    with pytest.raises(DataError, match="missing column"):
        load_result_dir(run)
    (run / RELIABILITY_FILE).unlink()
    (run / CALIBRATION_CASES_FILE).write_text("case,dice\na,0.5\n")
    with pytest.raises(DataError, match="no uncertainty column"):
        load_result_dir(run)
    (run / "metrics.csv").write_text("case,dice\na,1\na,0.5\n")
    with pytest.raises(DataError, match="repeat"):
        load_result_dir(run)


def test_uncertainty_column_prefers_the_region_entropy() -> None:
    frame = pd.DataFrame(columns=["case", "dice", "mean_entropy_whole", "mean_entropy_region"])
    assert uncertainty_column(frame, "x.csv") == "mean_entropy_region"
    assert uncertainty_column(frame.drop(columns="mean_entropy_region"), "x.csv") == "mean_entropy_whole"
