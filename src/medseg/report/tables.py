"""Markdown tables for benchmark output and READMEs (no extra dependency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    columns: Mapping[str, str] | Sequence[str] | None = None,
    floatfmt: str | Mapping[str, str] = ".4f",
    index: bool = False,
) -> str:
    """A GitHub markdown table.

    ``rows`` is a list of dicts or a DataFrame; ``columns`` picks and orders the columns, and a
    mapping renames them (``{"dice_mean": "Dice"}``). With ``index=True`` a DataFrame's index is
    the first column. ``floatfmt`` is one format for every float, or a mapping from column
    to format (columns not in it use ``.4f``).
    """
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if index:
        frame = frame.reset_index()
    if columns is None:
        names = {c: str(c) for c in frame.columns}
    elif isinstance(columns, Mapping):
        names = dict(columns)
    else:
        names = {c: c for c in columns}
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise KeyError(f"columns {missing} not in the table (has {list(frame.columns)})")
    lines = ["| " + " | ".join(names.values()) + " |", "|" + "---|" * len(names)]
    for row in frame.to_dict("records"):
        formats = {c: floatfmt.get(c, ".4f") if isinstance(floatfmt, Mapping) else floatfmt for c in names}
        lines.append("| " + " | ".join(_cell(row[c], formats[c]) for c in names) + " |")
    return "\n".join(lines)
