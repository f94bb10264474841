"""Scoring of the CVPR 2024 "Segment Anything in Medical Images on Laptop" challenge.

Per case, as the challenge's ``compute_metrics.py`` does:

* the labels are those present in the ground truth (``np.unique(gts)`` without 0; a label only
  in the prediction is not scored);
* DSC = mean over those labels of the Dice of ``segs == l`` against ``gts == l``;
* NSD = mean over the labels of the normalised surface Dice at a tolerance of 2 px in 2D
  (spacing 1) and 2 mm in 3D (the file's spacing), **set to 0 when the case's mean DSC ≤ 0.2**
  ("NSD is also low when dice is too low"; it is then not computed).

Dice and NSD are :mod:`medseg.metrics.functional`'s (``dice``, ``nsd``: border voxels by
face-connected erosion, exact Euclidean distances, MONAI's ``compute_surface_dice`` without
sub-voxels). Known difference: the official script uses DeepMind's ``surface-distance`` package,
which weights surface elements by their area and, in 2D, scores the image as a one-slice volume
(so the flat faces count as surface). The DSC is the same; the NSD can differ, most in 2D, and
medseg does not claim to reproduce the leaderboard's NSD to the decimal.

Spacing order: MedSAM's preprocessing stores SimpleITK's ``(x, y, z)`` spacing beside ``(z, y, x)``
arrays, and the official script passes it unchanged as if it were in array order.
``spacing_order="challenge"`` (default) does the same, to score as the challenge scored;
``"xyz"`` reverses it, which is the physically right reading of such files.

Empty ground truth (no label; not in the challenge's data): ``n_labels = 0`` flags it, and DSC =
NSD = 1 if the prediction is empty too, else 0 (medseg's empty-mask policy, never NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medseg.data.cvpr24 import case_name, list_cases, read_labels, read_segs
from medseg.errors import DataError
from medseg.io_utils import write_csv_atomic
from medseg.metrics.functional import dice, nsd

__all__ = ["CSV_COLUMNS", "DSC_THRESHOLD", "TOLERANCE", "score_case", "score_cases"]

#: NSD tolerance: pixels in 2D, millimetres in 3D
TOLERANCE = 2.0
#: NSD counts only when the case's mean DSC is above this (challenge rule)
DSC_THRESHOLD = 0.2
CSV_COLUMNS = ("case", "dsc", "nsd", "n_labels", "run_time_s")

SpacingOrder = Literal["challenge", "xyz"]


def _spacing_for(gts: np.ndarray, spacing: Sequence[float] | None, order: SpacingOrder) -> tuple[float, ...]:
    if order not in ("challenge", "xyz"):
        raise ValueError(f"spacing_order must be 'challenge' or 'xyz', got {order!r}")
    if gts.ndim == 2:
        return (1.0, 1.0)  # the challenge scores 2D images in pixels
    if spacing is None:
        raise ValueError("a 3D case needs its spacing (mm) to score the NSD")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3:
        raise ValueError(f"a 3D case needs 3 spacing values, got {sp}")
    return sp if order == "challenge" else sp[::-1]


def score_case(
    segs: np.ndarray,
    gts: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    spacing_order: SpacingOrder = "challenge",
    tolerance: float = TOLERANCE,
) -> dict[str, float | int]:
    """The challenge's score of one case: ``{"dsc", "nsd", "n_labels"}``.

    Args:
        segs: predicted label map, ``H×W`` or ``D×H×W``.
        gts: ground-truth label map, same shape.
        spacing: 3D only: the spacing as stored in the file (read per ``spacing_order``).
        spacing_order: ``"challenge"`` (as stored = array order, the official script) or ``"xyz"``.
        tolerance: NSD tolerance in px (2D) / mm (3D); the challenge uses 2.
    """
    segs, gts = np.asarray(segs), np.asarray(gts)
    if segs.shape != gts.shape:
        raise ValueError(f"segs shape {segs.shape} and gts shape {gts.shape} differ")
    if gts.ndim not in (2, 3):
        raise ValueError(f"expected H×W or D×H×W label maps, got shape {gts.shape}")
    sp = _spacing_for(gts, spacing, spacing_order)
    labels = [int(v) for v in np.unique(gts) if v != 0]
    if not labels:
        score = 0.0 if np.any(segs) else 1.0
        return {"dsc": score, "nsd": score, "n_labels": 0}
    masks = [(segs == label, gts == label) for label in labels]
    dsc = float(np.mean([dice(p, g) for p, g in masks]))
    surface = float(np.mean([nsd(p, g, sp, tolerance) for p, g in masks])) if dsc > DSC_THRESHOLD else 0.0
    return {"dsc": dsc, "nsd": surface, "n_labels": len(labels)}


def _run_time(run_times: Mapping[str, float] | None, path: Path) -> float:
    if run_times is None:
        return float("nan")
    for key in (case_name(path), path.name):
        if key in run_times:
            return float(run_times[key])
    return float("nan")


def score_cases(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_csv: str | Path | None,
    run_times: Mapping[str, float] | None = None,
    *,
    spacing_order: SpacingOrder = "challenge",
    tolerance: float = TOLERANCE,
) -> pd.DataFrame:
    """Score every ground-truth ``.npz`` of ``gt_dir`` against the same-named file of ``pred_dir``.

    Returns (and writes to ``out_csv`` unless None) one row per case, sorted by name, with the
    columns ``case, dsc, nsd, n_labels, run_time_s``. ``case`` is the file name without ``.npz``;
    ``run_times`` maps a case (with or without ``.npz``) to its inference time in seconds, and a
    case without one gets NaN ("not measured"). Prediction files without a ground truth are
    ignored, as by the challenge; a missing prediction, a missing key or a shape mismatch is a
    :class:`~medseg.errors.DataError` naming the file.
    """
    gt_files = list_cases(gt_dir)
    if not gt_files:
        raise DataError("no .npz ground-truth files", gt_dir)
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise DataError("not a directory", pred_root)
    rows = []
    for gt_path in gt_files:
        pred_path = pred_root / gt_path.name
        if not pred_path.is_file():
            raise DataError(f"no prediction for ground truth {gt_path}", pred_path)
        gts, spacing = read_labels(gt_path)
        segs = read_segs(pred_path, shape=gts.shape)
        if gts.ndim == 3 and spacing is None:
            raise DataError("a 3D ground truth needs 'spacing' for the NSD in mm", gt_path)
        score = score_case(segs, gts, spacing, spacing_order=spacing_order, tolerance=tolerance)
        rows.append({"case": case_name(gt_path), **score, "run_time_s": _run_time(run_times, gt_path)})
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    if out_csv is not None:
        out = Path(out_csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(out, table, index=False)
    return table
