"""Segmentation models, built by name: ``medseg.models.build("unet", in_channels=1, out_channels=1)``.

Every model returns logits; a deep-supervision model returns ``[main, aux...]`` in training mode.
Importing this package imports each architecture module so that it registers itself.
"""

from medseg.models import (  # noqa: F401  (registration side effect)
    litemedsam,
    medsam,
    monai_unet,
    pdvnet,
    resenc_unet,
    resunet,
    transunet,
    unet,
    unetpp,
    vnet,
)
from medseg.models.base import SegmentationModel
from medseg.models.registry import MODELS, available, build, build_from_config, describe
from medseg.models.resenc_unet import ResEncUNet
from medseg.models.transunet import MicroSegNet, TransUNet
from medseg.models.unet import UNet
from medseg.models.unetpp import UNetPlusPlus

__all__ = [
    "MODELS",
    "MicroSegNet",
    "ResEncUNet",
    "SegmentationModel",
    "TransUNet",
    "UNet",
    "UNetPlusPlus",
    "available",
    "build",
    "build_from_config",
    "describe",
]
