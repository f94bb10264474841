"""Atomic checkpoints: a crash while writing never leaves a half-written ``last.pt``/``best.pt``."""

from __future__ import annotations

import hashlib
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
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a pickle of objects at all
            raise DataError(
                f"not a medseg checkpoint, or a truncated one: torch cannot read it ({type(exc).__name__})",
                path,
            ) from exc
        # torch's message suggests weights_only=False, which would run the file's code: never
        raise DataError(
            "not a medseg checkpoint: the file holds Python objects other than tensors and plain "
            "values, which medseg never loads (pickled code could run)",
            path,
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:  # truncated zip: OSError
        raise DataError(
            f"not a medseg checkpoint, or a truncated one: torch cannot read it ({type(exc).__name__})",
            path,
        ) from exc
    if not isinstance(state, dict) or "model" not in state:
        raise DataError("not a medseg checkpoint (no 'model' entry)", path)
    return state


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
