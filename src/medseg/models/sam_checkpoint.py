"""Load real MedSAM / LiteMedSAM / SAM checkpoints into :mod:`medseg.models.medsam` models.

The official files come in three layouts, all read by :func:`read_sam_state_dict`:

* a flat state dict (``medsam_vit_b.pth``, ``lite_medsam.pth``, SAM's ``sam_vit_b_01ec64.pth``):
  ``{"image_encoder.…": tensor, "prompt_encoder.…": …, "mask_decoder.…": …}``;
* a training checkpoint, ``{"model": state_dict, "epoch": …, "optimizer": …}`` (MedSAM's and
  LiteMedSAM's training scripts);
* either of them saved from a ``DistributedDataParallel`` model, with ``module.``-prefixed keys.

Reading and the strict key/shape check are :mod:`medseg.models.state_dict`'s (no pickled code runs;
a mismatch is one error listing the first missing, unexpected and mis-shaped keys), so a ViT-B file
given to ``litemedsam`` (or the reverse) says so at once.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from medseg.models.state_dict import check_state_dict, load_strict, read_torch_state_dict, unwrap_state_dict

__all__ = ["check_state_dict", "load_sam_checkpoint", "read_sam_state_dict", "unwrap_state_dict"]


def read_sam_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a MedSAM/LiteMedSAM/SAM file in any of the three official layouts (module doc)."""
    return read_torch_state_dict(path)


def load_sam_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a MedSAM/LiteMedSAM/SAM checkpoint into ``model`` strictly (every key, every shape)."""
    load_strict(model, read_sam_state_dict(path), path)
