"""Accuracy per compute on HC18 fetal-head ultrasound: medseg's planned default against MONAI's
UNet and nnU-Net v2, each trained for the same wall-clock minutes.

The 300 training images of HC18 (``$MEDSEG_SHARED_DATA/hc18_us``) with their pixel sizes; one seeded split by
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_common import add_arguments, run_benchmark  # noqa: E402

from medseg.data.loading import DataSplits  # noqa: E402
from medseg.testing import require_data, shared_data_path  # noqa: E402

DEFAULT_ROOT = shared_data_path("hc18_us")


def _heading(splits: DataSplits, args: argparse.Namespace) -> str:
    return (
        f"HC18 fetal-head ultrasound, {len(splits.val)} validation images of {len(splits.val_cases)} "
        f"subjects ({len(splits.train)} training images), per-image metrics at each image's pixels, "
        f"{args.minutes:g} min per arm on {args.device}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DEFAULT_ROOT, "runs/bench_budget_hc18")
    args = parser.parse_args()
    require_data(args.root, "the HC18 training set (or pass --root)")
    print("\n" + run_benchmark("hc18", args, 4, 1, _heading))


if __name__ == "__main__":
    main()
