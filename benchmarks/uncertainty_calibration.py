"""Calibration before/after temperature scaling and uncertainty–Dice correlation on LGG and HC18.

For each data set a small 2D U-Net (widths 8..64, dropout 0.1, Dice + BCE loss, 128×128 input) is
trained on CPU for at most ``--minutes`` on the training split of a seeded patient-level 80/20
split. Its validation split is then halved by case (alternating in sorted case order): a single
temperature ``T`` is fitted on the foreground logits of the *fit* half by minimising the NLL
(:func:`medseg.metrics.calibration.fit_temperature`), and ECE (15 equal-width bins, top-label),
Brier (binary, ``mean((p - y)^2)``) and NLL are reported on the *report* half, pooled over all its
voxels, before (``T = 1``) and after scaling. Fitting and reporting on disjoint halves avoids the
optimism of fitting and reporting on the same voxels.

Probabilities here are ``sigmoid(logits / T)`` with the logits resized bilinearly to each image's
own size (``medseg.engine.uncertainty.predict_logits``; the evaluation pipeline resizes
probabilities instead, a negligible difference). Spearman's ρ is over all validation cases
(a case = an LGG patient volume, or an HC18 image): per-case uncertainty = mean predictive
entropy (nats) in the region ``(pred | gt)`` dilated by 5 voxels, of the plain prediction and of
flip TTA (4 flips), against the per-case Dice of the plain prediction. Negative ρ is what one hopes
for (more uncertain → lower Dice). AURC ranks cases by the plain-prediction uncertainty, risk
``1 - Dice``.

    OMP_NUM_THREADS=2 python benchmarks/uncertainty_calibration.py --minutes 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_results import publish
from rich.console import Console

from medseg.config import load_config
from medseg.data.loading import load_splits
from medseg.engine.inference import load_model
from medseg.engine.train import train
from medseg.engine.uncertainty import UncertaintyOptions, predict_logits, predict_uncertainty
from medseg.metrics import dice
from medseg.metrics.calibration import (
    CalibrationAccumulator,
    aurc,
    binary_nll_from_logits,
    boundary_region,
    fit_temperature,
    spearman,
)
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_root

SHARED = shared_data_root()
DATASETS = {
    "lgg": {"root": SHARED / "lgg_mri" / "kaggle_3m", "in_channels": 3},
    "hc18": {"root": SHARED / "hc18_us", "in_channels": 1},
}
MARGIN_VOXELS = 5.0
N_BINS = 15


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def train_model(name: str, args: argparse.Namespace, console: Console) -> Path:
    spec = DATASETS[name]
    cfg = load_config(
        None,
        [
            f"data.source={name}",
            f"data.options={{root: '{spec['root']}'}}",
            f"data.in_channels={spec['in_channels']}",
            f"data.image_size=[{args.size}, {args.size}]",
            "data.split.val_fraction=0.2",
            f"data.split.seed={args.seed}",
            "model.name=unet",
            "model.options={features: [8, 16, 32, 64], dropout: 0.1}",
            "loss.name=dice_bce",
            "optim.name=adam",
            "optim.lr=0.002",
            "optim.weight_decay=0",
            "optim.scheduler=constant",
            "train.epochs=200",
            "train.batch_size=16",
            f"train.max_time_minutes={args.minutes}",
            f"train.seed={args.seed}",
            "train.device=cpu",
            "train.tensorboard=false",
            "train.progress=false",
        ],
    )
    cfg.output_dir = str(Path(args.out) / name)
    result = train(cfg, console=console)
    return result.best_checkpoint


def evaluate(name: str, checkpoint: Path, console: Console) -> dict[str, Any]:
    model, cfg = load_model(checkpoint, "cpu")
    device = torch.device("cpu")
    samples = sorted(load_splits(cfg.data).val, key=lambda s: (s.case_id, s.source_path))
    size, intensity = cfg.data.image_size, cfg.data.intensity
    logits, labels, regions, dices, u_plain, u_tta = [], [], [], [], [], []
    for sample in samples:
        z = predict_logits(model, sample, size, intensity, device).astype(np.float64)
        gt = sample.target_mask > 0
        p = sigmoid(z)
        region = boundary_region(p >= 0.5, gt, MARGIN_VOXELS)
        maps = predict_uncertainty(model, sample, size, intensity, device, UncertaintyOptions("tta"))
        entropy = -(p * np.log(np.clip(p, 1e-12, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-12, 1)))
        logits.append(z)
        labels.append(gt)
        regions.append(region)
        dices.append(dice(p >= 0.5, gt))
        u_plain.append(float(entropy[region].mean()) if region.any() else np.nan)
        u_tta.append(float(maps.entropy[region].mean()) if region.any() else np.nan)
    fit = list(range(0, len(samples), 2))
    report = list(range(1, len(samples), 2))
    z_fit = np.concatenate([logits[i].ravel() for i in fit])
    y_fit = np.concatenate([labels[i].ravel() for i in fit])
    temperature = fit_temperature(z_fit, y_fit)
    row: dict[str, Any] = {
        "dataset": name,
        "val_cases": len(samples),
        "fit/report": f"{len(fit)}/{len(report)}",
        "dice_mean": float(np.mean(dices)),
        "T": temperature,
    }
    for label, t in (("before", 1.0), ("after", temperature)):
        whole, near = CalibrationAccumulator(N_BINS), CalibrationAccumulator(N_BINS)
        nll_sum = n = 0.0
        for i in report:
            p = sigmoid(logits[i] / t)
            whole.add(p, labels[i])
            near.add(p, labels[i], regions[i])
            nll_sum += binary_nll_from_logits(logits[i], labels[i], t) * logits[i].size
            n += logits[i].size
        m_whole, m_near = whole.metrics(), near.metrics()
        row[f"ece_{label}"] = m_whole["ece"]
        row[f"ece_region_{label}"] = m_near["ece"]
        row[f"brier_{label}"] = m_whole["brier"]
        row[f"nll_{label}"] = nll_sum / n
    u = np.asarray(u_plain)
    d = np.asarray(dices)
    rho, p_value, n_rho = spearman(u, d)
    rho_tta, p_tta, _ = spearman(np.asarray(u_tta), d)
    keep = np.isfinite(u)
    row.update(
        {
            "rho_entropy_dice": rho,
            "p": p_value,
            "rho_tta_entropy_dice": rho_tta,
            "p_tta": p_tta,
            "n_rho": n_rho,
            "aurc": aurc(u[keep], 1 - d[keep]),
            "aurc_optimal": aurc(1 - d[keep], 1 - d[keep]),
        }
    )
    console.print(json.dumps(row, default=float))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget per data set")
    parser.add_argument("--datasets", default="lgg,hc18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_uncertainty")
    parser.add_argument("--quick", action="store_true", help="smoke test: HC18 only, ~1 s of training, 32²")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.minutes, args.size = "hc18", 0.02, 32
        args.out = str(Path(args.out) / "quick")
    for name in args.datasets.split(","):
        require_data(DATASETS[name]["root"], f"the {name} data set")
    console = Console()
    rows = []
    for name in args.datasets.split(","):
        start = time.perf_counter()
        checkpoint = train_model(name, args, console)
        train_min = (time.perf_counter() - start) / 60
        rows.append({**evaluate(name, checkpoint, console), "train_min": train_min})
    columns = {
        "dataset": "data",
        "val_cases": "val cases",
        "fit/report": "fit/report",
        "train_min": "train (min)",
        "dice_mean": "Dice",
        "T": "T",
        "ece_before": "ECE before",
        "ece_after": "ECE after",
        "ece_region_before": "ECE in region before",
        "ece_region_after": "ECE in region after",
        "brier_before": "Brier before",
        "brier_after": "Brier after",
        "nll_before": "NLL before",
        "nll_after": "NLL after",
        "rho_entropy_dice": "ρ entropy–Dice",
        "p": "p",
        "rho_tta_entropy_dice": "ρ with TTA",
        "p_tta": "p (TTA)",
        "n_rho": "cases in ρ",
        "aurc": "AURC",
        "aurc_optimal": "AURC (ideal)",
    }
    title = (
        f"U-Net 8…64 with dropout 0.1, Dice + BCE at {args.size}², {args.minutes:g} CPU min per data set; "
        "one temperature fitted on half of the validation cases, reported on the other half (pooled "
        "over voxels); ρ over all validation cases"
    )
    table = markdown_table(rows, columns=columns, floatfmt={"p": ".2g", "p_tta": ".2g", "train_min": ".1f"})
    print(f"\n{title}\n\n{table}")
    publish("uncertainty_calibration", f"{title}\n\n{table}", args.quick)


if __name__ == "__main__":
    main()
