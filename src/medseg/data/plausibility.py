"""Warnings where a result is technically right but probably not what was meant.

These never stop a run (the input is valid); they are :class:`~medseg.errors.DataWarning`\\ s,
which the CLI prints as ``warning:`` lines:

* a voxel spacing above :data:`SPACING_MAX_MM` (100 mm) or below :data:`SPACING_MIN_MM` (1 µm)
  along an axis with more than one voxel: usually a header in other units (m, µm) or a typo in
  ``--spacing``; every millimetre metric and the planned resolution would follow it. (A singleton
  axis is exempt: a 2D image exported as a one-slice volume carries a nominal 999 mm there.)
* ``dataset.json``'s ``numTraining`` differing from the training cases found;
* a label asked for (``evaluate --label K``) that occurs in no prediction and no ground truth, so
  every case scores as "both empty".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from medseg.errors import DataWarning

#: spacing above this (mm per voxel) is probably not in mm
SPACING_MAX_MM = 100.0
#: spacing below this (mm per voxel, 1 µm) is probably not in mm
SPACING_MIN_MM = 1e-3


def warn_user(message: str) -> None:
    """Emit ``message`` as a :class:`DataWarning` (the CLI prints it as a ``warning:`` line)."""
    warnings.warn(message, DataWarning, stacklevel=3)


def implausible_spacing(spacing: Sequence[float], shape: Sequence[int] | None = None) -> list[float]:
    """The spacings outside [1 µm, 100 mm] along axes with more than one voxel (``shape``: the
    spatial shape, in the axis order of ``spacing``)."""
    values = [float(s) for s in spacing]
    sizes = list(shape)[: len(values)] if shape is not None else [2] * len(values)
    return [
        s for s, n in zip(values, sizes, strict=False) if n > 1 and not SPACING_MIN_MM <= s <= SPACING_MAX_MM
    ]


def check_spacing_plausible(
    spacing: Sequence[float],
    where: str | Path,
    shape: Sequence[int] | None = None,
    what: str = "voxel spacing",
) -> None:
    """Warn when :func:`implausible_spacing` finds a value (module docstring)."""
    odd = implausible_spacing(spacing, shape)
    if odd:
        shown = ", ".join(f"{s:g}" for s in spacing)
        side = "above 100 mm" if max(odd) > SPACING_MAX_MM else "below 1 µm"
        warn_user(
            f"{where}: {what} ({shown}) mm is {side} per voxel; is it in mm? Millimetre metrics "
            "and planned resolutions follow it"
        )


def check_case_count(declared: object, found: int, where: str | Path, key: str = "numTraining") -> None:
    """Warn when ``dataset.json``'s count (``declared``) differs from the cases ``found``."""
    if declared is None:
        return
    if isinstance(declared, bool) or not isinstance(declared, int):
        warn_user(f"{where}: {key} is {declared!r}, not a count; {found} cases found")
    elif declared != found:
        warn_user(
            f"{where}: {key} says {declared} cases but {found} were found; files missing or extra? "
            f"medseg uses the {found} found"
        )


def check_labels_present(labels: Sequence[int], present: set[int], pred: str | Path, gt: str | Path) -> None:
    """Warn for each asked-for label that occurs in no prediction and no ground-truth file."""
    absent = [int(v) for v in labels if int(v) not in present]
    if absent:
        warn_user(
            f"label{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))} occur"
            f"{'' if len(absent) > 1 else 's'} in no prediction ({pred}) and no ground truth ({gt}): "
            "every case scores as two empty masks (Dice 1 by the empty-mask policy); is the label "
            "value right?"
        )
