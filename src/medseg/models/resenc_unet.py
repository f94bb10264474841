"""Residual-encoder U-Net (ResEnc), the efficient default network, 2D or 3D.

After the residual-encoder U-Net of nnU-Net (Isensee et al., "nnU-Net Revisited", MICCAI 2024,
arXiv:2404.09556), which buys more accuracy per FLOP than the plain U-Net:

* **encoder**: a stem (one conv–norm–act at full resolution, so few convolutions run on the
  largest maps), then one stage per resolution, each a stack of residual basic blocks
  (He et al. 2016); the first block of every stage after the first halves the resolution with a
  stride-2 convolution (learned, unlike max-pooling). Blocks per stage default to 1, 2, 2, 3, 3, ...
  ``strides`` may halve some axes only (nnU-Net's per-axis pooling: an axis that is already small
  or coarse is not pooled), e.g. ``[[1, 1, 1], [1, 2, 2], [2, 2, 2]]``;
* **decoder**: light, one transposed convolution and one conv–norm–act per stage;
* instance norm (affine) and leaky ReLU (slope 0.01) everywhere, as nnU-Net;
* **deep supervision on by default**: a 1×1 head on every decoder stage below full resolution; in
  training mode the model returns ``[main, aux_1/2, aux_1/4, ...]`` (highest resolution first, the
  contract of :class:`~medseg.models.unet.UNet` and
  :class:`~medseg.losses.deep_supervision.DeepSupervisionLoss`), in eval mode ``main`` only.

:func:`training_cost` gives an analytic estimate of the activation memory and the FLOPs of one
training step, which the planner (:mod:`medseg.plan`) uses to size patches and batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel, check_spatial_input
from medseg.models.blocks import conv_layer, norm_layer, transpose_conv_layer
from medseg.models.registry import MODELS

#: Width cap. nnU-Net caps 3D at 320 and 2D at 512; we cap 2D at 320 too, because in 2D every
#: stage costs about the same FLOPs per conv (width ×2, pixels ÷4) and the deep stages hold 3 blocks.
MAX_FEATURES = {2: 320, 3: 320}
NEGATIVE_SLOPE = 0.01


def default_features(n_stages: int, spatial_dims: int = 2, base: int = 32) -> tuple[int, ...]:
    """``base · 2^s`` channels at stage ``s``, capped at :data:`MAX_FEATURES` (nnU-Net's widths)."""
    if spatial_dims not in MAX_FEATURES:
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if n_stages < 2 or base <= 0:
        raise ConfigError(f"n_stages must be ≥ 2 and base > 0, got n_stages={n_stages}, base={base}")
    return tuple(min(base * 2**s, MAX_FEATURES[spatial_dims]) for s in range(n_stages))


def default_blocks(n_stages: int) -> tuple[int, ...]:
    """Residual blocks per encoder stage: 1, 2, 2, 3, 3, 3, ... (deeper stages are cheap: small maps)."""
    return tuple(1 if s == 0 else 2 if s < 3 else 3 for s in range(n_stages))


Stride = int | tuple[int, ...]


class ConvNormAct(nn.Sequential):
    """Conv (k=3, padding 1, no bias) → instance norm → leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, stride: Stride = 1) -> None:
        super().__init__(
            conv_layer(spatial_dims)(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            norm_layer("instance", spatial_dims, out_channels),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
        )


class ResidualBlock(nn.Module):
    """Basic residual block (He et al. 2016): conv–norm–act–conv–norm, plus the shortcut, then act.

    With ``stride`` 2 or a change of width the shortcut is a strided 1×1 conv + norm (projection).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int, stride: Stride = 1) -> None:
        super().__init__()
        conv = conv_layer(spatial_dims)
        strided = stride != 1 and stride != (1,) * spatial_dims
        self.body = nn.Sequential(
            ConvNormAct(in_channels, out_channels, spatial_dims, stride),
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            norm_layer("instance", spatial_dims, out_channels),
        )
        self.shortcut: nn.Module = (
            nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False),
                norm_layer("instance", spatial_dims, out_channels),
            )
            if strided or in_channels != out_channels
            else nn.Identity()
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResidualEncoder(nn.Module):
    """Stem, then one stage of residual blocks per resolution; returns every stage's output."""

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int],
        blocks: Sequence[int],
        spatial_dims: int,
        strides: Sequence[tuple[int, ...]],
    ) -> None:
        super().__init__()
        self.stem = ConvNormAct(in_channels, features[0], spatial_dims)
        self.stages = nn.ModuleList()
        previous = features[0]
        for width, n_blocks, stride in zip(features, blocks, strides, strict=True):
            if n_blocks == 0:  # stage 0 only: the stem alone works at full resolution (cheapest)
                self.stages.append(nn.Identity())
                continue
            stage = [ResidualBlock(previous, width, spatial_dims, stride=stride)]
            stage += [ResidualBlock(width, width, spatial_dims) for _ in range(n_blocks - 1)]
            self.stages.append(nn.Sequential(*stage))
            previous = width

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at resolutions 1, 1/2, 1/4, ... (the last is the bottleneck)."""
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class LightDecoderStage(nn.Module):
    """Transposed conv (×``stride`` per axis) to the skip's width, concatenate the skip, one conv–norm–act."""

    def __init__(
        self, in_channels: int, skip_channels: int, spatial_dims: int, stride: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.up = transpose_conv_layer(spatial_dims)(
            in_channels, skip_channels, stride, stride=stride, bias=False
        )
        self.conv = ConvNormAct(2 * skip_channels, skip_channels, spatial_dims)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


@MODELS.register(
    "resenc_unet",
    doc="Residual-encoder U-Net (nnU-Net ResEnc, Isensee et al. 2024), 2D/3D, deep supervision on.",
)
class ResEncUNet(SegmentationModel):
    """Residual-encoder U-Net returning logits, or ``[main, aux_1/2, ...]`` when training with DS.

    Args:
        in_channels: image channels.
        out_channels: logit channels (1 for binary with sigmoid, K for softmax).
        spatial_dims: 2 (``B×C×H×W``) or 3 (``B×C×D×H×W``).
        features: channels per stage; its length is the number of stages. Default:
            :func:`default_features` for ``n_stages``.
        n_stages: number of resolutions (used when ``features`` is not given); default 5.
        blocks: residual blocks per encoder stage (default :func:`default_blocks`).
        deep_supervision: auxiliary 1×1 heads below full resolution (on by default).
        strides: per stage, the downsampling of each spatial axis (1 or 2; an int for all axes);
            stage 0 is 1. Default: 2 along every axis at every stage after the first.

    Input contract (:class:`~medseg.models.base.SegmentationModel`): each spatial size must be a
    multiple of the product of its axis' strides (:attr:`size_multiples`; ``size_multiple`` is the
    largest), ``mask_channel`` 0, ``num_classes`` set by ``build_from_config``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 2,
        features: Sequence[int] | None = None,
        n_stages: int | None = None,
        blocks: Sequence[int] | None = None,
        deep_supervision: bool = True,
        strides: Sequence[Sequence[int] | int] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.features = _resolve_features(features, n_stages, spatial_dims)
        self.blocks = _resolve_blocks(blocks, len(self.features))
        self.strides = resolve_strides(strides, len(self.features), spatial_dims)
        if in_channels <= 0 or out_channels <= 0:
            raise ConfigError(f"channel counts must be positive: in={in_channels}, out={out_channels}")
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.encoder = ResidualEncoder(in_channels, self.features, self.blocks, spatial_dims, self.strides)
        self.decoder = nn.ModuleList(
            LightDecoderStage(self.features[i + 1], self.features[i], spatial_dims, self.strides[i + 1])
            for i in reversed(range(len(self.features) - 1))
        )
        conv = conv_layer(spatial_dims)
        self.head = conv(self.features[0], out_channels, kernel_size=1)
        # Decoder stage i (deepest first) has features[-2 - i] channels; the last is full resolution.
        self.aux_heads = (
            nn.ModuleList(
                conv(self.features[-2 - i], out_channels, kernel_size=1)
                for i in range(len(self.features) - 2)
            )
            if deep_supervision
            else nn.ModuleList()
        )

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per spatial axis, the product of its strides: each input size must be a multiple of it."""
        return tuple(math.prod(stride[a] for stride in self.strides) for a in range(self.spatial_dims))

    @property
    def size_multiple(self) -> int:
        """A size that every axis divides (2^(stages − 1) with the default strides)."""
        return max(self.size_multiples)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank or a spatial size the strided convs cannot halve."""
        check_spatial_input(x, "ResEncUNet", self.spatial_dims)
        spatial = tuple(x.shape[2:])
        if any(s % m for s, m in zip(spatial, self.size_multiples, strict=True)):
            raise ValueError(
                f"ResEncUNet with strides {[list(s) for s in self.strides]} needs spatial sizes that are "
                f"multiples of {self.size_multiples}; got spatial shape {spatial}. Pad or crop the input."
            )

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits, or ``[main, aux_1/2, aux_1/4, ...]`` when training with deep supervision."""
        self.check_input(x)
        skips = self.encoder(x)
        decoded = []
        y = skips[-1]
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            y = stage(y, skip)
            decoded.append(y)
        main = self.head(decoded[-1])
        if not (self.deep_supervision and self.training):
            return main
        # decoded[:-1] runs deepest first; aux outputs are listed highest resolution first.
        aux = [head(d) for head, d in zip(self.aux_heads, decoded[:-1], strict=True)]
        return [main, *reversed(aux)]


def _resolve_features(
    features: Sequence[int] | None, n_stages: int | None, spatial_dims: int
) -> tuple[int, ...]:
    if features is None:
        return default_features(5 if n_stages is None else int(n_stages), spatial_dims)
    widths = tuple(int(f) for f in features)
    if len(widths) < 2 or any(f <= 0 for f in widths):
        raise ConfigError(f"features needs at least 2 positive widths, got {widths}")
    if n_stages is not None and n_stages != len(widths):
        raise ConfigError(f"n_stages={n_stages} but features has {len(widths)} entries: {widths}")
    return widths


def resolve_strides(
    strides: Sequence[Sequence[int] | int] | None, n_stages: int, spatial_dims: int
) -> tuple[tuple[int, ...], ...]:
    """Per-stage, per-axis strides: stage 0 is all 1, every other stage 1 or 2 per axis."""
    if strides is None:
        return ((1,) * spatial_dims,) + ((2,) * spatial_dims,) * (n_stages - 1)
    resolved = tuple(
        (int(s),) * spatial_dims if isinstance(s, (int, float)) else tuple(int(v) for v in s) for s in strides
    )
    if (
        len(resolved) != n_stages
        or any(len(s) != spatial_dims or any(v not in (1, 2) for v in s) for s in resolved)
        or resolved[0] != (1,) * spatial_dims
    ):
        raise ConfigError(
            f"strides needs {n_stages} entries of {spatial_dims} values in {{1, 2}}, the first all 1; "
            f"got {[list(s) for s in resolved]}"
        )
    return resolved


def _resolve_blocks(blocks: Sequence[int] | None, n_stages: int) -> tuple[int, ...]:
    if blocks is None:
        return default_blocks(n_stages)
    counts = tuple(int(b) for b in blocks)
    if len(counts) != n_stages or counts[0] < 0 or any(b < 1 for b in counts[1:]):
        raise ConfigError(
            f"blocks needs {n_stages} counts (one per stage), ≥ 1 each, except the first stage "
            f"which may be 0 (the stem alone at full resolution), got {counts}"
        )
    return counts


# --------------------------------------------------------------------------- analytic cost


@dataclass(frozen=True)
class TrainingCost:
    """Per training step: activations kept for backward (elements), FLOPs, parameter count."""

    activation_elements: int
    flops: int
    parameters: int

    def memory_bytes(self, activation_bytes: int = 4, optimizer_states: int = 2) -> int:
        """Activations at ``activation_bytes`` each (2 under AMP) + fp32 weights, gradients and
        ``optimizer_states`` moment buffers (2 for Adam/AdamW, 1 for SGD with momentum)."""
        return self.activation_elements * activation_bytes + self.parameters * 4 * (2 + optimizer_states)


def training_cost(
    patch_size: Sequence[int],
    batch_size: int = 1,
    in_channels: int = 1,
    out_channels: int = 1,
    features: Sequence[int] | None = None,
    blocks: Sequence[int] | None = None,
    deep_supervision: bool = True,
    strides: Sequence[Sequence[int] | int] | None = None,
) -> TrainingCost:
    """Analytic cost of one training step of :class:`ResEncUNet` at ``patch_size`` (2D or 3D).

    Activations: every conv–norm–act keeps about two tensors of its output size for backward (the
    conv output, which the norm saves, and the norm output, which the in-place leaky ReLU and the
    next conv share); a residual block adds its sum, a projection shortcut its conv and norm outputs,
    a decoder stage its upsampled map and the concatenation. FLOPs: 2 × multiply–adds of every
    convolution, × 3 for forward + backward (the backward costs about twice the forward).
    """
    spatial_dims = len(patch_size)
    widths = _resolve_features(features, None, spatial_dims)
    counts = _resolve_blocks(blocks, len(widths))
    k3 = 3**spatial_dims
    per_stage = resolve_strides(strides, len(widths), spatial_dims)
    voxels = [float(math.prod(patch_size))]
    for stride in per_stage[1:]:
        voxels.append(voxels[-1] / math.prod(stride))
    elements = 0.0
    macs = 0.0
    params = 0

    def conv(
        cin: int,
        cout: int,
        kernel: int,
        n_out: float,
        kept: int = 2,
        transposed: bool = False,
        per_channel: int = 2,
    ) -> None:
        nonlocal elements, macs, params
        elements += kept * cout * n_out
        # A stride-2 transposed conv applies its 2^d-tap kernel once per *input* voxel (n_out / 2^d).
        macs += cin * cout * (1 if transposed else kernel) * n_out
        params += cin * cout * kernel + per_channel * cout  # affine norm: 2, bias: 1

    conv(in_channels, widths[0], k3, voxels[0])  # stem
    previous = widths[0]
    for s, (width, n_blocks) in enumerate(zip(widths, counts, strict=True)):
        for b in range(n_blocks):
            cin = previous if b == 0 else width
            conv(cin, width, k3, voxels[s])
            conv(width, width, k3, voxels[s])
            if cin != width or (b == 0 and math.prod(per_stage[s]) > 1):
                conv(cin, width, 1, voxels[s])
            elements += width * voxels[s]  # the residual sum
        previous = width
    for s in reversed(range(len(widths) - 1)):
        up_kernel = math.prod(per_stage[s + 1])
        conv(widths[s + 1], widths[s], up_kernel, voxels[s], kept=1, transposed=True, per_channel=0)
        elements += 2 * widths[s] * voxels[s]  # the concatenation
        conv(2 * widths[s], widths[s], k3, voxels[s])
    n_heads = 1 + (len(widths) - 2 if deep_supervision else 0)
    for s in range(n_heads):
        conv(widths[s], out_channels, 1, voxels[s], kept=1, per_channel=1)
    return TrainingCost(
        activation_elements=int(elements * batch_size),
        flops=int(2 * 3 * macs * batch_size),
        parameters=int(params),
    )
