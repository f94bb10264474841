"""What a training run reports: the progress bar, ``history.csv`` and TensorBoard.

TensorBoard gets the epoch's scalars and a validation overlay (the image in grey, the ground
truth in green, the prediction in red): the first slices of the 2D validation set, or the 3D
validation previews (one slice per volume, :func:`~medseg.engine.validation.validate_volumes`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import Dataset

from medseg.data.dataset import SegmentationDataset
from medseg.engine.validation import main_output
from medseg.io_utils import atomic_write

HISTORY_FIELDS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_dice",
    "val_dice_ema",
    "lr",
    "epoch_time_s",
    "elapsed_s",
)


class TrainProgress:
    """Rich progress bar that can be switched off (tests, CI logs)."""

    def __init__(self, enabled: bool, console: Console) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=True,
        )

    def __enter__(self) -> Progress:
        self.progress.__enter__()
        return self.progress

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def open_tensorboard(out: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing to ``out/tensorboard``."""
    from torch.utils.tensorboard import SummaryWriter  # optional dependency (tensorboard)

    return SummaryWriter(str(out / "tensorboard"))


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """``history.csv``: one row per finished epoch (:data:`HISTORY_FIELDS`), written atomically."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            # an epoch without validation (train.val_every) has NaN validation columns
            writer.writerow({k: row.get(k, float("nan")) for k in HISTORY_FIELDS})


def log_epoch(
    writer: Any,
    record: dict[str, float],
    model: torch.nn.Module,
    device: torch.device,
    val_set: Dataset,
    previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]],
    slice_overlay: bool,
) -> None:
    """TensorBoard scalars of an epoch, and validation overlays (a 2D slice, or the 3D previews)."""
    epoch = int(record["epoch"])
    for key in ("train_loss", "val_loss", "val_dice", "lr", "epoch_time_s"):
        writer.add_scalar(key, record[key], epoch)
    if slice_overlay:
        log_overlay(writer, model, val_set, device, epoch)
        return
    for case_id, grey, target, pred in previews:
        rgb = overlay_rgb(grey[None, None], target[None, None], pred[None, None])
        writer.add_images(f"val/overlay_gt_green_pred_red/{case_id}", rgb, epoch)


@torch.no_grad()
def log_overlay(
    writer: Any,
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    step: int,
    n: int = 4,
) -> None:
    """TensorBoard image: image grey, GT in green, prediction in red, for the first ``n`` slices
    (a multi-class model: its foreground, every class together)."""
    if len(dataset) == 0:
        return
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int)
    items = [dataset[int(i)] for i in idx]
    image = torch.stack([it["image"] for it in items]).to(device)
    logits = main_output(model(image))
    num_classes = getattr(model, "num_classes", None)
    # multi-class: the foreground (any class but the background); binary: the mask channel > 0
    channel = getattr(model, "mask_channel", 0)
    mask = logits[:, channel : channel + 1] > 0
    pred = (logits.argmax(1, keepdim=True) > 0 if num_classes else mask).float().cpu()
    target = (torch.stack([it["target"] for it in items]) > 0).float()
    writer.add_images("val/overlay_gt_green_pred_red", overlay_rgb(image[:, :1].cpu(), target, pred), step)


def overlay_rgb(grey: torch.Tensor, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``B×3×H×W`` in [0, 1]: the image grey (min–max per image), GT added in green, prediction in red."""
    grey = grey.float()
    low = grey.amin(dim=(2, 3), keepdim=True)
    grey = (grey - low) / (grey.amax(dim=(2, 3), keepdim=True) - low + 1e-8)
    rgb = grey.repeat(1, 3, 1, 1) * 0.7
    rgb[:, 1:2] += 0.3 * target.float()
    rgb[:, 0:1] += 0.3 * pred.float()
    return rgb.clamp(0, 1)
