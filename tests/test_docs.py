"""The documentation: the site builds with ``mkdocs build --strict`` (a broken link, a page missing
from the nav, a missing results file or a bad docstring reference fails), and the README stays a
short front door."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_docs_packages() -> list[str]:
    missing = []
    for name in DOCS_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(
            f"the documentation tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'"
        )
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO_ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    cli = (site / "reference" / "cli.html").read_text()
    assert "medseg fit" in cli and "--minutes" in cli, "the CLI reference was not generated"
    benchmarks = (site / "benchmarks.html").read_text()
    assert "Command:" in benchmarks, "the benchmarks page includes no results file"


def test_the_readme_is_a_front_door() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert any("medseg fit" in line for line in lines[:25]), "medseg fit belongs on the first screen"
    text = "\n".join(lines)
    assert not re.search(r"\bissue\s*#?\d", text, flags=re.IGNORECASE), "no issue numbers in user docs"
    assert "../shared" not in text, "users have no ../shared folder"


def test_every_docs_link_in_the_readme_points_to_a_file() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+|CHANGELOG\.md)\)", text)
    assert targets
    missing = [t for t in targets if not (REPO_ROOT / t).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"
