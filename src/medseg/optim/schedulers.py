"""Per-iteration learning-rate schedules as ``LambdaLR`` multipliers of the base lr.

Step semantics: build the scheduler before training, then call ``scheduler.step()`` once after
every ``optimizer.step()``. The lr used for iteration ``k`` (0-based) is ``base_lr · f(k)``;
after ``total_steps`` calls the schedule has ended (``poly`` reaches 0, ``cosine`` reaches
``min_lr_ratio``) and stays there if stepped further.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

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


# --------------------------------------------------------------------------- budget-driven schedule

BUDGET_SHAPES = ("poly", "cosine")


def budget_factor(
    progress: float,
    shape: str = "poly",
    warmup_fraction: float = 0.0,
    power: float = 0.9,
    end_ratio: float = 0.0,
) -> float:
    """lr multiplier at ``progress`` ∈ [0, 1] of the budget; exactly ``end_ratio`` at progress ≥ 1.

    Linear warm-up from ``0`` to 1 over the first ``warmup_fraction`` of the budget, then ``poly``
    ((1 − q)^power, nnU-Net) or ``cosine`` (½(1 + cos πq), SGDR) from 1 down to ``end_ratio``, where
    q is the progress within the decay phase.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if p < warmup_fraction:
        return p / warmup_fraction
    q = (p - warmup_fraction) / (1.0 - warmup_fraction)
    decay = (1.0 - q) ** power if shape == "poly" else 0.5 * (1.0 + math.cos(math.pi * q))
    return end_ratio + (1.0 - end_ratio) * decay


class BudgetSchedule(LRScheduler):
    """An lr schedule that follows a time budget or a step count and ends exactly when it does.

    Progress is ``elapsed / budget_seconds`` (time, read from ``clock``, which starts when the
    schedule is built or :meth:`restart_clock` is called) or ``steps / total_steps`` (steps);
    ``step(progress)`` sets it directly. The lr is ``base_lr · budget_factor(progress)``, so it
    reaches ``end_ratio · base_lr`` exactly when the budget is spent; :attr:`finished` tells the
    training loop to stop there, instead of at whatever lr the clock happened to reach.

    Call ``step()`` once after every ``optimizer.step()``, as with the other schedulers.
    ``state_dict`` stores the elapsed time, so a resumed run continues the same curve.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int | None = None,
        budget_seconds: float | None = None,
        shape: str = "poly",
        warmup_fraction: float = 0.0,
        power: float = 0.9,
        end_ratio: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (total_steps is None) == (budget_seconds is None):
            raise ConfigError("BudgetSchedule needs exactly one of total_steps or budget_seconds")
        if total_steps is not None and total_steps <= 0:
            raise ConfigError(f"total_steps must be positive, got {total_steps}")
        if budget_seconds is not None and not budget_seconds > 0:
            raise ConfigError(f"budget_seconds must be positive, got {budget_seconds}")
        if shape not in BUDGET_SHAPES:
            raise ConfigError(f"unknown schedule shape '{shape}'. Available: {', '.join(BUDGET_SHAPES)}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        if power <= 0:
            raise ConfigError(f"power must be positive, got {power}")
        if not 0.0 <= end_ratio <= 1.0:
            raise ConfigError(f"end_ratio must be in [0, 1], got {end_ratio}")
        self.total_steps = total_steps
        self.budget_seconds = budget_seconds
        self.shape = shape
        self.warmup_fraction = float(warmup_fraction)
        self.power = float(power)
        self.end_ratio = float(end_ratio)
        self.clock = clock
        self._start = clock()
        self.progress = 0.0
        self._next_progress: float | None = None
        super().__init__(optimizer)

    def restart_clock(self, elapsed: float = 0.0) -> None:
        """Count the time budget from now (minus ``elapsed`` seconds already spent)."""
        self._start = self.clock() - float(elapsed)

    @property
    def elapsed_seconds(self) -> float:
        return self.clock() - self._start

    @property
    def finished(self) -> bool:
        """True once the budget (time or steps) is spent: the lr is then at its end value."""
        return self.progress >= 1.0

    def _measure_progress(self) -> float:
        if self.budget_seconds is not None:
            return self.elapsed_seconds / self.budget_seconds
        return self.last_epoch / self.total_steps  # type: ignore[operator]  # steps taken so far

    def step(self, progress: float | None = None) -> None:  # type: ignore[override]
        """Advance: progress from the clock / step count, or ``progress`` when given."""
        self._next_progress = progress
        super().step()

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.last_epoch == 0 and self._next_progress is None:
            self.progress = 0.0  # the constructor's initial step (last_epoch −1 → 0)
        else:
            measured = self._measure_progress() if self._next_progress is None else self._next_progress
            self.progress = min(max(float(measured), 0.0), 1.0)
        self._next_progress = None
        factor = budget_factor(self.progress, self.shape, self.warmup_fraction, self.power, self.end_ratio)
        return [float(base) * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock", "_start")}
        state["elapsed_seconds"] = self.elapsed_seconds
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        elapsed = state.pop("elapsed_seconds", 0.0)
        self.__dict__.update(state)
        self.restart_clock(elapsed)


@SCHEDULERS.register("budget")
def budget(
    optimizer: torch.optim.Optimizer,
    total_steps: int | None = None,
    budget_seconds: float | None = None,
    **options: Any,
) -> BudgetSchedule:
    """Poly or cosine with warm-up over a time budget (budget_seconds) or a step count; ends exactly there."""
    if budget_seconds is not None:
        total_steps = None  # the time budget rules; build_scheduler always passes a step count
    return BudgetSchedule(optimizer, total_steps, budget_seconds, **options)
