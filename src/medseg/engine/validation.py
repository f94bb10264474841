"""Validation during training: the mean loss and the per-case Dice of the validation set.

2D (:func:`validate`): the slices of a case are predicted at the network resolution and their
overlap counts summed per case, so a case's Dice is that of its whole volume (multi-class: per
foreground class on the argmax, then the mean over the classes, as in 3D). 3D
(:func:`validate_volumes`): whole volumes predicted by sliding window, one Dice per volume on the
model's mask channel (multi-class: the mean over the foreground classes of the argmax Dice).

In a process group, rank r takes batches or volumes r, r + W, … (no padding); the records are
gathered and reduced in the single-process order, so every rank returns the single-process numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from medseg.data.dataset import SegmentationDataset
from medseg.data.prompts import PromptSampler
from medseg.data.volumes import INSTANCE_KEY, VolumeDataset
from medseg.engine.distributed import all_gather_object, get_rank, get_world_size
from medseg.engine.inference import SlidingWindow, class_logits, mask_logits, volume_logits
from medseg.io_utils import atomic_write
from medseg.metrics.evaluation import CaseDice
from medseg.metrics.functional import dice_from_counts

CASE_FIELDS = ("epoch", "case_id", "dice")


def batch_to_device(
    batch: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, Any]:
    """Image, target, every annotator mask (and instance labels) moved to ``device``; ids stay.

    ``dtype`` (e.g. float64) also casts the image, target and masks; instance labels stay integers.
    Copies are ``non_blocking`` (they overlap compute when the loader pinned the batch);
    ``memory_format`` (``channels_last`` for 2D models that run faster so) applies to the image.
    """
    moved = {
        **batch,
        "image": batch["image"].to(device, dtype, non_blocking=True).contiguous(memory_format=memory_format),
        "target": batch["target"].to(device, dtype, non_blocking=True),
        "masks": {name: mask.to(device, dtype, non_blocking=True) for name, mask in batch["masks"].items()},
    }
    if INSTANCE_KEY in batch:
        moved[INSTANCE_KEY] = batch[INSTANCE_KEY].to(device, non_blocking=True)
    return moved


def main_output(outputs: Any) -> torch.Tensor:
    """The full-resolution output of a model that may also return deep-supervision outputs."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    loss_fn: torch.nn.Module,
    device: torch.device,
    batch_size: int,
    prompts: PromptSampler | None = None,
    case_dice: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Mean validation loss, and the mean per-case (per-volume) Dice at the network resolution.

    A multi-class model (``model.num_classes`` = K) is scored on the argmax of its K class
    channels: per case and foreground class the overlap counts of all its slices, then the mean
    over the classes of their Dice (a class absent from both scores 1, as in
    :func:`validate_volumes`). A promptable model gets the tight box of each slice's ground truth
    (no jitter). ``case_dice``
    (if given) receives the Dice of every case. In a process group, rank r takes batches r, r + W,
    … of the single-process batches (no padding); the results are gathered and reduced in batch
    order, so every rank returns the single-process numbers.
    """
    if len(dataset) == 0:
        return float("nan"), float("nan")
    model.eval()
    dtype = _float_dtype(model)
    num_classes = getattr(model, "num_classes", None)
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    mine = list(range(get_rank(), len(batches), get_world_size()))
    loader = DataLoader(dataset, batch_sampler=[batches[b] for b in mine])
    records: list[tuple[int, float, int, list[tuple[str, float, float]]]] = []
    for b, batch in zip(mine, loader, strict=True):
        batch = batch_to_device(batch, device, dtype)
        image, target = batch["image"], batch["target"]
        if prompts is None:
            logits = main_output(model(image)).to(dtype)
        else:
            logits = model(image, prompts.boxes(target, jitter=False)).to(dtype)
        loss = loss_fn(logits, target, batch).item() * image.shape[0]
        overlap = (
            _overlap_counts(logits, batch)
            if num_classes is None
            else _class_overlap_counts(logits, batch, num_classes)
        )
        records.append((b, loss, image.shape[0], overlap))
    total, n = 0.0, 0
    dice = CaseDice()
    class_counts: dict[str, list[list[float]]] = {}  # multi-class: case → per class [|P∩G|, |P|+|G|]
    for _, loss, count, overlap in _gather_in_order(records):
        total += loss
        n += count
        if num_classes is None:
            _add_overlap(dice, overlap)
        else:
            for case_id, counts in overlap:
                summed = class_counts.setdefault(case_id, [[0.0, 0.0] for _ in counts])
                for acc, (inter, both) in zip(summed, counts, strict=True):
                    acc[0] += inter
                    acc[1] += both
    for case_id, counts in class_counts.items():
        dice.add_score(case_id, sum(dice_from_counts(i, t) for i, t in counts) / len(counts))
    if case_dice is not None:
        case_dice.update(dice.aggregate())
    return total / max(1, n), dice.mean()


@torch.no_grad()
def validate_volumes(
    model: torch.nn.Module,
    dataset: VolumeDataset,
    loss_fn: torch.nn.Module,
    device: torch.device,
    window: SlidingWindow,
    previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    n_previews: int = 4,
    case_dice: dict[str, float] | None = None,
) -> tuple[float, float]:
    """Mean loss and mean per-volume Dice over whole volumes predicted by sliding window.

    The loss sees every logit channel; the Dice the mask channel only, thresholded at logit 0. A
    multi-class model (``model.num_classes`` = K) is scored on the argmax of its K class channels:
    per volume, the mean Dice over the foreground classes (see the module docstring).
    ``previews`` (if given) receives ``(case_id, image, target, prediction)`` of the slice with the
    largest ground-truth area of the first ``n_previews`` volumes, for TensorBoard (multi-class:
    foreground vs background). ``case_dice`` (if given) receives the Dice of every case.

    In a process group, rank r predicts volumes r, r + W, … (no padding); the results are gathered
    and reduced in volume order, so every rank returns the single-process numbers.
    """
    if len(dataset) == 0:
        return float("nan"), float("nan")
    model.eval()
    dtype = _float_dtype(model)
    num_classes = model.num_classes
    stitch = torch.device(window.stitch_device) if window.stitch_device is not None else device
    records: list[tuple[int, float, list[tuple[str, float, float]], list[tuple[str, float]], Any]] = []
    for index in range(get_rank(), len(dataset), get_world_size()):
        batch = default_collate([dataset[index]])
        logits = volume_logits(model, batch["image"].to(stitch, dtype), window, device).to(dtype)
        batch = batch_to_device(batch, logits.device, dtype)
        loss = loss_fn(logits, batch["target"], batch).item()
        overlap: list[tuple[str, float, float]] = []
        scores: list[tuple[str, float]] = []
        if num_classes is None:
            mask = mask_logits(logits, model)
            overlap = _overlap_counts(mask, batch)
        else:
            class_dice = _volume_class_dice(logits, batch["target"], num_classes)
            scores = list(zip(batch["case_id"], class_dice, strict=True))
            # foreground (any class) as a logit-like map: > 0 where the argmax is not background
            mask = (class_logits(logits, num_classes).argmax(1, keepdim=True) > 0).float() - 0.5
        preview = None
        if previews is not None and index < n_previews:
            target = batch["target"][0, 0]
            z = int(target.flatten(1).sum(1).argmax())
            image = batch["image"][0, 0, z].cpu()
            shown = target[z].cpu() if num_classes is None else (target[z] > 0).float().cpu()
            preview = (batch["case_id"][0], image, shown, (mask[0, 0, z] > 0).cpu())
        records.append((index, loss, overlap, scores, preview))
    total = 0.0
    dice = CaseDice()
    for _, loss, overlap, scores, preview in _gather_in_order(records):
        total += loss
        _add_overlap(dice, overlap)
        for case_id, score in scores:
            dice.add_score(case_id, score)
        if previews is not None and preview is not None:
            previews.append(preview)
    if case_dice is not None:
        case_dice.update(dice.aggregate())
    return total / len(dataset), dice.mean()


def write_case_dice(case_dice: dict[str, float], epoch: int, path: Path) -> None:
    """``path`` (CSV: epoch, case_id, dice) with one row per validation case, sorted by case, atomically."""
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CASE_FIELDS)
        writer.writeheader()
        for case_id in sorted(case_dice):
            writer.writerow({"epoch": epoch, "case_id": case_id, "dice": repr(float(case_dice[case_id]))})


def _overlap_counts(logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[str, float, float]]:
    """``(case_id, |P ∩ G|, |P| + |G|)`` per item, the prediction thresholded at logit 0."""
    pred = (logits > 0).float()
    target = batch["target"].to(pred.device, pred.dtype)
    inter = (pred * target).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return list(zip(batch["case_id"], inter.tolist(), total.tolist(), strict=True))


def _class_overlap_counts(
    logits: torch.Tensor, batch: dict[str, Any], num_classes: int
) -> list[tuple[str, list[tuple[float, float]]]]:
    """``(case_id, [(|P ∩ G|, |P| + |G|) per foreground class])`` per item, on the argmax."""
    pred = class_logits(logits, num_classes).argmax(1)
    target = batch["target"][:, 0].to(pred.device).round().long()
    counts = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        inter = (p & t).flatten(1).sum(1).double()
        total = p.flatten(1).sum(1).double() + t.flatten(1).sum(1).double()
        counts.append(list(zip(inter.tolist(), total.tolist(), strict=True)))
    per_item = [list(items) for items in zip(*counts, strict=True)]  # B × (K − 1)
    return list(zip(batch["case_id"], per_item, strict=True))


def _add_overlap(dice: CaseDice, overlap: list[tuple[str, float, float]]) -> None:
    for case_id, inter, total in overlap:
        dice.add_counts(case_id, inter, total)


def _volume_class_dice(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """Per-sample mean over the foreground classes of the argmax Dice (empty pair → 1)."""
    pred = class_logits(logits, num_classes).argmax(1)
    target = target[:, 0].to(pred.device).round().long()
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        inter = (p & t).flatten(1).sum(1).double().tolist()
        total = (p.flatten(1).sum(1) + t.flatten(1).sum(1)).double().tolist()
        scores.append([dice_from_counts(i, n) for i, n in zip(inter, total, strict=True)])
    per_sample = torch.tensor(list(zip(*scores, strict=True)), dtype=torch.float64)  # B × (K − 1)
    return per_sample.mean(1).tolist()


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _gather_in_order(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every rank's ``(index, …)`` records, sorted by index: the single-process order."""
    merged = [record for part in all_gather_object(records) for record in part]
    return sorted(merged, key=lambda record: record[0])
