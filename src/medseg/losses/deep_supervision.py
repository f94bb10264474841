"""Deep-supervision wrapper (after nnU-Net's ``training/loss/deep_supervision.py``).

Applies any loss at each output scale with weights, so no loss needs to know about deep
supervision. The target, and every tensor in ``batch["masks"]``, is downsampled to each
output's spatial size before calling the inner loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError

MODES = ("nearest", "area")


def downsample_mask(mask: Tensor, size: Sequence[int], mode: str = "nearest") -> Tensor:
    """Resize a ``B×C×spatial`` mask to ``size``; ``area`` averages then thresholds at 0.5.

    ``nearest`` keeps label values (use it for class indices); ``area`` is for binary masks and
    keeps a pixel foreground when at least half of the region it summarises is foreground.
    The result has the input's dtype.
    """
    if tuple(mask.shape[2:]) == tuple(size):
        return mask
    x = mask.float()
    if mode == "nearest":
        out = F.interpolate(x, size=tuple(size), mode="nearest")
    elif mode == "area":
        out = (F.interpolate(x, size=tuple(size), mode="area") >= 0.5).float()
    else:
        raise ConfigError(f"unknown downsampling mode '{mode}'. Available: {', '.join(MODES)}")
    return out.to(mask.dtype)


def scaled_batch(
    batch: Mapping[str, Any] | None,
    target: Tensor,
    size: Sequence[int],
    downsample: Callable[[Tensor, Sequence[int]], Tensor],
) -> dict:
    """A shallow copy of ``batch`` with ``target`` and every annotator mask brought to ``size``.

    The caller's batch is not modified; non-tensor entries of ``batch["masks"]`` pass through.
    """
    scaled = dict(batch) if batch is not None else {}
    scaled["target"] = target
    masks = scaled.get("masks")
    if isinstance(masks, Mapping):
        scaled["masks"] = {
            k: downsample(v, size) if isinstance(v, Tensor) and v.ndim == target.ndim else v
            for k, v in masks.items()
        }
    return scaled


class DeepSupervisionLoss(nn.Module):
    """Σₛ wₛ · loss(outputₛ, target↓ₛ, batch↓ₛ) over the outputs ``[main, aux_1/2, aux_1/4, ...]``.

    Args:
        loss: any medseg loss ``loss(logits, target, batch)``.
        weights: one weight per output, used as given. Default: 1, 1/2, 1/4, ... normalised to
            sum to 1 (nnU-Net halves the weight per scale; unlike nnU-Net, the lowest scale is
            not zeroed).
        mode: how targets/masks are downsampled, ``nearest`` or ``area`` (binary; average then
            threshold at 0.5).

    A plain tensor (eval mode) is passed straight to ``loss``. In the per-scale batch,
    ``"target"`` and tensor entries of ``"masks"`` are downsampled; other keys are unchanged.
    """

    def __init__(
        self, loss: nn.Module, weights: Sequence[float] | None = None, mode: str = "nearest"
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown downsampling mode '{mode}'. Available: {', '.join(MODES)}")
        if weights is not None and (len(weights) == 0 or any(w < 0 for w in weights)):
            raise ConfigError(f"weights must be a non-empty list of non-negative numbers, got {weights}")
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]
        self.mode = mode

    @staticmethod
    def default_weights(n: int) -> list[float]:
        """1, 1/2, 1/4, ... for ``n`` scales, normalised to sum to 1."""
        raw = [0.5**i for i in range(n)]
        return [w / sum(raw) for w in raw]

    def _scaled_batch(self, batch: Mapping[str, Any] | None, target: Tensor, size: Sequence[int]) -> dict:
        return scaled_batch(batch, target, size, lambda mask, shape: downsample_mask(mask, shape, self.mode))

    def forward(
        self,
        outputs: Tensor | Sequence[Tensor],
        target: Tensor,
        batch: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Weighted sum of the inner loss over scales (a scalar)."""
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target, batch)
        weights = self.weights if self.weights is not None else self.default_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(f"DeepSupervisionLoss: {len(weights)} weights for {len(outputs)} outputs")
        # float32 accumulator: under AMP the outputs may be float16 while the terms are float32.
        total = torch.zeros(
            (), dtype=torch.promote_types(outputs[0].dtype, torch.float32), device=outputs[0].device
        )
        for weight, logits in zip(weights, outputs, strict=True):
            if weight == 0:
                continue
            if logits.ndim != target.ndim:
                raise ValueError(
                    f"DeepSupervisionLoss: output shape {tuple(logits.shape)} and target shape "
                    f"{tuple(target.shape)} differ in rank"
                )
            size = logits.shape[2:]
            scaled_target = downsample_mask(target, size, self.mode)
            total = total + weight * self.loss(
                logits, scaled_target, self._scaled_batch(batch, scaled_target, size)
            )
        return total
