"""Optimizers and LR schedulers by name.

``medseg.optim.build("adamw", params=model.parameters(), lr=1e-3)`` and
``medseg.optim.build_scheduler("poly", optimizer, total_steps=n_iters)``; step the scheduler
once per iteration (see :mod:`medseg.optim.schedulers`).
"""

from medseg.optim import optimizers, schedulers  # noqa: F401  (registration side effect)
from medseg.optim.registry import (
    OPTIMIZERS,
    SCHEDULERS,
    available,
    available_schedulers,
    build,
    build_scheduler,
    describe,
    describe_schedulers,
)
from medseg.optim.sam import SAM, disable_running_stats, param_groups_with_loss, sam_training_step  # noqa: F401
from medseg.optim.schedulers import cosine_factor, poly_factor, warmup_factor

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "available",
    "available_schedulers",
    "build",
    "build_scheduler",
    "cosine_factor",
    "describe",
    "describe_schedulers",
    "poly_factor",
    "warmup_factor",
]
