"""Segmentation metrics in millimetres (see ``functional`` for definitions and the empty-mask policy)."""

from medseg.metrics.aggregate import bootstrap_mean_ci, summarize
from medseg.metrics.evaluation import (
    METRIC_NAMES,
    CaseDice,
    MetricTables,
    SegmentationMetrics,
    summarize_table,
    unusable_reason,
)
from medseg.metrics.functional import (
    assd,
    compute_segmentation_metrics,
    dice,
    dice_from_counts,
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
    "METRIC_NAMES",
    "CaseDice",
    "MetricTables",
    "SegmentationMetrics",
    "bootstrap_mean_ci",
    "dice_from_counts",
    "summarize_table",
    "unusable_reason",
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
    "nsd",
    "sensitivity",
    "specificity",
    "summarize",
    "surface_distances",
]
