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

Multi-class (``data.num_classes`` = K ≥ 2, 3D only): the model has K softmax logit channels and the
masks are class indices. The validation Dice of a volume is the mean over the foreground classes
1..K−1 of the Dice of the argmax prediction with that class (a class absent from both the ground
truth and the prediction of a volume scores 1, the binary empty-mask policy); ``val_dice`` is its
mean over the volumes.
"""

from __future__ import annotations

import contextlib
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from medseg import losses, optim
from medseg.config import Config, config_from_dict, save_config
from medseg.config_validation import check_registry_names, check_resume_config
from medseg.data.loading import build_datasets, load_splits
from medseg.data.prompts import PromptSampler
from medseg.engine.batches import TrainBatches
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.distributed import (
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
from medseg.engine.inference import sliding_window_from_config
from medseg.engine.train_log import TrainProgress, log_epoch, open_tensorboard, write_history
from medseg.engine.validation import batch_to_device, validate, validate_volumes, write_case_dice
from medseg.errors import ConfigError
from medseg.models import build_from_config
from medseg.optim.sam import SAM, param_groups_with_loss, sam_training_step
from medseg.optim.schedulers import BudgetSchedule, is_epoch_scheduler

CHECKPOINT_SELECTIONS = ("best", "ema", "last")
#: ``val_every: auto`` validates once the training time since the last validation reaches this
#: multiple of that validation's duration: validation then takes ≤ 1/(1 + 9) = 10 % of the clock.
AUTO_VALIDATION_RATIO = 9.0

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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

    global_batch = min(tcfg.batch_size, len(train_set))
    micro_batch = per_rank_batch_size(global_batch, world, tcfg.accumulate_steps)
    steps = steps_per_epoch(len(train_set), global_batch)
    run = _build_run(cfg, steps, device, dtype)
    model = run.model
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
        train_loss, steps_done = _train_epoch(run, cfg, batches, epoch, steps, console, on_step, budget)
        budget_spent = budget is not None and broadcast_object(budget.finished)
        last_epoch = budget_spent or epoch + 1 == tcfg.epochs or _over_time(tcfg, elapsed_before, run_start)
        previews: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        case_dice: dict[str, float] = {}
        val_loss = val_dice = float("nan")
        validated = broadcast_object(validation_clock.due(epoch, last_epoch, time.perf_counter()))
        if validated:
            val_start = time.perf_counter()
            sync_buffers(model)  # every rank validates with rank 0's BatchNorm statistics
            if window is None:
                val_loss, val_dice = validate(
                    model, val_set, run.loss_fn, device, global_batch, run.prompts, case_dice
                )
            else:
                val_loss, val_dice = validate_volumes(
                    model, val_set, run.loss_fn, device, window, previews, case_dice=case_dice
                )
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
            state = _checkpoint_state(run, cfg, train_set, epoch + 1, global_batch, world, result)
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


@dataclass
class _RunParts:
    """What the epoch loop of one training run works with (built once by :func:`_train`)."""

    model: torch.nn.Module  # unwrapped: checkpoints and validation
    ddp_model: torch.nn.Module  # the model under DDP (the model itself in one process)
    loss_fn: torch.nn.Module  # as built: its state (U-MedSAM's σ_k) is checkpointed
    output_loss: torch.nn.Module  # loss_fn taking the model's raw outputs (losses.for_model_outputs)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    prompts: PromptSampler | None
    device: torch.device
    dtype: torch.dtype
    use_amp: bool
    memory_format: torch.memory_format = torch.contiguous_format


def _build_run(cfg: Config, steps: int, device: torch.device, dtype: torch.dtype) -> _RunParts:
    """Model, loss, box prompts, optimizer, schedule and AMP scaler of a run (``steps`` per epoch)."""
    tcfg = cfg.train
    model = build_from_config(cfg).to(device=device, dtype=dtype)
    memory_format = (
        torch.channels_last if tcfg.channels_last and cfg.data.spatial_dims == 2 else torch.contiguous_format
    )
    model = model.to(memory_format=memory_format)
    loss_fn = losses.build(cfg.loss.name, **cfg.loss.options).to(device=device, dtype=dtype)
    # one loss object takes whatever the model returns (deep-supervision list, promptable dict)
    output_loss = losses.for_model_outputs(loss_fn, cfg.loss.deep_supervision_weights)
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
    if isinstance(optimizer, SAM) and tcfg.accumulate_steps != 1:
        raise ConfigError("train.accumulate_steps > 1 is not supported with the SAM optimizer (two passes)")
    scheduler_options = dict(cfg.optim.scheduler_options)
    # a budget schedule without its own length follows train.max_time_minutes (else the step count)
    budget_from_time = "budget_seconds" not in scheduler_options and tcfg.max_time_minutes is not None
    if cfg.optim.scheduler == "budget" and budget_from_time:
        scheduler_options["budget_seconds"] = 60.0 * tcfg.max_time_minutes
    # a budget of its own length in steps (scheduler_options.total_steps) may end mid-epoch
    total_steps = int(scheduler_options.pop("total_steps", tcfg.epochs * steps))
    scheduler = optim.build_scheduler(
        cfg.optim.scheduler, optimizer, total_steps=total_steps, **scheduler_options
    )
    use_amp = tcfg.amp and device.type == "cuda" and dtype == torch.float32
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    return _RunParts(
        model,
        model,
        loss_fn,
        output_loss,
        optimizer,
        scheduler,
        scaler,
        prompts,
        device,
        dtype,
        use_amp,
        memory_format,
    )


def _train_epoch(
    run: _RunParts,
    cfg: Config,
    batches: TrainBatches,
    epoch: int,
    steps: int,
    console: Console,
    on_step: Callable[[int, int], None] | None,
    budget: BudgetSchedule | None = None,
) -> tuple[float, int]:
    """One epoch of optimiser steps on the global batches of epoch ``epoch``: the mean step loss
    and the number of steps taken (fewer than ``steps`` when ``budget`` ends within the epoch)."""
    tcfg = cfg.train
    epoch_seed = tcfg.seed + epoch
    torch.manual_seed(epoch_seed)
    micro_batches = iter(batches.epoch(epoch))
    sharpness_aware = isinstance(run.optimizer, SAM)
    per_step_scheduler = not is_epoch_scheduler(run.scheduler)  # plateau steps per epoch instead
    run.ddp_model.train()

    def compute_loss(batch: dict[str, Any]) -> torch.Tensor:
        boxes = None if run.prompts is None else run.prompts.boxes(batch["target"], jitter=True)
        with torch.autocast(run.device.type, enabled=run.use_amp):
            image = batch["image"]
            outputs = run.ddp_model(image) if boxes is None else run.ddp_model(image, boxes)
            return run.output_loss(outputs, batch["target"], batch)

    running = 0.0
    done = 0
    with TrainProgress(tcfg.progress and is_main_process(), console) as progress:
        label = f"epoch {epoch + 1}" + ("" if budget is not None else f"/{tcfg.epochs}")
        task = progress.add_task(label, total=steps, info="")
        for step in range(steps):
            group = [
                batch_to_device(next(micro_batches), run.device, run.dtype, run.memory_format)
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
            done = step + 1
            progress.update(task, advance=1, info=f"loss {running / done:.4f}")
            if on_step is not None:
                on_step(epoch, step)
            # the schedule has annealed to its end value: stop here (rank 0's clock decides)
            if budget is not None and broadcast_object(budget.finished):
                break
    return running / max(done, 1), done


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
        state["label_names"] = getattr(train_set, "label_names", None)  # DICOM-SEG segment names
    return state


def train_dtype(name: str) -> torch.dtype:
    """``train.dtype`` → torch dtype (``float32`` or ``float64``)."""
    if name not in DTYPES:
        raise ConfigError(f"train.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


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


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    """Optimiser steps in one epoch (the loader drops the last incomplete batch)."""
    return max(1, math.floor(n_items / max(1, batch_size)))


def _over_time(tcfg: Any, elapsed_before: float, run_start: float) -> bool:
    """Whether ``train.max_time_minutes`` is spent (over all sessions of a resumed run)."""
    if tcfg.max_time_minutes is None:
        return False
    return elapsed_before + time.perf_counter() - run_start > 60.0 * tcfg.max_time_minutes


class CheckpointSelection:
    """Which validated epoch becomes ``best.pt`` (``train.checkpoint_selection``).

    ``best``: the highest validation Dice (the paper recipes). ``ema``: the highest exponential
    moving average ``ema ← decay · ema + (1 − decay) · dice`` (nnU-Net's smoothed pseudo-Dice; one
    lucky epoch on a few validation cases does not win). ``last``: the latest validated epoch (with
    a budget schedule, the weights at the annealed end). ``history`` restores the average on resume.
    """

    def __init__(self, mode: str, decay: float = 0.9, history: Sequence[dict[str, float]] = ()) -> None:
        if mode not in CHECKPOINT_SELECTIONS:
            raise ConfigError(
                f"train.checkpoint_selection must be one of {CHECKPOINT_SELECTIONS}, got {mode!r}"
            )
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {decay}")
        self.mode, self.decay = mode, decay
        self.ema = float("nan")
        self.best = float("-inf")
        for row in history:  # replay the stored validations
            if math.isfinite(float(row.get("val_dice", float("nan")))):
                self.update(float(row["val_dice"]))

    def update(self, dice: float) -> bool:
        """Record a validation Dice; whether this epoch's weights become ``best.pt``."""
        if not math.isfinite(dice):
            return False
        self.ema = dice if not math.isfinite(self.ema) else self.decay * self.ema + (1 - self.decay) * dice
        score = {"best": dice, "ema": self.ema, "last": 0.0}[self.mode]
        if self.mode == "last" or score > self.best:
            self.best = score
            return True
        return False


class ValidationClock:
    """When to validate (``train.val_every``): every k-th epoch, or ``auto`` (module constant
    :data:`AUTO_VALIDATION_RATIO`); the last epoch of a run is always validated."""

    def __init__(self, every: int | str) -> None:
        if every != "auto" and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ConfigError(f"train.val_every must be an integer ≥ 1 or 'auto', got {every!r}")
        self.every = every
        self.last_end: float | None = None
        self.last_duration = 0.0

    def due(self, epoch: int, last_epoch: bool, now: float) -> bool:
        if last_epoch:
            return True
        if self.every == "auto":
            if self.last_end is None:
                return True
            return now - self.last_end >= AUTO_VALIDATION_RATIO * self.last_duration
        return (epoch + 1) % int(self.every) == 0

    def record(self, start: float, end: float) -> None:
        # the fastest validation so far: one slowed by a busy machine must not space out the rest
        duration = end - start
        self.last_duration = duration if self.last_end is None else min(self.last_duration, duration)
        self.last_end = end
