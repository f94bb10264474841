"""Clinical measurements of a mask, in mL and mm: what a report gives besides overlap.

* **volume** (3D) in mL: voxel count × the voxel's volume (``prod(spacing)`` mm³) / 1000; **area**
  (2D) in mm². Exact for the voxelised mask; against the continuous object the error is the
  partial-volume of the boundary voxels (tested on a sphere).
* **longest in-plane diameter** in mm, RECIST 1.1 style (Eisenhauer et al. 2009): the longest
  segment between two points of the region within one axial slice (the last two axes), on the
  slice where it is longest. The region's extent is the corners of its boundary pixels, so a row
  of n pixels measures n pixels; the maximum pairwise distance is taken over the convex hull's
  vertices (scipy.spatial.ConvexHull), which hold the farthest pair.
* **components**: connected components with full connectivity (8 in 2D, 26 in 3D;
  :func:`scipy.ndimage.label`).
* **head circumference** (HC18, van den Heuvel et al. 2018): an ellipse is fitted to the mask's
  outer contour (sub-pixel marching squares, :func:`skimage.measure.find_contours`) by the direct
  least-squares method of Fitzgibbon, Pilu & Fisher (1999, IEEE TPAMI 21(5)) as
  :class:`skimage.measure.EllipseModel` implements it, in mm coordinates; its perimeter is
  Ramanujan's (1914) approximation ``π (3(a + b) − √((3a + b)(a + 3b)))`` for semi-axes a, b.
  The challenge scores the absolute difference to the reference HC in mm (mean ± std).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist


def _check(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim not in (2, 3):
        raise ValueError(f"measurements need a 2D or 3D mask, got shape {mask.shape}")
    if len(spacing) != mask.ndim or any(not s > 0 for s in spacing):
        raise ValueError(
            f"spacing {tuple(spacing)} does not fit a {mask.ndim}D mask (positive, one per axis)"
        )
    return mask


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a 3D mask in mL (cm³), from the voxel size ``prod(spacing)`` in mm³."""
    mask = _check(mask, spacing)
    if mask.ndim != 3:
        raise ValueError("volume_ml needs a 3D mask; use area_mm2 for 2D")
    return float(mask.sum()) * float(np.prod(spacing)) / 1000.0


def area_mm2(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Area of a 2D mask in mm²."""
    mask = _check(mask, spacing)
    if mask.ndim != 2:
        raise ValueError("area_mm2 needs a 2D mask")
    return float(mask.sum()) * float(spacing[0]) * float(spacing[1])


def slice_diameter_mm(mask2d: np.ndarray, spacing2d: Sequence[float]) -> float:
    """Longest segment within a 2D region in mm (corners of its pixels); 0 for an empty mask."""
    mask = _check(mask2d, spacing2d)
    if mask.ndim != 2:
        raise ValueError("slice_diameter_mm needs a 2D mask")
    if not mask.any():
        return 0.0
    boundary = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(boundary)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)]
    ).astype(float) * np.asarray(spacing2d, dtype=float)
    corners = np.unique(corners, axis=0)
    # pixel corners always span the plane, so the hull exists; its vertices hold the farthest pair
    corners = corners[ConvexHull(corners).vertices]
    return float(pdist(corners).max())


def longest_diameter_mm(mask: np.ndarray, spacing: Sequence[float]) -> tuple[float, int | None]:
    """RECIST-style longest in-plane diameter (mm) and the slice it is on (``None`` in 2D)."""
    mask = _check(mask, spacing)
    if mask.ndim == 2:
        return slice_diameter_mm(mask, spacing), None
    best, where = 0.0, None
    for z in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        d = slice_diameter_mm(mask[z], spacing[1:])
        if d > best:
            best, where = d, int(z)
    return best, where


def component_count(mask: np.ndarray) -> int:
    """Connected components with full connectivity (8-connected in 2D, 26 in 3D)."""
    mask = np.asarray(mask).astype(bool)
    _, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    return int(n)


def ramanujan_perimeter(a: float, b: float) -> float:
    """Ellipse perimeter for semi-axes ``a``, ``b`` (Ramanujan 1914, first approximation)."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def fit_ellipse_mm(
    mask2d: np.ndarray, spacing2d: Sequence[float]
) -> tuple[float, float, float, float, float] | None:
    """Direct least-squares ellipse (Fitzgibbon et al. 1999) through the mask's longest contour,
    in mm: ``(centre_y, centre_x, semi_axis_1, semi_axis_2, theta)``; ``None`` when the mask has
    too few contour points or the fit fails."""
    from skimage.measure import EllipseModel, find_contours

    mask = _check(mask2d, spacing2d)
    if mask.ndim != 2 or not mask.any():
        return None
    # pad so that a region touching the border still has a closed contour
    contours = find_contours(np.pad(mask.astype(float), 1), 0.5)
    contour = max(contours, key=len) - 1.0
    if len(contour) < 5:
        return None
    points = contour * np.asarray(spacing2d, dtype=float)
    model = EllipseModel.from_estimate(points)
    if not model:
        return None
    (cy, cx), (a1, a2), theta = model.center, model.axis_lengths, model.theta
    if not (np.isfinite([cy, cx, a1, a2]).all() and a1 > 0 and a2 > 0):
        return None
    return float(cy), float(cx), float(a1), float(a2), float(theta)


def head_circumference_mm(mask2d: np.ndarray, spacing2d: Sequence[float]) -> float:
    """Head circumference (mm) of a filled head mask: the perimeter of its fitted ellipse; NaN when
    no ellipse can be fitted (an empty or degenerate mask, flagged in the tables)."""
    fit = fit_ellipse_mm(mask2d, spacing2d)
    if fit is None:
        return float("nan")
    return ramanujan_perimeter(fit[2], fit[3])


def mask_measurements(mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume (3D, mL) or area (2D, mm²), longest in-plane diameter (mm) and component count."""
    mask = _check(mask, spacing)
    out: dict[str, float] = {}
    if mask.ndim == 3:
        out["volume_ml"] = volume_ml(mask, spacing)
    else:
        out["area_mm2"] = area_mm2(mask, spacing)
    out["diameter_mm"] = longest_diameter_mm(mask, spacing)[0]
    out["components"] = float(component_count(mask))
    return out


def labels_of(*label_maps: np.ndarray) -> list[int]:
    """The foreground labels present in any of the maps, sorted."""
    values: set[int] = set()
    for m in label_maps:
        values.update(int(v) for v in np.unique(m) if v != 0)
    return sorted(values) or [1]


def measurement_rows(
    case: str,
    pred: np.ndarray,
    spacing: Sequence[float],
    gt: np.ndarray | None = None,
    labels: Sequence[int] | None = None,
    reference_hc_mm: float | None = None,
) -> list[dict[str, Any]]:
    """One row per foreground label of a case: ``<measure>_pred`` (and with ``gt``: ``_gt`` and
    ``_error`` = pred − gt) for every measure of :func:`mask_measurements`.

    With ``reference_hc_mm`` (HC18's CSV value) the row also has ``hc_mm_pred``, ``hc_mm_gt`` (the
    same ellipse on the ground-truth mask), ``hc_mm_reference``, and the absolute differences
    ``hc_abs_diff_mm`` and ``hc_gt_abs_diff_mm`` (the method's floor).
    """
    pred = np.asarray(pred)
    labels = list(labels) if labels is not None else labels_of(pred, *(() if gt is None else (gt,)))
    rows = []
    for label in labels:
        row: dict[str, Any] = {"case": case, "label": int(label)}
        p = pred == label
        measured = mask_measurements(p, spacing)
        reference = mask_measurements(np.asarray(gt) == label, spacing) if gt is not None else None
        for key, value in measured.items():
            row[f"{key}_pred"] = value
            if reference is not None:
                row[f"{key}_gt"] = reference[key]
                row[f"{key}_error"] = value - reference[key]
        if reference_hc_mm is not None and p.ndim == 2:
            row["hc_mm_pred"] = head_circumference_mm(p, spacing)
            row["hc_mm_reference"] = float(reference_hc_mm)
            row["hc_abs_diff_mm"] = abs(row["hc_mm_pred"] - float(reference_hc_mm))
            if gt is not None:
                row["hc_mm_gt"] = head_circumference_mm(np.asarray(gt) == label, spacing)
                row["hc_gt_abs_diff_mm"] = abs(row["hc_mm_gt"] - float(reference_hc_mm))
        rows.append(row)
    return rows


def _stats(values: pd.Series) -> dict[str, float | int]:
    v = values.to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return {"n": 0, "n_missing": int(v.size)}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "n_missing": int(v.size - finite.size),
    }


def summarize_measurements(table: pd.DataFrame) -> dict[str, Any]:
    """Per label: mean ± std (sample) and median of each error column (pred − gt), of its absolute
    value, and of the HC absolute differences; NaN (no ellipse) is counted as ``n_missing``."""
    out: dict[str, Any] = {}
    if table.empty:
        return out
    for label, group in table.groupby("label", sort=True):
        entry: dict[str, Any] = {}
        for column in group.columns:
            if column.endswith("_error"):
                entry[column] = _stats(group[column])
                entry[f"abs_{column}"] = _stats(group[column].abs())
            elif column in ("hc_abs_diff_mm", "hc_gt_abs_diff_mm"):
                entry[column] = _stats(group[column])
        out[f"label_{int(label)}"] = entry
    return out
