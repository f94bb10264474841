"""Soft Dice loss (Milletari et al. 2016, V-Net, eq. 1; nnU-Net's batch Dice as an option)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.functional import ACTIVATIONS, probabilities_and_target, soft_dice_loss
from medseg.losses.registry import LOSSES


class RegionLoss(nn.Module):
    """Base of the region losses (Dice, Jaccard, Tversky, ...): smooth, activation, include_background."""

    name = "region"

    def __init__(
        self, smooth: float = 1e-5, activation: str = "auto", include_background: bool = True
    ) -> None:
        super().__init__()
        if smooth < 0:
            raise ConfigError(f"smooth must be ≥ 0, got {smooth}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}'. Available: {', '.join(ACTIVATIONS)}")
        self.smooth = float(smooth)
        self.activation = activation
        self.include_background = include_background

    def _probs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return probabilities_and_target(logits, target, self.name, self.activation, self.include_background)


class DiceLoss(RegionLoss):
    """1 − soft Dice between activated logits and the target.

    Args:
        squared: V-Net denominator Σp² + Σg² (Milletari et al. 2016, eq. 1) instead of Σp + Σg.
        smooth: added to numerator and denominator; makes empty-vs-empty a perfect score.
        batch_dice: pool the sums over the batch (nnU-Net); default is per-sample Dice, averaged.
        activation: ``auto`` (sigmoid for K = 1 channel, softmax for K ≥ 2), ``sigmoid``,
            ``softmax`` or ``none`` (inputs are already probabilities).
        include_background: with softmax/K ≥ 2, whether channel 0 counts; ignored for K = 1
            (the single sigmoid channel is the foreground).

    The target is binary/one-hot with the logits' shape, or ``B×1×spatial`` class indices when
    K ≥ 2 (converted to one-hot).
    """

    name = "DiceLoss"

    def __init__(
        self,
        squared: bool = False,
        smooth: float = 1e-5,
        batch_dice: bool = False,
        activation: str = "auto",
        include_background: bool = True,
    ) -> None:
        super().__init__(smooth, activation, include_background)
        self.squared = squared
        self.batch_dice = batch_dice

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar Dice loss; ``batch`` is unused."""
        # Under AMP the spatial sums overflow float16 (max 65504): the probabilities are float32.
        probs, target = self._probs(logits, target)
        return soft_dice_loss(probs, target, self.squared, self.smooth, self.batch_dice)


@LOSSES.register("dice")
def dice(
    squared: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = False,
    activation: str = "auto",
    include_background: bool = True,
) -> DiceLoss:
    """Soft Dice loss (V-Net squared denominator optional; batch Dice optional)."""
    return DiceLoss(squared, smooth, batch_dice, activation, include_background)
