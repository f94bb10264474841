"""Per-iteration learning-rate schedules as ``LambdaLR`` multipliers of the base lr.

Step semantics: build the scheduler before training, then call ``scheduler.step()`` once after
every ``optimizer.step()``. The lr used for iteration ``k`` (0-based) is ``base_lr · f(k)``;
after ``total_steps`` calls the schedule has ended (``poly`` reaches 0, ``cosine`` reaches
``min_lr_ratio``) and stays there if stepped further.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from medseg.errors import ConfigError
from medseg.optim.registry import SCHEDULERS


def _check(total_steps: int, warmup_steps: int) -> None:
    if total_steps <= 0:
        raise ConfigError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ConfigError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warmup: (step + 1) / warmup_steps for step < warmup_steps, so step warmup−1 is full lr."""
    return (step + 1) / warmup_steps


def poly_factor(step: int, total_steps: int, power: float = 0.9) -> float:
    """(1 − step / total_steps) ** power, clamped at 0 (nnU-Net; TransUNet/MicroSegNet use power 0.9)."""
    return (1.0 - min(step, total_steps) / total_steps) ** power


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup, then half a cosine down to ``min_lr_ratio`` (Loshchilov & Hutter 2017, SGDR)."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lambda(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda=factor)


@SCHEDULERS.register("constant")
def constant(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Constant lr, with optional linear warmup."""
    _check(total_steps, warmup_steps)
    return _lambda(optimizer, lambda k: warmup_factor(k, warmup_steps) if k < warmup_steps else 1.0)


@SCHEDULERS.register("poly")
def poly(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9, warmup_steps: int = 0
) -> LambdaLR:
    """Polynomial decay lr·(1 − step/total)^power (power 0.9, nnU-Net/TransUNet), optional warmup.

    With warmup, the decay runs over the remaining ``total_steps − warmup_steps`` steps, as in
    ``cosine``.
    """
    _check(total_steps, warmup_steps)
    if power <= 0:
        raise ConfigError(f"power must be positive, got {power}")
    return _lambda(
        optimizer,
        lambda k: (
            warmup_factor(k, warmup_steps)
            if k < warmup_steps
            else poly_factor(k - warmup_steps, total_steps - warmup_steps, power)
        ),
    )


@SCHEDULERS.register("cosine")
def cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Cosine annealing to min_lr_ratio·lr over total_steps, after optional linear warmup."""
    _check(total_steps, warmup_steps)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    return _lambda(optimizer, lambda k: cosine_factor(k, total_steps, warmup_steps, min_lr_ratio))


@SCHEDULERS.register("plateau")
def plateau(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    factor: float = 0.5,
    patience: int = 5,
    threshold: float = 1e-3,
    min_lr: float = 0.0,
    mode: str = "max",
) -> ReduceLROnPlateau:
    """Reduce lr by ``factor`` when validation Dice stops improving (stepped once per epoch).

    ``total_steps`` is unused; the engine calls ``scheduler.step(val_dice)`` after each validation
    (``mode="max"``, the metric is the mean per-case Dice) instead of stepping per iteration.
    """
    del total_steps
    if not 0.0 < factor < 1.0:
        raise ConfigError(f"factor must be in (0, 1), got {factor}")
    if patience < 0:
        raise ConfigError(f"patience must be ≥ 0, got {patience}")
    if mode not in ("max", "min"):
        raise ConfigError(f"mode must be 'max' or 'min', got '{mode}'")
    return ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold, min_lr=min_lr
    )


def is_epoch_scheduler(scheduler: object) -> bool:
    """True for schedulers stepped once per epoch with the validation metric (``plateau``)."""
    return isinstance(scheduler, ReduceLROnPlateau)
