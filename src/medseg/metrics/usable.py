"""Which metric values a summary may average: the usable-value rule of the empty-mask policy.

The empty-mask policy (:mod:`medseg.metrics.functional`) never gives NaN: an empty mask gets a value
set by the policy (Dice 1 for two empty masks, the image diagonal as the distance to an empty mask).
Such a value is not a measurement, so summaries, reports and paired statistics leave it out:
:func:`unusable_reason` is that one rule, for a row of a per-case or per-class table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FLAG_COLUMNS",
    "METRIC_NAMES",
    "SURFACE_METRICS",
    "case_reason",
    "flag",
    "unusable_reason",
    "usable_values",
]

# The metrics of every row, in table order (the keys of compute_segmentation_metrics but the flags).
METRIC_NAMES = ("dice", "iou", "sensitivity", "specificity", "hd_mm", "hd95_mm", "assd_mm", "nsd")
# Metrics that need both surfaces: with an empty mask their value is set by policy, not measured.
SURFACE_METRICS = frozenset({"hd_mm", "hd95_mm", "assd_mm", "nsd"})
FLAG_COLUMNS = ("empty_gt", "empty_pred")
# Reasons in the order the case-level note prefers them (most specific first).
_REASONS = ("missing prediction", "both empty", "empty GT", "empty prediction", "no value")


def flag(row: Mapping[str, Any], name: str) -> bool:
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
    if flag(row, "missing_pred"):
        return "missing prediction"
    value = row.get(metric)
    if value is None or not math.isfinite(float(value)):
        return "no value"
    empty_gt, empty_pred = flag(row, "empty_gt"), flag(row, "empty_pred")
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
