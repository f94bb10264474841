"""Evaluation as one object: per-case metric rows in, per-case / per-patient / summary tables out.

:class:`SegmentationMetrics` (after MONAI's ``CumulativeIterationMetric``) holds the configuration
(HD95 definition, NSD tolerance, class count); a call per case scores one prediction against its
ground truth, keeps the row and returns it; :meth:`SegmentationMetrics.aggregate` returns the
:class:`MetricTables`. :class:`CaseDice` accumulates the per-case Dice of training validation from
overlap counts. Both use the one empty-mask policy of :mod:`medseg.metrics.functional`
(:func:`dice_from_counts`), and :func:`unusable_reason` is the one rule for which values a report
may average (a value the policy sets rather than measures is left out).

Rows of the per-case table carry the id keywords given to the call (``level``, ``case``, ``patient``,
``slice_index`` for a model evaluation; ``case`` alone for files), then the metrics, then ``extra``.
The per-patient table is the ``level == "patient"`` rows when there are any (3D: the whole-volume
metrics), else the mean of each patient's rows (2D sources with several images per patient).

Multi-class (``num_classes`` = K ≥ 2): every metric of class c (masks ``pred == c``, ``gt == c``)
is a column ``<metric>_c<c>``; the plain column is the mean over the foreground classes 1..K−1, and
``empty_gt`` / ``empty_pred`` mean no foreground of any class.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.io_utils import write_csv_atomic, write_text_atomic
from medseg.metrics.aggregate import summarize
from medseg.metrics.functional import HDMode, compute_segmentation_metrics, dice_from_counts

__all__ = [
    "FLAG_COLUMNS",
    "METRICS_FILE",
    "METRIC_NAMES",
    "SUMMARY_FILE",
    "SURFACE_METRICS",
    "CaseDice",
    "MetricTables",
    "SegmentationMetrics",
    "case_reason",
    "class_columns",
    "summarize_table",
    "unusable_reason",
    "usable_values",
    "write_metric_tables",
]

# The metrics of every row, in table order (the keys of compute_segmentation_metrics but the flags).
METRIC_NAMES = ("dice", "iou", "sensitivity", "specificity", "hd_mm", "hd95_mm", "assd_mm", "nsd")
# Metrics that need both surfaces: with an empty mask their value is set by policy, not measured.
SURFACE_METRICS = frozenset({"hd_mm", "hd95_mm", "assd_mm", "nsd"})
FLAG_COLUMNS = ("empty_gt", "empty_pred")
METRICS_FILE = "metrics.csv"  # both levels, column ``level``
SUMMARY_FILE = "summary.json"
_CLASS_COLUMN = re.compile(r"^(?P<metric>[a-z0-9_]+)_c(?P<index>\d+)$")
# Reasons in the order the case-level note prefers them (most specific first).
_REASONS = ("missing prediction", "both empty", "empty GT", "empty prediction", "no value")


@dataclass
class MetricTables:
    """What :meth:`SegmentationMetrics.aggregate` returns."""

    per_case: pd.DataFrame  # one row per call but the patient-level ones
    per_patient: pd.DataFrame  # level == "patient" (empty when the rows have no ``patient``)
    summary: dict[str, Any]

    def table(self) -> pd.DataFrame:
        """Both levels in one frame, as written to ``metrics.csv``."""
        return pd.concat([self.per_patient, self.per_case], ignore_index=True)


class SegmentationMetrics:
    """Per-case segmentation metrics in mm, accumulated into tables (see the module docstring).

    ``workers`` threads the surface-distance queries (-1: every core; bit-identical to one thread).
    """

    def __init__(
        self,
        hd95_mode: HDMode = "pooled",
        nsd_tolerance_mm: float = 1.0,
        num_classes: int | None = None,
        workers: int = -1,
    ) -> None:
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be None (binary) or >= 2, got {num_classes}")
        self.hd95_mode = hd95_mode
        self.nsd_tolerance_mm = nsd_tolerance_mm
        self.num_classes = num_classes
        self.workers = workers
        self.rows: list[dict[str, Any]] = []

    def score(self, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
        """The metrics of one prediction (binary mask, or class-index map) against its ground truth."""
        if self.num_classes is None:
            return self._binary(pred, gt, spacing)
        row: dict[str, Any] = {}
        per_class = [self._binary(pred == c, gt == c, spacing) for c in range(1, self.num_classes)]
        for metric in METRIC_NAMES:
            row[metric] = float(np.mean([m[metric] for m in per_class]))
        row["empty_gt"] = not bool((gt > 0).any())
        row["empty_pred"] = not bool((pred > 0).any())
        for c, metrics in enumerate(per_class, start=1):
            row.update({f"{k}_c{c}": v for k, v in metrics.items()})
        return row

    def _binary(self, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
        return compute_segmentation_metrics(
            pred.astype(bool),
            gt.astype(bool),
            tuple(spacing),
            hd95_mode=self.hd95_mode,
            nsd_tolerance_mm=self.nsd_tolerance_mm,
            workers=self.workers,
        )

    def __call__(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        spacing: Sequence[float],
        *,
        extra: Mapping[str, Any] | None = None,
        **ids: Any,
    ) -> dict[str, Any]:
        """Score one case and keep its row: ``ids`` (e.g. ``level``, ``case``, ``patient``,
        ``slice_index``), the metrics, then ``extra`` (protocol values, paths, flags)."""
        if "case" not in ids:
            raise ValueError(f"a metric row needs a 'case' id, got ids {sorted(ids)}")
        row = {**ids, **self.score(pred, gt, spacing), **(extra or {})}
        self.rows.append(row)
        return row

    def reset(self) -> None:
        self.rows = []

    def aggregate(self) -> MetricTables:
        """Per-case and per-patient tables of the rows so far, and their summary."""
        if not self.rows:
            raise ValueError("nothing to aggregate: no case was scored")
        case_rows = [r for r in self.rows if r.get("level") != "patient"]
        patient_rows = [r for r in self.rows if r.get("level") == "patient"]
        per_case = pd.DataFrame(case_rows)
        summary: dict[str, Any] = {}
        if patient_rows:
            per_patient = pd.DataFrame(patient_rows)
        elif "patient" in per_case:
            per_patient = _patient_means(per_case)
        else:
            per_patient = per_case.iloc[0:0]
        if "patient" in per_patient:
            summary["per_patient"] = summarize_table(per_patient)
        summary["per_case"] = summarize_table(per_case)
        summary["hd95_mode"] = self.hd95_mode
        summary["nsd_tolerance_mm"] = self.nsd_tolerance_mm
        return MetricTables(per_case, per_patient, summary)


def _patient_means(per_case: pd.DataFrame) -> pd.DataFrame:
    """A patient's value is the mean over that patient's images; a flag holds if it holds for all."""
    numeric = [c for c in per_case.columns if c in METRIC_NAMES]
    grouped = per_case.groupby("patient", sort=True)
    per_patient = grouped[numeric].mean().reset_index()
    per_patient["empty_gt"] = grouped["empty_gt"].all().to_numpy()
    per_patient["empty_pred"] = grouped["empty_pred"].all().to_numpy()
    per_patient.insert(0, "level", "patient")
    per_patient.insert(1, "case", per_patient["patient"])
    per_patient["slice_index"] = -1
    return per_patient


def class_columns(table: pd.DataFrame) -> list[str]:
    """Per-class metric columns (``dice_c1``, …) in class order, then metric order."""
    found = [(int(m["index"]), m["metric"], c) for c in table.columns if (m := _CLASS_COLUMN.match(str(c)))]
    order = {metric: i for i, metric in enumerate(METRIC_NAMES)}
    return [c for i, metric, c in sorted(found, key=lambda t: (t[0], order.get(t[1], 99))) if metric in order]


def summarize_table(table: pd.DataFrame) -> dict[str, Any]:
    """Mean, median, std and bootstrap 95% CI per metric, plus the empty-mask counts."""
    out: dict[str, Any] = {"n": len(table)}
    for metric in METRIC_NAMES:
        if metric in table:
            out[metric] = summarize(table[metric].to_numpy(dtype=float))
    for column in class_columns(table):  # multi-class: dice_c1, hd95_mm_c1, …
        out[column] = summarize(table[column].to_numpy(dtype=float))
    for flag in FLAG_COLUMNS:
        if flag in table:
            out[f"n_{flag}"] = int(table[flag].sum())
    return out


def write_metric_tables(tables: MetricTables, out_dir: str | Path) -> tuple[Path, Path]:
    """``metrics.csv`` (both levels) and ``summary.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / METRICS_FILE
    write_csv_atomic(csv_path, tables.table(), index=False, float_format="%.6f")
    json_path = out / SUMMARY_FILE
    write_text_atomic(json_path, json.dumps(tables.summary, indent=2, default=_json_default))
    return csv_path, json_path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class CaseDice:
    """Per-case Dice from overlap counts summed over the pieces of a case (the slices of a volume).

    ``add_counts`` adds ``|P ∩ G|`` and ``|P| + |G|`` of a piece to its case; ``add_score`` records a
    Dice computed elsewhere (the class mean of a multi-class volume). ``aggregate`` gives every
    case's Dice in the order cases were first seen, the empty-mask policy applied
    (:func:`~medseg.metrics.functional.dice_from_counts`).
    """

    def __init__(self) -> None:
        self._counts: dict[str, list[float]] = {}
        self._scores: list[tuple[str, float]] = []

    def add_counts(self, case_id: str, intersection: float, total: float) -> None:
        counts = self._counts.setdefault(case_id, [0.0, 0.0])
        counts[0] += intersection
        counts[1] += total

    def add_score(self, case_id: str, dice: float) -> None:
        self._scores.append((case_id, dice))

    def aggregate(self) -> dict[str, float]:
        """Case → Dice (counted cases first, then scored ones)."""
        scores = {case: dice_from_counts(inter, total) for case, (inter, total) in self._counts.items()}
        scores.update(self._scores)
        return scores

    def mean(self) -> float:
        """Mean Dice over the cases (every recorded score counts); NaN with none."""
        values = [dice_from_counts(inter, total) for inter, total in self._counts.values()]
        values += [score for _, score in self._scores]
        return float(np.mean(values)) if values else float("nan")


# --- the usable-value policy ------------------------------------------------------------------


def _flag(row: Mapping[str, Any], name: str) -> bool:
    """A boolean column as read back from a CSV (``True`` / ``"True"``; NaN or missing: False)."""
    value = row.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return (
        bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False
    )


def unusable_reason(row: Mapping[str, Any], metric: str) -> str | None:
    """Why ``row`` has no usable value of ``metric`` (``None``: usable).

    A missing prediction, or a value that only the empty-mask policy sets: both masks empty
    (every metric but specificity), an empty ground truth (sensitivity and the surface metrics),
    an empty prediction (the surface metrics). Dice 0 for one empty mask is a real value and kept.
    """
    if _flag(row, "missing_pred"):
        return "missing prediction"
    value = row.get(metric)
    if value is None or not math.isfinite(float(value)):
        return "no value"
    empty_gt, empty_pred = _flag(row, "empty_gt"), _flag(row, "empty_pred")
    if metric == "specificity":
        return None
    if empty_gt and empty_pred:
        return "both empty"
    if empty_gt and (metric in SURFACE_METRICS or metric == "sensitivity"):
        return "empty GT"
    if empty_pred and metric in SURFACE_METRICS:
        return "empty prediction"
    return None


def case_reason(row: Mapping[str, Any]) -> str:
    """The case-level note: the most specific reason any metric of ``row`` is unusable ('' if none)."""
    reasons = {unusable_reason(row, m) for m in METRIC_NAMES if m in row}
    return next((reason for reason in _REASONS if reason in reasons), "")


def usable_values(rows: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
    """The usable values of ``metric`` among ``rows``, in row order."""
    return np.asarray([float(r[metric]) for r in rows if unusable_reason(r, metric) is None])
