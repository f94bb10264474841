"""Shared part of the budget benchmarks: three arms, one split, one clock, one scorer.

Arms, each trained for the same wall-clock minutes on the same patient split of one source:

* ``medseg``: the planned default (``medseg fit``: fingerprint → plan → residual-encoder U-Net,
  budget schedule, foreground oversampling, cached batches augmented on the device, EMA selection);
* ``monai``: MONAI's ``UNet`` (16…256, 2 residual units) through medseg's loop, as a user would
  write it: Dice+BCE with batch Dice, Adam 1e-3 constant, batch 16, rotation/scale/flip
  augmentation, the best validation epoch;
* ``nnunet``: nnU-Net v2 through its own CLI (:mod:`budget_nnunet`), when ``nnunetv2`` is installed.

Every arm's validation predictions are scored by the same code (:func:`score`) at each image's own
resolution: per case (an LGG volume, an HC18 image) DSC and HD95 in mm, then per patient (an HC18
subject's images averaged). :func:`paired_rows` compares medseg with each other arm on the same
cases (mean Δ, wins/losses, Wilcoxon p). DSC against training minutes comes from each run's
validation history (:func:`save_curves`).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_results import publish
from rich.console import Console

from medseg.config import Config, apply_overrides, config_from_dict
from medseg.data.loading import DataSplits, load_splits
from medseg.data.sample import Sample, assign_keys
from medseg.engine.experiment import train_and_evaluate
from medseg.engine.fit import data_config, plan_source
from medseg.metrics.evaluation import SegmentationMetrics
from medseg.plan import plan_to_config
from medseg.report.stats import paired_comparison
from medseg.report.tables import markdown_table

ARMS = ("medseg", "monai", "nnunet")


@dataclass
class ArmResult:
    """One arm's run: its predictions by sample key and what it cost."""

    arm: str
    minutes: float
    predictions: dict[str, np.ndarray]
    train_minutes: float
    epochs: int | None = None
    recipe: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)  # (minutes, validation Dice)


def add_arguments(parser: argparse.ArgumentParser, default_root: Path, default_out: str) -> None:
    parser.add_argument("--root", default=str(default_root))
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget per arm")
    parser.add_argument(
        "--also-minutes", type=float, nargs="*", default=[], help="extra medseg budgets, e.g. 7.5"
    )
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every arm)")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few cases, seconds per arm")
    parser.add_argument(
        "--medseg-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="edit the planned config of the medseg arms, e.g. inference.tta_flips=false",
    )


def splits_for(
    source: str, options: dict[str, Any], seed: int, cases: Sequence[str] | None = None
) -> DataSplits:
    """The patient split every arm uses (``cases``: the last validates, the rest train; --quick)."""
    data = data_config(source, options, split_seed=seed)
    if cases is not None:
        data.split.train_cases, data.split.val_cases = list(cases[:-1]), list(cases[-1:])
    return load_splits(data)


def _split_overrides(splits: DataSplits) -> list[str]:
    import json

    return [
        f"data.split.train_cases={json.dumps(splits.train_cases)}",
        f"data.split.val_cases={json.dumps(splits.val_cases)}",
    ]


def _curve(history: Sequence[dict[str, float]]) -> list[tuple[float, float]]:
    return [
        (float(row["elapsed_s"]) / 60, float(row["val_dice"]))
        for row in history
        if np.isfinite(float(row["val_dice"]))
    ]


def _run_config(cfg: Config, arm: str, minutes: float, recipe: str, console: Console) -> ArmResult:
    start = time.perf_counter()
    experiment = train_and_evaluate(cfg, split="val", console=console)
    history = experiment.train.history
    elapsed = time.perf_counter() - start
    return ArmResult(
        arm=arm,
        minutes=minutes,
        predictions=experiment.predictions,
        train_minutes=experiment.train_time_s / 60,
        epochs=len(history),
        recipe=recipe + f"; best.pt = epoch {experiment.train.best_epoch} (run + scoring {elapsed:.0f} s)",
        curve=_curve(history),
    )


def run_medseg(
    source: str,
    options: dict[str, Any],
    splits: DataSplits,
    minutes: float,
    out: Path,
    seed: int,
    device: str,
    console: Console,
    extra: Sequence[str] = (),
) -> ArmResult:
    """The planned default, exactly as ``medseg fit`` runs it, on ``splits``."""
    data = data_config(source, options, split_seed=seed)
    data.split.train_cases, data.split.val_cases = splits.train_cases, splits.val_cases
    plan = plan_source(data, minutes, device, out=out / "plan.yaml", console=console)
    cfg = plan_to_config(plan, out, minutes=minutes, device=device, seed=seed)
    cfg = apply_overrides(
        cfg, ["train.progress=false", "train.tensorboard=false", *_split_overrides(splits), *extra]
    )
    features = plan.model["options"]["features"]
    name = plan.optimizer["name"]
    optimizer = {"sgd": "SGD", "adamw": "AdamW", "adam": "Adam"}.get(name, name)
    recipe = (
        f"ResEnc U-Net {features[0]}…{features[-1]}, {'×'.join(map(str, plan.patch_size))}, "
        f"batch {plan.batch_size}, {optimizer} {plan.optimizer['lr']:g} poly to the budget"
    )
    return _run_config(cfg, "medseg", minutes, recipe, console)


def run_monai(
    source: str,
    options: dict[str, Any],
    splits: DataSplits,
    minutes: float,
    out: Path,
    seed: int,
    device: str,
    console: Console,
    image_size: Sequence[int],
    in_channels: int,
) -> ArmResult:
    """MONAI's UNet through medseg's loop, as a user would set it up (module docstring)."""
    tree = Config().to_dict()
    tree["data"].update(
        source=source,
        options=dict(options),
        image_size=list(image_size),
        in_channels=in_channels,
    )
    tree["model"] = {
        "name": "monai_unet",
        "options": {"features": [16, 32, 64, 128, 256], "num_res_units": 2},
    }
    tree["loss"] = {"name": "dice_bce", "options": {"batch_dice": True}, "deep_supervision_weights": None}
    tree["optim"].update(name="adam", lr=1e-3, weight_decay=0.0, scheduler="constant", scheduler_options={})
    tree["train"].update(
        epochs=100_000,
        batch_size=16,
        seed=seed,
        device=device,
        max_time_minutes=minutes,
        progress=False,
        tensorboard=False,
    )
    tree["output_dir"] = str(out)
    cfg = apply_overrides(config_from_dict(tree), _split_overrides(splits))
    recipe = f"MONAI UNet 16…256 (2 res units), {'×'.join(map(str, image_size))}, batch 16, Adam 1e-3"
    return _run_config(cfg, "monai", minutes, recipe, console)


def run_nnunet_arm(
    splits: DataSplits,
    minutes: float,
    out: Path,
    device: str,
    console: Console,
    quick: bool,
    configuration: str = "2d",
) -> ArmResult | None:
    """nnU-Net v2 through its CLI (``configuration``: ``2d``, ``3d_fullres``); ``None`` (with a
    message) when ``nnunetv2`` is not installed."""
    from budget_nnunet import nnunet_available, run_nnunet

    if not nnunet_available():
        console.print("nnU-Net v2 is not installed (pip install -e '.[bench]'): its arm is skipped")
        return None
    result = run_nnunet(
        splits.train,
        splits.val,
        minutes,
        out,
        configuration=configuration,
        device=device,
        **({"iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "tta": False} if quick else {}),
    )
    return ArmResult(
        arm="nnunet",
        minutes=minutes,
        predictions=result.predictions,
        train_minutes=result.train_minutes,
        epochs=result.epochs,
        recipe=f"nnU-Net v2 {result.plan_summary}, final weights",
        curve=list(result.curve),
    )


def score(samples: Sequence[Sample], predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """DSC and HD95 (mm) of each val sample's prediction at its own resolution, by sample key."""
    assign_keys(list(samples))
    metrics = SegmentationMetrics(hd95_mode="pooled")
    rows: dict[str, dict[str, float]] = {}
    for sample in samples:
        if sample.key not in predictions:
            raise KeyError(f"no prediction for {sample.key}")
        pred = np.asarray(predictions[sample.key]) > 0
        gt = sample.target_mask > 0
        if pred.shape != gt.shape:
            raise ValueError(f"{sample.key}: prediction {pred.shape} vs ground truth {gt.shape}")
        row = metrics(pred, gt, sample.spacing, case=sample.key, patient=sample.case_id)
        rows[sample.key] = {
            "dice": float(row["dice"]),
            "hd95_mm": float(row["hd95_mm"]),
            "patient": sample.case_id,
        }
    return rows


def _patient_means(rows: dict[str, dict[str, Any]], metric: str) -> dict[str, float]:
    by_patient: dict[str, list[float]] = {}
    for row in rows.values():
        by_patient.setdefault(row["patient"], []).append(row[metric])
    return {p: float(np.nanmean(v)) for p, v in sorted(by_patient.items())}


def summary_row(result: ArmResult, rows: dict[str, dict[str, Any]], label: str) -> dict[str, Any]:
    dice = np.array([r["dice"] for r in rows.values()])
    hd95 = np.array([r["hd95_mm"] for r in rows.values()])
    finite = hd95[np.isfinite(hd95)]
    patients = np.array(list(_patient_means(rows, "dice").values()))
    return {
        "arm": label,
        "budget_min": result.minutes,
        "train_min": result.train_minutes,
        "epochs": result.epochs,
        "cases": len(rows),
        "dice_mean": float(dice.mean()),
        "dice_median": float(np.median(dice)),
        "patient_dice_mean": float(patients.mean()),
        "hd95_mean": float(finite.mean()) if finite.size else float("nan"),
        "hd95_median": float(np.median(finite)) if finite.size else float("nan"),
        "recipe": result.recipe,
    }


def paired_rows(
    reference: dict[str, dict[str, Any]], others: dict[str, dict[str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """medseg (reference) against each other arm on the shared cases: Δ = medseg − other."""
    out = []
    keys = sorted(reference)
    for label, rows in others.items():
        for metric in ("dice", "hd95_mm"):
            a = [rows[k][metric] for k in keys]
            b = [reference[k][metric] for k in keys]
            try:
                cmp = paired_comparison(a, b, metric)
            except ValueError:
                continue
            out.append(
                {
                    "comparison": f"medseg − {label}",
                    "metric": metric,
                    "n": cmp.n,
                    "mean_delta": cmp.mean_delta,
                    "ci": f"[{cmp.ci_low:+.3f}, {cmp.ci_high:+.3f}]",
                    "medseg_better": cmp.wins,
                    "ties": cmp.ties,
                    "worse": cmp.losses,
                    "wilcoxon_p": cmp.wilcoxon_p,
                }
            )
    return out


def save_curves(results: Sequence[tuple[str, ArmResult]], path: Path, title: str) -> None:
    """Validation DSC against training minutes, one line per arm (nnU-Net: its EMA pseudo-Dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, result in results:
        if result.curve:
            minutes, dice = zip(*result.curve, strict=True)
            ax.plot(minutes, dice, marker=".", label=label)
    ax.set_xlabel("training minutes (wall clock)")
    ax.set_ylabel("validation Dice (during training)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


SUMMARY_COLUMNS = {
    "arm": "arm",
    "budget_min": "budget (min)",
    "train_min": "train (min)",
    "epochs": "epochs",
    "cases": "cases",
    "dice_mean": "DSC mean",
    "dice_median": "DSC median",
    "patient_dice_mean": "DSC mean per patient",
    "hd95_mean": "HD95 mean (mm)",
    "hd95_median": "HD95 median (mm)",
    "recipe": "recipe",
}
PAIRED_COLUMNS = {
    "comparison": "comparison",
    "metric": "metric",
    "n": "cases",
    "mean_delta": "mean Δ",
    "ci": "95% CI of Δ",
    "medseg_better": "medseg better",
    "ties": "ties",
    "worse": "medseg worse",
    "wilcoxon_p": "Wilcoxon p",
}


def summary_table(summary: Sequence[dict[str, Any]]) -> str:
    """The arms' table (one :func:`summary_row` each), as ``benchmarks/update_readme.py`` reads it."""
    return markdown_table(
        summary,
        SUMMARY_COLUMNS,
        floatfmt={"budget_min": "g", "train_min": ".1f", "hd95_mean": ".2f", "hd95_median": ".2f"},
    )


def paired_table(paired: Sequence[dict[str, Any]]) -> str:
    """medseg against each other arm (one :func:`paired_rows` row per comparison and metric)."""
    return markdown_table(paired, PAIRED_COLUMNS, floatfmt={"mean_delta": "+.4f", "wilcoxon_p": ".3g"})


def report(
    results: Sequence[tuple[str, ArmResult]],
    samples: Sequence[Sample],
    out: Path,
    heading: str,
    curves_png: Path | None = None,
) -> str:
    """Score every arm, print and write ``table.md`` (summary + paired), draw the curves."""
    scored = {label: score(samples, result.predictions) for label, result in results}
    summary = [summary_row(result, scored[label], label) for label, result in results]
    text = f"{heading}\n\n{summary_table(summary)}"
    reference_label = next((label for label, _ in results if label.startswith("medseg")), None)
    others = {label: rows for label, rows in scored.items() if not label.startswith("medseg")}
    if reference_label is not None and others:
        paired = paired_rows(scored[reference_label], others)
        text += f"\n\nPaired per case ({reference_label} against each arm; Δ = medseg − arm):\n\n"
        text += paired_table(paired)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text + "\n")
    if curves_png is not None:
        save_curves(results, curves_png, textwrap.fill(heading.splitlines()[0], 75))
    return text


def run_benchmark(
    source: str,
    args: argparse.Namespace,
    quick_cases: int,
    in_channels: int,
    heading: Callable[[DataSplits, argparse.Namespace], str],
    name: str | None = None,
) -> str:
    """The arms of ``args.arms`` on one seeded split of ``source``, then :func:`report`.

    ``--quick`` keeps the first ``quick_cases`` cases (the last validates) and 3 s per arm;
    ``heading(splits, args)`` titles the table and the curves. The text is also published as
    ``benchmarks/results/<name>.md`` (default: the script's name, e.g. ``budget_lgg``), the file
    the README's results table is built from (``benchmarks/update_readme.py``).
    """
    from medseg.data.sources import build as build_source

    options = {"root": args.root}
    cases = None
    if args.quick:
        args.minutes, args.also_minutes = 0.05, []
        args.arms = "medseg,monai" if args.arms == ",".join(ARMS) else args.arms
        cases = build_source(source, **options).case_ids()[:quick_cases]
    console = Console()
    out = Path(args.out)
    splits = splits_for(source, options, args.seed, cases)
    arms = args.arms.split(",")
    results = []
    for minutes in [args.minutes, *args.also_minutes] if "medseg" in arms else []:
        label = "medseg" if minutes == args.minutes else f"medseg@{minutes:g}min"
        result = run_medseg(
            source,
            options,
            splits,
            minutes,
            out / f"medseg_{minutes:g}min",
            args.seed,
            args.device,
            console,
            args.medseg_set,
        )
        results.append((label, result))
    if "monai" in arms:
        size = (32, 32) if args.quick else (128, 128)
        monai = run_monai(
            source,
            options,
            splits,
            args.minutes,
            out / "monai",
            args.seed,
            args.device,
            console,
            size,
            in_channels,
        )
        results.append(("monai", monai))
    if "nnunet" in arms:
        nnunet = run_nnunet_arm(splits, args.minutes, out / "nnunet", args.device, console, args.quick)
        if nnunet is not None:
            results.append(("nnunet", nnunet))
    text = report(results, splits.val, out, heading(splits, args), out / "curves.png")
    publish(name or Path(sys.argv[0]).stem, text, args.quick)
    return text
