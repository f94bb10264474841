"""Segmentation models, built by name: ``medseg.models.build("unet", in_channels=1, out_channels=1)``.

Every model returns logits; a deep-supervision model returns ``[main, aux...]`` in training mode.
Importing this package imports each architecture module so that it registers itself.
"""

from medseg.models import monai_unet, transunet, unet  # noqa: F401  (registration side effect)
from medseg.models.registry import MODELS, available, build, describe
from medseg.models.transunet import MicroSegNet, TransUNet
from medseg.models.unet import UNet

__all__ = ["MODELS", "MicroSegNet", "TransUNet", "UNet", "available", "build", "describe"]
