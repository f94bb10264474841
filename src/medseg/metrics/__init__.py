"""Segmentation metrics in millimetres (see ``functional`` for definitions and the empty-mask policy)."""

from medseg.metrics.functional import (
    assd,
    compute_segmentation_metrics,
    dice,
    hausdorff_distance,
    image_diagonal_mm,
    iou,
    nsd,
    sensitivity,
    specificity,
    surface_distances,
)

__all__ = [
    "assd",
    "compute_segmentation_metrics",
    "dice",
    "hausdorff_distance",
    "image_diagonal_mm",
    "iou",
    "nsd",
    "sensitivity",
    "specificity",
    "surface_distances",
]
