"""File helpers every layer uses: atomic writes, guarded ``torch.load``, YAML mappings.

One of each, so that a crash mid-write, a truncated weight file or a broken YAML file gives the
same behaviour (and the same error naming the file) wherever it happens.

Every file medseg writes goes through :func:`atomic_write` (an open file handle) or
:func:`atomic_path` (a temporary path for writers that take a file name: nibabel, SimpleITK,
pydicom, Pillow): the data go to a temporary file beside the target, which is renamed onto it
only when complete. A full disk, a permission problem or a kill mid-write therefore leaves the
old file or none, never a truncated or 0-byte one; the error names the target file.
"""

from __future__ import annotations

import errno
import os
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from medseg.errors import ConfigError, DataError

#: ``OSError`` numbers caused by the machine or the user's paths, not by a bug in medseg: the CLI
#: reports them as user errors (exit 2) naming the path
USER_OS_ERRNOS = frozenset(
    {
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.EROFS,  # read-only file system
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.EFBIG,  # file too large
        errno.ENOTDIR,  # a part of the path is a file
        errno.EISDIR,  # the path is a folder
        errno.EEXIST,  # a file where a folder must be made
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)
_WRITE_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EFBIG: "write elsewhere",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder; name a file",
}


def write_error(exc: OSError, path: str | Path) -> DataError:
    """A :class:`DataError` naming ``path`` for an ``OSError`` raised while writing it."""
    reason = (exc.strerror or type(exc).__name__).lower()
    hint = _WRITE_HINTS.get(exc.errno or 0)
    return DataError(f"cannot write ({reason}){'; ' + hint if hint else ''}", path)


def make_parent(path: str | Path) -> Path:
    """Create ``path``'s parent folder; a file in the way or no permission is a :class:`DataError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in USER_OS_ERRNOS:
            raise write_error(exc, path.parent) from exc
        raise
    return path


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:  # the folder went away or became read-only: nothing left to clean
        return


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """Open ``path.tmp`` for writing; on success fsync it and ``os.replace`` it onto ``path``.

    ``os.replace`` is atomic on POSIX and Windows, so readers (and a resumed run) see the old file
    or the new one, never a half-written one. On an error the temporary file is removed; a full
    disk or a permission problem is a :class:`DataError` naming ``path``.
    """
    path = make_parent(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in USER_OS_ERRNOS:
            raise write_error(exc, path) from exc
        raise
    except BaseException:
        _discard(tmp)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto ``path`` once the caller has written it.

    For writers that take a file name (``nib.save``, ``sitk.WriteImage``, ``Image.save``,
    ``pydicom``'s ``save_as``): the temporary name ends with ``path``'s own name, so a writer that
    picks the format by the extension writes the same format. It starts with a dot, so folder
    listings skip it. On an error the temporary file is removed and the old ``path`` (if any) is
    kept; a full disk or a permission problem is a :class:`DataError` naming ``path``.
    """
    path = make_parent(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        yield tmp
        if not tmp.is_file():
            raise DataError(f"the writer left no file at the temporary path {tmp.name}", path)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno in USER_OS_ERRNOS:
            raise write_error(exc, path) from exc
        raise
    except BaseException:
        _discard(tmp)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, "wb") as handle:
        handle.write(text.encode(encoding))
    return Path(path)


def write_csv_atomic(path: str | Path, frame: Any, **to_csv: Any) -> Path:
    """``frame.to_csv(path, **to_csv)`` (a pandas DataFrame), atomically."""
    with atomic_write(path, newline="") as handle:
        frame.to_csv(handle, **to_csv)
    return Path(path)


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no pickled code runs).

    A missing file or one torch cannot read (truncated, not a torch file) is a :class:`DataError`
    that names the file; ``what`` names the kind of file in the message. A pickle of other objects
    is refused as "not a medseg <what>", without torch's hint to retry with ``weights_only=False``
    (that would run the file's code).
    """
    import torch  # here, not at the top: the data readers use this module without torch

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
