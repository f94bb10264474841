"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597), 2D or 3D.

Laid out as segmentation_models_pytorch does: an encoder (contracting path), a decoder
(expanding path with skips) and a 1×1 head, so ``forward`` reads as those three steps.
Depth and width come from ``features``: ``(32, 64, 128, 256, 512)`` is five resolution
levels with four poolings, so each spatial size must be a multiple of ``2 ** (len(features) - 1)``.

Deep supervision (Lee et al. 2015; used by nnU-Net and MicroSegNet) adds a 1×1 head on every
decoder stage below full resolution. In training mode the model then returns
``[main, aux_1/2, aux_1/4, ...]`` (highest resolution first); in eval mode only ``main``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medseg.models.base import SegmentationModel
from medseg.models.blocks import (
    DoubleConv,
    DownBlock,
    UpBlock,
    check_unet_input,
    check_unet_options,
    conv_layer,
)
from medseg.models.registry import MODELS


class UNetEncoder(nn.Module):
    """Contracting path: a :class:`DoubleConv` stem, then one :class:`DownBlock` per extra level.

    Returns the feature map of every level, full resolution first (the skips), bottleneck last.
    Dropout, if any, sits at the end of the contracting path as in the paper (Sec. 3).
    """

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int],
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        last = len(features) - 1
        self.stages = nn.ModuleList([DoubleConv(in_channels, features[0], spatial_dims, norm)])
        for i in range(1, len(features)):
            self.stages.append(
                DownBlock(features[i - 1], features[i], spatial_dims, norm, dropout if i == last else 0.0)
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at resolutions 1, 1/2, 1/4, ..."""
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Expanding path: one :class:`UpBlock` per skip, from the bottleneck up to full resolution.

    Returns every stage's output, lowest resolution first; the last one is full resolution.
    """

    def __init__(
        self,
        features: Sequence[int],
        spatial_dims: int = 2,
        norm: str = "batch",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            UpBlock(features[i + 1], features[i], features[i], spatial_dims, norm, upsample)
            for i in reversed(range(len(features) - 1))
        )

    def forward(self, skips: list[Tensor]) -> list[Tensor]:
        """Decode from ``skips[-1]`` (bottleneck) using the other skips, deepest first."""
        x = skips[-1]
        outputs = []
        for stage, skip in zip(self.stages, reversed(skips[:-1]), strict=True):
            x = stage(x, skip)
            outputs.append(x)
        return outputs


@MODELS.register(
    "unet", doc="U-Net (Ronneberger et al. 2015), 2D/3D, configurable depth/width, optional deep supervision."
)
class UNet(SegmentationModel):
    """U-Net returning logits (``B×out_channels×spatial``), optionally with deep supervision.

    Args:
        in_channels: image channels.
        out_channels: logit channels (1 for binary with sigmoid, K for softmax).
        spatial_dims: 2 (``B×C×H×W``) or 3 (``B×C×D×H×W``).
        features: channels per resolution level; its length is the depth (≥ 2).
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        upsample: ``transpose`` (learned up-convolution) or ``bilinear``/``trilinear``.
        dropout: channel dropout at the end of the contracting path (0 disables it).
        deep_supervision: add 1×1 heads on the decoder stages below full resolution and return
            ``[main, aux_1/2, aux_1/4, ...]`` in training mode.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        norm: str = "batch",
        upsample: str = "transpose",
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        features = check_unet_options(in_channels, out_channels, features, dropout, spatial_dims)
        self.spatial_dims = spatial_dims
        self.features = features
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(in_channels, features, spatial_dims, norm, dropout)
        self.decoder = UNetDecoder(features, spatial_dims, norm, upsample)
        conv = conv_layer(spatial_dims)
        self.head = conv(features[0], out_channels, kernel_size=1)
        # Decoder stage i (deepest first) has features[-2 - i] channels; the last is full resolution.
        self.aux_heads = (
            nn.ModuleList(
                conv(features[-2 - i], out_channels, kernel_size=1) for i in range(len(features) - 2)
            )
            if deep_supervision
            else nn.ModuleList()
        )

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (one halving per level)."""
        return 2 ** (len(self.features) - 1)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank or a spatial size the poolings cannot halve."""
        check_unet_input(x, "UNet", self.spatial_dims, len(self.features))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits, or ``[main, aux_1/2, aux_1/4, ...]`` when training with deep supervision."""
        self.check_input(x)
        decoded = self.decoder(self.encoder(x))
        main = self.head(decoded[-1])
        if not (self.deep_supervision and self.training):
            return main
        # decoded[:-1] runs deepest first; aux outputs are listed highest resolution first.
        aux = [head(d) for head, d in zip(self.aux_heads, decoded[:-1], strict=True)]
        return [main, *reversed(aux)]
