"""Volumetric nets on CPU-scale real data, each against a MONAI UNet (3D) through the same loop.

Every model trains through ``medseg.engine.train`` with the same data, loss, optimiser and time
budget as its MONAI UNet baseline (``train.max_time_minutes``: a run stops after the epoch that
crosses ``--minutes``, so it may overrun by one epoch; the epoch cap is generous). Three tasks:

* ``vnet`` — V-Net vs MONAI UNet on the built-in ultrasound phantom (the ``phantom`` source,
  micro-US layout, as ``configs/vnet_phantom.yaml``: 10 volumes of 24×96×96 at 1.0×0.4×0.4 mm, a
  seeded 8/2 patient split, 16×64×64 patches, V-Net's squared-denominator Dice loss). Per
  validation volume: Dice and HD95 in mm (the ``volumetric`` protocol), mean over the volumes.
* ``resunet`` — Res-UNet-R and Res-UNet-H vs MONAI UNet on the ISBI 2012 EM stack
  (``$MEDSEG_SHARED_DATA/em_isbi2012``, 30×512×512 at 50×4×4 nm): train on sections 0–19, validate on
  20–29 (``em_stack`` chunks → cases ``z00-19``/``z20-29``), 8×128×128 patches (no z
  downsampling in Res-UNet; the augmentation is in-plane only, z being 12.5× coarser), loss
  ``resunet_wbce`` (WBCE of the mask + WBCE of the instance boundary derived from the cells). The
  MONAI UNet predicts the same 2 channels (mask, boundary) with the same loss. On the validation
  volume, predicted by sliding window: Dice of the cell interior (the target, channel 0 > 0.5) and
  of the membrane (its complement), and the cells' AP-50 / AP-75 / mAP (COCO-style,
  :func:`medseg.metrics.instances.instance_ap`, ranked by size) from the seed-map pipeline
  (:func:`medseg.data.instances.seeds_to_instances`: seeds ``X_M > 0.9 & X_B < 0.8``, marker
  watershed inside ``X_M > 0.85``). The ground-truth cells are labelled per section (at 50 nm the
  interiors of neighbouring cells overlap between sections, see ``em_stack``), so the pipeline
  runs per section too, with 8-connected seeds, and drops objects under ``--min-size`` pixels
  (default 16 px = 0.000256 µm², 16×16 nm²; 2% of the 1081 ground-truth cells are smaller;
  predictions are ranked by size, so small false positives cost little). A row "ground truth
  (ceiling)" runs the same pipeline on the ground-truth interior as X_M and its derived boundary
  (width 1, as the loss's target) as X_B: the best AP this pipeline can reach (AP-50 0.962, AP-75
  0.937, mAP 0.941 at 16 px; 0.905 / 0.890 / 0.886 at 64 px). The sliding window
  at validation and prediction covers whole sections (8×512×512, two windows along z, Gaussian
  blending): the models are fully convolutional, and 49 in-plane windows per validation would cost
  more CPU time than the training. HD95 is not reported here (4 nm pixels; a millimetre distance is
  meaningless).
* ``pdvnet`` — PDV-Net vs MONAI UNet on the prostate phantom multi-label volume
  (``$MEDSEG_SHARED_DATA/volumes_3d/prostate_phantom_subvolume*.nrrd``, 13×67×82 at 3.0×0.5×0.5 mm,
  labels 1, 7, 8 and 9): softmax over 5 classes (``data.num_classes: 5``, ``folder`` source with
  ``labels: [1, 7, 8, 9]``), softmax Dice loss (PDV-Net uses a Dice-based loss). Only one volume
  exists, so it is cut into two z-halves written to ``OUT/prostate_halves`` with their geometry:
  train on sections 0–6, validate on sections 7–12 (every label occurs in both halves; labels 7
  and 8 grow towards the second half, so this is a harder, honest held-out test). Dice and HD95
  per class on the validation half; the table shows their means over the 4 classes, and a second
  table the Dice per class.

Writes ``OUT/table.md`` (the markdown table printed at the end), ``OUT/results.json`` and each
run's training outputs under ``OUT/<task>/<model>``.

    python benchmarks/volumetric_train.py                       # 3 min per run, 7 runs: ~35 min
    python benchmarks/volumetric_train.py --tasks pdvnet --minutes 10
    python benchmarks/volumetric_train.py --quick   # smoke test: PDV-Net task, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from bench_results import publish
from rich.console import Console

from medseg.config import Config, load_config
from medseg.data.instances import boundary_targets, seeds_to_instances
from medseg.data.loading import load_splits
from medseg.data.transforms import normalize_intensity
from medseg.engine.experiment import train_and_evaluate
from medseg.engine.inference import load_model, resolve_device, sliding_window_from_config, volume_logits
from medseg.engine.train import train
from medseg.metrics import dice
from medseg.metrics.instances import instance_ap
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_root

SHARED = shared_data_root()
EM_ROOT = SHARED / "em_isbi2012"
PROSTATE_IMAGE = SHARED / "volumes_3d" / "prostate_phantom_subvolume.nrrd"
PROSTATE_LABEL = SHARED / "volumes_3d" / "prostate_phantom_subvolume-label.nrrd"
PROSTATE_LABELS = [1, 7, 8, 9]
PROSTATE_SPLIT = (7, 13)  # sections [0, 7) train, [7, 13) validate

TASKS = ("vnet", "resunet", "pdvnet")
# The MONAI UNet baseline of every task: residual units, widths 16..128, three stride-2 levels
# (8-slice patches reach one slice at the bottom).
MONAI_UNET = {"features": [16, 32, 64, 128], "num_res_units": 2}
MODELS: dict[str, dict[str, dict[str, Any]]] = {
    "vnet": {"vnet": {"dropout": 0.0, "act": "prelu"}, "monai_unet": MONAI_UNET},
    "resunet": {
        "resunet_r": {},  # widths 28-36-48-64-80, one decoder
        "resunet_h": {},  # widths 16-32-48-64-80, two decoders
        "monai_unet": {**MONAI_UNET, "out_channels": 2},  # mask + boundary, like Res-UNet
    },
    "pdvnet": {"pdvnet": {}, "monai_unet": MONAI_UNET},  # K = 5 outputs from data.num_classes
}
TASK_LABELS = {
    "vnet": "V-Net, US phantom",
    "resunet": "Res-UNet, ISBI 2012 EM",
    "pdvnet": "PDV-Net, prostate phantom (4 labels)",
}


def common_overrides(args: argparse.Namespace, model: str, options: dict[str, Any]) -> list[str]:
    """Model, optimiser and budget: the same for a model and its baseline."""
    return [
        f"model.name={model}",
        f"model.options={json.dumps(options)}",
        "optim.name=adamw",
        f"optim.lr={args.lr}",
        "optim.weight_decay=0.0001",
        "optim.scheduler=constant",
        f"train.epochs={args.max_epochs}",
        f"train.max_time_minutes={args.minutes}",
        f"train.seed={args.seed}",
        "train.tensorboard=false",
        f"train.progress={str(not args.no_progress).lower()}",
        "inference.sw_overlap=0.5",
        "inference.sw_mode=gaussian",
    ]


def task_overrides(task: str, args: argparse.Namespace) -> list[str]:
    """Data, patches and loss of a task."""
    quick = ["data.samples_per_volume=2"] if args.quick else []
    if task == "vnet":
        options = {"n_patients": 10, "seed": 0, "shape": [24, 96, 96], "spacing": [1.0, 0.4, 0.4]}
        return [
            "data.source=phantom",
            f"data.options={json.dumps(options)}",
            "data.spatial_dims=3",
            "data.patch_size=[16, 64, 64]",
            "data.foreground_ratio=0.5",
            "data.samples_per_volume=2",
            "data.split.method=holdout",
            "data.split.val_fraction=0.2",
            f"data.split.seed={args.seed}",
            "loss.name=dice",
            "loss.options={squared: true}",
            "train.batch_size=2",
            *quick,
        ]
    if task == "resunet":
        options = {"root": str(args.em_root), "chunks": [[0, 20], [20, 30]]}
        return [
            "data.source=em_stack",
            f"data.options={json.dumps(options)}",
            "data.spatial_dims=3",
            "data.patch_size=[8, 128, 128]",
            "data.foreground_ratio=0.5",
            "data.samples_per_volume=16",  # one training volume: 16 patches (8 steps) per epoch
            "data.split.train_cases=[z00-19]",
            "data.split.val_cases=[z20-29]",
            "inference.roi_size=[8, 512, 512]",  # whole sections (see the module docstring)
            "loss.name=resunet_wbce",
            "train.batch_size=2",
            *quick,
        ]
    if task == "pdvnet":
        options = {
            "root": str(Path(args.out) / "prostate_halves"),
            "images": "*_image.nrrd",
            "masks": "*_label.nrrd",
            "labels": PROSTATE_LABELS,
        }
        z0, z1 = PROSTATE_SPLIT
        return [
            "data.source=folder",
            f"data.options={json.dumps(options)}",
            "data.spatial_dims=3",
            f"data.num_classes={len(PROSTATE_LABELS) + 1}",
            "data.patch_size=[8, 64, 64]",  # the 7-slice training half is zero-padded to 8
            "data.foreground_ratio=0.5",
            "data.samples_per_volume=16",  # one training volume: 16 patches (8 steps) per epoch
            f"data.split.train_cases=[prostate_z00-{z0 - 1:02d}]",
            f"data.split.val_cases=[prostate_z{z0:02d}-{z1 - 1:02d}]",
            "loss.name=dice",  # softmax over the 5 classes, class-index targets
            "train.batch_size=2",
            *quick,
        ]
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def write_prostate_halves(out: Path) -> Path:
    """The prostate phantom and its labels cut along z into two cases, geometry kept (ITK crop)."""
    out.mkdir(parents=True, exist_ok=True)
    image, label = sitk.ReadImage(str(PROSTATE_IMAGE)), sitk.ReadImage(str(PROSTATE_LABEL))
    depth = image.GetSize()[2]
    z0, z1 = PROSTATE_SPLIT
    if z1 != depth:
        raise SystemExit(f"{PROSTATE_IMAGE}: expected {z1} sections, found {depth}")
    for a, b in ((0, z0), (z0, z1)):
        name = f"prostate_z{a:02d}-{b - 1:02d}"
        sitk.WriteImage(image[:, :, a:b], str(out / f"{name}_image.nrrd"))
        sitk.WriteImage(label[:, :, a:b], str(out / f"{name}_label.nrrd"))
    return out


def make_config(task: str, model: str, args: argparse.Namespace) -> Config:
    cfg = load_config(
        None, [*task_overrides(task, args), *common_overrides(args, model, MODELS[task][model])]
    )
    cfg.output_dir = str(Path(args.out) / task / model)
    return cfg


def run_semantic(task: str, model: str, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Train, then evaluate ``best.pt`` on the validation volumes (Dice and HD95 in mm)."""
    cfg = make_config(task, model, args)
    experiment = train_and_evaluate(cfg, split="val", console=console)
    row = experiment.row()
    out = {
        "task": TASK_LABELS[task],
        "model": model,
        "params_M": row["params_M"],
        "epochs": row["epochs"],
        "best_epoch": row["best_epoch"],
        "train_min": row["train_min"],
        "n_val": row["n_patients"],
        "dice": row["dice_mean"],
        "hd95_mm": row["hd95_mm_mean"],
    }
    per_patient = experiment.evaluation.summary["per_patient"]
    classes = sorted(k for k in per_patient if k.startswith("dice_c"))
    if classes:  # multi-class: Dice per class, named by its label value
        values = experiment.evaluation.summary.get("class_values") or list(range(len(classes) + 1))
        out["dice_per_class"] = {
            f"label {values[int(k[len('dice_c') :])]}": per_patient[k]["mean"] for k in classes
        }
    return out


def section_instances(mask_prob: np.ndarray, boundary_prob: np.ndarray, min_size: int) -> np.ndarray:
    """Cells of a ``D×H×W`` stack by the seed-map pipeline, section by section (ids unique overall).

    The ground-truth cells are labelled per section, so the predicted ones are too.
    """
    instances = np.zeros(mask_prob.shape, np.int64)
    offset = 0
    for z in range(mask_prob.shape[0]):
        section = seeds_to_instances(mask_prob[z], boundary_prob[z], min_size=min_size).astype(np.int64)
        instances[z] = np.where(section > 0, section + offset, 0)
        offset += int(section.max())
    return instances


@torch.no_grad()
def em_scores(checkpoint: Path, min_size: int) -> dict[str, Any]:
    """Interior / membrane Dice and the cells' AP of a checkpoint on its validation volume."""
    model, cfg = load_model(checkpoint, "cpu")
    device = resolve_device(cfg.train.device)
    model = model.to(device)
    window = sliding_window_from_config(cfg)
    assert window is not None
    (sample,) = load_splits(cfg.data).val
    image = torch.from_numpy(normalize_intensity(sample.image, cfg.data.intensity))[None]
    logits = volume_logits(model, image.to(window.stitch_device or device), window, device).float()
    probs = torch.sigmoid(logits[0, :2]).cpu().numpy()
    mask_prob, boundary_prob = probs[0], probs[1]
    interior = sample.target_mask.astype(bool)
    pred = mask_prob > 0.5
    ap = instance_ap(section_instances(mask_prob, boundary_prob, min_size), sample.meta["instance"])
    return {
        "dice": dice(pred, interior),
        "membrane_dice": dice(~pred, ~interior),
        "ap50": ap.ap50,
        "ap75": ap.ap75,
        "map": ap.map,
        "n_pred": ap.n_pred,
        "n_gt": ap.n_gt,
    }


def em_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The seed-map pipeline on ground-truth probabilities (interior, boundary of width 1)."""
    cfg = make_config("resunet", "monai_unet", args)
    (sample,) = load_splits(cfg.data).val
    cells = sample.meta["instance"]
    mask_prob = sample.target_mask.astype(np.float32)
    boundary_prob = boundary_targets(cells, 1).astype(np.float32)
    ap = instance_ap(section_instances(mask_prob, boundary_prob, args.min_size), cells)
    return {
        "task": TASK_LABELS["resunet"],
        "model": "ground truth (ceiling)",
        "dice": None,
        "ap50": ap.ap50,
        "ap75": ap.ap75,
        "map": ap.map,
        "n_pred": ap.n_pred,
        "n_gt": ap.n_gt,
    }


def run_instances(model: str, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Train on z00-19, then score ``best.pt`` on z20-29: Dice and the seed-map pipeline's AP."""
    cfg = make_config("resunet", model, args)
    start = time.perf_counter()
    result = train(cfg, console=console)
    train_min = (time.perf_counter() - start) / 60
    scores = em_scores(result.best_checkpoint, args.min_size)
    model_obj, _ = load_model(result.best_checkpoint)
    return {
        "task": TASK_LABELS["resunet"],
        "model": model,
        "params_M": sum(p.numel() for p in model_obj.parameters()) / 1e6,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "train_min": train_min,
        "n_val": 1,
        **scores,
    }


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench_volumetric")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget per run")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--em-root", default=str(EM_ROOT))
    parser.add_argument("--min-size", type=int, default=16, help="EM: smallest predicted cell, pixels")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: PDV-Net task, 1 epoch of 2 patches per volume"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:  # the smallest task (one 13×67×82 volume), one epoch per model
        args.tasks, args.max_epochs, args.minutes, args.no_progress = "pdvnet", 1, 0.02, True
        args.out = str(Path(args.out) / "quick")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    if "resunet" in tasks:
        require_data(args.em_root, "the ISBI 2012 EM stack (or pass --em-root)")
    if "pdvnet" in tasks:
        require_data(PROSTATE_IMAGE, "the pyradiomics prostate phantom volume")
        require_data(PROSTATE_LABEL, "the pyradiomics prostate phantom labels")
        write_prostate_halves(Path(args.out) / "prostate_halves")
    console = Console()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for model in MODELS[task]:
            console.rule(f"{task}: {model}")
            row = (
                run_instances(model, args, console)
                if task == "resunet"
                else run_semantic(task, model, args, console)
            )
            rows.append(row)
        if task == "resunet":
            rows.append(em_ceiling(args))
    table_rows = [
        {
            "task": r["task"],
            "model": r["model"],
            "params": _cell(r.get("params_M"), ".2f"),
            "epochs": f"{r['epochs']} (best {r['best_epoch']})" if "epochs" in r else "–",
            "minutes": _cell(r.get("train_min"), ".1f"),
            "dice": _cell(r["dice"], ".4f"),
            "hd95": _cell(r.get("hd95_mm"), ".2f"),
            "membrane": _cell(r.get("membrane_dice"), ".4f"),
            "ap50": _cell(r.get("ap50"), ".4f"),
            "ap75": _cell(r.get("ap75"), ".4f"),
            "map": _cell(r.get("map"), ".4f"),
        }
        for r in rows
    ]
    markdown = markdown_table(
        table_rows,
        {
            "task": "task",
            "model": "model",
            "params": "params (M)",
            "epochs": "epochs in budget",
            "minutes": "train (min)",
            "dice": "Dice",
            "hd95": "HD95 (mm)",
            "membrane": "membrane Dice",
            "ap50": "AP-50",
            "ap75": "AP-75",
            "map": "mAP",
        },
    )
    per_class = [{"model": r["model"], **r["dice_per_class"]} for r in rows if "dice_per_class" in r]
    if per_class:
        markdown += "\n\nPDV-Net task, validation half, Dice per label:\n\n" + markdown_table(per_class)
    title = (
        f"Volumetric nets vs MONAI UNet (3D), {args.minutes} min training budget per run "
        f"(the epoch that crosses it finishes), best validation checkpoint; Dice per validation "
        f"volume (EM: cell interior; PDV-Net: mean over the 4 labels), HD95 mean over volumes, AP of "
        f"the EM cells (seed map + watershed per section, min size {args.min_size} px):"
    )
    print(f"\n{title}\n\n{markdown}")
    publish("volumetric_train", f"{title}\n\n{markdown}", args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(markdown + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=float))


if __name__ == "__main__":
    main()
