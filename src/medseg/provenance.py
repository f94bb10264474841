"""Where a result came from: the medseg version, the git commit of its code and the command line.

Evaluations store these in ``summary.json`` (``provenance``), so a report shows the code that made
the numbers rather than the code that draws the page.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from medseg import __version__


def git_commit(where: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding ``where`` (default: the medseg sources), or None."""
    folder = Path(where) if where is not None else Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git executable: an installed package without a checkout
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def command_line(argv: Sequence[str] | None = None) -> str:
    """The running command as a shell line, the program by its base name (``medseg evaluate …``)."""
    args = list(sys.argv if argv is None else argv)
    if not args:
        return ""
    return shlex.join([Path(args[0]).name, *args[1:]])


def code_provenance() -> dict[str, str | None]:
    """``medseg_version``, ``git_commit`` (of the medseg sources; None outside a checkout), ``command``."""
    return {"medseg_version": __version__, "git_commit": git_commit(), "command": command_line()}


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file (a checkpoint), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
