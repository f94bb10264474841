"""Accuracy per compute on Kaggle LGG brain MRI (paper 004's data): medseg's planned default
against MONAI's UNet and nnU-Net v2, each trained for the same wall-clock minutes.

30 patients of Kaggle LGG (``$MEDSEG_SHARED_DATA/lgg_mri/kaggle_3m``), one seeded patient split (24 train / 6
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_common import add_arguments, run_benchmark  # noqa: E402

from medseg.data.loading import DataSplits  # noqa: E402
from medseg.testing import require_data, shared_data_path  # noqa: E402

DEFAULT_ROOT = shared_data_path("lgg_mri", "kaggle_3m")


def _heading(splits: DataSplits, args: argparse.Namespace) -> str:
    return (
        f"LGG brain MRI, {len(splits.val)} validation patients ({len(splits.train)} training), "
        f"per-volume metrics at 256², {args.minutes:g} min per arm on {args.device}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DEFAULT_ROOT, "runs/bench_budget_lgg")
    args = parser.parse_args()
    require_data(args.root, "the Kaggle LGG kaggle_3m folder (or pass --root)")
    print("\n" + run_benchmark("lgg", args, 3, 3, _heading))


if __name__ == "__main__":
    main()
