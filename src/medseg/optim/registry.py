"""Optimizer and learning-rate scheduler registries.

Optimizers are built from ``params`` plus options; schedulers from an optimizer plus
``total_steps`` (the number of optimizer steps in the whole run).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from medseg.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")


def build(name: str, params: Iterable[Any], **options: Any) -> torch.optim.Optimizer:
    """Build an optimizer, e.g. ``build("adamw", params=model.parameters(), lr=1e-3)``."""
    return OPTIMIZERS.build(name, params=params, **options)


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, **options: Any
) -> LRScheduler:
    """Build a per-iteration LR scheduler; call ``scheduler.step()`` once after each ``optimizer.step()``."""
    return SCHEDULERS.build(name, optimizer=optimizer, total_steps=total_steps, **options)


def available() -> list[str]:
    """Sorted names of the registered optimizers."""
    return OPTIMIZERS.available()


def available_schedulers() -> list[str]:
    """Sorted names of the registered schedulers."""
    return SCHEDULERS.available()


def describe() -> dict[str, str]:
    """Name → one-line description of every registered optimizer."""
    return OPTIMIZERS.describe()


def describe_schedulers() -> dict[str, str]:
    """Name → one-line description of every registered scheduler."""
    return SCHEDULERS.describe()
