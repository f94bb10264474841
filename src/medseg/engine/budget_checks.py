"""Checks of a training budget and of the data's size, made before any work starts.

Each error quotes the option the user typed (``--minutes 0.001``, ``--memory-gb 0.01``), not the
bytes or seconds the planner works in, and says what would work.
"""

from __future__ import annotations

import math

from medseg.config import Config
from medseg.data.fingerprint import Fingerprint
from medseg.errors import ConfigError, DataError
from medseg.plan import Budget, Plan

#: the smallest image side (pixels, at the planned spacing) the planned network trains on: one
#: halving must leave a feature map of at least 2 voxels per axis for instance normalisation
MIN_TRAINABLE_SIDE = 4


def check_minutes(minutes: float, option: str = "--minutes") -> float:
    """``minutes`` as a finite positive number, else a :class:`ConfigError` quoting ``option``."""
    if (
        isinstance(minutes, bool)
        or not isinstance(minutes, (int, float))
        or not math.isfinite(minutes)
        or minutes <= 0
    ):
        raise ConfigError(f"{option} {minutes}: expected a positive, finite number of minutes")
    return float(minutes)


def check_memory_bytes(memory_bytes: int | None, option: str = "--memory-gb") -> int | None:
    """``None`` (use the free memory) or a positive byte count, else a :class:`ConfigError`."""
    if memory_bytes is not None and memory_bytes <= 0:
        raise ConfigError(f"{option} {memory_bytes / 2**30:g}: expected a positive number of GiB")
    return memory_bytes


def memory_error(exc: ConfigError, memory_bytes: int | None, device: str) -> ConfigError:
    """The planner's memory error, prefixed with the option (or the free memory) it came from."""
    if memory_bytes is not None:
        return ConfigError(f"--memory-gb {memory_bytes / 2**30:.3g}: {exc}")
    return ConfigError(f"the free memory of the {device} (--memory-gb not given): {exc}")


def check_plan_affordable(plan: Plan, minutes: float, option: str = "--minutes") -> None:
    """A budget that cannot hold a single training step of ``plan`` is a :class:`ConfigError`
    naming the minutes typed and the least that would hold one."""
    share = Budget.__dataclass_fields__["validation_share"].default
    training_seconds = 60.0 * minutes * (1.0 - share)
    step = float(plan.step_seconds)
    if step > 0 and training_seconds < step:
        least = step / (60.0 * (1.0 - share))
        raise ConfigError(
            f"{option} {minutes:g}: the budget leaves {training_seconds:.3g} s for training, and one "
            f"training step of this plan takes about {step:.3g} s: not a single step fits; give at "
            f"least {option} {_round_up(least)}"
        )


def _round_up(value: float) -> str:
    """``value`` rounded up to two significant digits, as text."""
    digits = 1 - int(math.floor(math.log10(value))) if value > 0 else 0
    factor = 10.0**digits
    return f"{math.ceil(value * factor) / factor:g}"


def check_trainable_shape(fingerprint: Fingerprint, where: str) -> None:
    """Images smaller than :data:`MIN_TRAINABLE_SIDE` pixels in-plane are an error before any
    training (the planned network halves them at least once)."""
    in_plane = [float(s) for s in fingerprint.shape_median[-2:]]
    if min(in_plane) < MIN_TRAINABLE_SIDE:
        shape = "×".join(f"{s:g}" for s in fingerprint.shape_median)
        raise DataError(
            f"the images are {shape} voxels (median): too small to train a segmentation network on; "
            f"it needs at least {MIN_TRAINABLE_SIDE}×{MIN_TRAINABLE_SIDE} pixels in-plane",
            where,
        )


def with_minutes(cfg: Config, minutes: float) -> Config:
    """``cfg`` trained for ``minutes`` (``medseg train CONFIG --minutes``): ``train.max_time_minutes``,
    and the length of a ``budget`` schedule, so the lr anneals to its end when they are spent."""
    check_minutes(minutes)
    cfg.train.max_time_minutes = float(minutes)
    if cfg.optim.scheduler == "budget":
        cfg.optim.scheduler_options = {**cfg.optim.scheduler_options, "budget_seconds": 60.0 * minutes}
        cfg.optim.scheduler_options.pop("total_steps", None)
    return cfg
