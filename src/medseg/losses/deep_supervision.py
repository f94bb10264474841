"""Deep-supervision wrapper (after nnU-Net's ``training/loss/deep_supervision.py``).

Applies a loss at each output scale with weights, so no loss needs to know about deep
supervision. The target, and every tensor in ``batch["masks"]``, is downsampled to each
output's spatial size before calling that scale's loss.

The training loop calls one loss on whatever the model returns: :func:`for_model_outputs` wraps
a loss in :class:`DeepSupervisionLoss` unless it is a :class:`ModelOutputsLoss` already (a
deep-supervision loss, or a loss that reads a promptable model's ``{"logits", "iou"}`` dict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError

MODES = ("nearest", "area", "official")


def downsample_mask(mask: Tensor, size: Sequence[int], mode: str = "nearest") -> Tensor:
    """Resize a ``B×C×spatial`` mask to ``size`` for a deep-supervision scale.

    ``nearest`` keeps label values (use it for class indices); ``area`` is for binary masks and
    keeps a pixel foreground when at least half of the region it summarises is foreground
    (average, then ≥ 0.5). ``official`` reproduces MicroSegNet's ``MultiscaleGenerator``:
    ``cv2.resize`` (bilinear) of the full-resolution {0, 1} mask, then ``.long()``, i.e. bilinear
    interpolation (half-pixel centres, no antialiasing: ``F.interpolate(...,
    align_corners=False)``) then ``floor``. A pixel survives only where every sample of the
    interpolation is foreground, so the foreground shrinks (by up to one output pixel at each
    border). The result has the input's dtype.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown downsampling mode '{mode}'. Available: {', '.join(MODES)}")
    if tuple(mask.shape[2:]) == tuple(size):
        return mask
    x = mask.float()
    if mode == "nearest":
        out = F.interpolate(x, size=tuple(size), mode="nearest")
    elif mode == "area":
        out = (F.interpolate(x, size=tuple(size), mode="area") >= 0.5).float()
    else:
        linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
        out = F.interpolate(x, size=tuple(size), mode=linear, align_corners=False).floor()
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


class ModelOutputsLoss(nn.Module):
    """A loss that takes a model's training outputs as they come (used without a wrapper).

    :class:`DeepSupervisionLoss` (a list of scales) and the losses that read a promptable model's
    ``{"logits", "iou"}`` dict derive from it; every other loss sees one logits tensor.
    """


LossFn = Callable[..., Tensor]


class _FunctionLoss(nn.Module):
    """A plain loss function ``f(logits, target, batch)`` as a module, so it sits in a ModuleList."""

    def __init__(self, function: LossFn) -> None:
        super().__init__()
        self.function = function

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        return self.function(logits, target, batch)


class DeepSupervisionLoss(ModelOutputsLoss):
    """Σₛ wₛ · lossₛ(outputₛ, target↓ₛ, batch↓ₛ) over the outputs ``[main, aux_1/2, aux_1/4, ...]``.

    Args:
        loss: one medseg loss ``loss(logits, target, batch)`` used at every scale, or one per
            output, full resolution first (MicroSegNet's AG-BCE has a kernel per scale).
        weights: one weight per output, used as given. Default: 1, 1/2, 1/4, ... normalised to
            sum to 1 (nnU-Net halves the weight per scale; unlike nnU-Net, the lowest scale is
            not zeroed).
        mode: how targets/masks are downsampled (:func:`downsample_mask`): ``nearest``, ``area``
            or ``official``.

    A plain tensor (eval mode) goes to the full-resolution loss, and a promptable model's
    training dict gives its ``"logits"``. In the per-scale batch, ``"target"`` and tensor
    entries of ``"masks"`` are downsampled; other keys are unchanged.
    """

    def __init__(
        self,
        loss: LossFn | Sequence[LossFn],
        weights: Sequence[float] | None = None,
        mode: str = "nearest",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown downsampling mode '{mode}'. Available: {', '.join(MODES)}")
        if weights is not None and (len(weights) == 0 or any(w < 0 for w in weights)):
            raise ConfigError(f"weights must be a non-empty list of non-negative numbers, got {weights}")
        scale_losses = [loss] if callable(loss) else list(loss)
        if not scale_losses:
            raise ConfigError("DeepSupervisionLoss needs a loss")
        if weights is not None and len(scale_losses) > 1 and len(scale_losses) != len(weights):
            raise ConfigError(f"{len(scale_losses)} losses for {len(weights)} weights: give one per scale")
        self.losses = nn.ModuleList(f if isinstance(f, nn.Module) else _FunctionLoss(f) for f in scale_losses)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.mode = mode

    @staticmethod
    def default_weights(n: int) -> list[float]:
        """1, 1/2, 1/4, ... for ``n`` scales, normalised to sum to 1."""
        raw = [0.5**i for i in range(n)]
        return [w / sum(raw) for w in raw]

    def forward(
        self,
        outputs: Tensor | Sequence[Tensor] | Mapping[str, Tensor],
        target: Tensor,
        batch: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """Weighted sum of the per-scale losses (a scalar)."""
        if isinstance(outputs, Mapping):
            outputs = outputs["logits"]
        if isinstance(outputs, Tensor):
            return self.losses[0](outputs, target, batch)
        weights = self.weights if self.weights is not None else self.default_weights(len(outputs))
        if len(weights) != len(outputs):
            raise ValueError(f"DeepSupervisionLoss: {len(weights)} weights for {len(outputs)} outputs")
        if len(self.losses) not in (1, len(outputs)):
            raise ValueError(f"DeepSupervisionLoss: {len(self.losses)} losses for {len(outputs)} outputs")
        # float32 accumulator: under AMP the outputs may be float16 while the terms are float32.
        total = torch.zeros(
            (), dtype=torch.promote_types(outputs[0].dtype, torch.float32), device=outputs[0].device
        )
        for scale, (weight, logits) in enumerate(zip(weights, outputs, strict=True)):
            if weight != 0:
                total = total + weight * self.scale_loss(scale, logits, target, batch)
        return total

    def scale_loss(
        self, scale: int, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None
    ) -> Tensor:
        """The unweighted loss of output ``scale`` against the target (and masks) brought to its size."""
        if logits.ndim != target.ndim:
            raise ValueError(
                f"DeepSupervisionLoss: output shape {tuple(logits.shape)} and target shape "
                f"{tuple(target.shape)} differ in rank"
            )
        size = logits.shape[2:]
        scaled_target = downsample_mask(target, size, self.mode)
        scaled = scaled_batch(batch, scaled_target, size, lambda m, s: downsample_mask(m, s, self.mode))
        loss = self.losses[scale if len(self.losses) > 1 else 0]
        return loss(logits, scaled_target, scaled)

    def components(
        self, outputs: Sequence[Tensor], target: Tensor, batch: Mapping[str, Any] | None = None
    ) -> list[Tensor]:
        """The unweighted loss of every output, full resolution first (for logging and tests)."""
        return [self.scale_loss(i, logits, target, batch) for i, logits in enumerate(outputs)]


def for_model_outputs(loss: nn.Module, weights: Sequence[float] | None = None) -> nn.Module:
    """The loss the training loop calls on raw model outputs: ``loss`` itself when it is a
    :class:`ModelOutputsLoss`, else ``loss`` wrapped in :class:`DeepSupervisionLoss` (``weights``)."""
    return loss if isinstance(loss, ModelOutputsLoss) else DeepSupervisionLoss(loss, weights)
