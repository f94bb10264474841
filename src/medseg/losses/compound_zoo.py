"""Compound losses of the loss zoo: Combo loss (Taghanaki 2019) and the exponential
logarithmic loss (Wong et al. 2018).

Both combine a cross-entropy and a Dice term in one formula, so they are classes rather than
``"dice+bce"`` sums. K = 1 logits are sigmoid-binary, K ≥ 2 softmax (target one-hot or
``B×1×spatial`` class indices); 2D or 3D. Log-probabilities come straight from the logits
(log-sigmoid, log-softmax), finite for any logit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.compound import CompoundLoss
from medseg.losses.functional import _compute_dtype, activate, dense_target, soft_dice_score
from medseg.losses.registry import LOSSES, combine


def log_probabilities(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(log p, log(1 − p))`` per channel, from logits, without cancellation.

    K = 1: p = σ(x), log(1 − p) = log σ(−x). K ≥ 2: p = softmax(x), and
    log(1 − p_c) = logsumexp_{j≠c} x_j − logsumexp_j x_j (exact even when p_c rounds to 1).
    """
    if logits.shape[1] == 1:
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    k = logits.shape[1]
    log_total = logits.logsumexp(1, keepdim=True)
    others = logits.unsqueeze(1).expand(logits.shape[0], k, *logits.shape[1:])  # [b, c, j, ...]
    diagonal = torch.eye(k, dtype=torch.bool, device=logits.device).view(1, k, k, *([1] * (logits.ndim - 2)))
    log_rest = others.masked_fill(diagonal, float("-inf")).logsumexp(2)
    return logits - log_total, log_rest - log_total


def combo_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1e-5,
    include_background: bool = True,
) -> Tensor:
    """Combo loss, Taghanaki et al. 2019 ("Combo loss: handling input and output imbalance in
    multi-organ segmentation", Comput. Med. Imaging Graph. 75, arXiv 1805.02798, the
    "Combo loss" definition), a scalar:

        L = α·L_wCE − (1 − α)·mean_{b,c} DSC_{b,c},
        L_wCE = −(1/N)·Σᵢ [β·tᵢ·ln pᵢ + (1 − β)·(1 − tᵢ)·ln(1 − pᵢ)].

    The paper prints β(tᵢ − ln pᵢ), a typo for the product β·tᵢ·ln pᵢ (its code multiplies).
    β > 0.5 penalises false negatives more, β < 0.5 false positives. The sum over i runs over
    every element and channel (one-hot channels of the softmax for K ≥ 2), N their number.
    DSC is the soft Dice (:func:`soft_dice_score`) per sample and channel; the paper sums it
    over the K classes, medseg averages (the scale of the paper's binary case). As in the paper
    the Dice *coefficient* is subtracted, so L ∈ [−(1 − α), ∞): 1 − DSC would only shift L by
    the constant (1 − α), with the same gradients. Paper 004 lists Combo loss by name only.
    """
    x = logits.to(_compute_dtype(logits))
    dense = dense_target(x, target, "combo")
    log_p, log_not_p = log_probabilities(x)
    probs = activate(x)
    if not include_background and x.shape[1] > 1:
        dense, log_p, log_not_p, probs = dense[:, 1:], log_p[:, 1:], log_not_p[:, 1:], probs[:, 1:]
    weighted_ce = -(beta * dense * log_p + (1.0 - beta) * (1.0 - dense) * log_not_p).mean()
    dice = soft_dice_score(probs, dense, smooth=smooth).mean()
    return alpha * weighted_ce - (1.0 - alpha) * dice


def _label_weights(
    labels: Tensor, num_classes: int, class_weights: Sequence[float] | None, dtype: torch.dtype
) -> Tensor:
    """w_l = ((Σ_k f_k) / f_l)^0.5 from the label counts f of this batch, or ``class_weights``."""
    if class_weights is not None:
        if len(class_weights) != num_classes:
            raise ValueError(f"exp_log: {len(class_weights)} class_weights for {num_classes} classes")
        return torch.tensor([float(w) for w in class_weights], dtype=dtype, device=labels.device)
    counts = torch.bincount(labels.reshape(-1), minlength=num_classes).to(dtype)
    # A class absent from the batch is never looked up; clamp so its weight stays finite.
    return (counts.sum() / counts.clamp_min(1.0)).sqrt()


def exp_log_loss(
    logits: Tensor,
    target: Tensor,
    w_dice: float = 0.8,
    w_cross: float = 0.2,
    gamma_dice: float = 0.3,
    gamma_cross: float = 0.3,
    smooth: float = 1.0,
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
) -> Tensor:
    """Exponential logarithmic loss, Wong et al. 2018 ("3D segmentation with exponential logarithmic
    loss for highly unbalanced object sizes", MICCAI, arXiv 1809.00076, §2), a scalar:

        L = w_dice·E_{b,i}[(−ln Dice_i)^γ_dice] + w_cross·E_x[w_l·(−ln p_l(x))^γ_cross],

    Dice_i the soft Dice of label i (per sample, ``smooth`` = the paper's ε = 1), l the true
    label of element x, w_l = ((Σ_k f_k)/f_l)^0.5 with f_k the frequency of label k. The paper
    uses w_dice = 0.8, w_cross = 0.2 and γ_dice = γ_cross = 0.3 (the defaults). The paper
    computes f_k over the training set; medseg counts the labels of the current batch unless
    ``class_weights`` (one w_l per class: background, foreground for K = 1) are given.

    K = 1: Dice of the sigmoid foreground channel; the CE term has the two labels
    {background, foreground} with p_l = σ(±x). K ≥ 2: Dice per softmax channel (channel 0
    dropped with ``include_background=False``), p_l the softmax probability of the true class.
    −ln Dice and −ln p_l are clamped to ≥ 1e-12 before the fractional powers, so the gradient
    is finite (0) at a perfect prediction.
    """
    x = logits.to(_compute_dtype(logits))
    k = x.shape[1]
    dense = dense_target(x, target, "exp_log")
    probs = activate(x)
    if k == 1:
        labels = (dense >= 0.5).long()
        neg_log_p = -F.logsigmoid(torch.where(labels.bool(), x, -x))
        weights = _label_weights(labels, 2, class_weights, x.dtype)
    else:
        labels = dense.argmax(1, keepdim=True) if target.shape == x.shape else target.long()
        neg_log_p = -torch.log_softmax(x, 1).gather(1, labels)
        weights = _label_weights(labels, k, class_weights, x.dtype)
    if not include_background and k > 1:
        probs, dense = probs[:, 1:], dense[:, 1:]
    dice = soft_dice_score(probs, dense, smooth=smooth)
    dice_term = (-torch.log(dice)).clamp_min(1e-12).pow(gamma_dice).mean()
    cross_term = (weights[labels] * neg_log_p.clamp_min(1e-12).pow(gamma_cross)).mean()
    return w_dice * dice_term + w_cross * cross_term


class ComboLoss(nn.Module):
    """Combo loss (Taghanaki et al. 2019; :func:`combo_loss`): α·weighted CE − (1 − α)·Dice.

    Args:
        alpha: α, weight of the CE term; 1 − α weighs the Dice term (0.5).
        beta: β, weight of the positive (foreground) CE term; 1 − β of the negative term (0.5).
        smooth: Dice smoothing.
        include_background: K ≥ 2: whether channel 0 enters both terms.
    """

    def __init__(
        self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, include_background: bool = True
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or not 0.0 <= beta <= 1.0:
            raise ConfigError(f"alpha and beta must be in [0, 1], got alpha={alpha}, beta={beta}")
        if smooth < 0:
            raise ConfigError(f"smooth must be ≥ 0, got {smooth}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth = float(smooth)
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar Combo loss (may be negative); ``batch`` is unused."""
        return combo_loss(logits, target, self.alpha, self.beta, self.smooth, self.include_background)


class ExpLogLoss(nn.Module):
    """Exponential logarithmic loss (Wong et al. 2018; :func:`exp_log_loss`).

    Args:
        w_dice, w_cross: weights of the Dice and CE terms (0.8, 0.2).
        gamma_dice, gamma_cross: exponents γ of the two terms (0.3, 0.3).
        smooth: ε of the Dice (1, as the paper).
        include_background: K ≥ 2: whether channel 0 enters the Dice term.
        class_weights: fixed w_l per class (K = 1: [background, foreground]); default from the
            batch's label frequencies.
    """

    def __init__(
        self,
        w_dice: float = 0.8,
        w_cross: float = 0.2,
        gamma_dice: float = 0.3,
        gamma_cross: float = 0.3,
        smooth: float = 1.0,
        include_background: bool = True,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if w_dice < 0 or w_cross < 0:
            raise ConfigError(f"w_dice and w_cross must be ≥ 0, got {w_dice}, {w_cross}")
        if gamma_dice <= 0 or gamma_cross <= 0:
            raise ConfigError(f"gamma_dice and gamma_cross must be positive, got {gamma_dice}, {gamma_cross}")
        if smooth <= 0:
            raise ConfigError(f"smooth must be positive (−ln Dice needs Dice > 0), got {smooth}")
        if class_weights is not None and any(w < 0 for w in class_weights):
            raise ConfigError(f"class_weights must be non-negative, got {class_weights}")
        self.w_dice = float(w_dice)
        self.w_cross = float(w_cross)
        self.gamma_dice = float(gamma_dice)
        self.gamma_cross = float(gamma_cross)
        self.smooth = float(smooth)
        self.include_background = include_background
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar exponential logarithmic loss; ``batch`` is unused."""
        return exp_log_loss(
            logits,
            target,
            self.w_dice,
            self.w_cross,
            self.gamma_dice,
            self.gamma_cross,
            self.smooth,
            self.include_background,
            self.class_weights,
        )


@LOSSES.register("combo")
def combo(
    alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, include_background: bool = True
) -> ComboLoss:
    """Combo loss (Taghanaki et al. 2019): alpha·weighted CE (beta on positives) − (1 − alpha)·Dice."""
    return ComboLoss(alpha, beta, smooth, include_background)


@LOSSES.register("exp_log")
def exp_log(
    w_dice: float = 0.8,
    w_cross: float = 0.2,
    gamma_dice: float = 0.3,
    gamma_cross: float = 0.3,
    smooth: float = 1.0,
    include_background: bool = True,
    class_weights: Sequence[float] | None = None,
) -> ExpLogLoss:
    """Exponential logarithmic loss (Wong et al. 2018): 0.8·E[(−ln Dice)^0.3] + 0.2·E[w(−ln p)^0.3]."""
    return ExpLogLoss(w_dice, w_cross, gamma_dice, gamma_cross, smooth, include_background, class_weights)


@LOSSES.register("dice_bce")
def dice_bce(
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    squared: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = False,
    pos_weight: float | None = None,
) -> CompoundLoss:
    """dice_weight · Dice + bce_weight · BCE (binary, sigmoid)."""
    return combine(
        {"dice": dice_weight, "bce": bce_weight},
        dice={"squared": squared, "smooth": smooth, "batch_dice": batch_dice},
        bce={"pos_weight": pos_weight},
    )


@LOSSES.register("dice_ce")
def dice_ce(
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
    batch_dice: bool = True,
    include_background: bool = False,
    class_weights: list[float] | None = None,
) -> CompoundLoss:
    """dice_weight · soft Dice + ce_weight · CE over K softmax classes (nnU-Net's multi-class loss).

    The target is ``B×1×spatial`` class indices. The Dice is pooled over the batch (``batch_dice``)
    and leaves the background out (``include_background``), as nnU-Net's ``DC_and_CE_loss``; the CE
    counts every class. With one logit channel it is Dice + BCE on the sigmoid.
    """
    return combine(
        {"dice": dice_weight, "ce": ce_weight},
        dice={"smooth": smooth, "batch_dice": batch_dice, "include_background": include_background},
        ce={"class_weights": class_weights},
    )
