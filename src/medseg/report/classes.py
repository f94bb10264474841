"""The per-class part of the report, for a multi-class result (``metrics_per_class.csv``).

* the summary per class: n, Dice / IoU / HD95 / NSD over the usable values (the empty-class rule,
  :mod:`medseg.metrics.per_class`), the mean volume (or area) of ground truth and prediction, and
  how many cases miss the class in the ground truth, the prediction, or both;
* the legend: each class's name and its overlay colour (:func:`~medseg.report.figures.class_rgb`);
* the case × class table, worst Dice first, and the per-class distribution figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from medseg.metrics.per_class import SIZE_COLUMNS
from medseg.metrics.usable import flag, unusable_reason
from medseg.report.figures import class_rgb, distribution_png, hex_color
from medseg.report.formatting import METRIC_LABELS, data_uri, fmt, json_records, metric_digits, script_json
from medseg.report.stats import describe

CLASS_METRICS = ("dice", "iou", "hd95_mm", "nsd")
SIZE_LABELS = {
    "volume_gt_ml": "volume GT (mL)",
    "volume_pred_ml": "volume pred. (mL)",
    "area_gt_mm2": "area GT (mm²)",
    "area_pred_mm2": "area pred. (mm²)",
}


def _classes(per_class: pd.DataFrame) -> list[tuple[int, pd.DataFrame]]:
    return sorted(per_class.groupby("class_index"), key=lambda item: int(item[0]))


def class_legend(per_class: pd.DataFrame) -> list[dict[str, Any]]:
    """Each class in class order: ``index``, ``value``, ``name`` and its overlay ``color``."""
    return [
        {
            "index": int(index),
            "value": int(group["class_value"].iloc[0]),
            "name": str(group["class_name"].iloc[0]),
            "color": hex_color(class_rgb(position)),
        }
        for position, (index, group) in enumerate(_classes(per_class))
    ]


def class_summary_rows(per_class: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per class: the metrics over their usable values (mean ± SD, median), the mean sizes
    of ground truth and prediction, and the counts of cases without the class somewhere."""
    rows = []
    sizes = [c for c in SIZE_COLUMNS if c in per_class]
    for legend, (_, group) in zip(class_legend(per_class), _classes(per_class), strict=True):
        records = group.to_dict("records")
        gt_empty = [flag(r, "empty_gt") for r in records]
        pred_empty = [flag(r, "empty_pred") for r in records]
        row: dict[str, Any] = {
            **legend,
            "n": len(records),
            "n_absent": sum(g and p for g, p in zip(gt_empty, pred_empty, strict=True)),
            "n_missed": sum(p and not g for g, p in zip(gt_empty, pred_empty, strict=True)),
            "n_spurious": sum(g and not p for g, p in zip(gt_empty, pred_empty, strict=True)),
            "metrics": [],
            "sizes": [],
        }
        for metric in CLASS_METRICS:
            stats = describe([float(r[metric]) for r in records if unusable_reason(r, metric) is None])
            d = metric_digits(metric)
            row["metrics"].append(
                {
                    "n": stats["n"],
                    "mean_sd": f"{fmt(stats['mean'], d)} ± {fmt(stats['sd'], d)}",
                    "median": fmt(stats["median"], d),
                }
            )
        measured = [r for r in records if not flag(r, "missing_pred")]
        for column in sizes:
            values = [float(r[column]) for r in measured if np.isfinite(float(r[column]))]
            row["sizes"].append(fmt(float(np.mean(values)), 2) if values else "—")
        rows.append(row)
    return rows


def _table_columns(per_class: pd.DataFrame) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [
        {"key": "case", "label": "case", "type": "text"},
        {"key": "class_name", "label": "class", "type": "text"},
    ]
    for metric in CLASS_METRICS:
        columns.append(
            {"key": metric, "label": METRIC_LABELS[metric], "type": "num", "digits": metric_digits(metric)}
        )
    for column in SIZE_COLUMNS:
        if column in per_class:
            columns.append({"key": column, "label": SIZE_LABELS[column], "type": "num", "digits": 2})
    columns.append({"key": "note", "label": "note", "type": "text"})
    return columns


def classes_section(
    per_class: pd.DataFrame | None, anchors: Mapping[str, str], seed: int = 0
) -> dict[str, Any]:
    """The report context of the per-class part (``classes`` is None for a binary result);
    ``anchors`` maps a case to its overlay's id, so a row of the table jumps to it."""
    if per_class is None or per_class.empty:
        return {"classes": None}
    table = per_class.copy()
    table["case"] = table["case"].astype(str)
    table["note"] = table["note"].fillna("").astype(str) if "note" in table else ""
    order = table.assign(_dice=table["dice"].astype(float).fillna(np.inf)).sort_values(
        ["_dice", "case", "class_index"], kind="mergesort"
    )
    table = table.loc[order.index].reset_index(drop=True)  # worst Dice first
    extra = {case: {"anchor": anchors.get(case, ""), "note": ""} for case in table["case"]}
    by_name = {str(g["class_name"].iloc[0]): g for _, g in _classes(per_class)}
    metrics = [m for m in ("dice", "hd95_mm", "nsd") if m in per_class]
    return {
        "classes": {
            "legend": class_legend(per_class),
            "summary": class_summary_rows(per_class),
            "metric_labels": [METRIC_LABELS[m] for m in CLASS_METRICS],
            "size_labels": [SIZE_LABELS[c] for c in SIZE_COLUMNS if c in per_class],
            "n_rows": len(table),
            "rows_json": script_json(json_records(table)),
            "extra_json": script_json(extra),
            "columns_json": script_json(_table_columns(per_class)),
            "distribution": data_uri(
                distribution_png(by_name, metrics, seed, [c["color"] for c in class_legend(per_class)])
            ),
        }
    }
