"""Tests of medseg.about and ``medseg --version``: the version, and the commit of a checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medseg import __version__
from medseg.about import checkout_root, has_local_changes, version_text
from medseg.cli import app

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git executable")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    """A git work tree holding ``src/medseg/__init__.py``, committed."""
    package = tmp_path / "repo" / "src" / "medseg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    root = tmp_path / "repo"
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    return root


@needs_git
def test_version_from_a_checkout_names_its_commit(checkout: Path) -> None:
    package = checkout / "src" / "medseg"
    assert checkout_root(package) == checkout.resolve()
    commit = _git(checkout, "rev-parse", "HEAD")
    assert version_text(package) == f"medseg {__version__} (git {commit[:12]})"
    (package / "__init__.py").write_text("x = 1\n")
    assert has_local_changes(checkout)
    assert version_text(package) == f"medseg {__version__} (git {commit[:12]}, with local changes)"


@needs_git
def test_an_installed_copy_inside_a_checkout_has_no_commit(checkout: Path, tmp_path: Path) -> None:
    installed = checkout / ".venv" / "site-packages" / "medseg"  # a wheel installed into the clone's venv
    installed.mkdir(parents=True)
    assert checkout_root(installed) is None
    outside = tmp_path / "site" / "medseg"
    outside.mkdir(parents=True)
    assert checkout_root(outside) is None
    assert version_text(outside) == f"medseg {__version__}"


def test_cli_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith(f"medseg {__version__}")
