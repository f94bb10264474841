"""Accuracy per compute on HC18 fetal-head ultrasound: medseg's planned default against MONAI's
UNet and nnU-Net v2, each trained for the same wall-clock minutes (issue #14).

The 300 training images of ``../shared/data/hc18_us`` with their pixel sizes; one seeded split by
*subject* (a subject's several images stay on one side; 20 % of the subjects validate, as
``medseg fit`` makes it); every arm scored per image at the image's own pixels (DSC, HD95 in mm)
and per subject, by the same code (:mod:`budget_common`).

    python benchmarks/budget_hc18.py                       # 3 × 15 min on the CPU
    python benchmarks/budget_hc18.py --arms medseg,monai --minutes 8
    python benchmarks/budget_hc18.py --quick               # seconds: 4 subjects, medseg + MONAI
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
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "hc18_us"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DEFAULT_ROOT, "runs/bench_budget_hc18")
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        raise SystemExit(f"{args.root}: HC18 folder not found (pass --root)")
    options = {"root": args.root}
    cases = None
    if args.quick:
        args.minutes, args.also_minutes = 0.05, []
        args.arms = "medseg,monai" if args.arms == "medseg,monai,nnunet" else args.arms
        cases = build_source("hc18", **options).case_ids()[:4]
    console = Console()
    out = Path(args.out)
    splits = splits_for("hc18", options, args.seed, cases)
    arms = args.arms.split(",")
    results = []
    for minutes in [args.minutes, *args.also_minutes] if "medseg" in arms else []:
        label = "medseg" if minutes == args.minutes else f"medseg@{minutes:g}min"
        run_out = out / f"medseg_{minutes:g}min"
        results.append(
            (
                label,
                run_medseg(
                    "hc18",
                    options,
                    splits,
                    minutes,
                    run_out,
                    args.seed,
                    args.device,
                    console,
                    args.medseg_set,
                ),
            )
        )
    if "monai" in arms:
        size = (32, 32) if args.quick else (128, 128)
        monai = run_monai(
            "hc18", options, splits, args.minutes, out / "monai", args.seed, args.device, console, size, 1
        )
        results.append(("monai", monai))
    if "nnunet" in arms:
        nnunet = run_nnunet_arm(splits, args.minutes, out / "nnunet", args.device, console, args.quick)
        if nnunet is not None:
            results.append(("nnunet", nnunet))
    heading = (
        f"HC18 fetal-head ultrasound, {len(splits.val)} validation images of {len(splits.val_cases)} "
        f"subjects ({len(splits.train)} training images), per-image metrics at each image's pixels, "
        f"{args.minutes:g} min per arm on {args.device}"
    )
    print("\n" + report(results, splits.val, out, heading, out / "curves.png"))


if __name__ == "__main__":
    main()
