"""medseg.cli_docs: the command-line reference the documentation renders from the typer app."""

from __future__ import annotations

import re

from medseg.cli_docs import MARKER, cli_reference_markdown, click_command


def test_the_click_command_is_the_whole_cli() -> None:
    command = click_command()
    names = set(command.commands)
    assert {"fit", "plan", "train", "evaluate", "predict", "report", "demo", "data", "export"} <= names
    assert {"inspect", "export", "phantom", "sources"} <= set(command.commands["data"].commands)


def test_the_reference_has_every_command_and_its_options() -> None:
    text = cli_reference_markdown()
    assert text.startswith("## `medseg`")
    headings = re.findall(r"^(#+) `(medseg[^`]*)`$", text, flags=re.MULTILINE)
    assert ("###", "medseg fit") in headings and ("####", "medseg data inspect") in headings
    fit = text.split("### `medseg fit`", 1)[1].split("\n### ", 1)[0]
    assert "`--minutes" in fit and "`--out" in fit
    assert "`--version`" in text  # the root options too
    assert MARKER not in text
