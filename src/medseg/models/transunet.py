"""TransUNet (Chen et al. 2021, arXiv:2102.04306) and MicroSegNet (Jiang et al. 2024, arXiv:2305.19956).

TransUNet encodes an image with a *hybrid* Vision Transformer (Dosovitskiy et al. 2021,
arXiv:2010.11929, "R50+ViT-B/16"): a ResNet-v2 (BiT: StdConv + GroupNorm, Kolesnikov et al.
2020) takes the image to 1/16 resolution, a 1×1 patch embedding turns each 1/16 pixel into a
token, and a ViT-B transformer (12 layers, 768 wide) mixes all tokens. The *cascaded upsampler*
(CUP) decoder then reshapes the tokens to a 1/16 grid, applies a 3×3 conv to 512 channels
(``conv_more``) and four blocks of [bilinear ×2 → concat ResNet skip → (3×3 conv-BN-ReLU) × 2]
with (256, 128, 64, 16) channels; the skips are the ResNet features at 1/8, 1/4 and 1/2 (512, 256
and 64 channels for R50). A 3×3 convolution maps the 16 full-resolution channels to the logits.

MicroSegNet = TransUNet + multi-scale deep supervision: a 3×3-conv prediction head on the
decoder features at 1/8, 1/4 and 1/2 resolution. In training mode it returns
``[full, 1/2, 1/4, 1/8]`` (highest resolution first, as :class:`~medseg.models.unet.UNet`);
:class:`~medseg.losses.deep_supervision.DeepSupervisionLoss` downsamples the target to each
size. In eval mode it returns only the full-resolution logits.

The encoder is timm's hybrid ``VisionTransformer`` (``vit_base_r50_s16_224`` by default), built
with ``timm.create_model`` and without a class token (TransUNet discards it). Differences from
the TransUNet reference code, on purpose:

* The ResNet uses timm's TF-"SAME" padding (``StdConv2dSame``, ``MaxPool2dSame``), which is what
  the Google checkpoints were trained with; TransUNet's PyTorch port pads symmetrically and
  zero-pads skips whose size is off by one. Any size that is a multiple of 16 gives exact halvings.
* The position embedding is resampled on the fly (timm ``dynamic_img_size=True``), so one model
  runs on any input whose sides are multiples of the token stride (16 for R50+ViT-B/16).

Variants (``variant=``): ``"base"`` is R50+ViT-B/16 with TransUNet's decoder (≈105 M
parameters); ``"tiny"`` is a CPU-sized hybrid with the same module tree (one bottleneck per
ResNet stage, 128/256/512 wide, 32-wide stem; ViT-Ti width 192, 3 heads, depth 4; decoder
128 → (64, 32, 16, 16)); any other timm ResNet-v2 hybrid name (``"vit_small_r26_s32_224"``,
``"vit_tiny_r_s16_p8_224"``) also works, with ``backbone_kwargs`` (``depth``, ``embed_dim``,
``num_heads``, ``proj_drop_rate``, ...) passed on to ``timm.create_model``.

Input channels: a 1-channel image is repeated to 3 channels, as TransUNet does, so the
ImageNet stem applies unchanged; 3 channels go straight in; any other count builds the stem
conv with ``in_chans=C`` (pretrained stems are then adapted by timm's ``adapt_input_conv``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.pretrained import load_pretrained
from medseg.models.registry import MODELS

if TYPE_CHECKING:  # timm is imported lazily so that ``import medseg.models`` works without it
    from timm.models.vision_transformer import VisionTransformer

TRANSUNET_DECODER = (256, 128, 64, 16)
"""TransUNet's decoder widths (``config.decoder_channels``), one per ×2 upsampling."""


@dataclass(frozen=True)
class HybridVariant:
    """A named encoder/decoder size.

    Attributes:
        timm_name: the timm model whose factory builds the hybrid ViT.
        vit_kwargs: keyword arguments for ``timm.create_model`` (``depth``, ``embed_dim``, ...).
        resnet: if given, ``ResNetV2`` arguments (``layers``, ``channels``, ``stem_chs``) for a
            ResNet that replaces the timm model's own (same BiT layout: StdConv, GroupNorm, SAME).
        head_channels: width of ``conv_more`` (TransUNet: 512).
        decoder_channels: one width per ×2 decoder block, or ``None`` for TransUNet's widths.
        timm_weights: whether ``timm.create_model(timm_name, pretrained=True)`` fits this variant.
    """

    timm_name: str
    vit_kwargs: dict[str, Any] = field(default_factory=dict)
    resnet: dict[str, Any] | None = None
    head_channels: int = 512
    decoder_channels: tuple[int, ...] | None = None
    timm_weights: bool = True


VARIANTS: dict[str, HybridVariant] = {
    # R50+ViT-B/16 (Dosovitskiy et al. 2021), the TransUNet and MicroSegNet encoder.
    "base": HybridVariant("vit_base_r50_s16_224", decoder_channels=TRANSUNET_DECODER),
    # CPU size: R-"14" (1 bottleneck per stage, half width) + ViT-Ti/16 with 4 layers, stride 16.
    "tiny": HybridVariant(
        "vit_tiny_r_s16_p8_224",
        vit_kwargs={"patch_size": 1, "embed_dim": 192, "depth": 4, "num_heads": 3},
        resnet={"layers": (1, 1, 1), "channels": (128, 256, 512), "stem_chs": 32},
        head_channels=128,
        decoder_channels=(64, 32, 16, 16),
        timm_weights=False,
    ),
}


def resolve_variant(variant: str | HybridVariant) -> HybridVariant:
    """``"base"``/``"tiny"``, a timm hybrid name (``"vit_small_r26_s32_224"``) or a :class:`HybridVariant`."""
    if isinstance(variant, HybridVariant):
        return variant
    if variant in VARIANTS:
        return VARIANTS[variant]
    if variant.startswith("vit_") and "_r" in variant:
        return HybridVariant(variant)
    raise ConfigError(
        f"unknown TransUNet variant '{variant}'. Available: {', '.join(VARIANTS)}, or a timm "
        "ResNet-v2 hybrid name such as 'vit_small_r26_s32_224'"
    )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ConfigError(f"img_size must be an int or (height, width), got {size}")
    return size[0], size[1]


def create_hybrid_vit(
    variant: HybridVariant,
    in_chans: int = 3,
    img_size: int | Sequence[int] = 224,
    class_token: bool = False,
    pretrained: bool = False,
    **overrides: Any,
) -> VisionTransformer:
    """Build the timm hybrid ViT of ``variant`` (no classifier head, final LayerNorm on all tokens).

    ``class_token=False`` is TransUNet's encoder; ``class_token=True`` builds the layout of the
    Google/timm checkpoints (used by :mod:`medseg.models.pretrained` to load them).
    ``dynamic_img_size=True`` lets the model take any multiple of the token stride.
    """
    import timm
    from timm.layers import HybridEmbed, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2

    kwargs: dict[str, Any] = {**variant.vit_kwargs, **overrides}
    kwargs.update(
        num_classes=0,
        in_chans=in_chans,
        img_size=_pair(img_size),
        class_token=class_token,
        global_pool="token" if class_token else "",
        fc_norm=False,
        dynamic_img_size=True,
    )
    if variant.resnet is not None:
        backbone = ResNetV2(
            in_chans=in_chans,
            num_classes=0,
            global_pool="",
            preact=False,
            stem_type="same",
            conv_layer=partial(StdConv2dSame, eps=1e-8),  # as timm's _resnetv2() for the hybrids
            **variant.resnet,
        )
        kwargs["embed_layer"] = partial(HybridEmbed, backbone=backbone)
    try:
        return timm.create_model(variant.timm_name, pretrained=pretrained, **kwargs)
    except RuntimeError as err:  # e.g. a timm name unknown to the installed version
        raise ConfigError(f"timm could not build '{variant.timm_name}': {err}") from err


class HybridViTEncoder(nn.Module):
    """The TransUNet encoder: ResNet-v2 skips + ViT tokens, on a timm hybrid ``VisionTransformer``.

    ``forward`` returns the token grid ``B×D×H/s×W/s`` (``s`` = :attr:`stride`) and the ResNet
    feature maps below ``s``, keyed by their reduction (``{2: stem, 4: stage 1, 8: stage 2}`` for
    R50). It runs the same modules as ``vit.forward_features`` (a test checks they agree) but
    keeps the intermediate ResNet features.
    """

    def __init__(
        self,
        variant: HybridVariant,
        in_chans: int = 3,
        img_size: int | Sequence[int] = 224,
        pretrained_timm: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.in_chans = in_chans
        self.overrides = dict(overrides)
        self.vit = create_hybrid_vit(variant, in_chans, img_size, False, pretrained_timm, **overrides)
        pe = self.vit.patch_embed
        backbone = getattr(pe, "backbone", None)
        if backbone is None:
            raise ConfigError(f"'{variant.timm_name}' is not a hybrid ViT (its patch embedding has no CNN)")
        # From the architecture, not from timm's probe forward (which is off for a bad img_size).
        info = getattr(backbone, "feature_info", None)
        self.backbone_stride = int(info[-1]["reduction"]) if info else 4  # a bare stem: conv /2, pool /2
        self.stride = self.backbone_stride * int(pe.patch_size[0])
        # Which backbone modules give the skips: the stem norm+ReLU (before max-pool) and the stages.
        stem = getattr(backbone, "stem", backbone)
        names = [name for name, _ in stem.named_children()]
        if "norm" not in names or "conv" not in names:
            raise ConfigError(
                f"'{variant.timm_name}': TransUNet needs a timm ResNet-v2 backbone (stem conv+norm), "
                f"got {type(backbone).__name__}"
            )
        self.skip_channels: dict[int, int] = {2: stem.norm.weight.shape[0]}
        self._stage_reductions: list[int] = []
        for info in getattr(backbone, "feature_info", [])[1:]:
            self._stage_reductions.append(int(info["reduction"]))
            if info["reduction"] < self.backbone_stride:
                self.skip_channels[int(info["reduction"])] = int(info["num_chs"])
        self.embed_dim = int(self.vit.embed_dim)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Token grid of the position embedding (``img_size // stride``)."""
        return tuple(self.vit.patch_embed.grid_size)  # type: ignore[return-value]

    def make_vit(
        self, class_token: bool, img_size: int | Sequence[int], pretrained: bool = False
    ) -> nn.Module:
        """A fresh timm model with this encoder's architecture (for loading foreign checkpoints)."""
        return create_hybrid_vit(
            self.variant, self.in_chans, img_size, class_token, pretrained, **self.overrides
        )

    def forward(self, x: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        """Token grid ``B×D×h×w`` and ``{reduction: skip feature map}``."""
        vit = self.vit
        backbone = vit.patch_embed.backbone
        stem = getattr(backbone, "stem", backbone)
        skips: dict[int, Tensor] = {}
        for name, module in stem.named_children():
            x = module(x)
            if name == "norm":  # conv → GroupNorm → ReLU, before the max-pool (TransUNet "root")
                skips[2] = x
        if hasattr(backbone, "stages"):
            for stage, reduction in zip(backbone.stages, self._stage_reductions, strict=True):
                x = stage(x)
                if reduction in self.skip_channels:
                    skips[reduction] = x
            x = backbone.norm(x)
        tokens = vit.patch_embed.proj(x)
        h, w = tokens.shape[-2:]
        tokens = vit._pos_embed(tokens.permute(0, 2, 3, 1))  # NHWC → (resampled) pos-embed → NLC
        tokens = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(tokens))))
        tokens = tokens[:, vit.num_prefix_tokens :]
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return grid, skips


class Conv2dReLU(nn.Sequential):
    """3×3 conv (no bias) → BatchNorm → ReLU, TransUNet's ``Conv2dReLU``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Bilinear ×2 (align_corners, as ``UpsamplingBilinear2d``) → concat skip → two :class:`Conv2dReLU`."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels)
        self.conv2 = Conv2dReLU(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        """Upsample ``x`` and fuse it with ``skip`` (if any)."""
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class CascadedUpsampler(nn.Module):
    """TransUNet's CUP decoder: ``conv_more`` then one :class:`DecoderBlock` per ×2 upsampling.

    Block ``i`` outputs reduction ``stride / 2**(i+1)`` and concatenates the encoder skip of that
    reduction when there is one. ``forward`` returns every block's output, lowest resolution first.
    """

    def __init__(
        self,
        embed_dim: int,
        stride: int,
        skip_channels: dict[int, int],
        head_channels: int = 512,
        decoder_channels: Sequence[int] = TRANSUNET_DECODER,
    ) -> None:
        super().__init__()
        n_up = int(round(math.log2(stride)))
        if 2**n_up != stride:
            raise ConfigError(f"the token stride must be a power of 2, got {stride}")
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != n_up:
            raise ConfigError(
                f"decoder_channels needs one width per ×2 upsampling: stride {stride} → {n_up} "
                f"values, got {decoder_channels}"
            )
        self.conv_more = Conv2dReLU(embed_dim, head_channels)
        self.reductions = tuple(stride // 2 ** (i + 1) for i in range(n_up))
        in_chs = (head_channels, *decoder_channels[:-1])
        self.blocks = nn.ModuleList(
            DecoderBlock(i, skip_channels.get(r, 0), o)
            for i, o, r in zip(in_chs, decoder_channels, self.reductions, strict=True)
        )
        self.out_channels = decoder_channels

    def forward(self, grid: Tensor, skips: dict[int, Tensor]) -> list[Tensor]:
        """Decode the token grid; ``skips`` maps reduction → encoder feature map."""
        x = self.conv_more(grid)
        outputs = []
        for block, reduction in zip(self.blocks, self.reductions, strict=True):
            x = block(x, skips.get(reduction))
            outputs.append(x)
        return outputs


def _default_decoder(variant: HybridVariant, stride: int) -> tuple[int, ...]:
    if variant.decoder_channels is not None and len(variant.decoder_channels) == round(math.log2(stride)):
        return variant.decoder_channels
    n_up = int(round(math.log2(stride)))
    # TransUNet's widths for the last four blocks, 512 for any extra ones (stride-32 hybrids).
    return ((512,) * max(0, n_up - 4) + TRANSUNET_DECODER)[-n_up:]


@MODELS.register(
    "transunet",
    doc="TransUNet (Chen et al. 2021): R50+ViT-B/16 hybrid encoder (timm) + cascaded upsampler, 2D.",
    input_size=True,
)
class TransUNet(SegmentationModel):
    """TransUNet (Chen et al. 2021) returning logits ``B×out_channels×H×W``.

    Args:
        in_channels: image channels (1 is repeated to 3, as in TransUNet).
        out_channels: logit channels.
        img_size: size the position embedding is laid out for (224 for the Google weights);
            other multiples of :attr:`size_multiple` work too (the embedding is resampled).
        variant: ``"base"`` (R50+ViT-B/16), ``"tiny"``, a timm hybrid name or a :class:`HybridVariant`.
        pretrained: ``None``/``False``; a path to ``.npz`` (Google), ``.safetensors`` or ``.pt``/``.pth``
            (timm backbone or whole-model state dict); ``True`` for timm's online weights.
        head_channels: ``conv_more`` width (default: the variant's, 512 for base).
        decoder_channels: decoder widths (default: the variant's, (256, 128, 64, 16) for base).
        deep_supervision: add 3×3 heads at 1/2, 1/4, 1/8 (:class:`MicroSegNet`).
        backbone_kwargs: extra ``timm.create_model`` arguments (``depth``, ``drop_path_rate``, ...).
        spatial_dims: must be 2 (the engine passes it to every model).
    """

    aux_reductions: tuple[int, ...] = (2, 4, 8)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        variant: str | HybridVariant = "base",
        pretrained: str | Path | bool | None = None,
        head_channels: int | None = None,
        decoder_channels: Sequence[int] | None = None,
        deep_supervision: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ConfigError(
                f"TransUNet/MicroSegNet are 2D models: spatial_dims must be 2, got {spatial_dims}"
            )
        if in_channels <= 0 or out_channels <= 0:
            raise ConfigError(f"channel counts must be positive: in={in_channels}, out={out_channels}")
        spec = resolve_variant(variant)
        if pretrained is True and (not spec.timm_weights or backbone_kwargs):
            raise ConfigError(
                f"pretrained=True loads timm's weights for '{spec.timm_name}', which do not fit "
                f"this {'custom ' if backbone_kwargs else ''}variant; pass a checkpoint path instead"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.encoder = HybridViTEncoder(
            spec,
            in_chans=3 if in_channels in (1, 3) else in_channels,
            img_size=img_size,
            pretrained_timm=False,
            **(backbone_kwargs or {}),
        )
        stride = self.encoder.stride
        height, width = _pair(img_size)
        if height % stride or width % stride:
            raise ConfigError(f"img_size must be a multiple of the token stride {stride}, got {img_size}")
        decoder_channels = tuple(decoder_channels or _default_decoder(spec, stride))
        self.decoder = CascadedUpsampler(
            self.encoder.embed_dim,
            stride,
            self.encoder.skip_channels,
            head_channels or spec.head_channels,
            decoder_channels,
        )
        self.segmentation_head = nn.Conv2d(decoder_channels[-1], out_channels, kernel_size=3, padding=1)
        self.aux_heads = nn.ModuleDict()
        if deep_supervision:
            missing = [r for r in self.aux_reductions if r not in self.decoder.reductions]
            if missing:
                raise ConfigError(
                    f"deep supervision needs decoder stages at reductions {self.aux_reductions}; "
                    f"stride {stride} gives {self.decoder.reductions}"
                )
            for r in self.aux_reductions:
                chs = decoder_channels[self.decoder.reductions.index(r)]
                self.aux_heads[str(r)] = nn.Conv2d(chs, out_channels, kernel_size=3, padding=1)
        if pretrained:
            load_pretrained(self, pretrained)

    # ONNX export (medseg.export): the token grid is fixed at img_size, so spatial axes are static
    export_spatial_divisor: int | None = None

    @property
    def size_multiple(self) -> int:
        """Every input side must be a multiple of this (the token stride, 16 for R50+ViT-B/16)."""
        return self.encoder.stride

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank, channel count or size."""
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D input B×C×H×W, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s), got {x.shape[1]}"
            )
        m = self.size_multiple
        spatial = tuple(x.shape[2:])
        if any(s % m for s in spatial):
            raise ValueError(
                f"{type(self).__name__} ({self.encoder.variant.timm_name}) needs every spatial size to be "
                f"a multiple of {m} (its token stride); got spatial shape {spatial}. Pad or crop the input."
            )

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Logits, or ``[full, 1/2, 1/4, 1/8]`` when training with deep supervision."""
        self.check_input(x)
        if self.in_channels == 1:
            x = x.repeat(1, 3, 1, 1)  # TransUNet: grey → 3 identical channels for the ImageNet stem
        grid, skips = self.encoder(x)
        decoded = self.decoder(grid, skips)
        main = self.segmentation_head(decoded[-1])
        if not (self.deep_supervision and self.training):
            return main
        by_reduction = dict(zip(self.decoder.reductions, decoded, strict=True))
        return [main, *(self.aux_heads[str(r)](by_reduction[r]) for r in self.aux_reductions)]


@MODELS.register(
    "microsegnet",
    doc="MicroSegNet (Jiang et al. 2024): TransUNet + deep supervision at 1/2, 1/4, 1/8, 2D.",
    input_size=True,
)
class MicroSegNet(TransUNet):
    """MicroSegNet (Jiang et al. 2024): TransUNet + 3×3 deep-supervision heads at 1/2, 1/4, 1/8.

    Training mode returns ``[full, 1/2, 1/4, 1/8]`` logits; eval mode the full-resolution logits.
    The paper's AG-BCE loss is a loss, not part of the network.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        variant: str | HybridVariant = "base",
        pretrained: str | Path | bool | None = None,
        head_channels: int | None = None,
        decoder_channels: Sequence[int] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            img_size,
            variant,
            pretrained,
            head_channels,
            decoder_channels,
            deep_supervision=True,
            backbone_kwargs=backbone_kwargs,
            spatial_dims=spatial_dims,
        )
