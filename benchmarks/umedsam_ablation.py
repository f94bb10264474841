"""U-MedSAM ablation (paper 002) at CPU scale, next to two trivial box baselines.

Variants, all with the box-prompted ``litemedsam`` (``variant: tiny``, trained from scratch) at
64×64 by default (``--size``), grey input, min-max intensity, boxes from the ground-truth mask
(training: the tight box, each side moved outward by 0..``round(20·size/1024)`` px, MedSAM's jitter
scaled: 1 px at 64, 2 px at 128; evaluation: the tight box, no jitter):

* (a) the LiteMedSAM baseline loss (Dice + BCE + MSE of the IoU head) with AdamW;
* (b) the uncertainty-aware loss ``umedsam`` (MSE + Dice + BCE + shape distance, learned
  weights) with AdamW;
* (c) (b) with the SAM optimizer (base AdamW, rho 0.05), which costs two forward/backward
  passes per step, so it gets about half the steps in the same budget.

The same lr for all (default 1e-3, constant; the paper used 5e-5 for 135 epochs), weight decay
0.01, batch 16, the same training-time budget per run (``--minutes``, default 2; the engine stops
after the epoch that crosses it, so a run overshoots by up to one epoch; the table reports the
epochs each run got), seeds 0, 1, 2. Data: HC18 (fetal head, ``$MEDSEG_SHARED_DATA/hc18_us``) and BUSI
(breast lesions, ``$MEDSEG_SHARED_DATA/busi_us``, RGB files read as grey), each with one seeded
validation split of 20 % of the cases. An HC18 case is a subject, the number before the first
``_`` (17 subjects have two images, which stay on the same side); BUSI publishes no patient ids,
so its case is the image.

Why 64 px: on one (shared) CPU core the tiny model takes ~5 s per step of 16 at 128², ~1.3 s at
64². At 128 a 2-minute run gets 1–2 HC18 epochs or 6 BUSI epochs (36 steps) and learns nothing
(BUSI DSC 0.05); at 64 it gets 21 BUSI epochs and reaches DSC 0.56 (variant (a), seed 0).
``--size 128`` needs a budget of the order of 10 minutes per run to see as many steps.

Metrics, per validation image at its original resolution and spacing
(``medseg.metrics.compute_segmentation_metrics``): DSC, and NSD at a tolerance of 2 px as in the
CVPR 2024 "MedSAM on laptop" challenge for 2D images. For HC18 that is 2 × the image's real pixel
size in mm; BUSI has no published spacing, so its 1 mm pixel is assumed and the tolerance is
2 mm = 2 px. (The challenge's rule that sets NSD to 0 when DSC ≤ 0.2 is not applied.) The model
predicts at ``--size``² and its probabilities are resized back, so at 64 px an HC18 model pixel
is ~12 image pixels wide, and its NSD at 2 image pixels is handicapped. Per run: the mean over
the images; per data set and variant: mean ± std (ddof 1) over the seeds. The model is scored
from its best checkpoint (``--checkpoint best``, the engine's convention; it is chosen by
validation Dice on these same images) or its last one.

Box baselines, on the same images and scored the same way: the tight box of the ground-truth
mask at the original resolution, filled, and the ellipse inscribed in it
(``medseg.metrics.box_baselines``). The model gets the tight box of the mask resized to
``--size``², up to one model pixel looser, so the comparison is, if anything, tilted toward the
baselines; ``per_image.csv`` also scores the baselines from that coarser box. A model that does
not beat the baselines has learned nothing that the box did not already give. (An HC18 head is
close to an ellipse, so there the inscribed ellipse is a very strong baseline.)

This measures the ranking of (a), (b) and (c) at CPU scale: a tiny model, 64 px, minutes of
training, no pretrained weights. It does NOT reproduce the paper's numbers (83.86 → 85.48 →
86.10 DSC: LiteMedSAM trained 135 epochs on the CVPR24 challenge data; its first rung is the
shape-distance loss alone, not the LiteMedSAM loss of (a)) and must not be quoted as such.

    OMP_NUM_THREADS=1 python benchmarks/umedsam_ablation.py      # 2 data sets × 3 variants × 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/umedsam_ablation.py --minutes 0.2 --seeds 0 --datasets hc18  # smoke

Outputs in ``--out``: ``table.md``, ``runs.csv`` (one row per run), ``per_image.csv`` (every
image of every run and baseline), and per run ``DATASET/VARIANT_seedK/`` with the engine's outputs
and ``result.json``; a run whose ``result.json`` exists is not trained again (``--rerun`` does).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from bench_results import publish
from rich.console import Console

from medseg.config import Config, load_config
from medseg.data.loading import load_splits
from medseg.data.sample import Sample
from medseg.engine.experiment import train_and_evaluate
from medseg.engine.inference import load_model, resolve_device
from medseg.engine.predict import predict_probabilities
from medseg.metrics import compute_segmentation_metrics
from medseg.metrics.box_baselines import filled_box_mask, inscribed_ellipse_mask, tight_box
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_root

DATA = shared_data_root()

#: name → (source, default root, source options besides the root)
DATASETS: dict[str, tuple[str, Path, dict[str, Any]]] = {
    "hc18": ("hc18", DATA / "hc18_us", {}),
    "busi": ("busi", DATA / "busi_us", {"channels": 1, "pixel_spacing_mm": 1.0}),
}

#: key → (label, loss, optimizer, optimizer options)
VARIANTS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "a": ("(a) LiteMedSAM loss + AdamW", "litemedsam_baseline", "adamw", {}),
    "b": ("(b) U-MedSAM loss + AdamW", "umedsam", "adamw", {}),
    "c": ("(c) U-MedSAM loss + SAM", "umedsam", "sam", {"base": "adamw", "rho": 0.05}),
}

#: what a case (the unit of the split) is
CASES = {"hc18": "subjects", "busi": "cases, one image each: BUSI has no patient ids"}
BASELINES = ("filled box", "inscribed ellipse")
NSD_TOLERANCE_PX = 2.0  # CVPR24 challenge, 2D
#: options a cached result.json must have been made with to be reused
SETTINGS = (
    "size",
    "minutes",
    "max_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "val_fraction",
    "split_seed",
    "checkpoint",
    "hc18_root",
    "busi_root",
)


def config_for(
    dataset: str, args: argparse.Namespace, variant: str = "a", seed: int = 0, nsd_mm: float = 2.0
) -> Config:
    source, default_root, options = DATASETS[dataset]
    root = getattr(args, f"{dataset}_root") or default_root
    _, loss, optimizer, optim_options = VARIANTS[variant]
    return load_config(
        None,
        [
            f"data.source={source}",
            f"data.options={json.dumps({'root': str(root), **options})}",
            "data.in_channels=1",
            f"data.image_size=[{args.size}, {args.size}]",
            "data.intensity=minmax",
            f"data.split.val_fraction={args.val_fraction}",
            f"data.split.seed={args.split_seed}",
            "model.name=litemedsam",
            "model.options={variant: tiny}",
            f"loss.name={loss}",
            f"optim.name={optimizer}",
            f"optim.options={json.dumps(optim_options)}",
            f"optim.lr={args.lr}",
            f"optim.weight_decay={args.weight_decay}",
            "optim.scheduler=constant",
            f"train.epochs={args.max_epochs}",
            f"train.batch_size={args.batch_size}",
            f"train.max_time_minutes={args.minutes}",
            f"train.seed={seed}",
            f"train.progress={str(not args.no_progress).lower()}",
            "train.tensorboard=false",
            # for the engine's own metrics.csv only (BUSI: 2 px; HC18: 2 × the median pixel size);
            # the table re-scores every image at 2 × its own pixel size (score())
            f"eval.nsd_tolerance_mm={nsd_mm}",
        ],
    )


def score(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """DSC and NSD at 2 px (2 × the pixel size in mm) of one 2D image, at its original spacing."""
    sp = tuple(float(v) for v in spacing)
    tolerance = NSD_TOLERANCE_PX * min(sp)  # both data sets have square pixels
    m = compute_segmentation_metrics(pred.astype(bool), gt.astype(bool), sp, nsd_tolerance_mm=tolerance)
    return {"dice": float(m["dice"]), "nsd": float(m["nsd"]), "nsd_tolerance_mm": tolerance}


def image_name(sample: Sample) -> str:
    return str(sample.meta.get("image_name") or Path(sample.source_path or sample.case_id).name)


def model_input_box(gt: np.ndarray, size: int) -> np.ndarray:
    """The tight box the model is given (of the mask resized nearest to ``size``²), in original pixels.

    Model pixel ``i`` covers original pixel edges ``[i·s, (i + 1)·s)``; as pixel-centre indices that
    box runs from ``x0·s − 0.5`` to ``(x1 + 1)·s − 0.5`` (float, for :mod:`medseg.metrics.box_baselines`).
    """
    h, w = gt.shape
    small = F.interpolate(
        torch.from_numpy(gt.astype(np.float32))[None, None], size=(size, size), mode="nearest"
    )
    x0, y0, x1, y1 = tight_box(small[0, 0].numpy() >= 0.5)
    sx, sy = w / size, h / size
    return np.array([x0 * sx - 0.5, y0 * sy - 0.5, (x1 + 1) * sx - 0.5, (y1 + 1) * sy - 0.5])


def baseline_rows(dataset: str, samples: Sequence[Sample], size: int) -> list[dict[str, Any]]:
    """Per-image DSC/NSD of the filled box and the inscribed ellipse (exact box, model's coarser box)."""
    rows = []
    for sample in samples:
        gt = sample.target_mask.astype(bool)
        boxes = {"": tight_box(gt), f" ({size}² box)": model_input_box(gt, size)}
        for suffix, box in boxes.items():
            masks = {
                "filled box": filled_box_mask(box, gt.shape),
                "inscribed ellipse": inscribed_ellipse_mask(box, gt.shape),
            }
            for method, mask in masks.items():
                rows.append(
                    {
                        "dataset": dataset,
                        "method": method + suffix,
                        "seed": -1,
                        "subject": sample.case_id,
                        "image": image_name(sample),
                        **score(mask, gt, sample.spacing),
                    }
                )
    return rows


def run_one(
    dataset: str,
    variant: str,
    seed: int,
    samples: Sequence[Sample],
    args: argparse.Namespace,
    console: Console,
    nsd_mm: float,
) -> dict[str, Any]:
    """Train one (data set, variant, seed) and score it per validation image; cached in result.json."""
    out = Path(args.out) / dataset / f"{variant}_seed{seed}"
    cached = out / "result.json"
    settings = {k: getattr(args, k) for k in SETTINGS}
    if cached.is_file() and not args.rerun:
        record = json.loads(cached.read_text())
        if record.get("settings") == settings:
            console.print(f"[dim]{cached} exists: run skipped[/]")
            return record
        console.print(f"[yellow]{cached} was made with other settings ({record.get('settings')}): rerun[/]")
    cfg = config_for(dataset, args, variant, seed, nsd_mm)
    cfg.output_dir = str(out)
    console.rule(f"{dataset} {VARIANTS[variant][0]} seed {seed}")
    experiment = train_and_evaluate(cfg, split="val", console=console, progress=not args.no_progress)
    result = experiment.train
    checkpoint = result.best_checkpoint if args.checkpoint == "best" else result.last_checkpoint
    device = resolve_device(cfg.train.device)
    model, stored = load_model(checkpoint, device)
    images = []
    for sample in samples:
        prob = predict_probabilities(model, sample, stored.data.image_size, stored.data.intensity, device)
        images.append(
            {
                "subject": sample.case_id,
                "image": image_name(sample),
                **score(prob >= stored.eval.threshold, sample.target_mask, sample.spacing),
            }
        )
    engine_dice = float(experiment.evaluation.per_case["dice"].mean())
    if args.checkpoint == "best" and abs(engine_dice - np.mean([r["dice"] for r in images])) > 1e-6:
        raise RuntimeError(
            f"{out}: re-scored DSC {np.mean([r['dice'] for r in images]):.6f} differs from the engine's "
            f"{engine_dice:.6f} (the validation images differ?)"
        )
    record = {
        "dataset": dataset,
        "variant": variant,
        "method": VARIANTS[variant][0],
        "seed": seed,
        "settings": settings,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "train_min": experiment.train_time_s / 60,
        "params_M": experiment.n_parameters / 1e6,
        "dice": float(np.mean([r["dice"] for r in images])),
        "nsd": float(np.mean([r["nsd"] for r in images])),
        "n_images": len(images),
        "images": images,
    }
    cached.write_text(json.dumps(record, indent=1))
    return record


def _mean_std(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f}" if v.size == 1 else f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def summary_rows(runs: pd.DataFrame, baselines: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows: per data set, the two exact-box baselines, then each variant over its seeds."""
    rows: list[dict[str, Any]] = []
    for dataset in dict.fromkeys([*baselines["dataset"], *runs["dataset"]]):
        base = baselines[baselines["dataset"] == dataset].groupby("method")[["dice", "nsd"]].mean()
        best = base.loc[list(BASELINES), "dice"].max()
        for method in BASELINES:
            rows.append(
                {
                    "dataset": dataset,
                    "method": f"box baseline: {method}",
                    "DSC": f"{base.loc[method, 'dice']:.4f}",
                    "NSD": f"{base.loc[method, 'nsd']:.4f}",
                    "vs best box (DSC)": "",
                    "epochs": "",
                    "minutes": "",
                }
            )
        mine = runs[runs["dataset"] == dataset]
        for variant in dict.fromkeys(mine["variant"]):
            r = mine[mine["variant"] == variant]
            beats = int((r["dice"] > best).sum())
            rows.append(
                {
                    "dataset": dataset,
                    "method": VARIANTS[variant][0],
                    "DSC": _mean_std(r["dice"]),
                    "NSD": _mean_std(r["nsd"]),
                    "vs best box (DSC)": f"{r['dice'].mean() - best:+.4f} ({beats}/{len(r)} seeds above)",
                    "epochs": "/".join(str(int(e)) for e in r["epochs"]),
                    "minutes": f"{r['train_min'].mean():.1f}",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench_umedsam")
    parser.add_argument("--datasets", default="hc18,busi")
    parser.add_argument("--variants", default="a,b,c")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--minutes", type=float, default=2.0, help="training time budget per run")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64, help="model input side (see the docstring)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--hc18-root", default=None, help=f"default {DATASETS['hc18'][1]}")
    parser.add_argument("--busi-root", default=None, help=f"default {DATASETS['busi'][1]}")
    parser.add_argument("--rerun", action="store_true", help="train runs that already have a result.json")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: BUSI, variant a, seed 0, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.variants, args.seeds = "busi", "a", "0"
        args.minutes, args.max_epochs, args.no_progress, args.rerun = 0.02, 1, True, True
        args.out = str(Path(args.out) / "quick")
    datasets = [d for d in args.datasets.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    unknown = sorted(set(datasets) - set(DATASETS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(
            f"unknown data set(s)/variant(s) {unknown}; choose from {list(DATASETS)}, {list(VARIANTS)}"
        )
    for dataset in datasets:
        require_data(getattr(args, f"{dataset}_root") or DATASETS[dataset][1], f"the {dataset} data set")
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    baselines, runs, described = [], [], []
    for dataset in datasets:
        splits = load_splits(config_for(dataset, args).data)
        samples = splits.val
        empty = [image_name(s) for s in samples if not s.target_mask.any()]
        if empty:
            raise SystemExit(f"{dataset}: validation images without an object have no box: {empty[:5]}")
        pixel = np.array([min(s.spacing) for s in samples], dtype=float)
        nsd_mm = float(NSD_TOLERANCE_PX * np.median(pixel))
        described.append(
            f"{dataset}: {len(splits.train)} training / {len(samples)} validation images "
            f"({len(splits.train_cases)} / {len(splits.val_cases)} {CASES[dataset]}), NSD tolerance 2 px = "
            + (
                f"{NSD_TOLERANCE_PX * pixel.min():.3f}–{NSD_TOLERANCE_PX * pixel.max():.3f} mm "
                "(2 × each image's pixel size)"
                if np.ptp(pixel) > 0
                else f"{NSD_TOLERANCE_PX * pixel[0]:g} mm"
                + (" (assumed 1 mm pixels)" if samples[0].meta.get("spacing_assumed") else "")
            )
        )
        baselines += baseline_rows(dataset, samples, args.size)
        for variant in variants:
            for seed in seeds:
                runs.append(run_one(dataset, variant, seed, samples, args, console, nsd_mm))

    baseline_table = pd.DataFrame(baselines)
    run_table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("images", "settings")} for r in runs])
    per_image = pd.concat(
        [
            baseline_table,
            pd.DataFrame(
                [
                    {"dataset": r["dataset"], "method": r["method"], "seed": r["seed"], **image}
                    for r in runs
                    for image in r["images"]
                ]
            ),
        ],
        ignore_index=True,
    )
    per_image.to_csv(out / "per_image.csv", index=False, float_format="%.6f")
    run_table.to_csv(out / "runs.csv", index=False, float_format="%.6f")

    markdown = markdown_table(
        summary_rows(run_table, baseline_table),
        {
            "dataset": "data set",
            "method": "method",
            "DSC": "DSC mean ± std (seeds)",
            "NSD": "NSD mean ± std (seeds)",
            "vs best box (DSC)": "DSC − best box baseline",
            "epochs": "epochs per seed",
            "minutes": "train min",
        },
    )
    coarse = baseline_table[baseline_table["method"].str.endswith("² box)")]
    coarse_means = coarse.groupby(["dataset", "method"])["dice"].mean()
    header = (
        f"U-MedSAM ablation at CPU scale (NOT the paper's setting or numbers): LiteMedSAM tiny at "
        f"{args.size}², grey input, no pretraining, {args.minutes:g} min training budget per run, "
        f"batch {args.batch_size}, lr {args.lr:g} (constant), weight decay {args.weight_decay:g}, "
        f"seeds {','.join(map(str, seeds))}, {args.checkpoint} checkpoint. Boxes: tight box of the "
        "ground truth. Metrics per validation image at the original resolution, mean over images "
        "per run, then mean ± std over seeds; the box baselines are deterministic.\n"
        + "\n".join(f"- {line}" for line in described)
        + "\n- box baselines from the model's coarser "
        + f"{args.size}² box (per_image.csv), DSC: "
        + ", ".join(f"{d} {m.split(' (')[0]} {v:.4f}" for (d, m), v in coarse_means.items())
    )
    print("\n" + header + "\n")
    print(markdown)
    (out / "table.md").write_text(header + "\n\n" + markdown + "\n")
    publish("umedsam_ablation", header + "\n\n" + markdown, args.quick)
    console.print(f"\n{len(runs)} runs, {(time.perf_counter() - start) / 60:.1f} min in all; tables in {out}")


if __name__ == "__main__":
    main()
