"""Loss maths as pure functions on tensors (MONAI's pattern: the function computes, a class configures).

Conventions: ``logits``/``probs`` are ``B×K×spatial``; ``target`` has the same shape (binary or
one-hot) unless stated. Everything is vectorised over the batch and stays on the input's device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def check_same_shape(prediction: Tensor, target: Tensor, name: str = "loss") -> None:
    """Raise ``ValueError`` naming both shapes when ``prediction`` and ``target`` differ."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"{name}: prediction shape {tuple(prediction.shape)} and target shape "
            f"{tuple(target.shape)} differ"
        )


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """Class indices ``B×1×spatial`` (any numeric dtype) → float one-hot ``B×K×spatial``."""
    if labels.ndim < 2 or labels.shape[1] != 1:
        raise ValueError(f"one_hot expects class indices of shape B×1×spatial, got {tuple(labels.shape)}")
    onehot = torch.zeros(
        (labels.shape[0], num_classes, *labels.shape[2:]), dtype=torch.float32, device=labels.device
    )
    return onehot.scatter_(1, labels.long(), 1.0)


def bce_with_logits(
    logits: Tensor,
    target: Tensor,
    pos_weight: Tensor | float | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """Mean binary cross-entropy on logits, −[w⁺·y·log σ(x) + (1−y)·log(1−σ(x))].

    Computed with the log-sum-exp form (``F.binary_cross_entropy_with_logits``), so logits of
    ±100 give finite values and gradients. ``pos_weight`` multiplies the positive term (class
    imbalance); ``weight`` is an element-wise weight map broadcast against ``logits`` (e.g. the
    annotation-guided weights of MicroSegNet). The mean is over every element.
    """
    if isinstance(pos_weight, (int, float)):
        pos_weight = torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(
        logits, target.to(logits.dtype), weight=weight, pos_weight=pos_weight
    )


def cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean softmax cross-entropy; ``labels`` are class indices ``B×1×spatial`` (as floats or ints)."""
    return F.cross_entropy(logits, labels[:, 0].long(), weight=weight)


def soft_dice_score(
    probs: Tensor,
    target: Tensor,
    squared: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = False,
) -> Tensor:
    """Soft Dice coefficient per sample and channel, shape ``B×K`` (or ``K`` with ``batch_dice``).

    D = (2·Σ p·g + s) / (Σ p + Σ g + s), sums over the spatial dims (Sørensen–Dice on
    probabilities). ``squared=True`` is the V-Net form (Milletari et al. 2016, eq. 1):
    D = (2·Σ p·g + s) / (Σ p² + Σ g² + s). ``batch_dice=True`` also sums over the batch, as
    nnU-Net does ("batch Dice"): one Dice per channel for the whole batch.

    Empty masks: with ``s > 0`` an empty target and an empty prediction score 1 (loss 0), and an
    empty target with any predicted foreground scores ≈ 0; ``s = 0`` gives NaN there, so keep s > 0.
    """
    check_same_shape(probs, target, "soft_dice_score")
    target = target.to(probs.dtype)
    dims = tuple(range(2, probs.ndim))
    if batch_dice:
        dims = (0, *dims)
    intersection = (probs * target).sum(dims)
    if squared:
        denominator = (probs * probs).sum(dims) + (target * target).sum(dims)
    else:
        denominator = probs.sum(dims) + target.sum(dims)
    return (2.0 * intersection + smooth) / (denominator + smooth)


def soft_dice_loss(
    probs: Tensor,
    target: Tensor,
    squared: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = False,
) -> Tensor:
    """1 − soft Dice, averaged: default per sample and channel, then mean over batch and channels.

    With ``batch_dice=True`` the Dice is pooled over the batch first (nnU-Net), then averaged
    over channels. See :func:`soft_dice_score` for the formula and the empty-mask policy.
    """
    return (1.0 - soft_dice_score(probs, target, squared, smooth, batch_dice)).mean()


def dense_target(logits: Tensor, target: Tensor, name: str = "loss") -> Tensor:
    """Return ``target`` shaped like ``logits``: as is, or one-hot from ``B×1×spatial`` class indices.

    Class indices are accepted only when ``logits`` has K ≥ 2 channels (softmax case). Any other
    mismatch raises ``ValueError`` with both shapes.
    """
    if target.shape == logits.shape:
        return target.to(logits.dtype)
    k = logits.shape[1] if logits.ndim >= 2 else 0
    if (
        k >= 2
        and target.ndim == logits.ndim
        and target.shape[1] == 1
        and target.shape[0] == logits.shape[0]
        and target.shape[2:] == logits.shape[2:]
    ):
        return one_hot(target, k).to(logits.dtype)
    raise ValueError(
        f"{name}: logits shape {tuple(logits.shape)} and target shape {tuple(target.shape)} are "
        "incompatible; expected the same shape, or B×1×spatial class indices when K ≥ 2"
    )
