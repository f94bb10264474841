"""What a training run may spend: memory, minutes, a device, and how fast a step runs there."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import ConfigError

#: Rough sustained training throughput (FLOP/s) when no step is timed: 2 CPU cores in fp32 (the
#: LGG U-Net trained at about 1.8e11 FLOP/s there), and a data-centre GPU under AMP.
DEFAULT_THROUGHPUT = {"cpu": 1e11, "cuda": 3e13}

#: ``step_timer(candidate) -> seconds``: times a few real training steps of a planned network
#: (:mod:`medseg.plan.timing`); ``candidate`` holds the model options, patch and batch size.
StepTimer = Callable[[dict[str, Any]], float]


@dataclass(frozen=True)
class Budget:
    """What the run may spend.

    Attributes:
        memory_bytes: device memory (CUDA) or RAM (CPU) available to training.
        minutes: wall-clock training time.
        device: ``cpu`` or ``cuda`` (CUDA trains under AMP: fp16 activations).
        step_seconds: a fixed step time at the planned size (tests, an edited plan); else timed by
            ``step_timer`` or estimated from FLOPs.
        flops_per_second: sustained throughput for the estimate (default :data:`DEFAULT_THROUGHPUT`).
        validation_share: share of the minutes kept for validation.
        min_steps: the least number of optimizer steps worth training for (batch, width and
            resolution shrink to buy them on a slow device).
        step_timer: times real steps of each candidate network on the device (``medseg plan`` and
            ``medseg fit`` pass :class:`~medseg.plan.timing.StepTimer`); ``None``: estimate.
    """

    memory_bytes: int
    minutes: float
    device: str = "cpu"
    step_seconds: float | None = None
    flops_per_second: float | None = None
    validation_share: float = 0.1
    min_steps: int = 1000
    step_timer: StepTimer | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.device not in DEFAULT_THROUGHPUT:
            raise ConfigError(
                f"budget device must be one of {sorted(DEFAULT_THROUGHPUT)}, got '{self.device}'"
            )
        if not (math.isfinite(self.memory_bytes) and self.memory_bytes > 0):  # in the user's units
            raise ConfigError(f"the memory budget must be positive, got {self.memory_bytes / 2**30:g} GiB")
        if not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(
                f"the time budget must be a positive, finite number of minutes, got {self.minutes}"
            )
        if not 0 <= self.validation_share < 1:
            raise ConfigError(f"validation_share must be in [0, 1), got {self.validation_share}")
        if self.step_seconds is not None and not (math.isfinite(self.step_seconds) and self.step_seconds > 0):
            raise ConfigError(f"step_seconds must be positive, got {self.step_seconds}")

    @property
    def throughput(self) -> float:
        return self.flops_per_second or DEFAULT_THROUGHPUT[self.device]

    @property
    def training_seconds(self) -> float:
        return self.minutes * 60.0 * (1.0 - self.validation_share)

    @property
    def adapts(self) -> bool:
        """Whether the plan may trade batch, width and resolution for steps: not when the step time
        is fixed by hand (then the plan is sized for memory alone)."""
        return self.step_seconds is None
