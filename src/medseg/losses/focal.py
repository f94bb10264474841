"""Sigmoid focal loss (Lin et al. 2017), the baseline of the adaptive-focal thesis (§3.3.1–§3.3.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.functional import focal
from medseg.losses.registry import LOSSES

ALPHA_MODES = ("balanced", "uniform")


class FocalLoss(nn.Module):
    """Binary focal loss on logits, mean over all elements (see :func:`~medseg.losses.functional.focal`).

    Args:
        alpha: α (thesis §3.2.4: 0.25).
        gamma: focusing parameter γ ≥ 0 (thesis: 2.0).
        alpha_mode: ``balanced`` = ``torchvision.ops.sigmoid_focal_loss`` (α for foreground,
            1 − α for background); ``uniform`` = the thesis' §3.3.3 pseudocode, α on every pixel.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, alpha_mode: str = "balanced") -> None:
        super().__init__()
        if alpha_mode not in ALPHA_MODES:
            raise ConfigError(f"unknown alpha_mode '{alpha_mode}'. Available: {', '.join(ALPHA_MODES)}")
        if gamma < 0:
            raise ConfigError(f"gamma must be ≥ 0, got {gamma}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.alpha_mode = alpha_mode

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar focal loss; ``batch`` is unused."""
        return focal(logits, target, alpha=self.alpha, gamma=self.gamma, alpha_mode=self.alpha_mode)


@LOSSES.register("focal")
def focal_loss(alpha: float = 0.25, gamma: float = 2.0, alpha_mode: str = "balanced") -> FocalLoss:
    """Sigmoid focal loss (torchvision), alpha 0.25, gamma 2 (adaptive-focal thesis §3.3.3 baseline)."""
    return FocalLoss(alpha=alpha, gamma=gamma, alpha_mode=alpha_mode)
