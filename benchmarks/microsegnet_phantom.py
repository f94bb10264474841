"""MicroSegNet-tiny vs TransUNet-tiny vs U-Net on the phantom in the micro-US layout.

The phantom is written in the Zenodo 10475293 layout and read back through the ``microus`` source
(8 training patients, 4 test patients). Each model trains under the same CPU time budget; the test
patients are scored under both protocols: ``volumetric`` (3D per patient at header spacing, the
honest number) and ``microsegnet`` (the official test script: only slices where prediction and
ground truth are both non-empty; HD95 in pixels × the header pixel size here, since the phantom's
pixels are not the real micro-US 0.033586 mm).

    python benchmarks/microsegnet_phantom.py                  # 6 CPU minutes per model
    python benchmarks/microsegnet_phantom.py --minutes 0.5    # smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_results import publish
from rich.console import Console

from medseg.data.phantom import write_phantom_microus
from medseg.engine.demo import phantom_recipe
from medseg.engine.experiment import train_and_evaluate
from medseg.report.tables import markdown_table

RUNS = {
    # name: (model, model options, loss, loss options)
    "MicroSegNet-tiny + AG-BCE (DS)": ("microsegnet", {"variant": "tiny"}, "ag_bce_ds", {}),
    "TransUNet-tiny + BCE": ("transunet", {"variant": "tiny"}, "bce", {}),
    "U-Net + BCE": ("unet", {"features": [16, 32, 64, 128]}, "bce", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench_microsegnet_phantom")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sgd", action="store_true", help="the paper's SGD 0.01 instead of AdamW 2e-3")
    parser.add_argument("--quick", action="store_true", help="smoke: U-Net only, ~1 s, 32²")
    args = parser.parse_args()
    runs = RUNS
    if args.quick:
        args.minutes, args.size = 0.02, 32
        args.out = str(Path(args.out) / "quick")
        runs = {k: v for k, v in RUNS.items() if v[0] == "unet"}
    console = Console()
    root = write_phantom_microus(Path(args.out) / "data", n_train=8, n_test=4, seed=args.seed)
    rows = []
    for label, (model, model_options, loss, loss_options) in runs.items():
        overrides = [
            f"model.name={model}",
            f"model.options={json.dumps(model_options)}",
            f"loss.name={loss}",
            f"loss.options={json.dumps(loss_options)}",
            "train.epochs=200",
            f"train.max_time_minutes={args.minutes}",
            f"train.seed={args.seed}",
        ]
        cfg = phantom_recipe(root, args.size, args.sgd, overrides)
        cfg.output_dir = str(Path(args.out) / model)
        rows.append({"run": label, **train_and_evaluate(cfg, split="test", console=console).row()})
    markdown = markdown_table(
        rows,
        {
            "run": "run",
            "params_M": "params (M)",
            "epochs": "epochs",
            "dice_mean": "Dice (volumetric)",
            "hd95_mm_mean": "HD95 mm (volumetric)",
            "microsegnet_dice_mean": "Dice (microsegnet protocol)",
            "microsegnet_hd95_mm_mean": "HD95 mm (microsegnet protocol)",
        },
        floatfmt={"params_M": ".2f", "hd95_mm_mean": ".2f", "microsegnet_hd95_mm_mean": ".2f"},
    )
    title = (
        f"Phantom (micro-US layout), 4 test patients, {args.size}², {args.minutes} CPU min per model, "
        "per-patient means:"
    )
    print(f"\n{title}\n\n{markdown}")
    publish("microsegnet_phantom", f"{title}\n\n{markdown}", args.quick)
    (Path(args.out) / "table.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
