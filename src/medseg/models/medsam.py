"""MedSAM (Ma et al. 2024, Nat. Commun. 15:654, arXiv:2304.12306): SAM ViT-B fine-tuned with box prompts.

A promptable model is an image encoder, a prompt encoder and a mask decoder (Kirillov et al.
2023, "Segment Anything", arXiv:2304.02643). The three parts are ``segment_anything.modeling``'s
own classes, and the attribute names are MedSAM's (``image_encoder``, ``prompt_encoder``,
``mask_decoder``), so a MedSAM or SAM ViT-B checkpoint loads with
:func:`medseg.models.sam_checkpoint.load_sam_checkpoint` without renaming a key.

The contract every promptable medseg model follows (:class:`PromptableSAM`):

* input: ``image`` ``B×C×S×S`` (``C`` = 1 or 3, already min-max scaled to [0, 1], the longest
  side resized to ``S = model.img_size`` and padded bottom/right — see
  :mod:`medseg.data.sam_preprocess`), and ``boxes`` ``B×4`` (``x0, y0, x1, y1``) in the pixel
  coordinates of that input, one box per image;
* ``forward`` in training mode returns ``{"logits": B×1×S×S, "iou": B×1}`` (the IoU head's
  prediction, which LiteMedSAM's baseline loss regresses onto the real IoU); in eval mode it
  returns the ``B×1×S×S`` logits only;
* ``encode(image)`` → image embedding ``B×E×S/k×S/k`` and ``decode(embedding, boxes)`` →
  ``(logits, iou)``, so inference computes an embedding once and decodes several boxes from it;
* ``promptable = True`` tells the engine to pass boxes.

Differences from SAM/MedSAM, on purpose:

* No ``pixel_mean``/``pixel_std`` normalisation: MedSAM feeds the [0, 1] image to the encoder
  directly (``MedSAM_Inference.py``), and so do we.
* The mask decoder pairs image ``i`` with box ``i``. ``segment_anything``'s ``MaskDecoder``
  repeats every image embedding once per prompt (``repeat_interleave``), which gives ``B²``
  masks for a batch of ``B`` images with one box each; MedSAM patched its copy of the decoder
  the same way. A single embedding with ``N`` boxes is still broadcast to ``N`` masks.
* The low-resolution masks (4 × the embedding size: 256 for both models) are upsampled
  bilinearly to the input size, as MedSAM's training loop does, so logits and target share the
  input's size.
* ``freeze_prompt_encoder`` (default ``True`` for MedSAM, whose training optimises only the image
  encoder and mask decoder) sets ``requires_grad=False`` on the prompt encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.registry import MODELS
from medseg.models.sam_checkpoint import load_sam_checkpoint


class PairedMaskDecoder(MaskDecoder):
    """SAM's ``MaskDecoder`` (same parameters and keys) that pairs embedding ``i`` with prompt ``i``.

    ``image_embeddings`` is ``B×E×h×w`` with ``B`` equal to the number of prompts, or ``1×E×h×w``
    shared by every prompt.
    """

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
    ) -> tuple[Tensor, Tensor]:
        prompts = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, prompts):
            raise ValueError(
                f"{image_embeddings.shape[0]} image embeddings for {prompts} prompts: "
                "give one embedding per prompt, or one shared by all"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(prompts, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        src = image_embeddings.expand(prompts, -1, -1, -1) + dense_prompt_embeddings
        pos_src = image_pe.expand(prompts, -1, -1, -1)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)


@dataclass(frozen=True)
class SamHeadConfig:
    """Sizes of SAM's prompt encoder and mask decoder (SAM: 256 wide, MLP 2048, 8 heads, 16 mask channels)."""

    prompt_embed_dim: int = 256
    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_heads: int = 8
    mask_in_chans: int = 16
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


def build_sam_heads(
    cfg: SamHeadConfig, img_size: int, embedding_size: int
) -> tuple[PromptEncoder, PairedMaskDecoder]:
    """SAM's prompt encoder and (paired) mask decoder for an ``img_size`` input and its embedding grid."""
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.prompt_embed_dim,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(img_size, img_size),
        mask_in_chans=cfg.mask_in_chans,
    )
    mask_decoder = PairedMaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=cfg.transformer_depth,
            embedding_dim=cfg.prompt_embed_dim,
            mlp_dim=cfg.transformer_mlp_dim,
            num_heads=cfg.transformer_heads,
        ),
        transformer_dim=cfg.prompt_embed_dim,
        iou_head_depth=cfg.iou_head_depth,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
    )
    return prompt_encoder, mask_decoder


class PromptableSAM(SegmentationModel):
    """Image encoder + prompt encoder + mask decoder with box prompts (the contract in the module doc).

    Attributes:
        img_size: the square input side ``S`` the model takes.
        embedding_size: the side of the image embedding (``S / 16`` for ViT-B, ``S / 4`` for TinyViT).
    """

    promptable = True
    # ONNX export (medseg.export): the embedding and prompt grid are fixed at img_size (static spatial axes)
    export_spatial_divisor: int | None = None

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        img_size: int,
        embedding_size: int,
        freeze_prompt_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.img_size = int(img_size)
        self.embedding_size = int(embedding_size)
        if freeze_prompt_encoder:
            self.prompt_encoder.requires_grad_(False)

    def encode(self, image: Tensor) -> Tensor:
        """Image embedding ``B×E×k×k`` of a ``B×{1,3}×S×S`` input in [0, 1] (grey is repeated to RGB)."""
        if image.ndim != 4 or image.shape[1] not in (1, 3) or tuple(image.shape[2:]) != (self.img_size,) * 2:
            raise ValueError(
                f"{type(self).__name__} takes B×1×{self.img_size}×{self.img_size} or "
                f"B×3×{self.img_size}×{self.img_size} images, got {tuple(image.shape)}"
            )
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        return self.image_encoder(image)

    def decode(self, embedding: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Mask logits ``N×1×S×S`` and predicted IoU ``N×1`` for ``N×4`` boxes (input pixel coordinates).

        ``embedding`` is ``N×E×k×k`` (box ``i`` on image ``i``) or ``1×E×k×k`` (every box on one image).
        """
        if boxes.ndim == 3 and boxes.shape[1] == 1:
            boxes = boxes[:, 0]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be N×4 (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        if embedding.shape[0] not in (1, boxes.shape[0]):
            raise ValueError(
                f"{embedding.shape[0]} image embeddings for {boxes.shape[0]} boxes "
                "(give one per box, or one for all)"
            )
        boxes = boxes.to(device=embedding.device, dtype=torch.float32)
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, iou = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        if tuple(low_res.shape[-2:]) != (self.img_size, self.img_size):
            low_res = F.interpolate(
                low_res, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
        return low_res, iou

    def forward(self, image: Tensor, boxes: Tensor | None = None) -> Tensor | dict[str, Tensor]:
        """Training: ``{"logits": B×1×S×S, "iou": B×1}``; eval: the logits. ``boxes``: ``B×4``, input px."""
        if boxes is None:
            raise ValueError(
                f"{type(self).__name__} is promptable: forward(image, boxes) needs one box per image "
                "(B×4, x0, y0, x1, y1 in the input's pixel coordinates)"
            )
        if boxes.shape[0] != image.shape[0]:
            raise ValueError(f"{image.shape[0]} images but {boxes.shape[0]} boxes (one box per image)")
        logits, iou = self.decode(self.encode(image), boxes)
        if self.training:
            return {"logits": logits, "iou": iou}
        return logits


@dataclass(frozen=True)
class ViTVariant:
    """SAM's ``ImageEncoderViT`` size (``build_sam_vit_b``: 768 wide, 12 layers, 12 heads, window 14)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    patch_size: int = 16
    img_size: int = 1024
    heads: SamHeadConfig = field(default_factory=SamHeadConfig)


MEDSAM_VARIANTS: dict[str, ViTVariant] = {
    "base": ViTVariant(),  # SAM ViT-B, MedSAM's model
    # CPU/test size with the same module tree (the same keys): 48 wide, 2 heads, window 4.
    "tiny": ViTVariant(
        embed_dim=48,
        num_heads=2,
        window_size=4,
        img_size=256,
        heads=SamHeadConfig(
            prompt_embed_dim=32, transformer_mlp_dim=64, transformer_heads=2, iou_head_hidden_dim=32
        ),
    ),
}


class MedSAM(PromptableSAM):
    """SAM ViT-B image encoder (``segment_anything.modeling.ImageEncoderViT``) with SAM's heads."""

    def __init__(
        self,
        variant: str | ViTVariant = "base",
        img_size: int | None = None,
        freeze_prompt_encoder: bool = True,
    ) -> None:
        if isinstance(variant, str):
            if variant not in MEDSAM_VARIANTS:
                raise ConfigError(
                    f"unknown medsam variant '{variant}'. Available: {', '.join(MEDSAM_VARIANTS)}"
                )
            variant = MEDSAM_VARIANTS[variant]
        size = int(img_size or variant.img_size)
        if size % variant.patch_size:
            raise ConfigError(
                f"medsam img_size {size} is not a multiple of the patch size {variant.patch_size}"
            )
        embedding_size = size // variant.patch_size
        image_encoder = ImageEncoderViT(
            depth=variant.depth,
            embed_dim=variant.embed_dim,
            img_size=size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=variant.num_heads,
            patch_size=variant.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=variant.global_attn_indexes,
            window_size=variant.window_size,
            out_chans=variant.heads.prompt_embed_dim,
        )
        prompt_encoder, mask_decoder = build_sam_heads(variant.heads, size, embedding_size)
        super().__init__(
            image_encoder, prompt_encoder, mask_decoder, size, embedding_size, freeze_prompt_encoder
        )
        self.variant = variant


def check_promptable_options(name: str, in_channels: int, out_channels: int, spatial_dims: int) -> None:
    """The engine's generic model options, checked for a box-prompted 2D binary model."""
    if in_channels not in (1, 3):
        raise ConfigError(f"{name} takes 1 (grey, repeated to RGB) or 3 input channels, got {in_channels}")
    if out_channels != 1:
        raise ConfigError(f"{name} predicts one mask per box: out_channels must be 1, got {out_channels}")
    if spatial_dims != 2:
        raise ConfigError(
            f"{name} is a 2D model (3D volumes are segmented slice by slice), got spatial_dims={spatial_dims}"
        )


@MODELS.register("medsam", input_size=True)
def medsam(
    in_channels: int = 3,
    out_channels: int = 1,
    spatial_dims: int = 2,
    variant: str = "base",
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    freeze_prompt_encoder: bool = True,
) -> MedSAM:
    """MedSAM (Ma et al. 2024): SAM ViT-B at 1024 px with box prompts; ``checkpoint`` = medsam_vit_b.pth."""
    check_promptable_options("medsam", in_channels, out_channels, spatial_dims)
    model = MedSAM(variant, img_size, freeze_prompt_encoder)
    if checkpoint is not None:
        load_sam_checkpoint(model, checkpoint)
    return model
