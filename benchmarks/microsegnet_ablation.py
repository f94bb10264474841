"""Ablation of the annotation-guided training of papers 000/001 on the phantom (micro-US layout).

Grid: loss (BCE, focal, AG-BCE, adaptive focal) × W_hard/W_easy (1, 2, 4, 8, 12; AG-BCE only) ×
deep supervision on (MicroSegNet-tiny) / off (TransUNet-tiny, the same network without the extra
heads), all with the paper-000 SGD recipe and the same seed, split and epochs. Writes the
thesis-style table: per test patient Dice and HD95 (volumetric protocol) for each run, and the mean.

    python benchmarks/microsegnet_ablation.py               # 10 runs × 10 epochs
    python benchmarks/microsegnet_ablation.py --epochs 1    # smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from bench_results import publish
from rich.console import Console

from medseg.data.phantom import write_phantom_microus
from medseg.engine.demo import phantom_recipe
from medseg.engine.experiment import train_and_evaluate
from medseg.report.tables import markdown_table


def grid() -> dict[str, tuple[str, str, dict]]:
    """Run label → (model, loss, loss options)."""
    runs: dict[str, tuple[str, str, dict]] = {
        "BCE, DS": ("microsegnet", "bce", {}),
        "focal, DS": ("microsegnet", "focal", {"alpha": 0.25, "gamma": 2.0}),
        "adaptive focal, DS": ("microsegnet", "adaptive_focal", {"ks": 4}),
    }
    for w_hard in (1, 2, 4, 8, 12):
        runs[f"AG-BCE W={w_hard}, DS"] = ("microsegnet", "ag_bce_ds", {"w_hard": float(w_hard)})
    runs["BCE, no DS"] = ("transunet", "bce", {})
    runs["AG-BCE W=4, no DS"] = ("transunet", "ag_bce", {"w_hard": 4.0, "ks": 4})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench_microsegnet_ablation")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--only", default=None, help="comma-separated run labels to keep")
    parser.add_argument("--sgd", action="store_true", help="the paper's SGD 0.01 instead of AdamW 2e-3")
    parser.add_argument("--quick", action="store_true", help="smoke test: the first run, 1 epoch, 32²")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.size = 1, 32
        args.only = args.only or next(iter(grid()))
        args.out = str(Path(args.out) / "quick")
    console = Console()
    root = write_phantom_microus(Path(args.out) / "data", n_train=8, n_test=4, seed=0)
    runs = grid()
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
    dice, hd95 = {}, {}
    for label, (model, loss, loss_options) in runs.items():
        overrides = [
            f"data.split.seed={args.seed}",
            f"model.name={model}",
            "model.options={variant: tiny}",
            f"loss.name={loss}",
            f"loss.options={json.dumps(loss_options)}",
            f"train.epochs={args.epochs}",
            f"train.seed={args.seed}",
        ]
        cfg = phantom_recipe(root, args.size, args.sgd, overrides)
        cfg.output_dir = str(Path(args.out) / label.replace(" ", "_").replace(",", "").replace("=", ""))
        per_patient = train_and_evaluate(cfg, split="test", console=console).evaluation.per_patient
        dice[label] = per_patient.set_index("patient")["dice"]
        hd95[label] = per_patient.set_index("patient")["hd95_mm"]
    table = pd.concat({"Dice": pd.DataFrame(dice), "HD95 (mm)": pd.DataFrame(hd95)}, axis=1)
    table.loc["mean"] = table.mean()
    table.columns.names = ["metric", "run"]
    markdown = markdown_table(table.T, index=True)
    title = (
        f"Ablation on the phantom, 4 test patients, {args.size}², {args.epochs} epochs, "
        "volumetric protocol (rows: run, columns: test patients and mean):"
    )
    print(f"\n{title}\n\n{markdown}")
    publish("microsegnet_ablation", f"{title}\n\n{markdown}", args.quick)
    (Path(args.out) / "table.md").write_text(markdown + "\n")
    table.to_csv(Path(args.out) / "table.csv")


if __name__ == "__main__":
    main()
