"""Segmentation losses, built by name: ``medseg.losses.build("dice", squared=True)``.

Every loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)`` and returns a
scalar. Wrap any of them in :class:`DeepSupervisionLoss` when the model returns a list.
"""

from medseg.losses import ce, compound, dice  # noqa: F401  (registration side effect)
from medseg.losses.ce import BCELoss, CELoss
from medseg.losses.compound import CompoundLoss, combine
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.losses.dice import DiceLoss
from medseg.losses.registry import LOSSES, available, build, describe

__all__ = [
    "LOSSES",
    "BCELoss",
    "CELoss",
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "available",
    "build",
    "combine",
    "describe",
]
