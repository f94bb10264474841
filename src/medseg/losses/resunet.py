"""Res-UNet-R/H's training loss (Li et al. 2021, MitoEM; paper 003): WBCE(mask) + WBCE(boundary).

The model predicts two channels: 0 = the semantic mask, 1 = the instance boundary. The boundary
target is derived on the fly from instance labels, slice by slice in the plane, with a
configurable width (:func:`medseg.data.instances.boundary_targets_torch`): from
``batch["instance"]`` (``B×1×spatial`` instance ids) when the batch has it, else from the binary
target itself (object edges only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.data.instances import boundary_targets_torch
from medseg.errors import ConfigError
from medseg.losses.distribution import weighted_bce
from medseg.losses.registry import LOSSES


def boundary_target_for(target: Tensor, batch: Mapping[str, Any] | None, width: int) -> Tensor:
    """Float {0, 1} boundary target of ``target``'s shape, from ``batch["instance"]`` if present."""
    labels = None if batch is None else batch.get("instance")
    if labels is None:
        labels = target >= 0.5
    elif tuple(labels.shape) != tuple(target.shape):
        raise ValueError(
            f"resunet_wbce: batch['instance'] shape {tuple(labels.shape)} differs from the target "
            f"shape {tuple(target.shape)}"
        )
    labels = labels.to(target.device)
    labels = labels.round().long() if labels.dtype.is_floating_point else labels
    return boundary_targets_torch(labels, width).to(target.dtype)


class ResUNetLoss(nn.Module):
    """L = w_mask·WBCE(X_M, Y_M) + w_boundary·WBCE(X_B, Y_B) (Li et al. 2021, eq. "L = L_M + L_B").

    Args:
        boundary_width: half-width (pixels, in-plane) of the derived boundary band.
        mask_weight, boundary_weight: weights of the two terms (1, 1 in the paper).
        clip: W_f clip of the weighted BCE (see :func:`~medseg.losses.distribution.wbce_weight_map`).
    """

    logit_channels = 2  # mask and boundary (a binary loss takes 1)

    def __init__(
        self,
        boundary_width: int = 1,
        mask_weight: float = 1.0,
        boundary_weight: float = 1.0,
        clip: tuple[float, float] = (0.05, 0.99),
    ) -> None:
        super().__init__()
        if boundary_width < 1:
            raise ConfigError(f"boundary_width must be ≥ 1, got {boundary_width}")
        self.boundary_width = int(boundary_width)
        self.mask_weight = float(mask_weight)
        self.boundary_weight = float(boundary_weight)
        self.clip = (float(clip[0]), float(clip[1]))

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar loss; ``logits`` is ``B×2×spatial`` (mask, boundary), ``target`` ``B×1×spatial``."""
        if logits.ndim < 3 or logits.shape[1] != 2:
            raise ValueError(
                f"resunet_wbce needs 2 logit channels (mask, boundary), got shape {tuple(logits.shape)}"
            )
        boundary = boundary_target_for(target, batch, self.boundary_width)
        mask_term = weighted_bce(logits[:, :1], target, self.clip)
        boundary_term = weighted_bce(logits[:, 1:2], boundary, self.clip)
        return self.mask_weight * mask_term + self.boundary_weight * boundary_term


@LOSSES.register("resunet_wbce")
def resunet_wbce(
    boundary_width: int = 1,
    mask_weight: float = 1.0,
    boundary_weight: float = 1.0,
    clip: tuple[float, float] = (0.05, 0.99),
) -> ResUNetLoss:
    """Res-UNet loss: WBCE(mask) + WBCE(instance boundary derived per slice) on 2-channel logits."""
    return ResUNetLoss(boundary_width, mask_weight, boundary_weight, clip)


__all__ = ["ResUNetLoss", "boundary_target_for", "resunet_wbce"]
