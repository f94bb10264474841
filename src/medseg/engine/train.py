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
per volume, on the model's mask channel (``model.mask_channel``). The datasets and the loader
are :mod:`medseg.data.loading`'s, validation is :mod:`medseg.engine.validation`'s, and the
progress bar, ``history.csv`` and TensorBoard are :mod:`medseg.engine.train_log`'s.

The loss is called once per batch on whatever the model returns
(:func:`medseg.losses.for_model_outputs`): a deep-supervision list is weighted per scale by
:class:`~medseg.losses.DeepSupervisionLoss`, a promptable model's ``{"logits", "iou"}`` dict goes
to the losses that read the IoU head; the loop does not look inside.

Multi-class (``data.num_classes`` = K ≥ 2): the model has K softmax logit channels and the masks
are class indices; the loop is the same. Validation (:mod:`medseg.engine.validation`) scores the
mean Dice over the foreground classes. Validation passes run without test-time mirroring (a cheap,
consistent signal for the checkpoint choice) on ``train.val_cases`` volumes when set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from medseg.config import Config, config_from_dict, save_config
from medseg.config_validation import check_registry_names, check_resume_config
from medseg.data.loading import build_datasets, load_splits
from medseg.engine.batches import TrainBatches
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.distributed import (
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
from medseg.engine.inference import SlidingWindow, sliding_window_from_config
from medseg.engine.selection import AUTO_VALIDATION_RATIO, CheckpointSelection, ValidationClock
from medseg.engine.train_log import log_epoch, open_tensorboard, write_history
from medseg.engine.train_run import (
    DTYPES,
    RunParts,
    accumulate_gradients,
    build_run,
    checkpoint_state,
    restore_run,
    seed_everything,
    steps_per_epoch,
    train_dtype,
    train_epoch,
)
from medseg.engine.validation import validate, validate_volumes, write_case_dice
from medseg.errors import ConfigError
from medseg.optim.schedulers import BudgetSchedule, is_epoch_scheduler

__all__ = [
    "AUTO_VALIDATION_RATIO",
    "DTYPES",
    "CheckpointSelection",
    "TrainResult",
    "ValidationClock",
    "accumulate_gradients",
    "seed_everything",
    "steps_per_epoch",
    "train",
    "train_dtype",
]


@dataclass
class TrainResult:
    """What a run leaves: its folder, one history row per epoch, and the best validation Dice."""

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
    if window is not None:  # validation passes: no mirroring (8× cheaper; the same signal each time)
        window = replace(window, tta_flips=False)
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

    global_batch = min(tcfg.batch_size, len(train_set))
    micro_batch = per_rank_batch_size(global_batch, world, tcfg.accumulate_steps)
    steps = steps_per_epoch(len(train_set), global_batch)
    run = build_run(cfg, steps, device, dtype)
    model = run.model
    result = TrainResult(output_dir=out)
    start_epoch = 0
    if resume_state is not None:
        start_epoch = restore_run(run, resume_state, result)
        console.print(f"resuming from {out / 'last.pt'} after epoch {start_epoch}")
    # DDP (under torchrun) broadcasts rank 0's weights; `run.model` stays the unwrapped module.
    run.ddp_model = wrap_model(model, device, tcfg.find_unused_parameters, tcfg.sync_batchnorm)
    elapsed_before = float(result.history[-1]["elapsed_s"]) if result.history else 0.0
    if main:
        save_config(cfg, out / "config.yaml")

    writer = open_tensorboard(out) if tcfg.tensorboard and main else None
    batches = TrainBatches(cfg, train_set, micro_batch, steps, device, get_rank(), world)
    selection = CheckpointSelection(tcfg.checkpoint_selection, tcfg.ema_decay, result.history)
    validation_clock = ValidationClock(tcfg.val_every)
    budget = run.scheduler if isinstance(run.scheduler, BudgetSchedule) else None
    if budget is not None:  # the budget counts from the first step, not from building the run
        budget.restart_clock(float(resume_state["scheduler"]["elapsed_seconds"]) if resume_state else 0.0)

    epochs_label = "" if budget is not None else f"/{tcfg.epochs}"  # a budget run ends by the clock
    run_start = time.perf_counter()
    for epoch in range(start_epoch, tcfg.epochs):
        epoch_start = time.perf_counter()
        train_loss, steps_done = train_epoch(run, cfg, batches, epoch, steps, console, on_step, budget)
        budget_spent = budget is not None and broadcast_object(budget.finished)
        last_epoch = budget_spent or epoch + 1 == tcfg.epochs or _over_time(tcfg, elapsed_before, run_start)
        previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        case_dice: dict[str, float] = {}
        val_loss = val_dice = float("nan")
        validated = broadcast_object(validation_clock.due(epoch, last_epoch, time.perf_counter()))
        if validated:
            val_start = time.perf_counter()
            val_loss, val_dice = _validate(run, val_set, window, global_batch, previews, case_dice)
            validation_clock.record(val_start, time.perf_counter())
            if is_epoch_scheduler(run.scheduler) and math.isfinite(val_dice):
                run.scheduler.step(val_dice)
        if budget is not None and not budget_spent and budget.budget_seconds is not None:
            # the time ran out while validating: the schedule ends at this epoch, at its end value
            budget_spent = broadcast_object(budget.elapsed_seconds >= budget.budget_seconds)
            if budget_spent:
                run.scheduler.step(1.0)
        epoch_time = time.perf_counter() - epoch_start
        improved = broadcast_object(validated and selection.update(val_dice))  # rank 0 decides
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_dice": val_dice,
            "val_dice_ema": selection.ema if validated else float("nan"),
            "lr": run.optimizer.param_groups[0]["lr"],
            "epoch_time_s": epoch_time,
            "elapsed_s": elapsed_before + time.perf_counter() - run_start,
        }
        result.history.append(record)
        if improved:
            result.best_dice, result.best_epoch = val_dice, epoch + 1
        if main:
            state = checkpoint_state(run, cfg, train_set, epoch + 1, global_batch, world, result)
            if improved:
                save_checkpoint(state, out / "best.pt")
            save_checkpoint(state, out / "last.pt")
            write_history(result.history, out / "history.csv")
            if validated:
                write_case_dice(case_dice, epoch + 1, out / "val_cases.csv")
        if writer is not None and validated:
            log_epoch(
                writer, record, model, device, val_set, previews, window is None and run.prompts is None
            )
        partial = f" ({steps_done}/{steps} steps)" if steps_done < steps else ""
        validation = (
            f"val loss {val_loss:.4f}  val Dice {val_dice:.4f}{' *' if improved else ''}"
            if validated
            else "(not validated)"
        )
        console.print(
            f"epoch {epoch + 1:3d}{epochs_label}  train loss {train_loss:.4f}  {validation}  "
            f"{epoch_time:.1f}s{partial}"
        )
        if budget_spent:
            console.print(
                f"budget of {budget.budget_seconds or budget.total_steps} "  # type: ignore[union-attr]
                f"{'s' if budget.budget_seconds else 'steps'} spent after epoch {epoch + 1}: "  # type: ignore[union-attr]
                f"lr at its end value {run.optimizer.param_groups[0]['lr']:.3g}"
            )
            break
        # a time budget schedule ends the run itself (at its end value, within the next step)
        time_budget = budget is not None and budget.budget_seconds is not None
        if not time_budget and broadcast_object(_over_time(tcfg, elapsed_before, run_start)):
            console.print(f"time budget of {tcfg.max_time_minutes} min reached after epoch {epoch + 1}")
            break
    if writer is not None:
        writer.close()
    return result


def _validate(
    run: RunParts,
    val_set: Any,
    window: SlidingWindow | None,
    batch_size: int,
    previews: list[Any],
    case_dice: dict[str, float],
) -> tuple[float, float]:
    """Validation loss and Dice of one pass: slices in 2D, whole volumes by sliding window in 3D."""
    sync_buffers(run.model)  # every rank validates with rank 0's BatchNorm statistics
    if window is None:
        return validate(run.model, val_set, run.loss_fn, run.device, batch_size, run.prompts, case_dice)
    return validate_volumes(
        run.model, val_set, run.loss_fn, run.device, window, previews, case_dice=case_dice
    )


def _over_time(tcfg: Any, elapsed_before: float, run_start: float) -> bool:
    """Whether ``train.max_time_minutes`` is spent (over all sessions of a resumed run)."""
    if tcfg.max_time_minutes is None:
        return False
    return elapsed_before + time.perf_counter() - run_start > 60.0 * tcfg.max_time_minutes
