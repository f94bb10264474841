"""Per-class evaluation of a multi-class segmentation: one row per case and class, the case's mean
over its classes, and summaries per class and over classes.

A multi-class prediction is scored class by class on binary masks: ``pred == c`` against
``gt == c`` for class index c of a model's label map, or the label value v of a label-map file.
A class row holds the class (``class_index``, ``class_value``, ``class_name``), the metrics of
:func:`~medseg.metrics.functional.compute_segmentation_metrics` with their flags ``empty_gt`` /
``empty_pred``, the size of both masks (``volume_pred_ml`` / ``volume_gt_ml`` in mL for volumes,
``area_pred_mm2`` / ``area_gt_mm2`` in mm² for 2D images) and ``note`` (why a value is left out).

* ``class_index``: the model's output channel, 1..K−1 (0 is the background); for label-map files,
  the rank of the value among every label value of the evaluation.
* ``class_value``: the class's value in the label files (a checkpoint's ``class_values``).
* ``class_name``: the data set's label name (``Sample.meta["label_names"]``), else ``label <value>``.

The empty-class rule
--------------------
:data:`EMPTY_CLASS_RULE`, which is the binary empty-mask policy applied per class: a class absent
from both the prediction and the ground truth of a case gets the policy's values (Dice 1, IoU 1,
HD95 0 mm, NSD 1), is flagged ``empty_gt`` and ``empty_pred``, and is left out of every mean
(:func:`~medseg.metrics.usable.unusable_reason`). A class in only one of the two has Dice 0, which
counts, and no surface distance (HD, HD95, ASSD and NSD are left out). The case's value of a
metric is the mean over its classes with a usable value; with none, the mean of the policy values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medseg.metrics.aggregate import summarize
from medseg.metrics.functional import compute_segmentation_metrics
from medseg.metrics.usable import METRIC_NAMES, case_reason, flag, unusable_reason

__all__ = [
    "CLASS_COLUMNS",
    "EMPTY_CLASS_RULE",
    "PER_CLASS_FILE",
    "SIZE_COLUMNS",
    "ClassSpec",
    "absent_metrics",
    "class_row",
    "class_specs",
    "complete_classes",
    "default_name",
    "mask_sizes",
    "mean_over_classes",
    "summarize_classes",
]

PER_CLASS_FILE = "metrics_per_class.csv"
CLASS_COLUMNS = ("class_index", "class_value", "class_name")
SIZE_COLUMNS = ("volume_pred_ml", "volume_gt_ml", "area_pred_mm2", "area_gt_mm2")
EMPTY_CLASS_RULE = (
    "a class absent from both the prediction and the ground truth of a case is scored by the binary "
    "empty-mask policy (Dice 1, IoU 1, HD95 0 mm, NSD 1), flagged empty_gt and empty_pred, and left out "
    "of every mean but specificity's; a class in only one of them has Dice 0 (kept) and no surface "
    "distance (HD, HD95, ASSD, NSD left out); a case's value is the mean over its classes with a usable "
    "value (none usable: the mean of the policy values)"
)


@dataclass(frozen=True)
class ClassSpec:
    """One foreground class: its model channel (``None`` until known, for label files), its label
    value and its name."""

    index: int | None
    value: int
    name: str


def default_name(value: int) -> str:
    """The name of a class whose data set names none."""
    return f"label {int(value)}"


def class_specs(
    num_classes: int,
    class_values: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
) -> list[ClassSpec]:
    """The foreground classes 1..K−1: value ``class_values[c]`` (default c), name ``label_names[c]``
    (names of classes 0..K−1, background first; default ``label <value>``)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    values = list(range(num_classes)) if class_values is None else [int(v) for v in class_values]
    if len(values) != num_classes:
        raise ValueError(f"{len(values)} class_values {values} for {num_classes} classes")
    names = list(label_names) if label_names is not None and len(label_names) == num_classes else None
    return [
        ClassSpec(c, values[c], str(names[c]) if names is not None else default_name(values[c]))
        for c in range(1, num_classes)
    ]


def mask_sizes(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in mL (3D) or area in mm² (2D) of both masks, from the voxel size ``prod(spacing)``."""
    voxel = float(np.prod(np.asarray(spacing, dtype=np.float64)))
    n_pred, n_gt = float(np.count_nonzero(pred)), float(np.count_nonzero(gt))
    if np.ndim(gt) == 3:
        return {"volume_pred_ml": n_pred * voxel / 1000.0, "volume_gt_ml": n_gt * voxel / 1000.0}
    return {"area_pred_mm2": n_pred * voxel, "area_gt_mm2": n_gt * voxel}


def class_row(spec: ClassSpec, metrics: Mapping[str, Any], sizes: Mapping[str, float]) -> dict[str, Any]:
    """One row of the per-class table (without the case ids)."""
    row: dict[str, Any] = {"class_index": spec.index, "class_value": spec.value, "class_name": spec.name}
    row.update(metrics)
    row.update(sizes)
    row["note"] = case_reason(row)
    return row


def absent_metrics(ndim: int) -> dict[str, Any]:
    """The metrics of a class absent from both masks (the empty-mask policy; any shape gives these)."""
    empty = np.zeros((1,) * ndim, dtype=bool)
    return compute_segmentation_metrics(empty, empty, (1.0,) * ndim, workers=1)


def mean_over_classes(rows: Sequence[Mapping[str, Any]], ndim: int) -> dict[str, Any]:
    """A case's metrics from its class rows: per metric the mean over the classes with a usable
    value (none usable: over all classes); ``empty_gt`` / ``empty_pred`` hold when they hold for
    every class. A case without any class (``ndim`` spatial dims) scores as two empty masks."""
    if not rows:
        return absent_metrics(ndim)
    out: dict[str, Any] = {}
    for metric in METRIC_NAMES:
        usable = [float(r[metric]) for r in rows if unusable_reason(r, metric) is None]
        values = usable or [float(r[metric]) for r in rows]
        out[metric] = float(np.mean(values))
    out["empty_gt"] = all(flag(r, "empty_gt") for r in rows)
    out["empty_pred"] = all(flag(r, "empty_pred") for r in rows)
    return out


def complete_classes(
    cases: Sequence[tuple[Mapping[str, Any], int, list[dict[str, Any]]]],
) -> list[dict[str, Any]]:
    """The per-class table: every case (its ids, spatial dims and class rows) gets a row for every
    class seen in any case, the missing ones as absent from both masks (:func:`absent_metrics`).
    Classes without an index (label files) are numbered by value: 1, 2, … in ascending order."""
    specs: dict[int, ClassSpec] = {}
    for _, _, rows in cases:
        for row in rows:
            specs.setdefault(
                int(row["class_value"]), ClassSpec(row["class_index"], row["class_value"], row["class_name"])
            )
    ranks = {value: rank for rank, value in enumerate(sorted(specs), start=1)}
    table: list[dict[str, Any]] = []
    for ids, ndim, rows in cases:
        by_value = {int(r["class_value"]): r for r in rows}
        for value, spec in sorted(specs.items(), key=lambda item: (item[1].index or ranks[item[0]], item[0])):
            row = by_value.get(value)
            if row is None:
                zeros = np.zeros((1,) * ndim, dtype=bool)
                row = class_row(spec, absent_metrics(ndim), mask_sizes(zeros, zeros, (1.0,) * ndim))
            row = {**ids, **row}
            if row["class_index"] is None:
                row["class_index"] = ranks[value]
            row["note"] = case_reason(row)  # the case's flags count too (a missing prediction)
            table.append(row)
    return table


def summarize_classes(per_class: pd.DataFrame) -> dict[str, Any]:
    """``per_class`` (class name → the summary of that class) and ``over_classes`` (per metric, the
    mean of the class means), by the empty-class rule: every metric over its usable values (a metric
    without any is ``{"n": 0}``), sizes over the rows with a prediction."""
    classes: dict[str, Any] = {}
    over: dict[str, list[float]] = {m: [] for m in METRIC_NAMES}
    groups = sorted(per_class.groupby("class_index", sort=True), key=lambda item: int(item[0]))
    names = [str(group["class_name"].iloc[0]) for _, group in groups]
    for (index, group), name in zip(groups, names, strict=True):
        records = group.to_dict("records")
        key = name if names.count(name) == 1 else f"{name} ({int(group['class_value'].iloc[0])})"
        entry: dict[str, Any] = {
            "class_index": int(index),
            "class_value": int(group["class_value"].iloc[0]),
            "n": len(records),
            "n_both_empty": sum(flag(r, "empty_gt") and flag(r, "empty_pred") for r in records),
            "n_empty_gt": sum(flag(r, "empty_gt") for r in records),
            "n_empty_pred": sum(flag(r, "empty_pred") for r in records),
        }
        for metric in METRIC_NAMES:
            values = [float(r[metric]) for r in records if unusable_reason(r, metric) is None]
            entry[metric] = summarize(values) if values else {"n": 0}
            if values:
                over[metric].append(entry[metric]["mean"])
        measured = [r for r in records if not flag(r, "missing_pred")]
        for column in SIZE_COLUMNS:
            values = [float(r[column]) for r in measured if column in r and np.isfinite(float(r[column]))]
            if values:
                entry[column] = summarize(values)
        classes[key] = entry
    over_classes = {
        metric: {"mean": float(np.mean(means)), "n_classes": len(means)} if means else {"n_classes": 0}
        for metric, means in over.items()
    }
    return {"per_class": classes, "over_classes": over_classes, "empty_class_rule": EMPTY_CLASS_RULE}
