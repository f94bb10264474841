"""Calibration metrics for binary segmentation probabilities (pure numpy, float64).

Inputs
------
* ``probs``: foreground probability per voxel, any shape, finite, in ``[0, 1]``.
* ``labels``: binary ground truth of the same shape (bool, or numbers in ``{0, 1}``).
* ``mask``: optional boolean array of the same shape; only voxels where it is True are used. An empty
  selection gives NaN for every metric (there is nothing to measure), never an error.
Anything else (shape mismatch, NaN/inf, values outside ``[0, 1]``, non-binary labels) is a
``ValueError`` that names the problem.

Conventions (``convention=``)
-----------------------------
Each voxel is a binary classifier with ``p`` = foreground probability.

* ``"top_label"`` (default; Guo et al. 2017 for a 2-class problem): the predicted class is
  ``p >= 0.5`` (ties go to foreground), the *confidence* is ``max(p, 1 - p)`` (in ``[0.5, 1]``) and the
  *accuracy* of a bin is the fraction of its voxels whose predicted class equals the label.
* ``"foreground"`` (class-wise / marginal calibration of the foreground channel): the confidence is
  ``p`` itself and the accuracy of a bin is the observed frequency of the foreground class,
  ``mean(label)``. This is what MONAI's ``CalibrationErrorMetric`` computes per channel: on a one-hot
  ``(B, C, ...)`` input it bins each channel's probability against that channel's one-hot label, so for
  a binary task it measures the foreground channel (the background channel ``1 - p`` gives the same
  value up to ties on bin edges). MONAI's top-label value is obtained by feeding it
  ``y_pred = max(p, 1 - p)``, ``y = (p >= 0.5) == label`` as one channel; the tests check both
  relations to 1e-6.

Bins (``reliability_bins``, ECE, MCE): ``n_bins`` equal-width bins over ``[0, 1]``, edges
``linspace(0, 1, n_bins + 1)``; bin ``m`` (1-based) is ``((m - 1) / M, m / M]`` (Guo et al. 2017),
except that the first bin also holds 0. Both 0 and 1 are therefore included. This matches
``monai.metrics.calibration_binning(right=False)`` (``torch.bucketize`` on the upper edges, with the last
edge nudged to ``1 + eps`` so that 1 falls in the last bin). Under ``"top_label"`` the bins below 0.5
are always empty.

Metrics
-------
* ECE (Naeini et al. 2015; Guo et al. 2017): ``sum_m |B_m| / n * |acc(B_m) - conf(B_m)|``.
* MCE (same references): ``max_m |acc(B_m) - conf(B_m)|`` over non-empty bins.
* ACE, *adaptive* calibration error (Nixon et al. 2019, "Measuring Calibration in Deep Learning"):
  the voxels are sorted by confidence (stable sort) and cut into ``n_bins`` equal-mass bins with
  ``numpy.array_split`` (sizes differ by at most one; the first ``n % n_bins`` bins get the extra voxel);
  ``ACE = mean_r |acc(r) - conf(r)|`` over the non-empty bins. NB: MONAI's ``"average"`` reduction,
  also called ACE there (Barfoot et al. 2025), is a different quantity: the unweighted mean of
  ``|acc - conf|`` over the non-empty *equal-width* bins; it can be computed from ``reliability_bins``.
* Brier score, binary variant: ``mean((p - y)^2)`` over voxels. Brier's original multi-class score
  summed over both classes is exactly twice this. It is the same under both conventions.
* NLL, binary cross-entropy: ``-mean(log q)`` with ``q = p`` where ``y = 1`` and ``q = 1 - p`` where
  ``y = 0`` (i.e. ``-mean(y log p + (1 - y) log(1 - p))``), ``q`` clipped below at ``eps = 1e-12`` by
  default, so a confidently wrong voxel costs exactly ``-log(eps) ~ 27.63`` instead of infinity.

Region
------
``boundary_region(pred, gt, margin_voxels)`` is ``(pred | gt)`` dilated by a Euclidean ball of radius
``margin_voxels`` (in voxels): every voxel whose centre lies within ``margin_voxels`` of a voxel of
``pred | gt`` (``scipy.ndimage.distance_transform_edt``). ``margin_voxels = 0`` gives ``pred | gt``; an
empty union gives an empty region. ``calibration_metrics`` uses ``pred = probs >= 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "CONVENTIONS",
    "ace",
    "boundary_region",
    "brier",
    "calibration_metrics",
    "ece",
    "mce",
    "nll",
    "reliability_bins",
]

CONVENTIONS = ("top_label", "foreground")
DEFAULT_EPS = 1e-12


def _validate(probs: Any, labels: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p = np.asarray(probs)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"shape mismatch: probs has shape {p.shape} but labels has shape {y.shape}")
    if not (np.issubdtype(p.dtype, np.number) or p.dtype == bool):
        raise ValueError(f"probs must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if np.isnan(p).any():
        raise ValueError("probs contains NaN")
    if not np.isfinite(p).all():
        raise ValueError("probs contains infinite values")
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"probs must lie in [0, 1], got values in [{p.min()}, {p.max()}]")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"labels must be numeric or bool, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if np.isnan(y).any():
        raise ValueError("labels contains NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != p.shape:
            raise ValueError(f"shape mismatch: mask has shape {m.shape} but probs has shape {p.shape}")
        if m.dtype != bool:
            raise ValueError(f"mask must be a boolean array, got dtype {m.dtype}")
    return p, y, m


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    return int(n_bins)


def _confidence_and_hit(probs: Any, labels: Any, mask: Any, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (confidence, 0/1 hit) pairs of the selected voxels under ``convention``."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    p, y, m = _validate(probs, labels, mask)
    if m is not None:
        p, y = p[m], y[m]
    p, y = p.ravel(), y.ravel()
    if convention == "foreground":
        return p, y
    pred = p >= 0.5
    return np.maximum(p, 1.0 - p), (pred == (y == 1.0)).astype(np.float64)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    # searchsorted(side="left") on the inner edges: bin i holds (edge_i, edge_{i+1}], 0 -> bin 0, 1 -> last.
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner, conf, side="left")


def reliability_bins(
    probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label"
) -> dict[str, np.ndarray]:
    """Equal-width reliability bins (see the module docstring for the bin edges and conventions).

    Returns a dict of float64/int64 arrays: ``edges`` (``n_bins + 1``), ``count`` (voxels per bin),
    ``confidence`` (mean confidence per bin) and ``accuracy`` (accuracy, or observed foreground frequency
    under ``convention="foreground"``, per bin); the two means are NaN in empty bins.
    """
    n_bins = _check_n_bins(n_bins)
    conf, hit = _confidence_and_hit(probs, labels, mask, convention)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_hit = np.bincount(idx, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, sum_hit / np.maximum(count, 1), np.nan)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "confidence": mean_conf,
        "accuracy": acc,
    }


def ece(probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label") -> float:
    """Expected calibration error, ``sum_m |B_m|/n |acc(B_m) - conf(B_m)|`` (Guo et al. 2017)."""
    b = reliability_bins(probs, labels, n_bins, mask, convention)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    ok = b["count"] > 0
    gap = np.abs(b["accuracy"][ok] - b["confidence"][ok])
    return float(np.sum(b["count"][ok] * gap) / n)


def mce(probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label") -> float:
    """Maximum calibration error, ``max_m |acc(B_m) - conf(B_m)|`` over non-empty bins (Guo et al. 2017)."""
    b = reliability_bins(probs, labels, n_bins, mask, convention)
    ok = b["count"] > 0
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(b["accuracy"][ok] - b["confidence"][ok])))


def ace(probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label") -> float:
    """Adaptive calibration error with equal-mass bins (Nixon et al. 2019; see the module docstring)."""
    n_bins = _check_n_bins(n_bins)
    conf, hit = _confidence_and_hit(probs, labels, mask, convention)
    if conf.size == 0:
        return float("nan")
    order = np.argsort(conf, kind="stable")
    gaps = [
        abs(hit[chunk].mean() - conf[chunk].mean())
        for chunk in np.array_split(order, n_bins)
        if chunk.size > 0
    ]
    return float(np.mean(gaps))


def brier(probs: Any, labels: Any, mask: Any = None) -> float:
    """Binary Brier score ``mean((p - y)^2)`` (half of the two-class multi-class Brier score)."""
    p, y, m = _validate(probs, labels, mask)
    if m is not None:
        p, y = p[m], y[m]
    if p.size == 0:
        return float("nan")
    return float(np.mean((p - y) ** 2))


def nll(probs: Any, labels: Any, mask: Any = None, eps: float = DEFAULT_EPS) -> float:
    """Binary NLL ``-mean(log q)``, ``q`` = probability of the true class clipped below at ``eps``."""
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    p, y, m = _validate(probs, labels, mask)
    if m is not None:
        p, y = p[m], y[m]
    if p.size == 0:
        return float("nan")
    q = np.where(y == 1.0, p, 1.0 - p)
    return float(-np.mean(np.log(np.maximum(q, eps))))


def boundary_region(pred: Any, gt: Any, margin_voxels: float) -> np.ndarray:
    """``pred | gt`` dilated by a Euclidean ball of radius ``margin_voxels`` voxels (boolean array)."""
    a = np.asarray(pred)
    b = np.asarray(gt)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: pred has shape {a.shape} but gt has shape {b.shape}")
    if not np.isfinite(margin_voxels) or margin_voxels < 0:
        raise ValueError(f"margin_voxels must be finite and >= 0, got {margin_voxels}")
    union = (a != 0) | (b != 0)
    if not union.any():
        return np.zeros(union.shape, dtype=bool)
    return ndimage.distance_transform_edt(~union) <= margin_voxels


def calibration_metrics(
    probs: Any,
    labels: Any,
    n_bins: int = 15,
    region_margin: float = 5,
    convention: str = "top_label",
    eps: float = DEFAULT_EPS,
) -> dict[str, float]:
    """ECE, MCE, ACE, Brier and NLL over the whole image and in ``boundary_region(p >= 0.5, labels, margin)``.

    Keys: ``ece, mce, ace, brier, nll, n_voxels`` for the whole image and the same names with the suffix
    ``_region`` for the region (NaN metrics when the region is empty).
    """
    p, y, _ = _validate(probs, labels)
    region = boundary_region(p >= 0.5, y, region_margin)
    out: dict[str, float] = {}
    for suffix, m in (("", None), ("_region", region)):
        out[f"ece{suffix}"] = ece(p, y, n_bins, m, convention)
        out[f"mce{suffix}"] = mce(p, y, n_bins, m, convention)
        out[f"ace{suffix}"] = ace(p, y, n_bins, m, convention)
        out[f"brier{suffix}"] = brier(p, y, m)
        out[f"nll{suffix}"] = nll(p, y, m, eps)
        out[f"n_voxels{suffix}"] = int(p.size if m is None else m.sum())
    return out
