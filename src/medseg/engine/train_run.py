"""The parts of one training run (model, loss, optimizer, schedule, AMP) and one epoch of its steps.

:func:`build_run` builds them from a config, :func:`train_epoch` runs the optimiser steps of an
epoch (SAM's two passes, gradient accumulation over micro-batches with DDP's ``no_sync``, gradient
clipping, a per-step schedule), and :func:`checkpoint_state` / :func:`restore_run` write and read
what ``last.pt`` holds. :mod:`medseg.engine.train` wires them into the epoch loop.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from medseg import losses, optim
from medseg.config import Config
from medseg.data.prompts import PromptSampler
from medseg.engine.batches import TrainBatches
from medseg.engine.distributed import all_reduce_mean, broadcast_object, is_main_process
from medseg.engine.train_log import TrainProgress
from medseg.engine.validation import batch_to_device
from medseg.errors import ConfigError
from medseg.models import build_from_config
from medseg.optim.sam import SAM, param_groups_with_loss, sam_training_step
from medseg.optim.schedulers import BudgetSchedule, is_epoch_scheduler

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class RunParts:
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


def build_run(cfg: Config, steps: int, device: torch.device, dtype: torch.dtype) -> RunParts:
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
    return RunParts(
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


def train_epoch(
    run: RunParts,
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


def restore_run(run: RunParts, state: dict[str, Any], result: Any) -> int:
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


def checkpoint_state(
    run: RunParts,
    cfg: Config,
    train_set: Dataset,
    epochs_done: int,
    global_batch: int,
    world: int,
    result: Any,
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
