"""Where ``predict`` writes each input's outputs, so that no output overwrites another.

Each input gets an output *base* (a path relative to the output folder, without extension; the
mask is ``<base>_mask.<ext>``, the probabilities ``<base>_prob.<ext>``, …):

* inputs whose names (without extension) are unique keep the flat layout: ``out/<name>_mask…``;
* inputs sharing a name keep their folder structure relative to their common parent
  (``a/scan.nii.gz`` and ``b/scan.nii.gz`` → ``out/a/scan_mask.nii.gz``, ``out/b/scan_mask.nii.gz``);
* names that still collide (``x.png`` and ``x.nii.gz`` in one folder) get a numbered suffix
  (``x``, ``x_2``).

An output that already exists is an error unless ``overwrite`` is given: a second ``predict`` into
the same folder never replaces earlier results silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from medseg.data.io import strip_extension
from medseg.errors import DataError


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
