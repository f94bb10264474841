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

Across cases
------------
``CalibrationAccumulator`` pools voxels of many cases (the pooled values equal the functions above on
the concatenated voxels). ``aurc`` ranks cases by uncertainty (risk–coverage curve), ``spearman``
correlates a per-case uncertainty with a per-case score, and ``fit_temperature`` fits temperature
scaling on foreground logits by minimising the NLL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "CONVENTIONS",
    "CalibrationAccumulator",
    "ace",
    "aurc",
    "binary_nll_from_logits",
    "boundary_region",
    "brier",
    "calibration_metrics",
    "ece",
    "fit_temperature",
    "mce",
    "nll",
    "reliability_bins",
    "spearman",
]

CONVENTIONS = ("top_label", "foreground")
# The files of an evaluation with calibration (written by ``medseg.engine.calibrate``, read by the report).
RELIABILITY_FILE = "reliability.csv"
CALIBRATION_CASES_FILE = "calibration_cases.csv"
CALIBRATION_FILE = "calibration.json"
RELIABILITY_COLUMNS = ["region", "bin", "lower", "upper", "count", "mean_confidence", "accuracy"]
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


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


def _selected(probs: Any, labels: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated, flattened float64 (probability, label) of the voxels selected by ``mask``."""
    p, y, m = _validate(probs, labels, mask)
    if m is not None:
        p, y = p[m], y[m]
    return p.ravel(), y.ravel()


def _conf_hit(p: np.ndarray, y: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    if convention == "foreground":
        return p, y
    return np.maximum(p, 1.0 - p), ((p >= 0.5) == (y == 1.0)).astype(np.float64)


def _confidence_and_hit(probs: Any, labels: Any, mask: Any, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (confidence, 0/1 hit) pairs of the selected voxels under ``convention``."""
    _check_convention(convention)
    return _conf_hit(*_selected(probs, labels, mask), convention)


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
    return _bins_from_sums(*_bin_sums(conf, hit, n_bins))


def _bin_sums(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin voxel count, sum of confidences and sum of hits."""
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    return (
        count,
        np.bincount(idx, weights=conf, minlength=n_bins),
        np.bincount(idx, weights=hit, minlength=n_bins),
    )


def _bins_from_sums(count: np.ndarray, sum_conf: np.ndarray, sum_hit: np.ndarray) -> dict[str, np.ndarray]:
    n_bins = count.size
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
    return _ece_from_bins(reliability_bins(probs, labels, n_bins, mask, convention))


def _ece_from_bins(b: dict[str, np.ndarray]) -> float:
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    ok = b["count"] > 0
    gap = np.abs(b["accuracy"][ok] - b["confidence"][ok])
    return float(np.sum(b["count"][ok] * gap) / n)


def mce(probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label") -> float:
    """Maximum calibration error, ``max_m |acc(B_m) - conf(B_m)|`` over non-empty bins (Guo et al. 2017)."""
    return _mce_from_bins(reliability_bins(probs, labels, n_bins, mask, convention))


def _mce_from_bins(b: dict[str, np.ndarray]) -> float:
    ok = b["count"] > 0
    if not ok.any():
        return float("nan")
    return float(np.max(np.abs(b["accuracy"][ok] - b["confidence"][ok])))


def ace(probs: Any, labels: Any, n_bins: int = 15, mask: Any = None, convention: str = "top_label") -> float:
    """Adaptive calibration error with equal-mass bins (Nixon et al. 2019; see the module docstring)."""
    n_bins = _check_n_bins(n_bins)
    conf, hit = _confidence_and_hit(probs, labels, mask, convention)
    return _ace_from(conf, hit, n_bins)


def _ace_from(conf: np.ndarray, hit: np.ndarray, n_bins: int) -> float:
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


class CalibrationAccumulator:
    """Pooled calibration over many cases: every voxel of every case counts once.

    ``add`` each case (optionally restricted to a ``mask``); ``reliability()`` and ``metrics()`` then
    give exactly what the functions above give on all the selected voxels concatenated. The bins,
    Brier and NLL are running sums; ACE needs one global sort, so the confidences (float64) and hits
    (bool) of the selected voxels are kept, 9 bytes per voxel.
    """

    def __init__(self, n_bins: int = 15, convention: str = "top_label", eps: float = DEFAULT_EPS) -> None:
        self.n_bins = _check_n_bins(n_bins)
        self.convention = _check_convention(convention)
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
        self.eps = eps
        self._count = np.zeros(self.n_bins, dtype=np.int64)
        self._sum_conf = np.zeros(self.n_bins)
        self._sum_hit = np.zeros(self.n_bins)
        self._sum_sq = 0.0
        self._sum_nll = 0.0
        self._conf: list[np.ndarray] = []
        self._hit: list[np.ndarray] = []

    @property
    def n_voxels(self) -> int:
        return int(self._count.sum())

    def add(self, probs: Any, labels: Any, mask: Any = None) -> None:
        """Add the voxels of one case (where ``mask`` is True, all without a mask)."""
        p, y = _selected(probs, labels, mask)
        conf, hit = _conf_hit(p, y, self.convention)
        count, sum_conf, sum_hit = _bin_sums(conf, hit, self.n_bins)
        self._count += count
        self._sum_conf += sum_conf
        self._sum_hit += sum_hit
        self._sum_sq += float(np.sum((p - y) ** 2))
        q = np.where(y == 1.0, p, 1.0 - p)
        self._sum_nll += float(-np.sum(np.log(np.maximum(q, self.eps))))
        self._conf.append(conf)
        self._hit.append(hit.astype(bool))

    def reliability(self) -> dict[str, np.ndarray]:
        """:func:`reliability_bins` of all the voxels added so far."""
        return _bins_from_sums(self._count, self._sum_conf, self._sum_hit)

    def metrics(self) -> dict[str, float]:
        """``ece, mce, ace, brier, nll, n_voxels`` of all the voxels added (NaN metrics when none)."""
        n = self.n_voxels
        bins = self.reliability()
        conf = np.concatenate(self._conf) if self._conf else np.zeros(0)
        hit = np.concatenate(self._hit).astype(np.float64) if self._hit else np.zeros(0)
        return {
            "ece": _ece_from_bins(bins),
            "mce": _mce_from_bins(bins),
            "ace": _ace_from(conf, hit, self.n_bins),
            "brier": self._sum_sq / n if n else float("nan"),
            "nll": self._sum_nll / n if n else float("nan"),
            "n_voxels": n,
        }


def _finite_1d(name: str, values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def aurc(uncertainty: Any, risk: Any) -> float:
    """Area under the risk–coverage curve (Geifman et al. 2019; Ding et al. 2020), lower is better.

    Cases are ranked from the most certain (lowest ``uncertainty``) to the least certain; at coverage
    ``k / n`` the selective risk is the mean ``risk`` of the ``k`` most certain cases, and
    ``AURC = (1/n) sum_{k=1..n} mean(risk of the k most certain)``. Tied uncertainties get their mean
    risk, which is the expected AURC over every order of the tied cases. E.g. ``risk = 1 - Dice``.
    """
    u = _finite_1d("uncertainty", uncertainty)
    r = _finite_1d("risk", risk)
    if u.shape != r.shape:
        raise ValueError(f"shape mismatch: uncertainty has shape {u.shape} but risk has shape {r.shape}")
    if u.size == 0:
        return float("nan")
    order = np.argsort(u, kind="stable")
    u, r = u[order], r[order]
    _, start, size = np.unique(u, return_index=True, return_counts=True)
    tied = np.repeat(np.add.reduceat(r, start) / size, size)
    selective = np.cumsum(tied) / np.arange(1, u.size + 1)
    return float(selective.mean())


def spearman(x: Any, y: Any) -> tuple[float, float, int]:
    """Spearman's rank correlation ``(rho, two-sided p, n)`` over the pairs where both are finite.

    ``scipy.stats.spearmanr`` (average ranks for ties; p from the t distribution). Fewer than 3
    pairs, or a constant side, gives ``(nan, nan, n)``.
    """
    from scipy import stats

    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: x has shape {a.shape} but y has shape {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan"), n
    result = stats.spearmanr(a, b)
    return float(result.statistic), float(result.pvalue), n


def binary_nll_from_logits(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)``: ``mean(log(1 + e^(z/T)) - y z / T)``."""
    z = np.asarray(logits, dtype=np.float64).ravel() / temperature
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"shape mismatch: logits has {z.size} values but labels has {y.size}")
    if z.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising the NLL of ``sigmoid(z / T)``.

    One scalar for the foreground logit of every voxel, found by a bounded 1D search over ``log T``
    (Brent, ``scipy.optimize.minimize_scalar``) within ``bounds``. Fit it on data that is not used to
    report the calibrated metrics (fitting and reporting on the same split is optimistic).
    """
    from scipy import optimize

    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape:
        raise ValueError(f"shape mismatch: logits has {z.size} values but labels has {y.size}")
    if z.size == 0:
        raise ValueError("fit_temperature needs at least one voxel")
    if not np.isfinite(z).all():
        raise ValueError("logits contains NaN or infinite values")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be binary (0/1 or bool)")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    res = optimize.minimize_scalar(
        lambda log_t: binary_nll_from_logits(z, y, float(np.exp(log_t))),
        bounds=(np.log(lo), np.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))
