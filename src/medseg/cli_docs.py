"""The command-line reference in Markdown, generated from the typer app (the documentation's CLI page).

``mkdocs_hooks.py`` puts :func:`cli_reference_markdown` where ``docs/reference/cli.md`` has the
marker :data:`MARKER`, so the page lists exactly the commands and options the program has.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.main

from medseg.cli import app

MARKER = "<!-- medseg:cli-reference -->"


def click_command() -> Any:
    """The click command typer builds from :data:`medseg.cli.app` (typer's own click, a group)."""
    return typer.main.get_command(app)


def cli_reference_markdown(indent: int = 1) -> str:
    """Every command's usage, arguments and options as Markdown; headings start at ``indent + 1`` ``#``."""
    from typer.cli import get_docs_for_click

    command = click_command()
    context = typer.Context(command, info_name="medseg")
    return get_docs_for_click(obj=command, ctx=context, indent=indent, name="medseg").strip() + "\n"
