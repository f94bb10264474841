"""Segmentation losses, built by name: ``medseg.losses.build("dice", squared=True)``.

Every loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)`` and returns a
scalar. Wrap any of them in :class:`DeepSupervisionLoss` when the model returns a list, except
losses with ``accepts_multiscale = True`` (:class:`AGBCEDeepSupervisionLoss`), which take the list.

The loss zoo of issue #4 lives by family: ``distribution`` (wbce, balanced_ce), ``region``
(jaccard, tversky, focal_tversky, logcosh_dice, sens_spec), ``boundary`` (shape_aware,
hausdorff_dt, boundary) and ``compound_zoo`` (combo, exp_log).
"""

from medseg.losses import (  # noqa: F401  (registration)
    annotation_guided,
    boundary,
    ce,
    compound,
    compound_zoo,
    dice,
    distribution,
    focal,
    region,
    resunet,
)
from medseg.losses.annotation_guided import AdaptiveFocalLoss, AGBCEDeepSupervisionLoss, AGBCELoss
from medseg.losses.boundary import BoundaryLoss, HausdorffDTLoss, ShapeAwareLoss
from medseg.losses.ce import BCELoss, CELoss
from medseg.losses.compound import CompoundLoss, combine
from medseg.losses.compound_zoo import ComboLoss, ExpLogLoss
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.losses.dice import DiceLoss
from medseg.losses.distribution import BalancedCELoss, WeightedBCELoss
from medseg.losses.focal import FocalLoss
from medseg.losses.region import FocalTverskyLoss, JaccardLoss, LogCoshDiceLoss, SensSpecLoss, TverskyLoss
from medseg.losses.registry import LOSSES, available, build, describe
from medseg.losses.umedsam import LiteMedSAMLoss, UMedSAMLoss  # noqa: F401  (registration)

__all__ = [
    "LOSSES",
    "AGBCEDeepSupervisionLoss",
    "AGBCELoss",
    "AdaptiveFocalLoss",
    "BCELoss",
    "BalancedCELoss",
    "BoundaryLoss",
    "CELoss",
    "ComboLoss",
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "ExpLogLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "HausdorffDTLoss",
    "JaccardLoss",
    "LogCoshDiceLoss",
    "SensSpecLoss",
    "ShapeAwareLoss",
    "TverskyLoss",
    "WeightedBCELoss",
    "available",
    "build",
    "combine",
    "describe",
]
