"""Annotation-guided losses on real two-annotator data: DRIVE retinal vessels, k-fold.

DRIVE's test images 01–10 have two annotators (``1st_manual`` = ``annotator_1``, ``2nd_manual`` =
``annotator_2``); its 20 training images have one. Each fold holds out 2 of the 10 test images and
trains on the 20 training images plus the other 8 test images, so a batch mixes images with and
without a second annotator (the annotation-guided losses fall back to their plain form on the
former). Dice is measured against ``1st_manual`` on the held-out images, at full resolution, over
the whole image; the inter-annotator Dice (2nd vs 1st manual) on the same images is the human
reference.

    python benchmarks/drive_annotation_guided.py                # 5 folds × 3 losses
    python benchmarks/drive_annotation_guided.py --folds 2 --epochs 5   # smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_results import publish
from rich.console import Console

from medseg.config import load_config
from medseg.data.sources import build as build_source
from medseg.data.splits import kfold_split
from medseg.engine.experiment import train_and_evaluate
from medseg.metrics import dice
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_path

DEFAULT_ROOT = shared_data_path("drive_retina")

LOSSES = {
    "bce": {},
    "ag_bce": {"expert": "annotator_1", "w_hard": 4.0, "ks": 3},
    "adaptive_focal": {"expert": "annotator_1", "ks": 3},
}


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "min": float(array.min()),
        "n": len(array),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--out", default="runs/bench_drive")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--losses", default=",".join(LOSSES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke: 2 folds, 1 epoch, 32², 1 loss")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs, args.size = 2, 1, 32
        args.losses = args.losses.split(",")[0]
        args.out = str(Path(args.out) / "quick")
    require_data(args.root, "the DRIVE data set (or pass --root)")
    console = Console()
    source = build_source("drive", root=args.root, subset="all")
    all_ids = source.case_ids()
    test_ids = [c for c in all_ids if c.startswith("test")]
    train_ids = [c for c in all_ids if not c.startswith("test")]
    human = {
        c: dice(s.masks["annotator_2"], s.masks["annotator_1"]) for c in test_ids for s in source.load_case(c)
    }

    results: dict[str, dict[str, float]] = {name: {} for name in args.losses.split(",")}
    for fold in range(args.folds):
        fold_train, fold_val = kfold_split(test_ids, args.folds, fold, seed=args.seed)
        for name in results:
            cfg = load_config(
                None,
                [
                    "data.source=drive",
                    f"data.options={{root: '{args.root}', subset: all}}",
                    "data.in_channels=3",
                    f"data.image_size=[{args.size}, {args.size}]",
                    f"data.split.train_cases={json.dumps(train_ids + fold_train)}",
                    f"data.split.val_cases={json.dumps(fold_val)}",
                    "model.options={features: [16, 32, 64, 128]}",
                    f"loss.name={name}",
                    f"loss.options={json.dumps(LOSSES[name])}",
                    "optim.name=adamw",
                    f"optim.lr={args.lr}",
                    f"train.epochs={args.epochs}",
                    "train.batch_size=4",
                    f"train.seed={args.seed}",
                    "train.progress=false",
                    "train.tensorboard=false",
                ],
            )
            cfg.output_dir = str(Path(args.out) / f"fold{fold}" / name)
            experiment = train_and_evaluate(cfg, split="val", console=console)
            for _, row in experiment.evaluation.per_case.iterrows():
                results[name][row["patient"]] = float(row["dice"])

    cases = sorted(next(iter(results.values())))
    summary = [{"loss": name, **_stats([per_case[c] for c in cases])} for name, per_case in results.items()]
    summary.append({"loss": "2nd_manual (human)", **_stats([human[c] for c in cases])})
    markdown = markdown_table(
        summary,
        {"loss": "loss", "mean": "Dice vs 1st_manual, mean", "median": "median", "min": "min", "n": "images"},
    )
    title = f"DRIVE test 01–10, {args.folds}-fold, {args.size}², {args.epochs} epochs, small U-Net:"
    print(f"\n{title}\n\n{markdown}")
    publish("drive_annotation_guided", f"{title}\n\n{markdown}", args.quick)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
