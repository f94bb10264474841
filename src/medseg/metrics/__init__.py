"""Segmentation metrics in millimetres (see ``functional`` for definitions and the empty-mask policy)."""

from medseg.metrics.aggregate import (
    metrics_per_volume,
    per_case_table,
    per_patient_table,
    summarize,
    summary_table,
)
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
from medseg.metrics.protocols import (
    MICROSEGNET_PIXEL_MM,
    PROTOCOLS,
    microsegnet_protocol,
    volumetric_protocol,
)

__all__ = [
    "MICROSEGNET_PIXEL_MM",
    "PROTOCOLS",
    "microsegnet_protocol",
    "volumetric_protocol",
    "assd",
    "compute_segmentation_metrics",
    "dice",
    "hausdorff_distance",
    "image_diagonal_mm",
    "iou",
    "metrics_per_volume",
    "nsd",
    "per_case_table",
    "per_patient_table",
    "sensitivity",
    "specificity",
    "summarize",
    "summary_table",
    "surface_distances",
]
