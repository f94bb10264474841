"""Segmentation losses, built by name: ``medseg.losses.build("dice", squared=True)``.

Every loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)`` and returns a
scalar. :func:`for_model_outputs` gives the loss the training loop calls on whatever a model
returns: a loss wrapped in :class:`DeepSupervisionLoss` (one loss per scale for a list of
outputs), or the loss itself when it is a :class:`ModelOutputsLoss` already (``ag_bce_ds``, and
the U-MedSAM/LiteMedSAM losses that read a promptable model's ``{"logits", "iou"}`` dict).

The loss zoo lives by family: ``distribution`` (wbce, balanced_ce), ``region``
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
from medseg.losses.annotation_guided import AdaptiveFocalLoss, AGBCELoss
from medseg.losses.boundary import BoundaryLoss, HausdorffDTLoss, ShapeAwareLoss
from medseg.losses.ce import BCELoss, CELoss
from medseg.losses.compound import CompoundLoss
from medseg.losses.compound_zoo import ComboLoss, ExpLogLoss
from medseg.losses.deep_supervision import DeepSupervisionLoss, ModelOutputsLoss, for_model_outputs
from medseg.losses.dice import DiceLoss
from medseg.losses.distribution import BalancedCELoss, WeightedBCELoss
from medseg.losses.focal import FocalLoss
from medseg.losses.region import FocalTverskyLoss, JaccardLoss, LogCoshDiceLoss, SensSpecLoss, TverskyLoss
from medseg.losses.registry import LOSSES, available, build, combine, describe
from medseg.losses.umedsam import LiteMedSAMLoss, UMedSAMLoss  # noqa: F401  (registration)

__all__ = [
    "LOSSES",
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
    "ModelOutputsLoss",
    "SensSpecLoss",
    "ShapeAwareLoss",
    "TverskyLoss",
    "WeightedBCELoss",
    "available",
    "build",
    "combine",
    "describe",
    "for_model_outputs",
]
