"""Reading a run or evaluation folder for the report (:func:`load_result_dir`).

The file names come from the code that writes them: ``metrics.csv`` / ``summary.json``
(:mod:`medseg.metrics.evaluation`), ``metrics_per_class.csv`` (:mod:`medseg.metrics.per_class`),
``case_slices.npz`` (:mod:`medseg.report.slices`) and the
calibration files (:mod:`medseg.metrics.calibration`). ``history.csv``, ``config.yaml`` and
``best.pt`` are written by ``medseg.engine.train``, which the report does not import (the report
reads folders, it does not run models): their names are below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medseg.errors import DataError
from medseg.metrics.calibration import (
    CALIBRATION_CASES_FILE,
    CALIBRATION_FILE,
    RELIABILITY_COLUMNS,
    RELIABILITY_FILE,
)
from medseg.metrics.evaluation import METRICS_FILE, SUMMARY_FILE
from medseg.metrics.per_class import PER_CLASS_FILE
from medseg.report.slices import CASE_SLICES_FILE, CaseSlice, CaseSliceFile

_BIN_EDGES = ("lower", "upper")  # optional in reliability.csv (older files lack them)
# written by medseg.engine.train (and medseg.engine.evaluate for the config)
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.yaml"
BEST_CHECKPOINT = "best.pt"


@dataclass
class ResultDir:
    """One run or evaluation folder, read for the report."""

    path: Path
    name: str
    kind: str  # "run" (has history.csv) or "evaluation"
    level: str | None  # the metrics.csv level used as "case" (None: a table without levels)
    cases: pd.DataFrame  # the metrics.csv rows of that level, columns as in the file
    summary: dict[str, Any]
    config: dict[str, Any] | None = None
    history: pd.DataFrame | None = None
    slices: Mapping[str, CaseSlice] = field(default_factory=dict)  # a CaseSliceFile when present
    reliability: pd.DataFrame | None = None
    calibration_cases: pd.DataFrame | None = None
    calibration: dict[str, Any] | None = None
    # multi-class: metrics_per_class.csv, the rows of the same level as ``cases``
    per_class: pd.DataFrame | None = None


def report_level(table: pd.DataFrame) -> str | None:
    """The level a report counts as cases: volumes (``patient``) when slices exist, else ``image``."""
    if "level" not in table:
        return None
    levels = set(table["level"].astype(str))
    if "slice" in levels and "patient" in levels:
        return "patient"
    for level in ("image", "patient", "case"):
        if level in levels:
            return level
    return sorted(levels)[0]


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable CSV ({type(exc).__name__}: {exc})", path) from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; has {list(frame.columns)}", path)
    return frame


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc}", path) from exc
    if not isinstance(value, dict):
        raise DataError("expected a JSON object", path)
    return value


def load_result_dir(path: str | Path, level: str | None = None, name: str | None = None) -> ResultDir:
    """Read a run or evaluation folder; ``level`` overrides :func:`report_level`."""
    path = Path(path)
    if not path.is_dir():
        raise DataError("report input folder not found", path)
    metrics_path = path / METRICS_FILE
    if not metrics_path.is_file():
        raise DataError(f"no {METRICS_FILE}: not a medseg run or evaluation folder", path)
    table = _read_csv(metrics_path, ("case", "dice"))
    chosen = level or report_level(table)
    if chosen is not None:
        if "level" not in table:
            raise DataError(f"no 'level' column to select level '{chosen}'", metrics_path)
        table = table[table["level"].astype(str) == chosen].reset_index(drop=True)
    if table.empty:
        raise DataError(f"no rows of level '{chosen}'", metrics_path)
    if table["case"].astype(str).duplicated().any():
        dupes = sorted(table["case"].astype(str)[table["case"].astype(str).duplicated()].unique())[:5]
        raise DataError(f"case names repeat within level '{chosen}': {dupes}", metrics_path)
    table["case"] = table["case"].astype(str)
    summary = _read_json(path / SUMMARY_FILE) if (path / SUMMARY_FILE).is_file() else {}
    config = None
    if (path / CONFIG_FILE).is_file():
        try:
            config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"invalid YAML: {exc}", path / CONFIG_FILE) from exc
    history = None
    if (path / HISTORY_FILE).is_file():
        history = _read_csv(path / HISTORY_FILE, ("epoch",))
    per_class = None
    if (path / PER_CLASS_FILE).is_file():
        per_class = _read_csv(
            path / PER_CLASS_FILE, ("case", "class_index", "class_value", "class_name", "dice")
        )
        if chosen is not None and "level" in per_class:
            per_class = per_class[per_class["level"].astype(str) == chosen].reset_index(drop=True)
        per_class["case"] = per_class["case"].astype(str)
    slices = CaseSliceFile(path / CASE_SLICES_FILE) if (path / CASE_SLICES_FILE).is_file() else {}
    reliability = calibration_cases = calibration = None
    if (path / RELIABILITY_FILE).is_file():
        reliability = _read_csv(
            path / RELIABILITY_FILE, [c for c in RELIABILITY_COLUMNS if c not in _BIN_EDGES]
        )
    if (path / CALIBRATION_CASES_FILE).is_file():
        calibration_cases = _read_csv(path / CALIBRATION_CASES_FILE, ("case", "dice"))
        uncertainty_column(calibration_cases, path / CALIBRATION_CASES_FILE)
    if (path / CALIBRATION_FILE).is_file():
        calibration = _read_json(path / CALIBRATION_FILE)
    return ResultDir(
        path=path,
        name=name or path.name,
        kind="run" if history is not None else "evaluation",
        level=chosen,
        cases=table,
        summary=summary,
        config=config,
        history=history,
        slices=slices,
        reliability=reliability,
        calibration_cases=calibration_cases,
        calibration=calibration,
        per_class=per_class,
    )


def uncertainty_column(cases: pd.DataFrame, where: Path | str) -> str:
    """The uncertainty column of ``calibration_cases.csv``: ``mean_entropy_region``, else the first
    ``mean_entropy*`` column (a :class:`DataError` naming ``where`` when there is none)."""
    if "mean_entropy_region" in cases:
        return "mean_entropy_region"
    others = sorted(c for c in cases.columns if str(c).startswith("mean_entropy"))
    if not others:
        raise DataError("no uncertainty column (mean_entropy_region)", where)
    return others[0]
