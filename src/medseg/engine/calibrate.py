"""Calibration of a binary model on an evaluation split (``medseg evaluate CKPT --calibration``).

Every evaluated sample is one *case*: a whole volume (a 2D model's slices together, or a 3D model's
volume) or one 2D image, named as the ``case`` of its per-volume / per-image row in ``metrics.csv``
(where its Dice comes from). For each case the foreground probability ``p`` (thresholded for the
masks; with ``uncertainty`` the merged sample mean, see :mod:`medseg.engine.uncertainty`) is compared
with the binary ground truth ``gt > 0``:

* over the whole image, and in the region ``boundary_region(p >= threshold, gt, margin)``: the union
  of prediction and ground truth dilated by a Euclidean ball of ``region_margin_voxels`` voxels
  (default 5; voxels, not mm: it is a neighbourhood at the evaluated resolution);
* ECE, MCE (equal-width bins, default 15, edges ``linspace(0, 1, n_bins + 1)`` so 0 and 1 are
  included), ACE (equal-mass bins), the binary Brier score ``mean((p - y)^2)`` and the NLL, all with
  the top-label convention of :mod:`medseg.metrics.calibration`;
* *pooled* (all voxels of all cases together) and *mean of cases* (per-case values, NaN ignored).

The uncertainty of a case is its mean predictive entropy in the region (``mean_entropy_region``,
nats; without sampling the Bernoulli entropy of ``p``); with sampling its mean mutual information
there too (``mean_mi_region``). ``calibration.json`` holds Spearman's ρ between that uncertainty and
Dice, and the AURC with cases ranked by it and risk ``1 - Dice`` (:func:`~medseg.metrics.calibration.aurc`).

Files in the evaluation folder:

* ``reliability.csv``: ``region,bin,lower,upper,count,mean_confidence,accuracy`` (pooled; ``region`` is
  ``whole`` or ``region``; ``bin`` counts from 0; empty bins have empty means);
* ``calibration_cases.csv``: ``case,dice,ece_whole,…,nll_whole,ece_region,…,nll_region,
  mean_entropy_region`` (``,mean_mi_region`` with sampling);
* ``calibration.json``: the settings, ``pooled``, ``mean_of_cases`` and the uncertainty–Dice analysis.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medseg.config import Config
from medseg.data.sample import Sample
from medseg.engine.inference import SlidingWindow
from medseg.engine.predict import predict_probabilities
from medseg.engine.uncertainty import UncertaintyOptions, binary_entropy, predict_uncertainty
from medseg.errors import ConfigError
from medseg.io_utils import write_csv_atomic, write_text_atomic
from medseg.metrics.calibration import (
    CALIBRATION_CASES_FILE,
    CALIBRATION_FILE,
    RELIABILITY_COLUMNS,
    RELIABILITY_FILE,
    CalibrationAccumulator,
    aurc,
    boundary_region,
    spearman,
)
from medseg.metrics.evaluation import MetricTables

METRICS = ("ece", "mce", "ace", "brier", "nll")
REGIONS = ("whole", "region")
CASES_FILE = CALIBRATION_CASES_FILE
JSON_FILE = CALIBRATION_FILE
BRIER_VARIANT = "binary foreground Brier: mean((p - y)^2) over voxels (half the two-class multi-class score)"
AURC_DEFINITION = (
    "cases ranked by mean_entropy_region, most certain first; selective risk at coverage k/n = mean "
    "(1 - Dice) of the k most certain cases; AURC = mean of the selective risks over k = 1..n "
    "(ties: expected value over their orders); lower is better"
)


@dataclass(frozen=True)
class CalibrationOptions:
    """``n_bins`` equal-width bins, the region margin in voxels, optional sampled ``uncertainty``."""

    n_bins: int = 15
    region_margin_voxels: float = 5.0
    uncertainty: UncertaintyOptions | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 1:
            raise ConfigError(f"the number of calibration bins must be an integer >= 1, got {self.n_bins!r}")
        if not math.isfinite(self.region_margin_voxels) or self.region_margin_voxels < 0:
            raise ConfigError(f"the region margin must be >= 0 voxels, got {self.region_margin_voxels}")


def case_columns(with_mi: bool) -> list[str]:
    """The columns of ``calibration_cases.csv``."""
    columns = ["case", "dice"]
    columns += [f"{m}_{r}" for r in REGIONS for m in METRICS]
    columns.append("mean_entropy_region")
    if with_mi:
        columns.append("mean_mi_region")
    return columns


def _mean_in(values: np.ndarray | None, region: np.ndarray) -> float:
    if values is None or not region.any():
        return float("nan")
    return float(np.mean(values[region], dtype=np.float64))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class CalibrationCollector:
    """The predictor :func:`~medseg.engine.evaluate.evaluate_model` calls for each sample.

    Called on a sample, it predicts (plainly, or sampled with ``options.uncertainty``), records the
    case's calibration and uncertainty, and returns the foreground probability for the usual
    metrics. :meth:`write` then writes the three files once the evaluation's Dice values exist.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: Config,
        device: torch.device,
        window: SlidingWindow | None,
        options: CalibrationOptions,
        threshold: float,
    ) -> None:
        if model.num_classes is not None:
            raise ConfigError("calibration is for binary models (one foreground probability per voxel)")
        if model.promptable:
            raise ConfigError("calibration is not available for promptable (box-prompted) models")
        self.model = model
        self.cfg = cfg
        self.device = device
        self.window = window
        self.options = options
        self.threshold = threshold
        self.pooled = {r: CalibrationAccumulator(options.n_bins) for r in REGIONS}
        self.rows: list[dict[str, Any]] = []
        self.n_samples = 1

    @property
    def with_mi(self) -> bool:
        return self.options.uncertainty is not None

    def __call__(self, sample: Sample) -> np.ndarray:
        data = self.cfg.data
        mi = None
        if self.options.uncertainty is None:
            probs = predict_probabilities(
                self.model,
                sample,
                data.image_size,
                data.intensity,
                self.device,
                window=self.window,
                tta_flips=self.cfg.inference.tta_flips,
            )
            entropy = binary_entropy(torch.from_numpy(probs.astype(np.float64))).numpy()
        else:
            maps = predict_uncertainty(
                self.model,
                sample,
                data.image_size,
                data.intensity,
                self.device,
                self.options.uncertainty,
                window=self.window,
                tta_axes=self.cfg.inference.tta_axes,
                name=self.cfg.model.name,
            )
            probs, entropy, mi = maps.probability, maps.entropy, maps.mutual_information
            self.n_samples = maps.n_samples
        probs = np.clip(probs.astype(np.float64), 0.0, 1.0)
        gt = sample.target_mask > 0
        region = boundary_region(probs >= self.threshold, gt, self.options.region_margin_voxels)
        row: dict[str, Any] = {"case": sample.case_id, "_volume": sample.ndim == 3, "_key": sample.key}
        for name, mask in (("whole", None), ("region", region)):
            case = CalibrationAccumulator(self.options.n_bins)
            case.add(probs, gt, mask)
            self.pooled[name].add(probs, gt, mask)
            row.update({f"{m}_{name}": v for m, v in case.metrics().items() if m in METRICS})
        row["mean_entropy_region"] = _mean_in(entropy, region)
        if self.with_mi:
            row["mean_mi_region"] = _mean_in(mi, region)
        self.rows.append(row)
        return probs

    def cases(self, result: MetricTables) -> pd.DataFrame:
        """Per-case table; Dice from the evaluation's per-volume (3D) or per-image (2D) rows
        (a 2D image's row is found by its :attr:`~medseg.data.sample.Sample.key`)."""
        volume_dice = dict(zip(result.per_patient["case"], result.per_patient["dice"], strict=True))
        image_dice = dict(zip(result.per_case["case"], result.per_case["dice"], strict=True))
        records = []
        for row in self.rows:
            case = row["case"] if row["_volume"] else row["_key"]
            dice = (volume_dice if row["_volume"] else image_dice).get(case, float("nan"))
            records.append({**row, "case": case, "dice": float(dice)})
        return pd.DataFrame(records, columns=case_columns(self.with_mi))

    def reliability(self) -> pd.DataFrame:
        """Pooled reliability bins of both regions (``RELIABILITY_COLUMNS``)."""
        rows = []
        for name in REGIONS:
            b = self.pooled[name].reliability()
            for i in range(self.options.n_bins):
                rows.append(
                    {
                        "region": name,
                        "bin": i,
                        "lower": b["edges"][i],
                        "upper": b["edges"][i + 1],
                        "count": int(b["count"][i]),
                        "mean_confidence": b["confidence"][i],
                        "accuracy": b["accuracy"][i],
                    }
                )
        return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)

    def summary(self, cases: pd.DataFrame) -> dict[str, Any]:
        """The content of ``calibration.json``."""
        pooled: dict[str, Any] = {}
        for name in REGIONS:
            metrics = self.pooled[name].metrics()
            pooled.update({f"{m}_{name}": metrics[m] for m in METRICS})
            pooled[f"n_voxels_{name}"] = metrics["n_voxels"]
        numeric = [c for c in cases.columns if c not in ("case", "dice")]
        mean_of_cases = {c: float(np.nanmean(cases[c])) if cases[c].notna().any() else None for c in numeric}
        u = cases["mean_entropy_region"].to_numpy(dtype=float)
        dice = cases["dice"].to_numpy(dtype=float)
        rho, p, n = spearman(u, dice)
        keep = np.isfinite(u) & np.isfinite(dice)
        risk = 1.0 - dice[keep]
        uncertainty = self.options.uncertainty
        return _nan_to_none(
            {
                "n_cases": len(cases),
                "n_bins": self.options.n_bins,
                "bin_edges": "linspace(0, 1, n_bins + 1); bin m holds (lower, upper], the first also 0",
                "convention": "top_label: confidence max(p, 1 - p), accuracy (p >= 0.5) == label",
                "brier_variant": BRIER_VARIANT,
                "nll": "binary cross-entropy, probability of the true class clipped below at 1e-12",
                "threshold": self.threshold,
                "region": "(prediction | ground truth) dilated by a Euclidean ball of region_margin_voxels",
                "region_margin_voxels": self.options.region_margin_voxels,
                "uncertainty": {
                    "method": None if uncertainty is None else uncertainty.method,
                    "merge": None if uncertainty is None else uncertainty.merge,
                    "n_samples": self.n_samples,
                    "unit": "nats",
                },
                "pooled": pooled,
                "pooled_definition": "all voxels of all cases together",
                "mean_of_cases": mean_of_cases,
                "mean_of_cases_definition": "mean of the per-case values; NaN cases (empty region) left out",
                "uncertainty_measure": "mean_entropy_region",
                "spearman_rho": rho,
                "spearman_p": p,
                "spearman_n": n,
                "aurc": aurc(u[keep], risk),
                "aurc_optimal": aurc(risk, risk),  # cases ranked by their own risk: the floor
                "aurc_definition": AURC_DEFINITION,
            }
        )

    def write(self, result: MetricTables, out_dir: str | Path) -> list[Path]:
        """Write ``reliability.csv``, ``calibration_cases.csv`` and ``calibration.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cases = self.cases(result)
        paths = [out / RELIABILITY_FILE, out / CASES_FILE, out / JSON_FILE]
        write_csv_atomic(paths[0], self.reliability(), index=False, float_format="%.6f")
        write_csv_atomic(paths[1], cases, index=False, float_format="%.6f")
        write_text_atomic(paths[2], json.dumps(self.summary(cases), indent=2))
        return paths


def calibration_options(
    calibration: bool,
    n_bins: int = 15,
    region_margin_voxels: float = 5.0,
    uncertainty: str | None = None,
    samples: int = 20,
    merge: str = "probs",
) -> CalibrationOptions | None:
    """Options from command-line values; ``None`` without ``calibration`` (an ``uncertainty`` implies it)."""
    from medseg.engine.uncertainty import uncertainty_options

    sampled = uncertainty_options(uncertainty, samples, merge)
    if not calibration and sampled is None:
        return None
    return CalibrationOptions(n_bins, region_margin_voxels, sampled)
