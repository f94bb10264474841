"""What ``medseg --version`` says: the version, and the git commit when medseg runs from a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

from medseg import __version__
from medseg.provenance import git_commit

_PACKAGE = Path(__file__).resolve().parent


def checkout_root(package: Path = _PACKAGE) -> Path | None:
    """The git work tree whose ``src/medseg`` is ``package`` (an editable install or ``PYTHONPATH=src``).

    None for an installed copy, even one inside a checkout (a ``.venv`` in the clone): its code
    is the wheel's, not the commit's.
    """
    try:
        done = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:  # no git executable
        return None
    if done.returncode != 0:
        return None
    root = Path(done.stdout.strip()).resolve()
    return root if (root / "src" / "medseg").resolve() == package.resolve() else None


def has_local_changes(root: Path) -> bool:
    """Whether tracked files of the checkout differ from its commit."""
    done = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def version_text(package: Path = _PACKAGE) -> str:
    """``medseg 0.1.0``, plus ``(git 1a2b3c4d5e6f)`` from a checkout (``, with local changes`` if edited)."""
    root = checkout_root(package)
    commit = git_commit(root) if root is not None else None
    if root is None or commit is None:
        return f"medseg {__version__}"
    changes = ", with local changes" if has_local_changes(root) else ""
    return f"medseg {__version__} (git {commit[:12]}{changes})"
