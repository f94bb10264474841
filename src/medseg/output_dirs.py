"""Output folders and files of the commands: never replaced silently, replaced as a whole on purpose.

* :func:`prepare_output_dir` (``fit``, ``train``): an existing non-empty folder is an error unless
  ``overwrite``; with ``overwrite`` its old contents are removed first, so nothing stale (an old
  ``best.pt``, old metrics) survives next to the new results. Only a folder that medseg made (it
  holds :data:`MARKER`) is emptied: ``--overwrite`` on a folder of other files is refused instead.
* :func:`check_output_file` (``report -o``, ``plan --out``): an existing file is an error unless
  ``overwrite``; a folder where a file is named is an error.
* :func:`staging_dir` + :func:`replace_dir` (``data export``): the new folder is written beside
  the target under a hidden name and renamed onto it when complete, so a failed export leaves the
  old folder as it was.

Every problem is a one-line :class:`~medseg.errors.DataError` / :class:`~medseg.errors.ConfigError`
that names the option and the path (a file where a folder is expected, no permission, a
read-only file system).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medseg.errors import ConfigError, DataError
from medseg.io_utils import USER_OS_ERRNOS, write_error, write_text_atomic

#: the file that marks a folder as made by medseg (``--overwrite`` may empty it)
MARKER = ".medseg-output"


def _is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_writable_dir(path: Path, option: str) -> None:
    """``path`` (an existing folder) accepts new files, else a :class:`DataError` naming it."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        raise DataError(f"{option} folder is on a read-only file system; choose another {option}", path)
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataError(f"{option} folder is not writable (permission denied); choose another {option}", path)


def make_dir(path: Path, option: str) -> Path:
    """``mkdir -p path``: a file in the way or no permission is an error naming ``option``."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in USER_OS_ERRNOS:
            error = write_error(exc, exc.filename or path)
            raise DataError(f"cannot create the {option} folder: {error.problem}", path) from exc
        raise
    check_writable_dir(path, option)
    return path


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """An output folder that can be made later: not a file, and its nearest existing folder
    writable. Nothing is created (a command that fails on its inputs leaves no empty folder)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f"{existing} "
        raise ConfigError(f"{option} {path}: {where}is a file, not a folder; name a folder")
    check_writable_dir(existing, option)
    return path


def clear_dir(path: Path) -> None:
    """Remove everything inside ``path`` (the folder itself stays)."""
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def prepare_output_dir(
    path: str | Path, option: str = "--out", overwrite: bool = False, command: str = "medseg"
) -> Path:
    """The output folder of a command, created and marked; see the module docstring."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder; name a folder")
    if _is_non_empty_dir(path):
        if not overwrite:
            raise DataError(
                f"the {option} folder exists and is not empty; pass --overwrite to replace it as a "
                f"whole, or choose another {option}",
                path,
            )
        if not (path / MARKER).is_file():
            raise DataError(
                f"--overwrite empties only a folder that medseg made (it holds {MARKER}); this "
                f"{option} folder holds other files: empty it yourself, or choose another {option}",
                path,
            )
        check_writable_dir(path, option)
        clear_dir(path)
    make_dir(path, option)
    write_text_atomic(path / MARKER, f"written by: {command}\n")
    return path


def check_output_file(path: str | Path, option: str, overwrite: bool = False) -> Path:
    """A file a command will write: not a folder, not an existing file unless ``overwrite``, and
    its folder writable (created when missing)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; name the file to write")
    if path.exists() and not overwrite:
        raise DataError(
            f"{option} file exists; pass --overwrite to replace it, or choose another {option}", path
        )
    make_dir(path.parent, option)
    return path


def staging_dir(target: str | Path, option: str = "--out") -> Path:
    """An empty hidden folder beside ``target`` to write the new contents into."""
    target = Path(target)
    make_dir(target.parent, option)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def replace_dir(staging: Path, target: Path) -> Path:
    """Rename the complete ``staging`` folder onto ``target`` (the old ``target`` is removed)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    if old.exists():
        shutil.rmtree(old)
    return target


def discard_dir(staging: Path) -> None:
    """Remove a staging folder after a failed write."""
    shutil.rmtree(staging, ignore_errors=True)
