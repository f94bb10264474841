"""Training: config → data, model, loss, optimizer → epochs with validation and checkpoints.

Each epoch re-seeds the shuffling, the augmentation and torch's global generator from
``seed + epoch``, and ``last.pt`` is written atomically after every finished epoch, so a run
killed mid-epoch resumes from its last finished epoch and then continues exactly as an
uninterrupted run would.

Scale-out (:mod:`medseg.engine.distributed`): under ``torchrun`` the model is wrapped in DDP and
``train.batch_size`` stays the GLOBAL batch of one optimiser step; each of the W processes runs
micro-batches of ``batch_size / (W × train.accumulate_steps)``. Every epoch draws one seeded
permutation (``DistributedSampler(seed=train.seed)``, ``set_epoch(epoch)``); optimiser step s takes
its items ``s·B … (s+1)·B − 1``, rank r every W-th of them, so W processes step on the same global
batches as one. The augmentation of an item is keyed by (seed + epoch, item index) only.
Validation is split without padding (rank r takes batches or volumes r, r + W, …), gathered and
reduced in the single-process order; rank 0 alone writes checkpoints (the unwrapped model's
state, identical to a single-process checkpoint), ``history.csv``, ``val_cases.csv`` and
TensorBoard, and decides ``best.pt`` for everyone. With a per-sample mean loss, no BatchNorm and no
dropout, W processes reach the single-process parameters up to rounding
(``tests/test_engine_distributed.py``).

``data.spatial_dims`` picks the data path. 2 (the default): volumes are cut into slices resized to
``data.image_size`` (:class:`~medseg.data.dataset.SegmentationDataset`), validated slice by slice
with the Dice accumulated per case. 3: a 3D model trains on patches of ``data.patch_size`` drawn
with ``data.foreground_ratio`` (:class:`~medseg.data.volumes.VolumeDataset`) and validates on
whole volumes predicted by sliding window (window = the patch size, Gaussian blending), one Dice
per volume, on the model's mask channel (:func:`~medseg.engine.predict.mask_channel`).

Multi-class (``data.num_classes`` = K ≥ 2, 3D only): the model has K softmax logit channels and the
masks are class indices. The validation Dice of a volume is the mean over the foreground classes
1..K−1 of the Dice of the argmax prediction with that class (a class absent from both the ground
truth and the prediction of a volume scores 1, the binary empty-mask policy); ``val_dice`` is its
mean over the volumes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from medseg import losses, optim
from medseg.config import Config, config_from_dict, save_config
from medseg.config_validation import check_registry_names, check_resume_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.loading import DataSplits, load_splits
from medseg.data.prompts import PromptSampler
from medseg.data.transforms import augment_transform
from medseg.data.volumes import INSTANCE_KEY, VolumeDataset
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.distributed import (
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_object,
    distributed_session,
    get_rank,
    get_world_size,
    is_main_process,
    per_rank_batch_size,
    rank_device,
    sync_buffers,
    wrap_model,
)
from medseg.engine.predict import (
    SlidingWindow,
    build_model_from_config,
    check_num_classes,
    class_logits,
    mask_logits,
    model_num_classes,
    sliding_window_from_config,
    volume_logits,
)
from medseg.errors import ConfigError
from medseg.optim.sam import SAM, param_groups_with_loss, sam_training_step
from medseg.optim.schedulers import is_epoch_scheduler

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_dice", "lr", "epoch_time_s", "elapsed_s")
CASE_FIELDS = ("epoch", "case_id", "dice")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class TrainResult:
    output_dir: Path
    history: list[dict[str, float]] = field(default_factory=list)
    best_dice: float = float("-inf")
    best_epoch: int = -1

    @property
    def best_checkpoint(self) -> Path:
        return self.output_dir / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.output_dir / "last.pt"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def batch_to_device(
    batch: dict[str, Any], device: torch.device, dtype: torch.dtype | None = None
) -> dict[str, Any]:
    """Image, target, every annotator mask (and instance labels) moved to ``device``; ids stay.

    ``dtype`` (e.g. float64) also casts the image, target and masks; instance labels stay integers.
    """
    moved = {
        **batch,
        "image": batch["image"].to(device, dtype),
        "target": batch["target"].to(device, dtype),
        "masks": {name: mask.to(device, dtype) for name, mask in batch["masks"].items()},
    }
    if INSTANCE_KEY in batch:
        moved[INSTANCE_KEY] = batch[INSTANCE_KEY].to(device)
    return moved


def _main_output(outputs: Any) -> torch.Tensor:
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def _overlap_counts(logits: torch.Tensor, batch: dict[str, Any]) -> list[tuple[str, float, float]]:
    """``(case_id, |P ∩ G|, |P| + |G|)`` per item, the prediction thresholded at logit 0."""
    pred = (logits > 0).float()
    target = batch["target"].to(pred.device, pred.dtype)
    inter = (pred * target).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + target.flatten(1).sum(1)
    return list(zip(batch["case_id"], inter.tolist(), total.tolist(), strict=True))


def _add_overlap(stats: dict[str, list[float]], overlap: list[tuple[str, float, float]]) -> None:
    for case_id, inter, total in overlap:
        acc = stats.setdefault(case_id, [0.0, 0.0])
        acc[0] += inter
        acc[1] += total


def _volume_class_dice(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> list[float]:
    """Per-sample mean over the foreground classes of the argmax Dice (empty pair → 1)."""
    pred = class_logits(logits, num_classes).argmax(1)
    target = target[:, 0].to(pred.device).round().long()
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        inter = (p & t).flatten(1).sum(1).double()
        total = (p.flatten(1).sum(1) + t.flatten(1).sum(1)).double()
        scores.append(torch.where(total > 0, 2.0 * inter / total.clamp_min(1), torch.ones_like(total)))
    return torch.stack(scores, 1).mean(1).tolist()


def _mean_case_dice(stats: dict[str, list[float]], case_dice: dict[str, float] | None = None) -> float:
    # Empty-mask policy: a case with no foreground in GT and prediction scores Dice 1.
    scores = {case: 1.0 if total == 0 else 2.0 * inter / total for case, (inter, total) in stats.items()}
    if case_dice is not None:
        case_dice.update(scores)
    return float(np.mean(list(scores.values()))) if scores else float("nan")


class _Progress:
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


def train(
    cfg: Config,
    resume: bool = False,
    console: Console | None = None,
    on_step: Callable[[int, int], None] | None = None,
    allowed_changes: Sequence[str] = (),
) -> TrainResult:
    """Train ``cfg`` into ``cfg.output_dir``; ``resume=True`` continues from ``last.pt``.

    Resuming checks ``cfg`` against the stored run's config: any difference outside
    ``allowed_changes`` (dotted keys changed on purpose, ``--set``) and the keys that do not change
    what is trained (:data:`medseg.config_validation.RESUME_FREE_KEYS`, e.g. ``train.epochs``) is a
    :class:`ConfigError` listing them. Registry names are checked before anything runs.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) this joins the process group (and leaves it at the
    end if it created it); see the module docstring. ``on_step(epoch, step)`` is called after every
    optimiser step (used by tests to interrupt a run mid-epoch).
    """
    device = rank_device(cfg.train.device)
    with distributed_session(device):
        result = _train(cfg, resume, console or Console(), on_step, device, allowed_changes)
        barrier()  # rank 0 has written everything before any rank returns
    return result


def _train(
    cfg: Config,
    resume: bool,
    console: Console,
    on_step: Callable[[int, int], None] | None,
    device: torch.device,
    allowed_changes: Sequence[str] = (),
) -> TrainResult:
    check_registry_names(cfg)
    main = is_main_process()
    if not main:
        console = Console(quiet=True)
    out = Path(cfg.output_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    tcfg = cfg.train
    if tcfg.epochs < 1:
        raise ConfigError(f"train.epochs must be ≥ 1, got {tcfg.epochs}")
    seed_everything(tcfg.seed, tcfg.deterministic)

    resume_state = None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise ConfigError(f"{last}: nothing to resume (no last.pt in {out})")
        resume_state = load_checkpoint(last)
        stored = config_from_dict(resume_state["config"])
        # a different config is an error listing the differences, unless changed on purpose;
        # train.epochs may grow (extending a finished run)
        check_resume_config(cfg, stored, allowed_changes)
    dtype = train_dtype(tcfg.dtype)
    world = get_world_size()

    splits = load_splits(cfg.data)
    window = sliding_window_from_config(cfg)  # None in 2D
    train_set, val_set = build_datasets(cfg, splits)
    if window is None:
        sizes = f"{len(train_set)} slices", f"{len(val_set)} slices"
    else:
        patch = "×".join(str(int(p)) for p in cfg.data.patch_size or window.roi_size)
        sizes = f"{len(train_set)} patches of {patch}", "whole volumes"
    console.print(
        f"[bold]medseg train[/]: {len(splits.train_cases)} train cases ({sizes[0]}), "
        f"{len(splits.val_cases)} validation cases ({sizes[1]}), device {device}"
        + (f", {world} processes" if world > 1 else "")
    )

    model = build_model_from_config(cfg).to(device=device, dtype=dtype)
    loss_fn = losses.build(cfg.loss.name, **cfg.loss.options).to(device=device, dtype=dtype)
    ds_loss = losses.DeepSupervisionLoss(loss_fn, cfg.loss.deep_supervision_weights)
    prompts = PromptSampler.for_model(model, cfg, tcfg.seed)  # None unless the model takes boxes
    # A loss with parameters (U-MedSAM's learned σ_k) trains with the model, without weight decay.
    params: Any = (
        param_groups_with_loss(model, loss_fn, cfg.optim.weight_decay)
        if any(True for _ in loss_fn.parameters())
        else model.parameters()
    )
    optimizer = optim.build(
        cfg.optim.name,
        params=params,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        **cfg.optim.options,
    )
    sharpness_aware = isinstance(optimizer, SAM)
    if sharpness_aware and tcfg.accumulate_steps != 1:
        raise ConfigError("train.accumulate_steps > 1 is not supported with the SAM optimizer (two passes)")
    global_batch = min(tcfg.batch_size, len(train_set))
    micro_batch = per_rank_batch_size(global_batch, world, tcfg.accumulate_steps)
    steps = steps_per_epoch(len(train_set), global_batch)
    scheduler = optim.build_scheduler(
        cfg.optim.scheduler,
        optimizer,
        total_steps=tcfg.epochs * steps,
        **cfg.optim.scheduler_options,
    )
    use_amp = tcfg.amp and device.type == "cuda" and dtype == torch.float32
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    run = _RunParts(
        model, model, loss_fn, ds_loss, optimizer, scheduler, scaler, prompts, device, dtype, use_amp
    )
    result = TrainResult(output_dir=out)
    start_epoch = 0
    if resume_state is not None:
        start_epoch = _restore(run, resume_state, result)
        console.print(f"resuming from {out / 'last.pt'} after epoch {start_epoch}")
    # DDP (under torchrun) broadcasts rank 0's weights; `run.model` stays the unwrapped module.
    run.ddp_model = wrap_model(model, device, tcfg.find_unused_parameters, tcfg.sync_batchnorm)
    elapsed_before = float(result.history[-1]["elapsed_s"]) if result.history else 0.0
    if main:
        save_config(cfg, out / "config.yaml")

    writer = None
    if tcfg.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    run_start = time.perf_counter()
    for epoch in range(start_epoch, tcfg.epochs):
        epoch_start = time.perf_counter()
        train_loss = _train_epoch(run, cfg, train_set, epoch, micro_batch, steps, console, on_step)
        previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        case_dice: dict[str, float] = {}
        sync_buffers(model)  # every rank validates with rank 0's BatchNorm statistics
        if window is None:
            val_loss, val_dice = validate(model, val_set, loss_fn, device, global_batch, prompts, case_dice)
        else:
            val_loss, val_dice = validate_volumes(
                model, val_set, loss_fn, device, window, previews, case_dice=case_dice
            )
        if is_epoch_scheduler(scheduler) and math.isfinite(val_dice):
            scheduler.step(val_dice)
        epoch_time = time.perf_counter() - epoch_start
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            "elapsed_s": elapsed_before + time.perf_counter() - run_start,
        }
        result.history.append(record)
        improved = broadcast_object(val_dice > result.best_dice)  # rank 0 decides for everyone
        if improved:
            result.best_dice, result.best_epoch = val_dice, epoch + 1
        if main:
            state = _checkpoint_state(run, cfg, train_set, epoch + 1, global_batch, world, result)
            if improved:
                save_checkpoint(state, out / "best.pt")
            save_checkpoint(state, out / "last.pt")
            _write_history(result.history, out / "history.csv")
            write_case_dice(case_dice, epoch + 1, out / "val_cases.csv")
        if writer is not None:
            _log_epoch(writer, record, run, val_set, previews, window is None and prompts is None)
        console.print(
            f"epoch {epoch + 1:3d}/{tcfg.epochs}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
            f"val Dice {val_dice:.4f}{' *' if improved else ''}  {epoch_time:.1f}s"
        )
        over_budget = tcfg.max_time_minutes is not None and record["elapsed_s"] > 60 * tcfg.max_time_minutes
        if broadcast_object(over_budget):  # clocks differ between ranks: rank 0's decides
            console.print(f"time budget of {tcfg.max_time_minutes} min reached after epoch {epoch + 1}")
            break
    if writer is not None:
        writer.close()
    return result


@dataclass
class _RunParts:
    """What the epoch loop of one training run works with (built once by :func:`_train`)."""

    model: torch.nn.Module  # unwrapped: checkpoints and validation
    ddp_model: torch.nn.Module  # the model under DDP (the model itself in one process)
    loss_fn: torch.nn.Module
    ds_loss: losses.DeepSupervisionLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    prompts: PromptSampler | None
    device: torch.device
    dtype: torch.dtype
    use_amp: bool


def _train_epoch(
    run: _RunParts,
    cfg: Config,
    train_set: Dataset,
    epoch: int,
    micro_batch: int,
    steps: int,
    console: Console,
    on_step: Callable[[int, int], None] | None,
) -> float:
    """One epoch of optimiser steps on the global batches of epoch ``epoch``; the mean step loss."""
    tcfg = cfg.train
    epoch_seed = tcfg.seed + epoch
    train_set.set_epoch_seed(epoch_seed)
    torch.manual_seed(epoch_seed)
    micro_batches = iter(train_loader(train_set, micro_batch, tcfg.seed, epoch, tcfg.num_workers))
    sharpness_aware = isinstance(run.optimizer, SAM)
    per_step_scheduler = not is_epoch_scheduler(run.scheduler)  # plateau steps per epoch instead
    run.ddp_model.train()

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        boxes = None if run.prompts is None else run.prompts.boxes(batch["target"], jitter=True)
        with torch.autocast(run.device.type, enabled=run.use_amp):
            return forward_loss(
                run.ddp_model, run.loss_fn, run.ds_loss, batch["image"], batch["target"], batch, boxes
            )

    running = 0.0
    with _Progress(tcfg.progress and is_main_process(), console) as progress:
        task = progress.add_task(f"epoch {epoch + 1}/{tcfg.epochs}", total=steps, info="")
        for step in range(steps):
            group = [
                batch_to_device(next(micro_batches), run.device, run.dtype)
                for _ in range(tcfg.accumulate_steps)
            ]
            if sharpness_aware:
                # SAM: two forward/backward passes; a non-finite gradient skips the whole step
                local = sam_training_step(
                    run.ddp_model,
                    run.optimizer,
                    lambda b=group[0]: compute_loss(b),
                    run.scaler if run.use_amp else None,
                    tcfg.grad_clip,
                )
            else:
                local = accumulate_gradients(run.ddp_model, run.optimizer, run.scaler, compute_loss, group)
            loss = all_reduce_mean(local)  # the global batch's loss, the same on every rank
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                    "lower optim.lr or check the data"
                )
            if not sharpness_aware:
                if tcfg.grad_clip:
                    run.scaler.unscale_(run.optimizer)
                    torch.nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip)
                run.scaler.step(run.optimizer)
                run.scaler.update()
            if per_step_scheduler:
                run.scheduler.step()
            running += loss.item()
            progress.update(task, advance=1, info=f"loss {running / (step + 1):.4f}")
            if on_step is not None:
                on_step(epoch, step)
    return running / steps


def _restore(run: _RunParts, state: dict[str, Any], result: TrainResult) -> int:
    """Load a ``last.pt`` into the run (model, optimizer, scheduler, scaler, loss) and ``result``
    (history, best epoch); the number of finished epochs. Call it before wrapping the model in DDP."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if "loss" in state:
        run.loss_fn.load_state_dict(state["loss"])
    result.history = list(state["history"])
    result.best_dice = float(state["best_dice"])
    result.best_epoch = int(state["best_epoch"])
    return int(state["epoch"])


def _checkpoint_state(
    run: _RunParts,
    cfg: Config,
    train_set: Dataset,
    epochs_done: int,
    global_batch: int,
    world: int,
    result: TrainResult,
) -> dict[str, Any]:
    """What ``last.pt`` / ``best.pt`` hold after ``epochs_done`` epochs (the unwrapped model's state)."""
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epochs_done,
        # the sampler's position: epoch e's order is a function of (seed, e) alone
        "sampler": {"seed": cfg.train.seed, "epoch": epochs_done, "global_batch": global_batch},
        "world_size": world,
        "history": result.history,
        "best_dice": result.best_dice,
        "best_epoch": result.best_epoch,
        "config": cfg.to_dict(),
        "annotators": train_set.annotators,
        "loss": run.loss_fn.state_dict(),
    }
    class_values = getattr(train_set, "class_values", None)
    if class_values is not None:  # multi-class: class index → label value, for prediction
        state["class_values"] = class_values
    return state


def _log_epoch(
    writer: Any,
    record: dict[str, float],
    run: _RunParts,
    val_set: Dataset,
    previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]],
    slice_overlay: bool,
) -> None:
    """TensorBoard scalars of an epoch, and validation overlays (a 2D slice, or the 3D previews)."""
    epoch = int(record["epoch"])
    for key in ("train_loss", "val_loss", "val_dice", "lr", "epoch_time_s"):
        writer.add_scalar(key, record[key], epoch)
    if slice_overlay:
        _log_overlay(writer, run.model, val_set, run.device, epoch)
        return
    for case_id, grey, target, pred in previews:
        rgb = _overlay_rgb(grey[None, None], target[None, None], pred[None, None])
        writer.add_images(f"val/overlay_gt_green_pred_red/{case_id}", rgb, epoch)


def train_dtype(name: str) -> torch.dtype:
    """``train.dtype`` → torch dtype (``float32`` or ``float64``)."""
    if name not in DTYPES:
        raise ConfigError(f"train.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def train_loader(
    dataset: Dataset,
    micro_batch: int,
    seed: int,
    epoch: int,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """This rank's micro-batches of ``epoch``: a share of one seeded permutation of the whole set.

    ``DistributedSampler(seed=seed)`` with ``set_epoch(epoch)`` permutes all items with
    ``seed + epoch``; rank r of W takes positions r, r + W, …, so the W micro-batches of a step
    together hold W × ``micro_batch`` consecutive positions of the permutation: with one process
    and W-fold batches the same items form each batch. The last incomplete batch is dropped.
    ``rank`` / ``world_size`` default to this process's place in the group.
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=get_world_size() if world_size is None else world_size,
        rank=get_rank() if rank is None else rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed + epoch),
    )


def accumulate_gradients(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    compute_loss: Callable[[dict[str, Any]], torch.Tensor],
    micro_batches: list[dict[str, Any]],
) -> torch.Tensor:
    """Fresh gradients of the mean loss over ``micro_batches``; returns that mean (detached).

    Each micro-batch's loss is divided by their number before its backward. A DDP model skips
    the gradient all-reduce (``no_sync``) on all but the last micro-batch, whose backward then
    averages the accumulated gradients over the ranks once.
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for k, batch in enumerate(micro_batches):
        last = k == len(micro_batches) - 1
        sync_off = (
            model.no_sync()
            if isinstance(model, DistributedDataParallel) and not last
            else contextlib.nullcontext()
        )
        with sync_off:
            loss = compute_loss(batch)
            scaler.scale(loss / len(micro_batches)).backward()
        total = total.to(loss.device, loss.dtype) + loss.detach()
    return total / len(micro_batches)


def write_case_dice(case_dice: dict[str, float], epoch: int, path: Path) -> None:
    """``path`` (CSV: epoch, case_id, dice) with one row per validation case, sorted by case, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CASE_FIELDS)
        writer.writeheader()
        for case_id in sorted(case_dice):
            writer.writerow({"epoch": epoch, "case_id": case_id, "dice": repr(float(case_dice[case_id]))})
    tmp.replace(path)


def forward_loss(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    ds_loss: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    batch: dict[str, Any],
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of one batch: forward (with boxes for a promptable model), then the loss.

    A list of outputs goes whole to a loss with ``accepts_multiscale`` (MicroSegNet's AG-BCE), else
    through nnU-Net-style deep supervision (``ds_loss``); a promptable model's training dict goes
    whole to a loss with ``accepts_dict_outputs`` (it regresses the IoU head), else its logits.
    """
    outputs = model(image) if boxes is None else model(image, boxes)
    if isinstance(outputs, dict) and not getattr(loss_fn, "accepts_dict_outputs", False):
        outputs = outputs["logits"]
    if isinstance(outputs, (list, tuple)):
        if getattr(loss_fn, "accepts_multiscale", False):
            return loss_fn(outputs, target, batch)
        return ds_loss(outputs, target, batch)
    return loss_fn(outputs, target, batch)


def build_datasets(cfg: Config, splits: DataSplits) -> tuple[Dataset, Dataset]:
    """Training and validation datasets of ``cfg.data.spatial_dims`` (see the module docstring)."""
    data = cfg.data
    num_classes = check_num_classes(data.num_classes, data.spatial_dims)
    if data.spatial_dims == 3:
        if data.patch_size is None:
            raise ConfigError("data.spatial_dims: 3 needs data.patch_size (D×H×W training patch)")
        train_set = VolumeDataset(
            splits.train,
            data.in_channels,
            data.intensity,
            patch_size=data.patch_size,
            foreground_ratio=data.foreground_ratio,
            samples_per_volume=data.samples_per_volume,
            augment=cfg.augment,
            anisotropy_ratio=data.anisotropy_ratio,
            num_classes=num_classes,
        )
        val_set = VolumeDataset(
            splits.val,
            data.in_channels,
            data.intensity,
            annotators=train_set.annotators,
            num_classes=num_classes,
        )
        return train_set, val_set
    if data.spatial_dims != 2:
        raise ConfigError(f"data.spatial_dims must be 2 or 3, got {data.spatial_dims}")
    train_2d = SegmentationDataset(splits.train, data.image_size, data.in_channels, data.intensity)
    # The augmentation needs the annotator keys, which the dataset finds while loading.
    train_2d.augment = augment_transform(train_2d.annotators, 2, cfg.augment)
    val_2d = SegmentationDataset(
        splits.val, data.image_size, data.in_channels, data.intensity, annotators=train_2d.annotators
    )
    return train_2d, val_2d


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
    num_classes = model_num_classes(model)
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
    stats: dict[str, list[float]] = {}
    class_scores: list[float] = []
    for _, loss, overlap, scores, preview in _gather_in_order(records):
        total += loss
        _add_overlap(stats, overlap)
        class_scores.extend(score for _, score in scores)
        if case_dice is not None:
            case_dice.update(scores)
        if previews is not None and preview is not None:
            previews.append(preview)
    if num_classes is not None:
        return total / len(dataset), float(np.mean(class_scores))
    return total / len(dataset), _mean_case_dice(stats, case_dice)


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

    A promptable model gets the tight box of each slice's ground truth (no jitter). ``case_dice``
    (if given) receives the Dice of every case. In a process group, rank r takes batches r, r + W,
    … of the single-process batches (no padding); the results are gathered and reduced in batch
    order, so every rank returns the single-process numbers.
    """
    if len(dataset) == 0:
        return float("nan"), float("nan")
    model.eval()
    dtype = _float_dtype(model)
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    mine = list(range(get_rank(), len(batches), get_world_size()))
    loader = DataLoader(dataset, batch_sampler=[batches[b] for b in mine])
    records: list[tuple[int, float, int, list[tuple[str, float, float]]]] = []
    for b, batch in zip(mine, loader, strict=True):
        batch = batch_to_device(batch, device, dtype)
        image, target = batch["image"], batch["target"]
        if prompts is None:
            logits = _main_output(model(image)).to(dtype)
        else:
            logits = model(image, prompts.boxes(target, jitter=False)).to(dtype)
        loss = loss_fn(logits, target, batch).item() * image.shape[0]
        records.append((b, loss, image.shape[0], _overlap_counts(logits, batch)))
    total, n = 0.0, 0
    stats: dict[str, list[float]] = {}
    for _, loss, count, overlap in _gather_in_order(records):
        total += loss
        n += count
        _add_overlap(stats, overlap)
    return total / max(1, n), _mean_case_dice(stats, case_dice)


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _gather_in_order(records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Every rank's ``(index, …)`` records, sorted by index: the single-process order."""
    merged = [record for part in all_gather_object(records) for record in part]
    return sorted(merged, key=lambda record: record[0])


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    tmp.replace(path)


@torch.no_grad()
def _log_overlay(
    writer: Any,
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    step: int,
    n: int = 4,
) -> None:
    """TensorBoard image: image grey, GT in green, prediction in red, for the first ``n`` slices."""
    if len(dataset) == 0:
        return
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int)
    items = [dataset[int(i)] for i in idx]
    image = torch.stack([it["image"] for it in items]).to(device)
    pred = (_main_output(model(image)) > 0).float().cpu()
    target = torch.stack([it["target"] for it in items])
    writer.add_images("val/overlay_gt_green_pred_red", _overlay_rgb(image[:, :1].cpu(), target, pred), step)


def _overlay_rgb(grey: torch.Tensor, target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``B×3×H×W`` in [0, 1]: the image grey (min–max per image), GT added in green, prediction in red."""
    grey = grey.float()
    low = grey.amin(dim=(2, 3), keepdim=True)
    grey = (grey - low) / (grey.amax(dim=(2, 3), keepdim=True) - low + 1e-8)
    rgb = grey.repeat(1, 3, 1, 1) * 0.7
    rgb[:, 1:2] += 0.3 * target.float()
    rgb[:, 0:1] += 0.3 * pred.float()
    return rgb.clamp(0, 1)


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the loader drops the last incomplete batch)."""
    return max(1, math.floor(n_items / max(1, batch_size)))
