"""Statistics of metric values: a seeded percentile-bootstrap CI of the mean, and ``summarize``.

* ``bootstrap_mean_ci``: the one bootstrap of medseg (summaries, and the report's paired Δ).
* ``summarize``: mean, median, std and the bootstrap CI of one metric's values.

Metric values are never NaN under the empty-mask policy of ``medseg.metrics.functional``; a NaN that
arrives here is an upstream bug and raises instead of being skipped. The tables themselves are built
by :class:`medseg.metrics.evaluation.SegmentationMetrics`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["bootstrap_mean_ci", "summarize"]


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
