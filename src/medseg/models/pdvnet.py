"""PDV-Net (Imran et al., MICCAI DLMIA 2018, arXiv:1902.06362), after Gibson et al.'s Dense V-Net.

The progressive dense V-network for pulmonary lobes (paper 003, "Architecture"):

1. The input goes through a 24-kernel 5×5×5 convolution with stride 2, concatenated with the
   input downsampled to the same grid.
2. Three dense feature blocks of 5, 10 and 10 densely connected 3×3×3 convolutions with growth
   rates 4, 6 and 8; every convolution is followed by batch norm and PReLU. The blocks run at
   1/2, 1/4 and 1/8 of the input resolution, with a downsampling between blocks.
3. Each block's output feeds a skip convolution; the second and third skips are upsampled to the
   first one's resolution, the three are concatenated and merged by a 1×1×1 convolution into
   ``out_channels`` logits, which are upsampled to the input resolution (softmax at inference).

What the paper leaves open is a constructor option; the defaults are **medseg's choice**, after
Gibson's Dense V-Net (NiftyNet ``dense_vnet``):

* input downsampling: 3×3×3 average pooling, stride 2, padding 1 (the same grid as the strided
  5×5×5 convolution for any input size);
* a dense block's output is its input concatenated with all of its layers' outputs (DenseNet);
* downsampling between blocks: a 3×3×3 stride-2 convolution + BN + PReLU to ``down_channels``
  (24, 24) channels, applied to the block output;
* skip convolutions: 3×3×3 convolution + BN + PReLU to ``skip_channels`` (12, 24, 24);
* ``dilations``: 1 in every dense layer (pass one dilation per layer and block, e.g.
  ``[[1] * 5, [1, 2, 4, 8, 1, 2, 4, 8, 1, 2], [1] * 10]``, for a dilated variant);
* upsampling: (bi/tri)linear interpolation to the exact target size (any input size works;
  multiples of 8 keep the three grids aligned);
* ``dropout`` (channel dropout before the merge convolution; the paper trains with dropout but
  does not say where): 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.blocks import conv_layer, dropout_layer, norm_layer
from medseg.models.registry import MODELS

PDVNET_LAYERS = (5, 10, 10)
PDVNET_GROWTH_RATES = (4, 6, 8)


def conv_bn_prelu(
    in_channels: int,
    out_channels: int,
    spatial_dims: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
) -> nn.Sequential:
    """Convolution ('same' padding for stride 1) → batch norm → PReLU (one slope per channel)."""
    return nn.Sequential(
        conv_layer(spatial_dims)(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=False,
        ),
        norm_layer("batch", spatial_dims, out_channels),
        nn.PReLU(out_channels),
    )


class DenseBlock(nn.Module):
    """``n_layers`` densely connected 3×3(×3) conv-BN-PReLU layers, each adding ``growth_rate`` channels.

    Layer ``i`` sees the block input and the outputs of layers ``0..i-1``; the block returns all of
    them concatenated (``in_channels + n_layers * growth_rate`` channels).
    """

    def __init__(
        self,
        in_channels: int,
        n_layers: int,
        growth_rate: int,
        spatial_dims: int = 3,
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        dilations = tuple(dilations) if dilations is not None else (1,) * n_layers
        if len(dilations) != n_layers:
            raise ConfigError(
                f"a dense block of {n_layers} layers needs {n_layers} dilations, got {dilations}"
            )
        self.growth_rate = growth_rate
        self.layers = nn.ModuleList(
            conv_bn_prelu(in_channels + i * growth_rate, growth_rate, spatial_dims, dilation=d)
            for i, d in enumerate(dilations)
        )
        self.out_channels = in_channels + n_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        """The input and every layer's output, concatenated along channels."""
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


@MODELS.register(
    "pdvnet",
    doc="PDV-Net (Imran et al. 2018): dense V-network, dense blocks 5/10/10 with growth 4/6/8, merged skips.",
)
class PDVNet(SegmentationModel):
    """Progressive dense V-network returning logits (``B×out_channels×spatial``).

    Args:
        in_channels: image channels.
        out_channels: classes (softmax; the paper's lobes + background) or 1 (sigmoid).
        spatial_dims: 3 (the paper) or 2.
        stem_channels: kernels of the strided 5×5×5 input convolution (paper: 24).
        layers: dense layers per block (paper: 5, 10, 10).
        growth_rates: channels added per dense layer, per block (paper: 4, 6, 8).
        skip_channels: width of each block's skip convolution (medseg's choice: 12, 24, 24).
        down_channels: width of the strided convolution after each block but the last
            (medseg's choice: 24, 24).
        dilations: per block, one dilation per dense layer (medseg's choice: all 1).
        dropout: channel dropout on the merged skips before the 1×1×1 convolution (medseg's
            choice: 0).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 3,
        stem_channels: int = 24,
        layers: Sequence[int] = PDVNET_LAYERS,
        growth_rates: Sequence[int] = PDVNET_GROWTH_RATES,
        skip_channels: Sequence[int] = (12, 24, 24),
        down_channels: Sequence[int] = (24, 24),
        dilations: Sequence[Sequence[int]] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        layers, growth_rates = tuple(int(n) for n in layers), tuple(int(g) for g in growth_rates)
        skip_channels, down_channels = tuple(skip_channels), tuple(down_channels)
        n_blocks = len(layers)
        if n_blocks < 1 or len(growth_rates) != n_blocks or len(skip_channels) != n_blocks:
            raise ConfigError(
                f"layers, growth_rates and skip_channels need one entry per dense block; got "
                f"{layers}, {growth_rates}, {skip_channels}"
            )
        if len(down_channels) != n_blocks - 1:
            raise ConfigError(
                f"down_channels needs {n_blocks - 1} entries (between blocks), got {down_channels}"
            )
        widths = (
            in_channels,
            out_channels,
            stem_channels,
            *layers,
            *growth_rates,
            *skip_channels,
            *down_channels,
        )
        if any(w <= 0 for w in widths):
            raise ConfigError(f"channel, layer and growth counts must be positive, got {widths}")
        if dilations is None:
            dilations = [(1,) * n for n in layers]
        if len(dilations) != n_blocks:
            raise ConfigError(f"dilations needs one sequence per dense block, got {dilations}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.spatial_dims = spatial_dims
        self.stem = conv_bn_prelu(in_channels, stem_channels, spatial_dims, kernel_size=5, stride=2)
        pool = nn.AvgPool2d if spatial_dims == 2 else nn.AvgPool3d
        self.input_down = pool(kernel_size=3, stride=2, padding=1, count_include_pad=False)
        self.blocks = nn.ModuleList()
        self.skips = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = stem_channels + in_channels
        for i in range(n_blocks):
            block = DenseBlock(channels, layers[i], growth_rates[i], spatial_dims, dilations[i])
            self.blocks.append(block)
            self.skips.append(conv_bn_prelu(block.out_channels, skip_channels[i], spatial_dims))
            if i < n_blocks - 1:
                self.downs.append(conv_bn_prelu(block.out_channels, down_channels[i], spatial_dims, stride=2))
                channels = down_channels[i]
        self.dropout = dropout_layer(spatial_dims)(dropout) if dropout > 0 else nn.Identity()
        self.merge = conv_layer(spatial_dims)(sum(skip_channels), out_channels, kernel_size=1)

    # ONNX export (medseg.export): exported with a fixed input grid
    export_spatial_divisor: int | None = None

    @property
    def interpolation(self) -> str:
        return "bilinear" if self.spatial_dims == 2 else "trilinear"

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the input's spatial size."""
        self.check_input(x)
        h = torch.cat([self.stem(x), self.input_down(x)], dim=1)
        skips = []
        for i, (block, skip) in enumerate(zip(self.blocks, self.skips, strict=True)):
            h = block(h)
            skips.append(skip(h))
            if i < len(self.downs):
                h = self.downs[i](h)
        size = skips[0].shape[2:]
        merged = torch.cat(
            [skips[0]]
            + [F.interpolate(s, size=size, mode=self.interpolation, align_corners=False) for s in skips[1:]],
            dim=1,
        )
        logits = self.merge(self.dropout(merged))
        return F.interpolate(logits, size=x.shape[2:], mode=self.interpolation, align_corners=False)
