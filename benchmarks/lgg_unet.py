"""U-Net vs MONAI UNet on Kaggle LGG brain MRI (paper 004's data set), same loop, same split.

30 patients of Kaggle LGG (``$MEDSEG_SHARED_DATA/lgg_mri/kaggle_3m``), a seeded patient-level
split (24 train / 6 validation), 128×128 input, a fixed CPU time budget per model. Reports the per-volume DSC
(a volume is a patient: 3D Dice over all its slices) mean and median and HD95 in mm (the Kaggle
TIFFs carry no spacing, so 1 mm pixels and 1 mm slices are assumed), and the training time.

    python benchmarks/lgg_unet.py                  # ~15 min per model on 2 CPU cores
    python benchmarks/lgg_unet.py --minutes 1      # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_results import publish
from rich.console import Console

from medseg.config import load_config
from medseg.data.sources import build as build_source
from medseg.engine.experiment import train_and_evaluate
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_path

DEFAULT_ROOT = shared_data_path("lgg_mri", "kaggle_3m")

# Similar size on purpose: both are 5-level U-Nets with widths 16..256.
MODELS = {
    "unet": {"features": [16, 32, 64, 128, 256]},
    "monai_unet": {"features": [16, 32, 64, 128, 256], "num_res_units": 0},
}


def run(model_name: str, args: argparse.Namespace, console: Console) -> dict:
    out = Path(args.out) / model_name
    cfg = load_config(
        None,
        [
            "data.source=lgg",
            f"data.options={{root: '{args.root}'}}",
            "data.in_channels=3",
            f"data.image_size=[{args.size}, {args.size}]",
            "data.split.val_fraction=0.2",
            f"data.split.seed={args.seed}",
            f"model.name={model_name}",
            f"model.options={json.dumps(MODELS[model_name])}",
            "loss.name=dice",
            # Batch Dice (nnU-Net): most LGG slices have no tumour, and a per-slice soft Dice on an
            # empty slice is ~1 whatever the network does, which swamps the tumour slices.
            "loss.options={batch_dice: true, smooth: 1.0}",
            "optim.name=adam",
            f"optim.lr={args.lr}",
            "optim.weight_decay=0",
            "optim.scheduler=constant",
            f"train.epochs={args.max_epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.max_time_minutes={args.minutes}",
            f"train.seed={args.seed}",
            f"train.progress={str(not args.no_progress).lower()}",
            *args.split_overrides,
        ],
    )
    cfg.output_dir = str(out)
    experiment = train_and_evaluate(cfg, split="val", console=console)
    return {"model": model_name, **experiment.row()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--out", default="runs/bench_lgg")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget per model")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="unet,monai_unet")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 32², U-Net only")
    args = parser.parse_args()
    require_data(args.root, "the Kaggle LGG kaggle_3m folder (or pass --root)")
    args.split_overrides = []
    if args.quick:
        args.minutes, args.max_epochs, args.size, args.models = 0.02, 1, 32, "unet"
        args.out, args.no_progress = str(Path(args.out) / "quick"), True
        first = build_source("lgg", root=args.root).case_ids()[:3]  # 2 training, 1 validation patient
        args.split_overrides = [
            f"data.split.train_cases={json.dumps(first[:2])}",
            f"data.split.val_cases={json.dumps(first[2:])}",
        ]
    console = Console()
    rows = [run(name, args, console) for name in args.models.split(",")]
    markdown = markdown_table(
        rows,
        {
            "model": "model",
            "params_M": "params (M)",
            "epochs": "epochs in budget",
            "best_epoch": "best epoch",
            "train_min": "train time (min)",
            "dice_mean": "DSC mean",
            "dice_median": "DSC median",
            "hd95_mm_mean": "HD95 mean (mm)",
            "hd95_mm_median": "HD95 median (mm)",
        },
        floatfmt={"params_M": ".2f", "train_min": ".1f", "hd95_mm_mean": ".2f", "hd95_mm_median": ".2f"},
    )
    title = (
        f"LGG, {rows[0]['n_patients']} validation patients, {args.size}², per-volume metrics, "
        f"{args.minutes} min CPU budget per model, batch Dice loss, Adam {args.lr}:"
    )
    print(f"\n{title}\n\n{markdown}")
    publish("lgg_unet", f"{title}\n\n{markdown}", args.quick)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
