"""Accuracy per compute on MSD Hippocampus (3D MR, 2 classes): ``medseg fit`` against a MONAI 3D UNet
and nnU-Net v2 ``3d_fullres``, each trained for the same wall-clock minutes on the same split.

The Decathlon's Task04 training cases (``$MEDSEG_SHARED_DATA/hippocampus_mr``, 200 volumes of about
36×50×35 voxels at 1 mm, labels 1 = anterior, 2 = posterior hippocampus); one seeded case-level
split (20 % validate, as ``medseg fit`` makes it; the Decathlon publishes no subject ids, so a
subject's left and right crops may fall on both sides). Arms:

* ``medseg``: exactly what a user runs, ``medseg fit`` (fingerprint → plan → train → best.pt) on
  the training cases, then ``medseg predict best.pt`` on the validation images; the label-map files
  it writes are scored;
* ``monai``: MONAI's 3D ``UNet`` (16…256, 2 residual units, instance norm) through medseg's loop as
  a user would set it up: whole volumes padded to 48×64×48, Dice + CE, Adam 1e-3, batch 2, the
  default augmentation, the best validation epoch;
* ``nnunet``: nnU-Net v2 ``3d_fullres`` through its own CLI with the wall-clock trainer
  (``nnunet_wallclock_trainer.py``), when ``nnunetv2`` is installed.

Every arm's label maps are scored by the same code per case and class: Dice and HD95 (mm). The
table gives each class's mean and median, the mean over both classes, paired differences per case
(medseg − arm, Wilcoxon p) and Dice against training minutes (``curves.png``). It is written to
``OUT/table.md`` and to ``benchmarks/results/budget_hippocampus.md`` (the README and the docs
include that file).

    python benchmarks/budget_hippocampus.py                 # 3 × 15 min on the CPU
    python benchmarks/budget_hippocampus.py --arms medseg --minutes 5
    python benchmarks/budget_hippocampus.py --quick         # seconds: 6 cases, medseg + MONAI
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import publish  # noqa: E402
from budget_common import (  # noqa: E402
    ARMS,
    ArmResult,
    _curve,
    _run_config,
    _split_overrides,
    add_arguments,
    run_nnunet_arm,
    save_curves,
    splits_for,
)
from rich.console import Console  # noqa: E402

from medseg.config import Config, apply_overrides, config_from_dict  # noqa: E402
from medseg.data.loading import DataSplits  # noqa: E402
from medseg.data.sample import Sample, assign_keys  # noqa: E402
from medseg.metrics.evaluation import SegmentationMetrics  # noqa: E402
from medseg.report.stats import paired_comparison  # noqa: E402
from medseg.report.tables import markdown_table  # noqa: E402
from medseg.testing import require_data, shared_data_path  # noqa: E402

DEFAULT_ROOT = shared_data_path("hippocampus_mr")
CLASSES = {1: "anterior", 2: "posterior"}
MONAI_PATCH = (48, 64, 48)


QUICK_CASES = 6


def small_decathlon(root: Path, n_cases: int, dest: Path) -> Path:
    """A Decathlon folder at ``dest`` holding the first ``n_cases`` training cases of ``root``
    (links to its files, and its ``dataset.json`` cut to those cases)."""
    import json

    description = json.loads((root / "dataset.json").read_text())
    training = description["training"][:n_cases]
    for entry in training:
        for key in ("image", "label"):
            link = dest / entry[key]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((root / entry[key]).resolve())
    description.update(training=training, numTraining=len(training), test=[], numTest=0)
    (dest / "dataset.json").write_text(json.dumps(description, indent=2))
    return dest


def run_medseg_fit(
    options: dict[str, Any],
    splits: DataSplits,
    minutes: float,
    out: Path,
    seed: int,
    device: str,
    console: Console,
    overrides: Sequence[str] = (),
) -> ArmResult:
    """``medseg fit`` on the training cases, then ``medseg predict`` of the validation images."""
    import json

    from medseg.data.io import read_image
    from medseg.engine.fit import fit
    from medseg.engine.predict import predict_files

    split = [
        f"data.split.train_cases={json.dumps(splits.train_cases)}",
        f"data.split.val_cases={json.dumps(splits.val_cases)}",
    ]
    fitted = fit(
        "msd",
        options,
        minutes,
        out,
        device=device,
        seed=seed,
        progress=False,
        console=console,
        config_overrides=[*split, *overrides],
    )
    assign_keys(splits.val)
    predicted = predict_files(
        fitted.best_checkpoint,
        [s.source_path for s in splits.val],
        out / "predict",
        device=device,
        overwrite=True,
    )
    by_input = {Path(p.input).resolve(): p.mask for p in predicted}
    predictions = {}
    for sample in splits.val:
        label_map, _, _ = read_image(by_input[Path(sample.source_path).resolve()])
        predictions[sample.key] = np.asarray(label_map).reshape(sample.target_mask.shape)
    widths = fitted.plan.model["options"]["features"]
    recipe = (
        f"medseg fit: {fitted.plan.spatial_dims}D ResEnc U-Net {widths[0]}…{widths[-1]}, "
        f"{'×'.join(map(str, fitted.plan.patch_size))}, batch {fitted.plan.batch_size}, then medseg predict"
    )
    return ArmResult(
        arm="medseg",
        minutes=minutes,
        predictions=predictions,
        train_minutes=fitted.train_minutes,
        epochs=len(fitted.train.history),
        recipe=recipe,
        curve=_curve(fitted.train.history),
    )


def run_monai_3d(
    options: dict[str, Any],
    splits: DataSplits,
    minutes: float,
    out: Path,
    seed: int,
    device: str,
    console: Console,
) -> ArmResult:
    """MONAI's 3D UNet through medseg's loop, as a user would set it up (module docstring)."""
    tree = Config().to_dict()
    tree["data"].update(
        source="msd",
        options=dict(options),
        spatial_dims=3,
        patch_size=list(MONAI_PATCH),
        foreground_ratio=0.5,
        samples_per_volume=1,
        num_classes=3,
    )
    tree["model"] = {
        "name": "monai_unet",
        "options": {"features": [16, 32, 64, 128, 256], "num_res_units": 2, "norm": "instance"},
    }
    tree["loss"] = {"name": "dice_ce", "options": {"batch_dice": False}, "deep_supervision_weights": None}
    tree["optim"].update(name="adam", lr=1e-3, weight_decay=0.0, scheduler="constant", scheduler_options={})
    tree["inference"].update(roi_size=list(MONAI_PATCH))
    tree["train"].update(
        epochs=100_000,
        batch_size=2,
        seed=seed,
        device=device,
        max_time_minutes=minutes,
        progress=False,
        tensorboard=False,
        val_every=5,
    )
    tree["output_dir"] = str(out)
    cfg = apply_overrides(config_from_dict(tree), _split_overrides(splits))
    recipe = "MONAI 3D UNet 16…256 (2 res units, instance norm), 48×64×48, batch 2, Dice+CE, Adam 1e-3"
    return _run_config(cfg, "monai", minutes, recipe, console)


def score_classes(
    samples: Sequence[Sample], predictions: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per case: Dice and HD95 (mm) of each class of the predicted label map, at the case's voxels."""
    assign_keys(list(samples))
    metrics = SegmentationMetrics(hd95_mode="pooled")
    rows: dict[str, dict[str, float]] = {}
    for sample in samples:
        if sample.key not in predictions:
            raise KeyError(f"no prediction for {sample.key}")
        pred, gt = np.asarray(predictions[sample.key]), sample.target_mask
        if pred.shape != gt.shape:
            raise ValueError(f"{sample.key}: prediction {pred.shape} vs ground truth {gt.shape}")
        row: dict[str, float] = {}
        for c, name in CLASSES.items():
            scored = metrics(pred == c, gt == c, sample.spacing, case=sample.key, patient=sample.case_id)
            row[f"dice_{name}"] = float(scored["dice"])
            row[f"hd95_{name}"] = float(scored["hd95_mm"])
        row["dice_mean"] = float(np.mean([row[f"dice_{n}"] for n in CLASSES.values()]))
        row["hd95_mean"] = float(np.nanmean([row[f"hd95_{n}"] for n in CLASSES.values()]))
        rows[sample.key] = row
    return rows


def _summary(label: str, result: ArmResult, rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "arm": label,
        "train_min": result.train_minutes,
        "epochs": result.epochs,
        "cases": len(rows),
    }
    for metric in ("dice", "hd95"):
        for name in [*CLASSES.values(), "mean"]:
            values = np.array([r[f"{metric}_{name}"] for r in rows.values()], dtype=np.float64)
            values = values[np.isfinite(values)]
            out[f"{metric}_{name}"] = f"{values.mean():.3f} / {np.median(values):.3f}" if values.size else "—"
    out["recipe"] = result.recipe
    return out


def _paired(
    reference: dict[str, dict[str, float]], label: str, rows: dict[str, dict[str, float]]
) -> list[dict]:
    keys = sorted(reference)
    out = []
    for metric in ("dice", "hd95"):
        for name in [*CLASSES.values(), "mean"]:
            column = f"{metric}_{name}"
            try:
                cmp = paired_comparison(
                    [rows[k][column] for k in keys], [reference[k][column] for k in keys], column
                )
            except ValueError:
                continue
            out.append(
                {
                    "comparison": f"medseg − {label}",
                    "metric": column,
                    "n": cmp.n,
                    "mean_delta": cmp.mean_delta,
                    "ci": f"[{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]",
                    "better": cmp.wins,
                    "worse": cmp.losses,
                    "wilcoxon_p": cmp.wilcoxon_p,
                }
            )
    return out


def report(results: list[tuple[str, ArmResult]], samples: Sequence[Sample], heading: str) -> str:
    """The summary (mean / median per class) and the paired table, as Markdown."""
    scored = {label: score_classes(samples, result.predictions) for label, result in results}
    columns = {
        "arm": "arm",
        "train_min": "train (min)",
        "epochs": "epochs",
        "cases": "cases",
        **{f"dice_{n}": f"Dice {n} (mean / median)" for n in [*CLASSES.values(), "mean"]},
        **{f"hd95_{n}": f"HD95 {n} mm (mean / median)" for n in [*CLASSES.values(), "mean"]},
        "recipe": "recipe",
    }
    summary = [_summary(label, result, scored[label]) for label, result in results]
    text = heading + "\n\n" + markdown_table(summary, columns, floatfmt={"train_min": ".1f"})
    if "medseg" in scored and len(scored) > 1:
        paired = [
            row
            for label, rows in scored.items()
            if label != "medseg"
            for row in _paired(scored["medseg"], label, rows)
        ]
        text += "\n\nPaired per case (Δ = medseg − arm; HD95: negative is better for medseg):\n\n"
        text += markdown_table(
            paired,
            {
                "comparison": "comparison",
                "metric": "metric",
                "n": "cases",
                "mean_delta": "mean Δ",
                "ci": "95% CI of Δ",
                "better": "medseg better",
                "worse": "medseg worse",
                "wilcoxon_p": "Wilcoxon p",
            },
            floatfmt={"mean_delta": "+.4f", "wilcoxon_p": ".3g"},
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, DEFAULT_ROOT, "runs/bench_budget_hippocampus")
    args = parser.parse_args()
    root = require_data(
        Path(args.root) / "dataset.json", "the MSD Hippocampus data set (or pass --root)"
    ).parent
    options = {"root": str(root)}
    console = Console()
    cases = None
    out = Path(args.out)
    if args.quick:
        from medseg.data.sources import build as build_source

        args.minutes, args.also_minutes = 0.1, []
        args.arms = "medseg,monai" if args.arms == ",".join(ARMS) else args.arms
        # fit plans on (and fingerprints) every case of its root: give it a root of these six only
        options = {"root": str(small_decathlon(root, QUICK_CASES, out / "data"))}
        cases = build_source("msd", **options).case_ids()
    splits = splits_for("msd", options, args.seed, cases)
    arms = args.arms.split(",")
    results: list[tuple[str, ArmResult]] = []
    if "medseg" in arms:
        for minutes in [args.minutes, *args.also_minutes]:
            label = "medseg" if minutes == args.minutes else f"medseg@{minutes:g}min"
            run = run_medseg_fit(
                options,
                splits,
                minutes,
                out / f"medseg_{minutes:g}min",
                args.seed,
                args.device,
                console,
                args.medseg_set,
            )
            results.append((label, run))
    if "monai" in arms:
        results.append(
            (
                "monai",
                run_monai_3d(options, splits, args.minutes, out / "monai", args.seed, args.device, console),
            )
        )
    if "nnunet" in arms:
        nnunet = run_nnunet_arm(
            splits, args.minutes, out / "nnunet", args.device, console, args.quick, configuration="3d_fullres"
        )
        if nnunet is not None:
            results.append(("nnunet", nnunet))
    heading = (
        f"MSD Hippocampus (Task04), {len(splits.val)} validation volumes ({len(splits.train)} training), "
        f"per-case Dice and HD95 per class at each volume's voxels, {args.minutes:g} min per arm on "
        f"{args.device}; command: `python benchmarks/budget_hippocampus.py"
        f"{' --quick' if args.quick else ''}`"
    )
    text = report(results, splits.val, heading)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    save_curves(results, out / "curves.png", textwrap.fill(heading.split(";")[0], 75))
    publish("budget_hippocampus", text, args.quick)  # --quick: budget_hippocampus_quick.md
    print("\n" + text)


if __name__ == "__main__":
    main()
