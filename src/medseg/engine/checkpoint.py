"""Atomic checkpoints: a crash while writing never leaves a half-written ``last.pt``/``best.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.errors import DataError
from medseg.io_utils import atomic_write, load_torch_file


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with ``torch.save`` atomically (:func:`~medseg.io_utils.atomic_write`)."""
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medseg checkpoint on the CPU with ``weights_only=True``; errors name the file."""
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, dict) or "model" not in state:
        raise DataError("not a medseg checkpoint (no 'model' entry)", path)
    return state
