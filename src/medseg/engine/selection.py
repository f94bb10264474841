"""When a training run validates, and which validated epoch becomes ``best.pt``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from medseg.errors import ConfigError

CHECKPOINT_SELECTIONS = ("best", "ema", "last")
#: ``val_every: auto`` validates once the training time since the last validation reaches this
#: multiple of that validation's duration: validation then takes ≤ 1/(1 + 9) = 10 % of the clock.
AUTO_VALIDATION_RATIO = 9.0


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
