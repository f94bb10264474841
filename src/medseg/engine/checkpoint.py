"""Atomic checkpoints: a crash while writing never leaves a half-written ``last.pt``/``best.pt``."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from medseg.errors import DataError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write to ``path.tmp``, fsync, then ``os.replace`` (atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medseg checkpoint on the CPU with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"checkpoint is corrupt or truncated ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise DataError("not a medseg checkpoint (no 'model' entry)", path)
    return state
