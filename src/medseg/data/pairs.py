"""A prediction file and its ground-truth file read for scoring: mask policy + geometry check.

Both files are read by the mask policy (:mod:`medseg.data.mask_policy`); the prediction must lie
on the ground truth's grid (:mod:`medseg.data.geometry`), or be resampled onto it on purpose.
Which label is scored:

* ``labels=None``: both masks must be binary (at most one non-zero value each); a multi-label
  map is an error asking for ``--label K`` or ``--labels all``;
* ``labels=[K]``: foreground is the value K in both files;
* ``labels="all"``: one binary pair per non-zero label found in the ground truth or the
  prediction (per-label rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry import (
    Geometry,
    check_label_geometry,
    check_same_geometry,
    geometry_of,
    resample_to_reference,
)
from medseg.data.io import Spacing
from medseg.data.mask_policy import binary_mask, check_label_values, label_values, read_label_map

EVALUATE_HINT = "score one label with --label K, or every label as its own row with --labels all"


@dataclass
class MaskPair:
    """One scored pair: ``label`` is ``None`` for a binary pair, else the label value scored."""

    label: int | None
    pred: np.ndarray  # uint8 {0, 1}
    gt: np.ndarray  # uint8 {0, 1}


@dataclass
class ReadPair:
    pairs: list[MaskPair]
    spacing: Spacing | None  # the ground truth's header spacing (None for 2D image formats)
    gt_geometry: Geometry
    resampled: bool


def read_mask_pair(
    pred_path: str | Path | None,
    gt_path: str | Path,
    labels: Sequence[int] | str | None = None,
    resample_pred: bool = False,
) -> ReadPair:
    """Read a prediction (``None``: missing, scored as empty) and its ground truth for scoring."""
    gt_labels, gt_spacing, gt_meta = read_label_map(gt_path)
    gt_geometry = geometry_of(gt_labels, gt_meta)
    resampled = False
    if pred_path is None:
        pred_labels = np.zeros_like(gt_labels)
    else:
        pred_labels, _, pred_meta = read_label_map(pred_path)
        pred_geometry = geometry_of(pred_labels, pred_meta)
        if resample_pred:
            pred_labels = check_label_values(resample_to_reference(pred_path, gt_path), pred_path)
            resampled = True
        else:
            check_same_geometry(pred_geometry, pred_path, gt_geometry, gt_path)
    pred_name = pred_path if pred_path is not None else gt_path
    if labels is None:
        gt_mask = binary_mask(gt_labels, gt_path, hint=EVALUATE_HINT)  # the ground truth first
        pairs = [MaskPair(None, binary_mask(pred_labels, pred_name, hint=EVALUATE_HINT), gt_mask)]
    else:
        chosen = (
            sorted(set(label_values(gt_labels)) | set(label_values(pred_labels)))
            if labels == "all"
            else [int(v) for v in labels]
        )
        pairs = [
            MaskPair(v, (pred_labels == v).astype(np.uint8), (gt_labels == v).astype(np.uint8))
            for v in chosen
        ]
        if not chosen:  # no label anywhere: one empty pair (both empty: scored by the empty policy)
            pairs = [MaskPair(None, np.zeros(gt_labels.shape, np.uint8), np.zeros(gt_labels.shape, np.uint8))]
    return ReadPair(pairs, gt_spacing, gt_geometry, resampled)


def read_label_on_image(
    label_path: str | Path, image_path: str | Path, image_geometry: Geometry
) -> tuple[np.ndarray, dict[str, Any]]:
    """A data source's label file read by the mask policy and checked against its image's grid.

    The reader contract of every source: the values are checked by
    :func:`~medseg.data.mask_policy.read_label_map` (NaN, negative, non-integer values, JPEG are
    errors; colour and palette masks become {0, 1}), and the label must lie on the image's grid
    (:func:`~medseg.data.geometry.check_label_geometry`: shape, and for header formats spacing,
    origin and direction). Returns the integer labels and the file's ``meta``; the source then
    picks its foreground with :func:`~medseg.data.mask_policy.binary_mask` or
    :func:`~medseg.data.mask_policy.class_index_map`, never by casting the values itself.
    """
    labels, _, meta = read_label_map(label_path)
    check_label_geometry(image_geometry, image_path, geometry_of(labels, meta), label_path)
    return labels, meta
