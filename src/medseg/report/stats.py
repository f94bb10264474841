"""Statistics for the HTML report: per-metric descriptions and paired comparisons of two runs.

Paired comparison of run B against run A on the same cases (Δ = B − A per case):

* Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, zero differences dropped as in
  Wilcoxon's original test); p = 1 when every difference is zero;
* a seeded percentile-bootstrap 95% CI of the mean Δ (:func:`medseg.metrics.aggregate.bootstrap_mean_ci`,
  2000 resamples);
* win / tie / loss counts for B, with a tie when ``|Δ| <= tie_tolerance``; for a distance metric
  (lower is better) a win is a negative Δ.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import wilcoxon

from medseg.metrics.aggregate import bootstrap_mean_ci

# Resamples of the bootstrap CI of a paired mean Δ (the summaries of metrics.aggregate use 1000).
PAIRED_BOOTSTRAP_RESAMPLES = 2000
# Metrics where a smaller value is better (distances in mm); every other metric: larger is better.
LOWER_IS_BETTER = frozenset({"hd_mm", "hd95_mm", "assd_mm"})
DEFAULT_TIE_TOLERANCE = 1e-3
# Hausdorff (hd, hd95), average surface distances: the first word of a distance metric's name
DISTANCE_NAMES = re.compile(r"^(hd\d*|assd|asd|masd)$")


def higher_is_better(metric: str) -> bool:
    """True for overlap metrics (Dice, IoU, NSD, …), False for distances in mm, per class too
    (``hd95_mm``, ``hd95``, ``hd95_anterior``, ``assd_mm`` …)."""
    return metric not in LOWER_IS_BETTER and not DISTANCE_NAMES.match(metric.lower().split("_")[0])


def _finite(values: ArrayLike) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def describe(values: ArrayLike) -> dict[str, float | int]:
    """Mean ± SD (ddof=1), median [IQR], 5th/95th percentiles and n of the finite values.

    Percentiles use linear interpolation (``numpy.percentile``). With no finite value every
    statistic is NaN and ``n`` is 0.
    """
    v = _finite(values)
    if v.size == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "sd": nan, "median": nan, "q1": nan, "q3": nan, "p5": nan, "p95": nan}
    p5, q1, median, q3, p95 = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "p5": float(p5),
        "p95": float(p95),
    }


def win_tie_loss(
    delta: ArrayLike, tie_tolerance: float = DEFAULT_TIE_TOLERANCE, higher_better: bool = True
) -> tuple[int, int, int]:
    """Cases where B beats A, ties (``|Δ| <= tie_tolerance``), and loses; Δ = B − A."""
    if not tie_tolerance >= 0:
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance!r}")
    d = np.asarray(delta, dtype=np.float64).ravel()
    signed = d if higher_better else -d
    ties = np.abs(d) <= tie_tolerance
    wins = (signed > 0) & ~ties
    losses = (signed < 0) & ~ties
    return int(wins.sum()), int(ties.sum()), int(losses.sum())


def wilcoxon_p(delta: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p of the paired differences; 1.0 when all are zero."""
    d = np.asarray(delta, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("wilcoxon_p() got no differences")
    if np.isnan(d).any():
        raise ValueError("wilcoxon_p() got NaN differences")
    if not np.any(d != 0):
        return 1.0  # no evidence of any difference (scipy would divide by zero)
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """B against A on ``n`` shared cases of one metric (Δ = B − A)."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    mean_delta: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float
    wins: int
    ties: int
    losses: int
    tie_tolerance: float
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(
    a: ArrayLike,
    b: ArrayLike,
    metric: str = "dice",
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    n_boot: int = PAIRED_BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> PairedComparison:
    """Wilcoxon p, bootstrap 95% CI of the mean Δ and win/tie/loss of B over A (same case order)."""
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"paired values differ in length: {va.size} vs {vb.size}")
    keep = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[keep], vb[keep]
    if va.size == 0:
        raise ValueError(f"no case has a finite {metric} in both runs")
    delta = vb - va
    low, high = bootstrap_mean_ci(delta, n_boot=n_boot, seed=seed)
    better = higher_is_better(metric)
    wins, ties, losses = win_tie_loss(delta, tie_tolerance, better)
    return PairedComparison(
        metric=metric,
        n=int(delta.size),
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        mean_delta=float(delta.mean()),
        ci_low=low,
        ci_high=high,
        wilcoxon_p=wilcoxon_p(delta),
        wins=wins,
        ties=ties,
        losses=losses,
        tie_tolerance=float(tie_tolerance),
        higher_is_better=better,
    )
