"""LiteMedSAM (MedSAM-Lite, the CVPR 2024 "MedSAM on laptop" baseline): a TinyViT encoder at 256 px.

LiteMedSAM distils MedSAM's ViT-B into a TinyViT (Wu et al. 2022, arXiv:2207.10666, as adapted by
MobileSAM, Zhang et al. 2023, arXiv:2306.14289) and keeps SAM's prompt encoder and mask decoder
(:class:`~medseg.models.medsam.PromptableSAM`). The encoder here is written for medseg and laid
out like LiteMedSAM's ``tiny_vit_sam.py``, so its checkpoint (``lite_medsam.pth``) loads without
renaming a key: ``image_encoder.patch_embed.seq.0.c.weight``,
``image_encoder.layers.0.blocks.0.conv1.bn.running_mean``,
``image_encoder.layers.1.blocks.0.attn.attention_biases``,
``image_encoder.layers.N.downsample.conv2.c.weight``,
``image_encoder.neck.0.weight`` ...

Encoder (``embed_dims`` 64, 128, 160, 320; ``depths`` 2, 2, 6, 2; ``num_heads`` 2, 4, 5, 10;
``window_sizes`` 7, 7, 14, 7 in LiteMedSAM):

* ``patch_embed``: two 1×1 Conv-BN (GELU between), so stage 0 runs at the input resolution.
  This, not the 3×3 stride-2 pair of TinyViT/MobileSAM, is what lets a 256 px input give a 64×64
  embedding.
* stage 0 (``ConvLayer``): MBConv blocks (1×1 expand ×4, 3×3 depthwise, 1×1 project, residual).
* stages 1–3 (``BasicLayer``): TinyViT blocks = windowed attention with a learned bias per
  relative offset (``attention_biases``) → 3×3 depthwise Conv-BN (``local_conv``) → MLP with a
  pre-LayerNorm; inputs are zero-padded to whole windows *before* attention, as in TinyViT.
* between stages (``downsample``): patch merging = 1×1 Conv-BN → 3×3 depthwise Conv-BN → 1×1
  Conv-BN. The first two merges have stride 2, the last has stride 1 (MobileSAM's rule, which
  LiteMedSAM keys on ``out_dim in (320, 448, 576)``; here it is positional).
* ``neck``: 1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d to the prompt width (256).

The embedding side is therefore ``img_size / 4`` (derived, never a constant 64), and SAM's mask
decoder upsamples it ×4 back to ``img_size``.

Differences from LiteMedSAM's code, on purpose: the blocks pass ``B×C×H×W`` maps between them
(the resolution is read from the input rather than stored), so one model runs at any
``img_size`` divisible by 4; the attention bias is indexed on every call instead of being
cached in eval mode; layer-wise learning-rate decay attributes (``lr_scale``), which
LiteMedSAM's training does not read, are not set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.medsam import PromptableSAM, SamHeadConfig, build_sam_heads, check_promptable_options
from medseg.models.registry import MODELS
from medseg.models.sam_checkpoint import load_sam_checkpoint


def _drop_path(rate: float) -> nn.Module:
    if rate <= 0:
        return nn.Identity()
    from timm.layers import DropPath

    return DropPath(rate)


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm (TinyViT's ``Conv2d_BN``: children ``c`` and ``bn``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
            ),
        )
        bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two 1×1 Conv-BN with GELU between (stride 1: stage 0 keeps the input resolution)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_channels, embed_dim // 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depthwise, 1×1 project (BN γ = 0 at init), GELU after the sum."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, kernel_size=3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """1×1 Conv-BN → 3×3 depthwise Conv-BN (``stride``) → 1×1 Conv-BN, GELU after the first two."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, kernel_size=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class Mlp(nn.Module):
    """Pre-LayerNorm MLP on ``…×C`` tokens (``norm``, ``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm(x))))))


class Attention(nn.Module):
    """Multi-head self-attention in one ``window×window`` window, with a learned bias per |offset|.

    ``qkv`` is laid out per head as ``[q, k, v]`` (TinyViT/LeViT), and ``attention_biases`` has one
    column per absolute offset ``(|dy|, |dx|)``, column ``|dy| * window + |dx|``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"TinyViT width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        pos = torch.arange(window_size)
        yy, xx = torch.meshgrid(pos, pos, indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()
        index = (yy[:, None] - yy[None, :]).abs() * window_size + (xx[:, None] - xx[None, :]).abs()
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, self.num_heads, 3 * self.key_dim).transpose(1, 2)
        q, k, v = qkv.split(self.key_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TinyViTBlock(nn.Module):
    """Windowed attention → residual → 3×3 depthwise Conv-BN → residual MLP, on ``B×C×H×W`` maps."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        local_conv_size: int = 3,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.local_conv = ConvBN(dim, dim, kernel_size=local_conv_size, groups=dim)
        self.drop_path = _drop_path(drop_path)

    def _window_attention(self, tokens: Tensor) -> Tensor:
        b, h, w, c = tokens.shape
        win = self.window_size
        pad_b, pad_r = (-h) % win, (-w) % win
        if pad_b or pad_r:  # zero tokens join the last windows, as in TinyViT
            tokens = F.pad(tokens, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        windows = tokens.reshape(b, hp // win, win, wp // win, win, c).transpose(2, 3)
        out = self.attn(windows.reshape(-1, win * win, c))
        out = out.reshape(b, hp // win, wp // win, win, win, c).transpose(2, 3).reshape(b, hp, wp, c)
        return out[:, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self._window_attention(tokens))
        tokens = self.local_conv(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        tokens = tokens + self.drop_path(self.mlp(tokens))
        return tokens.permute(0, 3, 1, 2)


class ConvLayer(nn.Module):
    """Stage 0: MBConv ``blocks`` then an optional ``downsample`` (patch merging)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class BasicLayer(ConvLayer):
    """Stages 1–3: TinyViT ``blocks`` then an optional ``downsample`` (same structure as stage 0)."""


@dataclass(frozen=True)
class TinyViTVariant:
    """A TinyViT size plus the SAM heads it feeds (``heads``) and the default input side."""

    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    local_conv_size: int = 3
    img_size: int = 256
    heads: SamHeadConfig = field(default_factory=SamHeadConfig)

    @property
    def stride(self) -> int:
        """Total downsampling: every merge halves except the last."""
        return 2 ** (len(self.depths) - 2)


LITEMEDSAM_VARIANTS: dict[str, TinyViTVariant] = {
    "lite": TinyViTVariant(),  # LiteMedSAM's CVPR24 configuration (≈ 5.7 M encoder parameters)
    # CPU/test size with the same module tree (the same keys; narrower, so other shapes).
    "tiny": TinyViTVariant(
        embed_dims=(16, 32, 48, 64),
        depths=(2, 2, 6, 2),
        num_heads=(1, 2, 2, 4),
        window_sizes=(7, 4, 4, 4),
        mbconv_expand_ratio=2.0,
        heads=SamHeadConfig(
            prompt_embed_dim=32, transformer_mlp_dim=64, transformer_heads=2, iou_head_hidden_dim=32
        ),
    ),
}


class TinyViT(nn.Module):
    """LiteMedSAM's image encoder: ``B×3×S×S`` → ``B×out_chans×S/4×S/4`` (module doc for the layout)."""

    def __init__(
        self,
        variant: TinyViTVariant,
        in_channels: int = 3,
        out_chans: int = 256,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        dims, depths = variant.embed_dims, variant.depths
        if not len(dims) == len(depths) == len(variant.num_heads) == len(variant.window_sizes) >= 2:
            raise ConfigError(
                "TinyViT embed_dims, depths, num_heads and window_sizes need one entry per stage (≥ 2)"
            )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.patch_embed = PatchEmbed(in_channels, dims[0])
        self.layers = nn.ModuleList()
        start = 0
        for i, depth in enumerate(depths):
            stage_rates = rates[start : start + depth]
            start += depth
            last = i == len(depths) - 1
            # MobileSAM/LiteMedSAM: the merge into the last stage keeps the resolution (stride 1)
            downsample = (
                None if last else PatchMerging(dims[i], dims[i + 1], 1 if i == len(depths) - 2 else 2)
            )
            if i == 0:
                blocks: list[nn.Module] = [
                    MBConv(dims[0], variant.mbconv_expand_ratio, r) for r in stage_rates
                ]
                self.layers.append(ConvLayer(blocks, downsample))
            else:
                blocks = [
                    TinyViTBlock(
                        dims[i],
                        variant.num_heads[i],
                        variant.window_sizes[i],
                        variant.mlp_ratio,
                        drop_rate,
                        r,
                        variant.local_conv_size,
                    )
                    for r in stage_rates
                ]
                self.layers.append(BasicLayer(blocks, downsample))
        self.apply(self._init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)


class LiteMedSAM(PromptableSAM):
    """TinyViT image encoder at 256 px with SAM's prompt encoder and mask decoder."""

    def __init__(
        self,
        variant: str | TinyViTVariant = "lite",
        img_size: int | None = None,
        drop_path_rate: float = 0.0,
        freeze_prompt_encoder: bool = False,
    ) -> None:
        if isinstance(variant, str):
            if variant not in LITEMEDSAM_VARIANTS:
                raise ConfigError(
                    f"unknown litemedsam variant '{variant}'. Available: {', '.join(LITEMEDSAM_VARIANTS)}"
                )
            variant = LITEMEDSAM_VARIANTS[variant]
        size = int(img_size or variant.img_size)
        if size <= 0 or size % variant.stride:
            raise ConfigError(f"litemedsam img_size {size} is not a positive multiple of {variant.stride}")
        embedding_size = size // variant.stride
        encoder = TinyViT(variant, out_chans=variant.heads.prompt_embed_dim, drop_path_rate=drop_path_rate)
        prompt_encoder, mask_decoder = build_sam_heads(variant.heads, size, embedding_size)
        super().__init__(encoder, prompt_encoder, mask_decoder, size, embedding_size, freeze_prompt_encoder)
        self.variant = variant


@MODELS.register("litemedsam", input_size=True)
def litemedsam(
    in_channels: int = 3,
    out_channels: int = 1,
    spatial_dims: int = 2,
    variant: str = "lite",
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    drop_path_rate: float = 0.0,
    freeze_prompt_encoder: bool = False,
) -> LiteMedSAM:
    """LiteMedSAM (CVPR24 MedSAM-on-laptop baseline): TinyViT at 256 px, box prompts; variant lite|tiny."""
    check_promptable_options("litemedsam", in_channels, out_channels, spatial_dims)
    model = LiteMedSAM(variant, img_size, drop_path_rate, freeze_prompt_encoder)
    if checkpoint is not None:
        load_sam_checkpoint(model, checkpoint)
    return model
