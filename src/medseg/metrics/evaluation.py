"""Evaluation as one object: per-case metric rows in, per-case / per-patient / summary tables out.

:class:`SegmentationMetrics` (after MONAI's ``CumulativeIterationMetric``) holds the configuration
(HD95 definition, NSD tolerance, class count); a call per case scores one prediction against its
ground truth, keeps the row and returns it; :meth:`SegmentationMetrics.aggregate` returns the
:class:`MetricTables`. :class:`CaseDice` accumulates the per-case Dice of training validation from
overlap counts. Both use the one empty-mask policy of :mod:`medseg.metrics.functional`
(:func:`dice_from_counts`), and :func:`unusable_reason` (:mod:`medseg.metrics.usable`, re-exported
here) is the one rule for which values a report may average (a value the policy sets rather than
measures is left out).

Rows of the per-case table carry the id keywords given to the call (``level``, ``case``, ``patient``,
``slice_index`` for a model evaluation; ``case`` alone for files), then the metrics, then ``extra``.
The per-patient table is the ``level == "patient"`` rows when there are any (3D: the whole-volume
metrics), else the mean of each patient's rows (2D sources with several images per patient).

Multi-class (``num_classes`` = K ≥ 2, or label files scored label by label through
:meth:`SegmentationMetrics.add_classes`): every foreground class is scored on its binary masks and
kept as a row of the per-class table (:mod:`medseg.metrics.per_class`: ``metrics_per_class.csv``,
one row per case and class, for every case but the slices of a volume). The case row holds the
mean over the classes by the empty-class rule (:data:`~medseg.metrics.per_class.EMPTY_CLASS_RULE`),
and ``empty_gt`` / ``empty_pred`` mean that no class has foreground there. The summary then has
``per_class`` (one summary per class, by name), ``over_classes`` (the mean of the class means) and
``empty_class_rule``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.io_utils import write_csv_atomic, write_text_atomic
from medseg.metrics.aggregate import summarize
from medseg.metrics.functional import HDMode, compute_segmentation_metrics, dice_from_counts
from medseg.metrics.per_class import (
    PER_CLASS_FILE,
    ClassSpec,
    class_row,
    class_specs,
    complete_classes,
    mask_sizes,
    mean_over_classes,
    summarize_classes,
)
from medseg.metrics.usable import (
    FLAG_COLUMNS,
    METRIC_NAMES,
    SURFACE_METRICS,
    case_reason,
    unusable_reason,
    usable_values,
)

__all__ = [
    "FLAG_COLUMNS",
    "METRICS_FILE",
    "METRIC_NAMES",
    "PER_CLASS_FILE",
    "SUMMARY_FILE",
    "SURFACE_METRICS",
    "CaseDice",
    "MetricTables",
    "SegmentationMetrics",
    "case_reason",
    "summarize_table",
    "unusable_reason",
    "usable_values",
    "write_metric_tables",
]

METRICS_FILE = "metrics.csv"  # both levels, column ``level``
SUMMARY_FILE = "summary.json"


@dataclass
class MetricTables:
    """What :meth:`SegmentationMetrics.aggregate` returns."""

    per_case: pd.DataFrame  # one row per call but the patient-level ones
    per_patient: pd.DataFrame  # level == "patient" (empty when the rows have no ``patient``)
    summary: dict[str, Any]
    per_class: pd.DataFrame | None = None  # multi-class: one row per case and class

    def table(self) -> pd.DataFrame:
        """Both levels in one frame, as written to ``metrics.csv``."""
        return pd.concat([self.per_patient, self.per_case], ignore_index=True)


class SegmentationMetrics:
    """Per-case segmentation metrics in mm, accumulated into tables (see the module docstring).

    ``num_classes`` = K makes a call score a class-index map class by class (classes 1..K−1;
    ``classes`` gives their label values and names, :func:`~medseg.metrics.per_class.class_specs`).
    ``workers`` threads the surface-distance queries (-1: every core; bit-identical to one thread).
    """

    def __init__(
        self,
        hd95_mode: HDMode = "pooled",
        nsd_tolerance_mm: float = 1.0,
        num_classes: int | None = None,
        workers: int = -1,
        classes: Sequence[ClassSpec] | None = None,
    ) -> None:
        if num_classes is not None and num_classes < 2:
            raise ValueError(f"num_classes must be None (binary) or >= 2, got {num_classes}")
        if classes is not None and num_classes is None:
            raise ValueError("classes need num_classes (a class-index map)")
        self.hd95_mode = hd95_mode
        self.nsd_tolerance_mm = nsd_tolerance_mm
        self.num_classes = num_classes
        if classes is None and num_classes is not None:
            classes = class_specs(num_classes)
        self.classes = None if classes is None else list(classes)
        self.workers = workers
        self.rows: list[dict[str, Any]] = []
        # per case scored by class (but slices): its ids, spatial dims and class rows
        self._class_cases: list[tuple[dict[str, Any], int, list[dict[str, Any]]]] = []

    def score(self, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
        """The metrics of one prediction (binary mask, or class-index map) against its ground truth."""
        if self.classes is None:
            return self._binary(pred, gt, spacing)
        return self._score_classes(self._class_pairs(pred, gt), spacing)[0]

    def _binary(self, pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, Any]:
        return compute_segmentation_metrics(
            pred.astype(bool),
            gt.astype(bool),
            tuple(spacing),
            hd95_mode=self.hd95_mode,
            nsd_tolerance_mm=self.nsd_tolerance_mm,
            workers=self.workers,
        )

    def _class_pairs(
        self, pred: np.ndarray, gt: np.ndarray
    ) -> list[tuple[ClassSpec, np.ndarray, np.ndarray]]:
        assert self.classes is not None
        return [(spec, pred == spec.index, gt == spec.index) for spec in self.classes]

    def _score_classes(
        self, pairs: Sequence[tuple[ClassSpec, np.ndarray, np.ndarray]], spacing: Sequence[float]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rows = [
            class_row(spec, self._binary(pred, gt, spacing), mask_sizes(pred, gt, spacing))
            for spec, pred, gt in pairs
        ]
        return mean_over_classes(rows, len(spacing)), rows

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
        if self.classes is not None:
            return self.add_classes(self._class_pairs(pred, gt), spacing, extra=extra, **ids)
        _check_ids(ids)
        row = {**ids, **self._binary(pred, gt, spacing), **(extra or {})}
        self.rows.append(row)
        return row

    def add_classes(
        self,
        pairs: Sequence[tuple[ClassSpec, np.ndarray, np.ndarray]],
        spacing: Sequence[float],
        *,
        extra: Mapping[str, Any] | None = None,
        **ids: Any,
    ) -> dict[str, Any]:
        """Score one case given per class, ``(class, prediction mask, ground-truth mask)``, and keep
        its row (the mean over the classes) and, unless ``level`` is ``"slice"``, its class rows. A
        class missing here but scored in another case counts as absent from both masks."""
        _check_ids(ids)
        mean, class_rows = self._score_classes(pairs, spacing)
        row = {**ids, **mean, **(extra or {})}
        self.rows.append(row)
        if ids.get("level") != "slice":
            self._class_cases.append(({**ids, **(extra or {})}, len(spacing), class_rows))
        return row

    def reset(self) -> None:
        self.rows = []
        self._class_cases = []

    def aggregate(self) -> MetricTables:
        """Per-case, per-patient and per-class tables of the rows so far, and their summary."""
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
        per_class = None
        if self._class_cases:
            per_class = pd.DataFrame(complete_classes(self._class_cases))
            summary.update(summarize_classes(per_class))
        return MetricTables(per_case, per_patient, summary, per_class)


def _check_ids(ids: Mapping[str, Any]) -> None:
    if "case" not in ids:
        raise ValueError(f"a metric row needs a 'case' id, got ids {sorted(ids)}")


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


def summarize_table(table: pd.DataFrame) -> dict[str, Any]:
    """Mean, median, std and bootstrap 95% CI per metric, plus the empty-mask counts."""
    out: dict[str, Any] = {"n": len(table)}
    for metric in METRIC_NAMES:
        if metric in table:
            out[metric] = summarize(table[metric].to_numpy(dtype=float))
    for flag in FLAG_COLUMNS:
        if flag in table:
            out[f"n_{flag}"] = int(table[flag].sum())
    return out


def write_metric_tables(tables: MetricTables, out_dir: str | Path) -> tuple[Path, Path]:
    """``metrics.csv`` (both levels) and ``summary.json`` in ``out_dir``, and ``metrics_per_class.csv``
    when the tables have classes (each written atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / METRICS_FILE
    write_csv_atomic(csv_path, tables.table(), index=False, float_format="%.6f")
    if tables.per_class is not None and not tables.per_class.empty:
        write_csv_atomic(out / PER_CLASS_FILE, tables.per_class, index=False, float_format="%.6f")
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
