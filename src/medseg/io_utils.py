"""File helpers every layer uses: atomic writes, guarded ``torch.load``, YAML mappings.

One of each, so that a crash mid-write, a truncated weight file or a broken YAML file gives the
same behaviour (and the same error naming the file) wherever it happens.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from medseg.errors import ConfigError, DataError


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open ``path.tmp`` for writing; on success fsync it and ``os.replace`` it onto ``path``.

    ``os.replace`` is atomic on POSIX and Windows, so readers (and a resumed run) see the old file
    or the new one, never a half-written one. On an error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no pickled code runs).

    A missing file or one torch cannot read (truncated, not a torch file) is a :class:`DataError`
    that names the file; ``what`` names the kind of file in the message. A pickle of other objects
    is refused as "not a medseg <what>", without torch's hint to retry with ``weights_only=False``
    (that would run the file's code).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise DataError(
                f"not a medseg {what}: the file holds Python objects other than tensors and plain "
                "values, which medseg never loads (pickled code could run)",
                path,
            ) from None
        raise DataError(
            f"not a medseg {what}, or a truncated one: torch cannot read it ({type(exc).__name__})", path
        ) from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:  # truncated zip: OSError
        raise DataError(
            f"not a medseg {what}, or a truncated one: torch cannot read it ({type(exc).__name__})", path
        ) from None


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The top-level mapping of a YAML file (``{}`` for an empty file).

    A missing file, invalid YAML or a top level that is not a mapping is a :class:`ConfigError`
    that names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level of a {what} must be a mapping")
    return tree
