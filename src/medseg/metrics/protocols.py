"""Evaluation protocols for a patient volume: ``volumetric`` (medseg's default) and ``microsegnet``.

Papers report numbers under their own protocol, so medseg computes both and labels each:

* ``volumetric``: one 3D score per patient on the whole volume at its header spacing, empty masks
  handled by the policy in :mod:`medseg.metrics.functional` (both empty: Dice 1, HD95 0; one empty:
  Dice 0, HD95 = image diagonal). The honest number.
* ``microsegnet``: the official MicroSegNet test script (Jiang et al. 2024, paper 000): slice-wise on
  native-resolution slices; Dice and pooled HD95 (medpy's ``hd95``) **only on slices where both the
  prediction and the ground truth are non-empty**; HD95 measured in pixels and multiplied by
  0.033586 mm (the micro-US pixel size the script hard-codes); per-patient mean over those slices,
  then mean over patients. Slices the script skips are counted, not hidden
  (``n_slices_skipped``), because skipping them is what makes this number optimistic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medseg.metrics.functional import compute_segmentation_metrics, dice, hausdorff_distance

#: pixel size (mm) hard-coded in the official MicroSegNet test script
MICROSEGNET_PIXEL_MM = 0.033586
PROTOCOLS = ("volumetric", "microsegnet")


def microsegnet_protocol(
    pred: ArrayLike, gt: ArrayLike, pixel_mm: float = MICROSEGNET_PIXEL_MM
) -> dict[str, Any]:
    """Per-patient Dice and HD95 (mm) as the official MicroSegNet test script computes them.

    ``pred`` and ``gt`` are ``D×H×W`` volumes whose axis 0 indexes the 2D slices. A patient with no
    slice where both masks are non-empty gets ``dice = 0`` and ``hd95_mm`` = the slice diagonal in
    ``pixel_mm`` units and ``n_slices_scored = 0`` (flagged, never NaN).
    """
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"expected two D×H×W volumes of one shape, got {pred.shape} and {gt.shape}")
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be positive, got {pixel_mm}")
    dices, hd95s = [], []
    for p, g in zip(pred, gt, strict=True):
        if p.any() and g.any():
            dices.append(dice(p, g))
            hd95s.append(hausdorff_distance(p, g, (1.0, 1.0), percentile=95, mode="pooled") * pixel_mm)
    n_scored = len(dices)
    if n_scored == 0:
        diagonal = float(np.hypot(*pred.shape[1:])) * pixel_mm
        return {
            "dice": 0.0,
            "hd95_mm": diagonal,
            "n_slices_scored": 0,
            "n_slices_skipped": int(pred.shape[0]),
        }
    return {
        "dice": float(np.mean(dices)),
        "hd95_mm": float(np.mean(hd95s)),
        "n_slices_scored": n_scored,
        "n_slices_skipped": int(pred.shape[0] - n_scored),
    }


def volumetric_protocol(
    pred: ArrayLike,
    gt: ArrayLike,
    spacing: Sequence[float],
    hd95_mode: str = "pooled",
    nsd_tolerance_mm: float = 1.0,
) -> dict[str, Any]:
    """One 3D score per patient at the header spacing (all metrics, the documented empty policy)."""
    return compute_segmentation_metrics(
        pred,
        gt,
        spacing,
        hd95_mode=hd95_mode,
        nsd_tolerance_mm=nsd_tolerance_mm,  # type: ignore[arg-type]
    )
