"""Building blocks shared by the U-Net family, written once for 2D and 3D.

``spatial_dims`` picks ``Conv2d``/``Conv3d`` (and the matching norm, pool, dropout), so an
architecture is written once and works on slices and on volumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError

NORMS = ("batch", "instance", "group", "none")


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    _check_dims(spatial_dims)
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def transpose_conv_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    _check_dims(spatial_dims)
    return nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d


def max_pool_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    _check_dims(spatial_dims)
    return nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d


def dropout_layer(spatial_dims: int) -> type[nn.Module]:
    """Channel dropout, ``nn.Dropout2d`` or ``nn.Dropout3d``."""
    _check_dims(spatial_dims)
    return nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d


def norm_layer(norm: str, spatial_dims: int, channels: int, groups: int = 8) -> nn.Module:
    """A normalisation layer by name: ``batch``, ``instance`` (affine, as nnU-Net), ``group``, ``none``.

    ``group`` uses ``min(groups, channels)`` groups, reduced until it divides ``channels``
    (Wu & He 2018, GroupNorm).
    """
    _check_dims(spatial_dims)
    if norm == "batch":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    if norm == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=True)
    if norm == "group":
        g = min(groups, channels)
        while channels % g:
            g -= 1
        return nn.GroupNorm(g, channels)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{norm}'. Available: {', '.join(NORMS)}")


class DoubleConv(nn.Sequential):
    """(Conv 3×3 → Norm → ReLU) × 2, the unit of every U-Net stage (Ronneberger et al. 2015, Fig. 1).

    Padding 1 keeps the spatial size, so skips need no cropping (unlike the valid convolutions
    of the original paper). The convolution has no bias when a norm follows it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        conv = conv_layer(spatial_dims)
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(in_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, kernel_size=3, padding=1, bias=bias),
            norm_layer(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(dropout_layer(spatial_dims)(dropout))
        super().__init__(*layers)


class DownBlock(nn.Sequential):
    """Max-pool 2× then :class:`DoubleConv`: one contracting-path stage."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            max_pool_layer(spatial_dims)(kernel_size=2),
            DoubleConv(in_channels, out_channels, spatial_dims, norm, dropout),
        )


UPSAMPLE_MODES = ("transpose", "bilinear", "trilinear")


class UpBlock(nn.Module):
    """Upsample 2×, concatenate the skip, :class:`DoubleConv`: one expanding-path stage.

    ``upsample="transpose"`` is the paper's learned 2×2 up-convolution; ``"bilinear"`` (or
    ``"trilinear"``; either means linear interpolation in 2D or 3D) interpolates and then maps
    channels with a 1×1 convolution, which avoids checkerboard artefacts.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        spatial_dims: int = 2,
        norm: str = "batch",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if upsample == "transpose":
            self.up: nn.Module = transpose_conv_layer(spatial_dims)(
                in_channels, skip_channels, kernel_size=2, stride=2
            )
        elif upsample in ("bilinear", "trilinear"):
            mode = "bilinear" if spatial_dims == 2 else "trilinear"
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
                conv_layer(spatial_dims)(in_channels, skip_channels, kernel_size=1),
            )
        else:
            raise ConfigError(f"unknown upsample '{upsample}'. Available: {', '.join(UPSAMPLE_MODES)}")
        self.conv = DoubleConv(2 * skip_channels, out_channels, spatial_dims, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Upsample ``x`` to the skip's size and fuse them."""
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


def check_unet_options(
    in_channels: int, out_channels: int, features: Sequence[int], dropout: float, spatial_dims: int
) -> tuple[int, ...]:
    """Validate the options shared by the U-Net family; returns ``features`` as a tuple of ints."""
    widths = tuple(int(f) for f in features)
    if len(widths) < 2:
        raise ConfigError(f"features needs at least 2 levels, got {widths}")
    if any(f <= 0 for f in widths) or in_channels <= 0 or out_channels <= 0:
        raise ConfigError(
            f"channel counts must be positive: in={in_channels}, out={out_channels}, features={widths}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return widths


def check_unet_input(x: Tensor, name: str, spatial_dims: int, levels: int) -> None:
    """Raise ``ValueError`` for a wrong rank, or a spatial size that ``levels − 1`` poolings cannot halve."""
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name}(spatial_dims={spatial_dims}) expects a {spatial_dims + 2}-D input "
            f"B×C×{'D×' if spatial_dims == 3 else ''}H×W, got shape {tuple(x.shape)}"
        )
    depth = levels - 1
    spatial = tuple(x.shape[2:])
    if any(s % 2**depth for s in spatial):
        raise ValueError(
            f"{name} with {levels} levels needs every spatial size to be a multiple of "
            f"{2**depth} (2**{depth}); got spatial shape {spatial}. Pad or crop the input."
        )
