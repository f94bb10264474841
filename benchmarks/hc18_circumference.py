"""HC18 head circumference in mm: a 2D U-Net trained under a CPU budget, scored as the challenge did.

Data: HC18 (van den Heuvel et al. 2018, ``$MEDSEG_SHARED_DATA/hc18_us``), split by subject (the number
before the first ``_``, so that a subject's images stay on one side): a seeded 80/20 holdout of the
subjects. The recipe is medseg's 2D U-Net recipe for HC18 (as in
``benchmarks/uncertainty_calibration.py``: U-Net widths 8..64, Dice + BCE, Adam 2e-3, images
resized to ``--size``², probabilities resized back to each image's own pixels), trained for at most
``--minutes`` on the CPU. The held-out subjects are also the run's validation split, so the
weights scored are the FINAL ones (``last.pt``), never the epoch that scored best on them (that
would be model selection on the reported images). ``medseg.evaluate_checkpoint`` scores them: Dice,
HD95 (mm, pooled), and the head circumference of an ellipse fitted to the predicted mask
(Fitzgibbon et al. 1999 direct least squares; Ramanujan's perimeter;
:mod:`medseg.metrics.measurements`) against the CSV's reference HC, as the absolute difference in
mm (mean ± std, median), the challenge's measure. The same ellipse on the ground-truth masks gives
the floor of the method (how well an ellipse through the drawn mask recovers the reference).

    OMP_NUM_THREADS=2 nice -n 5 python benchmarks/hc18_circumference.py --minutes 8
    python benchmarks/hc18_circumference.py --quick          # 1 minute at 64², a smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_results import publish
from rich.console import Console

from medseg.config import load_config
from medseg.engine.evaluate import evaluate_checkpoint
from medseg.engine.train import train
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_path

HC18_ROOT = shared_data_path("hc18_us")


def train_model(args: argparse.Namespace, console: Console) -> tuple[Path, int]:
    """The final checkpoint (``last.pt``) and the epochs trained."""
    cfg = load_config(
        None,
        [
            "data.source=hc18",
            f"data.options={{root: '{args.root}'}}",
            "data.in_channels=1",
            f"data.image_size=[{args.size}, {args.size}]",
            "data.split.val_fraction=0.2",
            f"data.split.seed={args.seed}",
            "data.label_names=[background, head]",
            "model.name=unet",
            "model.options={features: [8, 16, 32, 64]}",
            "loss.name=dice_bce",
            "optim.name=adam",
            "optim.lr=0.002",
            "optim.weight_decay=0",
            "optim.scheduler=constant",
            "train.epochs=500",
            "train.batch_size=16",
            f"train.max_time_minutes={args.minutes}",
            f"train.seed={args.seed}",
            "train.device=cpu",
            "train.tensorboard=false",
            "train.progress=false",
        ],
    )
    cfg.output_dir = str(Path(args.out) / "train")
    result = train(cfg, console=console)
    return result.last_checkpoint, len(result.history)


def stats(values: pd.Series) -> dict[str, float]:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)), "median": float(np.median(v)), "n": len(v)}


def spread(measured: pd.DataFrame) -> str:
    """How the predicted HC errs beyond the mean: within 2 mm, the worst image, the signed bias, and
    the range of the ground-truth ellipse's difference (the floor is a bias, not noise)."""
    error = (measured["hc_mm_pred"] - measured["hc_mm_reference"]).to_numpy(dtype=float)
    error = error[np.isfinite(error)]
    floor = (measured["hc_mm_gt"] - measured["hc_mm_reference"]).to_numpy(dtype=float)
    floor = floor[np.isfinite(floor)]
    within = int((np.abs(error) <= 2.0).sum())
    return (
        f"Predicted masks: {within} of {error.size} images ({within / max(error.size, 1):.0%}) within 2 mm, "
        f"{int((np.abs(error) > 10.0).sum())} off by more than 10 mm (at most {np.abs(error).max():.1f} mm), "
        f"mean signed difference {error.mean():+.1f} mm. Ground-truth ellipse minus reference: "
        f"{floor.mean():+.2f} mm on average, from {floor.min():+.1f} to {floor.max():+.1f} mm."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="CPU training budget")
    parser.add_argument("--quick", action="store_true", help="1 minute at 64²: checks that the script runs")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=str(HC18_ROOT))
    parser.add_argument("--out", default="runs/bench_hc18")
    args = parser.parse_args()
    require_data(args.root, "the HC18 training set (or pass --root)")
    if args.quick:
        args.minutes, args.size = min(args.minutes, 1.0), 64
    console = Console()
    start = time.perf_counter()
    checkpoint, epochs = train_model(args, console)
    train_min = (time.perf_counter() - start) / 60
    result = evaluate_checkpoint(
        checkpoint, Path(args.out) / "eval", split="val", device="cpu", progress=False
    )
    images = result.per_case
    measured = result.measurements
    assert measured is not None
    pred, floor = stats(measured["hc_abs_diff_mm"]), stats(measured["hc_gt_abs_diff_mm"])
    missing = int(measured["hc_mm_pred"].isna().sum())
    rows: list[dict[str, Any]] = [
        {
            "masks": f"U-Net 8..64, {args.size}², {train_min:.1f} min, final weights of {epochs} epochs",
            "images (subjects)": f"{len(images)} ({images['patient'].nunique()})",
            "Dice": f"{images['dice'].mean():.4f}",
            "HD95 (mm)": f"{images['hd95_mm'].mean():.2f}",
            "HC abs. diff. (mm), mean ± std": f"{pred['mean']:.2f} ± {pred['std']:.2f}",
            "median (mm)": f"{pred['median']:.2f}",
            "no ellipse": str(missing),
        },
        {
            "masks": "ground truth (the method's floor)",
            "images (subjects)": f"{len(images)} ({images['patient'].nunique()})",
            "Dice": "1",
            "HD95 (mm)": "0",
            "HC abs. diff. (mm), mean ± std": f"{floor['mean']:.2f} ± {floor['std']:.2f}",
            "median (mm)": f"{floor['median']:.2f}",
            "no ellipse": str(int(measured["hc_mm_gt"].isna().sum())),
        },
    ]
    text = markdown_table(rows) + "\n\n" + spread(measured)
    print(text)
    publish("hc18_circumference", text, args.quick)
    console.print(f"per-image measurements: {Path(args.out) / 'eval' / 'measurements.csv'}")


if __name__ == "__main__":
    main()
