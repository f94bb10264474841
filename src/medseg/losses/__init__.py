"""Segmentation losses, built by name: ``medseg.losses.build("dice", squared=True)``.

Every loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)`` and returns a
scalar. Wrap any of them in :class:`DeepSupervisionLoss` when the model returns a list, except
losses with ``accepts_multiscale = True`` (:class:`AGBCEDeepSupervisionLoss`), which take the list.
"""

from medseg.losses import annotation_guided, ce, compound, dice, focal  # noqa: F401  (registration)
from medseg.losses.annotation_guided import AdaptiveFocalLoss, AGBCEDeepSupervisionLoss, AGBCELoss
from medseg.losses.ce import BCELoss, CELoss
from medseg.losses.compound import CompoundLoss, combine
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.losses.dice import DiceLoss
from medseg.losses.focal import FocalLoss
from medseg.losses.registry import LOSSES, available, build, describe

__all__ = [
    "LOSSES",
    "AGBCEDeepSupervisionLoss",
    "AGBCELoss",
    "AdaptiveFocalLoss",
    "BCELoss",
    "CELoss",
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "FocalLoss",
    "available",
    "build",
    "combine",
    "describe",
]
