"""U-Net++ (nested U-Net), 2D or 3D, with deep supervision and inference-time pruning.

Zhou, Rahman Siddiquee, Tajbakhsh & Liang, "UNet++: A Nested U-Net Architecture for Medical
Image Segmentation", DLMIA 2018 (arXiv:1807.10165), and "UNet++: Redesigning Skip Connections
to Exploit Multiscale Features in Image Segmentation", IEEE TMI 2019 (arXiv:1912.05074).

Node ``x^{i,j}`` sits at resolution level ``i`` (``1/2**i``) and column ``j``. Column 0 is the
U-Net encoder; every other node fuses all earlier nodes of its level with the upsampled node
below it (DLMIA 2018, Sec. 2, Eq. 1)::

    x^{i,j} = H([x^{i,0}, ..., x^{i,j-1}, U(x^{i+1,j-1})])

with ``H`` a :class:`~medseg.models.blocks.DoubleConv` and ``U`` a learned 2× up-convolution
(or interpolation + 1×1 conv). ``features`` (default ``(32, 64, 128, 256, 512)``, the papers'
widths) gives ``depth = len(features) - 1`` levels of nesting, L1–L4 by default, and 1×1 heads
read the top row ``x^{0,1} ... x^{0,depth}``.

Output modes (DLMIA 2018, Sec. 2, "Deep supervision"; TMI 2019, "Model pruning"):

* ``deep_supervision=False``: one head on ``x^{0,depth}``, one output. This is what paper 004
  trained ("Our experiment uses fast mode rather than deep supervision mode", Sec. 9 "Extend:
  U-Net++ (Nested U-Net)"), i.e. no auxiliary heads. Note that the UNet++ papers' own "fast
  mode" means picking one head of a deep-supervised model, which here is ``prune``.
* ``deep_supervision=True``: heads on every ``x^{0,j}``. Training mode returns
  ``[x^{0,4}, x^{0,3}, x^{0,2}, x^{0,1}]`` logits (all full resolution, deepest nesting first) for
  :class:`~medseg.losses.DeepSupervisionLoss`; eval mode returns their average ("accurate mode").
* ``prune=L`` (eval mode only): computes only the nodes ``x^{i,j}`` with ``i + j ≤ L`` (UNet++ L^L)
  and returns the ``x^{0,L}`` head. The pruned heads are only meaningful when every head was
  trained, i.e. with deep supervision; without it only ``prune=depth`` (no pruning) is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.blocks import (
    UPSAMPLE_MODES,
    DoubleConv,
    check_unet_input,
    check_unet_options,
    conv_layer,
    transpose_conv_layer,
)
from medseg.models.registry import MODELS
from medseg.models.unet import UNetEncoder


def upsample_layer(in_channels: int, out_channels: int, spatial_dims: int, upsample: str) -> nn.Module:
    """2× upsampling to ``out_channels``: a 2×2 up-convolution or interpolation + 1×1 conv."""
    if upsample == "transpose":
        return transpose_conv_layer(spatial_dims)(in_channels, out_channels, kernel_size=2, stride=2)
    if upsample in ("bilinear", "trilinear"):
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=mode, align_corners=False),
            conv_layer(spatial_dims)(in_channels, out_channels, kernel_size=1),
        )
    raise ConfigError(f"unknown upsample '{upsample}'. Available: {', '.join(UPSAMPLE_MODES)}")


class NestedNode(nn.Module):
    """One skip-pathway node ``x^{i,j}`` (``j ≥ 1``): ``H([x^{i,0..j-1}, U(x^{i+1,j-1})])``.

    ``U`` maps the level below to this level's width, so ``H`` sees ``(j + 1) × channels``.
    """

    def __init__(
        self,
        below_channels: int,
        channels: int,
        column: int,
        spatial_dims: int = 2,
        norm: str = "batch",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.up = upsample_layer(below_channels, channels, spatial_dims, upsample)
        self.conv = DoubleConv((column + 1) * channels, channels, spatial_dims, norm)

    def forward(self, below: Tensor, same_level: Sequence[Tensor]) -> Tensor:
        """Fuse ``x^{i,0..j-1}`` (``same_level``) with the upsampled ``x^{i+1,j-1}`` (``below``)."""
        return self.conv(torch.cat([*same_level, self.up(below)], dim=1))


@MODELS.register(
    "unetpp", doc="U-Net++ (Zhou et al. 2018/2019), nested skips, 2D/3D, deep supervision and pruning."
)
class UNetPlusPlus(SegmentationModel):
    """U-Net++ returning logits, ``[x04, x03, x02, x01]`` when training with deep supervision.

    Args:
        in_channels: image channels.
        out_channels: logit channels (1 for binary with sigmoid, K for softmax).
        spatial_dims: 2 (``B×C×H×W``) or 3 (``B×C×D×H×W``).
        features: channels per resolution level; ``len(features) - 1`` levels of nesting (≥ 1).
        norm: ``batch``, ``instance``, ``group`` or ``none``.
        upsample: ``transpose`` (2×2 up-convolution, as the UNet++ code) or ``bilinear``/``trilinear``.
        dropout: channel dropout at the end of the encoder (0 disables it), as in :class:`UNet`.
        deep_supervision: a head on every ``x^{0,j}``; training mode returns all of them, eval
            mode their average (accurate mode).
        prune: ``None`` or a level ``1..depth``; in eval mode only UNet++ L^prune is computed and
            its head returned. Can be changed on a built model (``model.prune = 2``). Levels below
            ``depth`` need ``deep_supervision=True`` (the shallower heads must have been trained).

    Every spatial size of the input must be a multiple of ``2 ** depth`` (also when pruned, so a
    pruned model accepts exactly what the full one does).
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
        prune: int | None = None,
    ) -> None:
        super().__init__()
        features = check_unet_options(in_channels, out_channels, features, dropout, spatial_dims)
        self.spatial_dims = spatial_dims
        self.features = features
        self.depth = len(features) - 1
        self.deep_supervision = deep_supervision
        # Column 0 (x^{i,0}) is exactly the U-Net encoder; its stages are called one level at a time.
        self.encoder = UNetEncoder(in_channels, features, spatial_dims, norm, dropout)
        self.nodes = nn.ModuleDict(
            {
                self.node_name(i, j): NestedNode(
                    features[i + 1], features[i], j, spatial_dims, norm, upsample
                )
                for i in range(self.depth)
                for j in range(1, self.depth - i + 1)
            }
        )
        conv = conv_layer(spatial_dims)
        head_columns = range(1, self.depth + 1) if deep_supervision else [self.depth]
        self.heads = nn.ModuleDict(
            {self.node_name(0, j): conv(features[0], out_channels, kernel_size=1) for j in head_columns}
        )
        self.prune = prune

    @staticmethod
    def node_name(i: int, j: int) -> str:
        """Module key of node ``x^{i,j}`` (and of its head when ``i == 0``), e.g. ``x0_4``."""
        return f"x{i}_{j}"

    @property
    def prune(self) -> int | None:
        """Inference-time pruning level (``None``: no pruning); see the class docstring."""
        return self._prune

    @prune.setter
    def prune(self, level: int | None) -> None:
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= self.depth:
                raise ConfigError(f"prune must be None or an integer in 1..{self.depth}, got {level!r}")
            if self.node_name(0, level) not in self.heads:
                raise ConfigError(
                    f"prune={level} needs the x^(0,{level}) head, which exists only with "
                    "deep_supervision=True (pruned heads must be trained by deep supervision, "
                    f"Zhou et al. 2019); without it only prune={self.depth} or None is allowed"
                )
        self._prune = level

    @property
    def size_multiple(self) -> int:
        """Every spatial size of the input must be a multiple of this (one halving per level)."""
        return 2**self.depth

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank or a spatial size the poolings cannot halve."""
        check_unet_input(x, "UNetPlusPlus", self.spatial_dims, len(self.features))

    def nested_features(self, x: Tensor, levels: int) -> list[Tensor]:
        """The top row ``[x^{0,1}, ..., x^{0,levels}]``, computing only nodes with ``i + j ≤ levels``.

        Nodes are built one anti-diagonal at a time: encoder level ``k`` first, then
        ``x^{k-1,1}, ..., x^{0,k}``. Stopping after ``k = levels`` is UNet++ L^levels, so deeper
        encoder stages and nodes are never called.
        """
        grid: list[list[Tensor]] = []  # grid[i][j] = x^{i,j}
        for k in range(levels + 1):
            grid.append([self.encoder.stages[k](x if k == 0 else grid[k - 1][0])])
            for j in range(1, k + 1):
                i = k - j
                grid[i].append(self.nodes[self.node_name(i, j)](grid[i + 1][j - 1], grid[i]))
        return grid[0][1:]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits; ``[x04, x03, x02, x01]`` heads when training with deep supervision."""
        self.check_input(x)
        if self.prune is not None and not self.training:
            top = self.nested_features(x, self.prune)
            return self.heads[self.node_name(0, self.prune)](top[-1])
        top = self.nested_features(x, self.depth)
        if not self.deep_supervision:
            return self.heads[self.node_name(0, self.depth)](top[-1])
        logits = [self.heads[self.node_name(0, j)](t) for j, t in enumerate(top, start=1)]
        if self.training:
            return logits[::-1]
        return torch.stack(logits).mean(dim=0)

    def parameter_count(self, levels: int | None = None) -> int:
        """Parameters of the whole model (``None``) or of the sub-network that ``prune=levels`` runs."""
        if levels is None:
            return sum(p.numel() for p in self.parameters())
        used = [*self.encoder.stages[: levels + 1], self.heads[self.node_name(0, levels)]]
        used += [self.nodes[self.node_name(i, j)] for i in range(levels) for j in range(1, levels - i + 1)]
        return sum(p.numel() for module in used for p in module.parameters())
