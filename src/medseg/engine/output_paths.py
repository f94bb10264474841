"""Where ``predict`` writes each input's outputs, so that no output overwrites another.

Each input gets an output *base* (a path relative to the output folder, without extension; the
mask is ``<base>_mask.<ext>``, the probabilities ``<base>_prob.<ext>``, …):

* inputs whose names (without extension) are unique keep the flat layout: ``out/<name>_mask…``;
* inputs sharing a name keep their folder structure relative to their common parent
  (``a/scan.nii.gz`` and ``b/scan.nii.gz`` → ``out/a/scan_mask.nii.gz``, ``out/b/scan_mask.nii.gz``);
* names that still collide (``x.png`` and ``x.nii.gz`` in one folder) get a numbered suffix
  (``x``, ``x_2``).

An output that already exists is an error unless ``overwrite`` is given: a second ``predict`` into
the same folder never replaces earlier results silently. ``measurements.csv`` is shared by every
``predict`` into a folder: a new run appends its rows (:func:`append_measurements`), replacing only
the rows of the outputs it replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from medseg.data.io import strip_extension
from medseg.errors import DataError
from medseg.io_utils import write_csv_atomic

#: the measurement table of a ``predict`` output folder
MEASUREMENTS_FILE = "measurements.csv"


def output_bases(inputs: Sequence[Path]) -> dict[Path, Path]:
    """Input file → its output base relative to the output folder (module docstring).

    The same file given twice is predicted once (the first occurrence keeps its place).
    """
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in inputs:
        resolved = Path(path).resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(Path(path))
    by_name: dict[str, list[Path]] = {}
    for path in unique:
        by_name.setdefault(strip_extension(path.name), []).append(path)
    bases: dict[Path, Path] = {}
    for name, paths in by_name.items():
        if len(paths) == 1:
            bases[paths[0]] = Path(name)
            continue
        parents = [str(p.resolve().parent) for p in paths]
        common = Path(os.path.commonpath(parents))
        for p in paths:
            bases[p] = p.resolve().parent.relative_to(common) / name
    taken: set[str] = set()
    for path in unique:  # still equal (x.png and x.nii.gz side by side): numbered suffixes
        base, n = bases[path], 2
        while str(base) in taken:
            base = bases[path].with_name(f"{bases[path].name}_{n}")
            n += 1
        taken.add(str(base))
        bases[path] = base
    return bases


def check_not_overwriting(outputs: Iterable[Path], overwrite: bool) -> None:
    """Raise a :class:`DataError` naming the first output that exists, unless ``overwrite``."""
    if overwrite:
        return
    existing = [p for p in outputs if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise DataError(
            f"output already exists{more}; pass --overwrite to replace it, or choose another --out",
            existing[0],
        )


def append_measurements(path: Path, rows: pd.DataFrame) -> Path:
    """Add ``rows`` (column ``case``: the output base) to the table at ``path``, atomically.

    Earlier rows are kept, except those of the cases in ``rows`` (their outputs were just written
    again, with ``--overwrite``). An existing file that is not such a table (unreadable, or
    without a ``case`` column) is left as it is and the rows go to a new file beside it
    (``measurements_2.csv``, ...), whose path is returned.
    """
    path = Path(path)
    old = _read_measurements(path)
    if old is None and path.exists() and path.stat().st_size > 0:  # a 0-byte file holds nothing
        n = 2
        while path.with_name(f"{path.stem}_{n}{path.suffix}").exists():
            n += 1
        path = path.with_name(f"{path.stem}_{n}{path.suffix}")
    if old is not None and not rows.empty:
        old = old[~old["case"].astype(str).isin(set(rows["case"].astype(str)))]
    table = rows if old is None or old.empty else pd.concat([old, rows], ignore_index=True)
    return write_csv_atomic(path, table, index=False, float_format="%.6f")


def _read_measurements(path: Path) -> pd.DataFrame | None:
    """The table at ``path``, or ``None`` when there is none or it is not a measurement table."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    return table if "case" in table.columns else None
