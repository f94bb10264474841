"""Accuracy per compute on Kaggle LGG brain MRI (paper 004's data): medseg's planned default
against MONAI's UNet and nnU-Net v2, each trained for the same wall-clock minutes (issue #14).

30 patients from ``../shared/data/lgg_mri/kaggle_3m``, one seeded patient split (24 train / 6
validation, as ``medseg fit`` makes it), every arm scored per volume (a patient: 3D Dice over all
its slices at 256², HD95 in mm with the 1 mm the Kaggle TIFFs are assumed to have) by the same code
(:mod:`budget_common`). ``--also-minutes 7.5`` adds medseg runs with shorter budgets.

    python benchmarks/budget_lgg.py                          # 3 × 15 min on the CPU (+ nnU-Net's
                                                             #   preprocessing and prediction)
    python benchmarks/budget_lgg.py --also-minutes 7.5 --arms medseg,monai,nnunet
    python benchmarks/budget_lgg.py --device cuda            # on a GPU
    python benchmarks/budget_lgg.py --quick                  # seconds: 3 patients, medseg + MONAI
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_common import add_arguments, report, run_medseg, run_monai, run_nnunet_arm, splits_for  # noqa: E402

from medseg.data.sources import build as build_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "lgg_mri" / "kaggle_3m"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DEFAULT_ROOT, "runs/bench_budget_lgg")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        raise SystemExit(f"{args.root}: LGG kaggle_3m folder not found (pass --root)")
    options = {"root": args.root}
    cases = None
    if args.quick:
        args.minutes, args.also_minutes = 0.05, []
        args.arms = "medseg,monai" if args.arms == "medseg,monai,nnunet" else args.arms
        cases = build_source("lgg", **options).case_ids()[:3]
    console = Console()
    out = Path(args.out)
    splits = splits_for("lgg", options, args.seed, cases)
    arms = args.arms.split(",")
    results = []
    for minutes in [args.minutes, *args.also_minutes] if "medseg" in arms else []:
        label = "medseg" if minutes == args.minutes else f"medseg@{minutes:g}min"
        run_out = out / f"medseg_{minutes:g}min"
        results.append(
            (
                label,
                run_medseg(
                    "lgg", options, splits, minutes, run_out, args.seed, args.device, console, args.medseg_set
                ),
            )
        )
    if "monai" in arms:
        size = (32, 32) if args.quick else (128, 128)
        monai = run_monai(
            "lgg", options, splits, args.minutes, out / "monai", args.seed, args.device, console, size, 3
        )
        results.append(("monai", monai))
    if "nnunet" in arms:
        nnunet = run_nnunet_arm(splits, args.minutes, out / "nnunet", args.device, console, args.quick)
        if nnunet is not None:
            results.append(("nnunet", nnunet))
    heading = (
        f"LGG brain MRI, {len(splits.val)} validation patients ({len(splits.train)} training), "
        f"per-volume metrics at 256², {args.minutes:g} min per arm on {args.device}"
    )
    print("\n" + report(results, splits.val, out, heading, out / "curves.png"))


if __name__ == "__main__":
    main()
