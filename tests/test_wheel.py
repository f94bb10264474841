"""``pip install .`` gives a working ``medseg``: build the wheel, install it apart, run its script.

Offline and quick: the wheel is built without build isolation (the environment's setuptools, a
``dev`` dependency) from a copy of the sources, and installed ``--no-deps`` into a folder of its
own, which the environment's interpreter (with every dependency) puts first on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medseg import __version__

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the wheel was installed into (``site/medseg``, ``site/bin/medseg``)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    (source / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src" / "medseg",
        source / "src" / "medseg",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    _pip(
        "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work / "dist"), ".", cwd=source
    )
    (wheel,) = (work / "dist").glob("medseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "medseg/report/templates/report.html.j2" in names, "the report template is package data"
    _pip("install", "--no-deps", "--no-index", "--target", str(work / "site"), str(wheel), cwd=work)
    return work / "site"


def _run(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)  # the wheel's medseg, not the checkout's src/
    return subprocess.run(
        [str(installed / "bin" / "medseg"), *args],
        cwd=installed.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_script_prints_its_version(installed: Path) -> None:
    done = _run(installed, "--version")
    assert done.returncode == 0, done.stderr
    # an installed copy has no checkout, so no commit
    assert done.stdout.strip() == f"medseg {__version__}"


def test_the_wheel_script_runs_a_command(installed: Path) -> None:
    done = _run(installed, "demo", "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: medseg demo" in done.stdout


def test_the_script_imports_the_installed_copy(installed: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    done = subprocess.run(
        [sys.executable, "-c", "import medseg; print(medseg.__file__)"],
        cwd=installed.parent,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(done.stdout.strip()).parent == installed / "medseg"
