"""MONAI's residual U-Net (``monai.networks.nets.UNet``, after Kerfoot et al. 2018) behind the registry.

Registered so benchmarks can compare it with :mod:`medseg.models.unet` through the same loop;
``features`` maps to MONAI's ``channels`` and every level downsamples by 2 (``strides``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.networks.nets import UNet as MonaiUNet

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.registry import MODELS


@MODELS.register(
    "monai_unet",
    doc="MONAI UNet (residual units, strided convs) with ``channels=features``, stride 2 per level.",
)
class MonaiResidualUNet(MonaiUNet, SegmentationModel):
    """MONAI's UNet (its own module tree and state dict) with medseg's options and declared contract."""

    # ONNX export (medseg.export): exported with a fixed input grid
    export_spatial_divisor: int | None = None

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        num_res_units: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ConfigError(f"features needs at least 2 levels, got {features}")
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        norms = {"batch": "BATCH", "instance": "INSTANCE", "none": None}
        if norm == "group":
            # MONAI passes one group count to every layer (its last up-layer has out_channels
            # channels), so it must divide every width; with out_channels=1 that is 1 group.
            monai_norm: str | tuple | None = ("GROUP", {"num_groups": math.gcd(8, out_channels, *features)})
        elif norm in norms:
            monai_norm = norms[norm]
        else:
            raise ConfigError(f"unknown norm '{norm}'. Available: batch, instance, group, none")
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=features,
            strides=(2,) * (len(features) - 1),
            num_res_units=num_res_units,
            norm=monai_norm,
            dropout=dropout,
        )
        self.spatial_dims = spatial_dims
