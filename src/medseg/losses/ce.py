"""Cross-entropy losses: binary (sigmoid) BCE and multi-class (softmax) CE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.functional import bce_with_logits, check_same_shape, cross_entropy, dense_target
from medseg.losses.registry import LOSSES


class BCELoss(nn.Module):
    """Binary cross-entropy on logits, mean over all elements (see :func:`bce_with_logits`).

    ``target`` must have the logits' shape (``B×1×spatial`` for binary segmentation, or
    ``B×K×spatial`` multi-label). ``pos_weight`` > 1 up-weights foreground errors.
    """

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        if pos_weight is not None and pos_weight <= 0:
            raise ConfigError(f"pos_weight must be positive, got {pos_weight}")
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar BCE; ``batch`` is unused."""
        check_same_shape(logits, target, "BCELoss")
        return bce_with_logits(logits, target, pos_weight=self.pos_weight)


class CELoss(nn.Module):
    """Softmax cross-entropy for K ≥ 2 logit channels; falls back to BCE when K = 1.

    ``target`` is ``B×1×spatial`` class indices (or one-hot with the logits' shape, which is
    converted to indices). ``class_weights`` has one weight per class.
    """

    def __init__(self, class_weights: list[float] | None = None) -> None:
        super().__init__()
        if class_weights is not None and any(w < 0 for w in class_weights):
            raise ConfigError(f"class_weights must be non-negative, got {class_weights}")
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar CE; ``batch`` is unused."""
        if logits.ndim < 2 or logits.shape[1] == 1:
            check_same_shape(logits, target, "CELoss")
            return bce_with_logits(logits, target)
        dense = dense_target(logits, target, "CELoss")  # validates the shape
        labels = dense.argmax(1, keepdim=True) if target.shape == logits.shape else target
        weight = None
        if self.class_weights is not None:
            if len(self.class_weights) != logits.shape[1]:
                raise ValueError(
                    f"CELoss: {len(self.class_weights)} class_weights for {logits.shape[1]} logit channels"
                )
            weight = torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)
        return cross_entropy(logits, labels, weight=weight)


@LOSSES.register("bce")
def bce(pos_weight: float | None = None) -> BCELoss:
    """Binary cross-entropy on logits (sigmoid), optional pos_weight."""
    return BCELoss(pos_weight=pos_weight)


@LOSSES.register("ce")
def ce(class_weights: list[float] | None = None) -> CELoss:
    """Softmax cross-entropy on logits with class-index targets (BCE when K = 1)."""
    return CELoss(class_weights=class_weights)
