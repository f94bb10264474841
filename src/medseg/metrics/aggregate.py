"""Aggregation of per-image / per-volume metrics into tables and summaries with bootstrap CIs.

* ``per_case_table``: one row per evaluated image (or volume): id columns + the metric dict.
* ``per_patient_table``: 2D sources with several images per patient → mean of the per-image metrics
  per patient (flags become counts / all-empty booleans).
* ``metrics_per_volume``: true 3D metrics from reassembled volumes (one row per volume).
* ``summarize`` / ``summary_table``: mean, median, std and a seeded percentile-bootstrap CI of the mean.

Metric values are never NaN under the empty-mask policy of ``medseg.metrics.functional``; a NaN that
arrives here is an upstream bug and raises instead of being skipped.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from medseg.metrics.functional import HDMode, compute_segmentation_metrics

__all__ = [
    "DEFAULT_METRICS",
    "ID_COLUMNS",
    "metrics_per_volume",
    "per_case_table",
    "per_patient_table",
    "bootstrap_mean_ci",
    "summarize",
    "summary_table",
]

ID_COLUMNS = ("case_id", "patient_id", "slice_index")
DEFAULT_METRICS = ("dice", "iou", "sensitivity", "specificity", "hd_mm", "hd95_mm", "assd_mm", "nsd")
FLAG_COLUMNS = ("empty_gt", "empty_pred")
_ALIASES = {"case": "case_id", "patient": "patient_id", "slice": "slice_index"}


def bootstrap_mean_ci(
    values: ArrayLike, n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean: ``n_boot`` resamples drawn with ``default_rng(seed)``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_mean_ci() got no values")
    if np.isnan(v).any():
        raise ValueError("bootstrap_mean_ci() got NaN values")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot!r}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def summarize(values: ArrayLike, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict[str, float]:
    """Mean, median, sample std (ddof=1; 0 for n=1) and a percentile-bootstrap CI of the mean.

    The bootstrap draws ``n_boot`` resamples with replacement using ``numpy.random.default_rng(seed)``,
    so the CI is deterministic for a given seed. Raises ValueError on NaN values or an empty input.
    Returns ``dict(mean, median, std, ci_low, ci_high, n)``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("summarize() got no values")
    if np.isnan(v).any():
        raise ValueError(
            f"summarize() got {int(np.isnan(v).sum())} NaN value(s) of {v.size}; metrics must not be NaN"
        )
    lo, hi = bootstrap_mean_ci(v, n_boot=n_boot, seed=seed, ci=ci)
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(v.size),
    }


def _flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in record.items():
        if key == "metrics" and isinstance(value, Mapping):
            row.update(value)
        else:
            row[_ALIASES.get(key, key)] = value
    return row


def per_case_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: ``case_id, patient_id, slice_index`` then the metric columns.

    A record holds ``case_id`` (or ``case``), optionally ``patient_id`` (or ``patient``; defaults to
    the case id) and ``slice_index`` (or ``slice``; defaults to None for volumes), and the metrics either
    at top level or nested under ``"metrics"`` (the dict of ``compute_segmentation_metrics``).
    """
    rows = []
    for i, rec in enumerate(records):
        row = _flatten(rec)
        if "case_id" not in row:
            raise ValueError(f"record {i} has no 'case_id' (or 'case'): keys {sorted(rec)}")
        row.setdefault("patient_id", row["case_id"])
        row.setdefault("slice_index", None)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    rest = [c for c in df.columns if c not in ID_COLUMNS]
    return df[list(ID_COLUMNS) + rest].reset_index(drop=True)


def per_patient_table(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of the per-image metrics per ``patient_id`` (2D sources with several images per patient).

    Columns: ``patient_id, n_images``, the mean of each metric, ``n_empty_gt`` / ``n_empty_pred``
    (images with an empty mask) and ``empty_gt`` / ``empty_pred`` (True when all the patient's images
    are empty), so that ``summary_table`` works on it unchanged.
    """
    if "patient_id" not in df.columns:
        raise ValueError("per_patient_table needs a 'patient_id' column (see per_case_table)")
    metrics = [m for m in (metrics or DEFAULT_METRICS) if m in df.columns]
    _check_no_nan(df, metrics)
    g = df.groupby("patient_id", sort=True)
    out = g[metrics].mean()
    out.insert(0, "n_images", g.size())
    for flag in FLAG_COLUMNS:
        if flag in df.columns:
            out[f"n_{flag}"] = g[flag].sum().astype(int)
            out[flag] = g[flag].all().astype(bool)
    return out.reset_index()


def metrics_per_volume(
    pred_volumes: Mapping[Hashable, np.ndarray],
    gt_volumes: Mapping[Hashable, np.ndarray],
    spacings: Mapping[Hashable, Sequence[float]] | Sequence[float],
    hd95_mode: HDMode = "pooled",
    nsd_tolerance_mm: float = 1.0,
) -> pd.DataFrame:
    """True 3D metrics from reassembled volumes: one row per volume id (``case_id = patient_id = id``).

    ``spacings`` is a dict id → (sz, sy, sx) or one spacing for all volumes. The id sets of
    ``pred_volumes`` and ``gt_volumes`` must be equal.
    """
    if set(pred_volumes) != set(gt_volumes):
        missing_pred = sorted(map(str, set(gt_volumes) - set(pred_volumes)))
        missing_gt = sorted(map(str, set(pred_volumes) - set(gt_volumes)))
        raise ValueError(
            f"volume ids differ: no prediction for {missing_pred}, no ground truth for {missing_gt}"
        )
    records = []
    for vid in gt_volumes:
        sp = spacings[vid] if isinstance(spacings, Mapping) else spacings
        m = compute_segmentation_metrics(
            pred_volumes[vid], gt_volumes[vid], sp, hd95_mode=hd95_mode, nsd_tolerance_mm=nsd_tolerance_mm
        )
        records.append({"case_id": vid, "patient_id": vid, "slice_index": None, "metrics": m})
    return per_case_table(records)


def _check_no_nan(df: pd.DataFrame, metrics: Sequence[str]) -> None:
    bad = [m for m in metrics if df[m].isna().any()]
    if bad:
        raise ValueError(f"NaN values in metric column(s) {bad}; metrics must not be NaN")


def summary_table(
    df: pd.DataFrame,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, dict[str, float]]:
    """``summarize`` of each metric column, plus ``"counts"``: ``{"n", "empty_gt", "empty_pred"}``.

    ``counts["empty_gt"]`` is the number of rows whose ``empty_gt`` flag is True (None when the column
    is absent). Raises ValueError for a missing metric column or NaN values.
    """
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"metric column(s) {missing} not in table columns {list(df.columns)}")
    _check_no_nan(df, metrics)
    out: dict[str, dict[str, Any]] = {
        m: summarize(df[m].to_numpy(dtype=np.float64), n_boot=n_boot, seed=seed, ci=ci) for m in metrics
    }
    out["counts"] = {"n": int(len(df))}
    for flag in FLAG_COLUMNS:
        out["counts"][flag] = int(df[flag].astype(bool).sum()) if flag in df.columns else None
    return out
