"""mkdocs hooks (``hooks:`` in mkdocs.yml): the pages that are generated from the code.

``docs/reference/cli.md`` holds the marker ``<!-- medseg:cli-reference -->``; it is replaced by the
reference of every command and option (:func:`medseg.cli_docs.cli_reference_markdown`), rendered
from the typer app of this checkout's ``src/`` in a fresh interpreter, so that an installed medseg
elsewhere on the path cannot stand in for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- medseg:cli-reference -->"
SRC = Path(__file__).resolve().parent / "src"


def cli_reference() -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", "from medseg.cli_docs import cli_reference_markdown as r; print(r(), end='')"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the CLI reference could not be generated:\n{done.stderr[-2000:]}")
    return done.stdout


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated CLI reference where its marker is."""
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
