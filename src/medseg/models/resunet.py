"""Res-UNet-R and Res-UNet-H (Li et al. 2021, arXiv:2104.07961), the MitoEM challenge winners.

Anisotropic 3D U-Nets for electron-microscopy volumes whose depth resolution is much coarser
than the lateral one (paper 003, "Architecture"):

* **Anisotropic convolution block** (:class:`AnisotropicConvBlock`, ACB): a 1×3×3 convolution +
  ELU, then two 3×3×3 convolutions with a residual connection around them.
* **Embedding**: a 1×5×5 convolution maps the input to the first width; a 1×5×5 convolution
  also makes the output logits.
* **Lateral-only downsampling**: a 1×3×3 convolution with stride (1, 2, 2), so the depth is kept
  through the whole encoder; the decoder upsamples by (1, 2, 2) trilinearly.
* **Additive skips**: the upsampled decoder features (after a 1×1×1 convolution to the skip's
  width) are *added* to the encoder features, not concatenated.

Res-UNet-R (rat) has one decoder whose head predicts the semantic mask and the instance boundary
together; Res-UNet-H (human) has a second decoder so the two are predicted separately. Both return
``B×(out_channels + 1)×D×H×W`` logits: channels ``0..out_channels-1`` are the mask, the last one
is the instance boundary (with the default ``out_channels=1``: channel 0 mask, channel 1
boundary), each trained with its own (weighted) BCE as in the paper.

Widths are the challenge code's: R ``(28, 36, 48, 64, 80)`` (its rat config), H
``(16, 32, 48, 64, 80)`` (the widths it builds the human model with); five levels are four
lateral halvings, so H and W must be multiples of 16 (D is free). Padding is replicate, as in the
challenge code; ``norm`` defaults to ``none`` (the challenge code reads it from its config), with
``batch``, ``instance`` and ``group`` as options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.blocks import NORMS, norm_layer
from medseg.models.registry import MODELS

PADDING_MODES = ("zeros", "replicate")
RESUNET_R_FEATURES = (28, 36, 48, 64, 80)
RESUNET_H_FEATURES = (16, 32, 48, 64, 80)


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int, int],
    norm: str,
    padding_mode: str,
    stride: tuple[int, int, int] = (1, 1, 1),
    act: bool = True,
) -> nn.Sequential:
    """3D convolution ('same' padding) → norm → ELU; the convolution has a bias only without norm."""
    layers: list[nn.Module] = [
        nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=tuple(k // 2 for k in kernel_size),
            padding_mode=padding_mode,
            bias=norm == "none",
        ),
        norm_layer(norm, 3, out_channels),
    ]
    if act:
        layers.append(nn.ELU(inplace=True))
    return nn.Sequential(*layers)


class AnisotropicConvBlock(nn.Module):
    """ACB: 1×3×3 conv + ELU, then ``ELU(y + conv3(ELU(conv3(y))))`` with two 3×3×3 convs.

    The 1×3×3 convolution changes the width (in-plane context only); the residual pair of
    3×3×3 convolutions enlarges the receptive field across slices (Li et al. 2021, Fig. 2).
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm: str = "none", padding_mode: str = "replicate"
    ):
        super().__init__()
        self.lateral = conv_norm_act(in_channels, out_channels, (1, 3, 3), norm, padding_mode)
        self.residual = nn.Sequential(
            conv_norm_act(out_channels, out_channels, (3, 3, 3), norm, padding_mode),
            conv_norm_act(out_channels, out_channels, (3, 3, 3), norm, padding_mode, act=False),
        )
        self.act = nn.ELU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Same spatial size, ``out_channels`` channels."""
        y = self.lateral(x)
        return self.act(y + self.residual(y))


class ResUNetEncoder(nn.Module):
    """1×5×5 embedding + ACB at full resolution, then per level a (1, 2, 2)-strided 1×3×3 conv + ACB.

    Returns the feature map of every level, full resolution first, bottleneck last. The depth
    (D) of every map equals the input's.
    """

    def __init__(self, in_channels: int, features: Sequence[int], norm: str, padding_mode: str) -> None:
        super().__init__()
        w0 = features[0]
        self.stages = nn.ModuleList(
            [
                nn.Sequential(
                    conv_norm_act(in_channels, w0, (1, 5, 5), norm, padding_mode),
                    AnisotropicConvBlock(w0, w0, norm, padding_mode),
                )
            ]
        )
        for i in range(1, len(features)):
            self.stages.append(
                nn.Sequential(
                    conv_norm_act(
                        features[i - 1], features[i - 1], (1, 3, 3), norm, padding_mode, stride=(1, 2, 2)
                    ),
                    AnisotropicConvBlock(features[i - 1], features[i], norm, padding_mode),
                )
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at lateral resolutions 1, 1/2, 1/4, ..."""
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResUNetUpBlock(nn.Module):
    """1×1×1 conv to the skip's width → trilinear (1, 2, 2) upsampling → add the skip → ACB."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, padding_mode: str) -> None:
        super().__init__()
        self.project = conv_norm_act(in_channels, out_channels, (1, 1, 1), norm, padding_mode)
        self.block = AnisotropicConvBlock(out_channels, out_channels, norm, padding_mode)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` to the skip's size and fuse by addition."""
        up = F.interpolate(self.project(x), size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.block(up + skip)


class ResUNetDecoder(nn.Module):
    """One expanding path: an up block per skip, then a 1×5×5 conv head to ``out_channels`` logits."""

    def __init__(self, features: Sequence[int], out_channels: int, norm: str, padding_mode: str) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            ResUNetUpBlock(features[i + 1], features[i], norm, padding_mode)
            for i in reversed(range(len(features) - 1))
        )
        self.head = nn.Conv3d(
            features[0], out_channels, (1, 5, 5), padding=(0, 2, 2), padding_mode=padding_mode
        )

    def forward(self, skips: list[Tensor]) -> Tensor:
        """Logits at full resolution, decoded from ``skips[-1]`` with the other skips, deepest first."""
        x = skips[-1]
        for stage, skip in zip(self.stages, reversed(skips[:-1]), strict=True):
            x = stage(x, skip)
        return self.head(x)


class ResUNet(SegmentationModel):
    """Res-UNet-R (``separate_boundary_decoder=False``) or Res-UNet-H (``True``), logits out.

    Args:
        in_channels: image channels.
        out_channels: semantic-mask channels; one instance-boundary channel is appended, so the
            output has ``out_channels + 1`` channels (mask first, boundary last).
        spatial_dims: must be 3 (the blocks are anisotropic 3D convolutions).
        features: width per level; ``len(features) - 1`` lateral halvings, so H and W must be
            multiples of ``2 ** (len(features) - 1)``.
        norm: ``none`` (the challenge code), ``batch``, ``instance`` or ``group``.
        padding_mode: ``replicate`` (the challenge code) or ``zeros``.
        separate_boundary_decoder: one decoder per output (H) instead of one shared (R).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 3,
        features: Sequence[int] = RESUNET_R_FEATURES,
        norm: str = "none",
        padding_mode: str = "replicate",
        separate_boundary_decoder: bool = False,
    ) -> None:
        super().__init__()
        name = "ResUNet-H" if separate_boundary_decoder else "ResUNet-R"
        if spatial_dims != 3:
            raise ConfigError(
                f"{name} is 3D only (anisotropic 1×3×3 and 3×3×3 blocks, lateral-only pooling); "
                f"got spatial_dims={spatial_dims}. Use a 2D model such as 'unet' for slices."
            )
        features = tuple(int(f) for f in features)
        if len(features) < 2:
            raise ConfigError(f"features needs at least 2 levels, got {features}")
        if any(f <= 0 for f in features) or in_channels <= 0 or out_channels <= 0:
            raise ConfigError(
                f"channel counts must be positive: in={in_channels}, out={out_channels}, features={features}"
            )
        if norm not in NORMS:
            raise ConfigError(f"unknown norm '{norm}'. Available: {', '.join(NORMS)}")
        if padding_mode not in PADDING_MODES:
            raise ConfigError(f"unknown padding_mode '{padding_mode}'. Available: {', '.join(PADDING_MODES)}")
        self.name = name
        self.spatial_dims = 3
        self.features = features
        self.mask_channels = out_channels
        self.out_channels = out_channels + 1
        self.encoder = ResUNetEncoder(in_channels, features, norm, padding_mode)
        if separate_boundary_decoder:
            self.decoders = nn.ModuleList(
                [
                    ResUNetDecoder(features, out_channels, norm, padding_mode),  # semantic mask
                    ResUNetDecoder(features, 1, norm, padding_mode),  # instance boundary
                ]
            )
        else:
            self.decoders = nn.ModuleList([ResUNetDecoder(features, out_channels + 1, norm, padding_mode)])

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (one lateral halving per level); D is free."""
        return 2 ** (len(self.features) - 1)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a non-5-D input or H, W the lateral halvings cannot divide."""
        if x.ndim != 5:
            raise ValueError(f"{self.name} expects a 5-D input B×C×D×H×W, got shape {tuple(x.shape)}")
        m = self.size_multiple
        if x.shape[3] % m or x.shape[4] % m:
            raise ValueError(
                f"{self.name} with {len(self.features)} levels needs H and W to be multiples of {m} "
                f"({len(self.features) - 1} lateral (1, 2, 2) downsamplings; D may be any size); "
                f"got shape {tuple(x.shape)}. Pad or crop the input."
            )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``B×(out_channels + 1)×D×H×W``: mask channel(s), then the boundary channel."""
        self.check_input(x)
        skips = self.encoder(x)
        return torch.cat([decoder(skips) for decoder in self.decoders], dim=1)


@MODELS.register("resunet_r")
def resunet_r(**options: Any) -> ResUNet:
    """Res-UNet-R (Li et al. 2021, MitoEM): anisotropic 3D, one decoder → mask + boundary logits."""
    return ResUNet(**{"features": RESUNET_R_FEATURES, **options}, separate_boundary_decoder=False)


@MODELS.register("resunet_h")
def resunet_h(**options: Any) -> ResUNet:
    """Res-UNet-H (Li et al. 2021, MitoEM): anisotropic 3D, separate mask and boundary decoders."""
    return ResUNet(**{"features": RESUNET_H_FEATURES, **options}, separate_boundary_decoder=True)
