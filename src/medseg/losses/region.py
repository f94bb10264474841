"""Region-based losses of the loss zoo: Jaccard, Tversky, focal Tversky, log-cosh Dice,
sensitivity–specificity.

Every score is computed per sample and channel from soft probabilities (sums over the spatial
dims, 2D or 3D), then averaged over samples and channels, as :class:`~medseg.losses.DiceLoss`
does. Logits are activated with sigmoid (K = 1) or softmax (K ≥ 2); the target is binary/one-hot
with the logits' shape, or ``B×1×spatial`` class indices when K ≥ 2. ``smooth`` is added to
numerators and denominators so that an empty target with an empty prediction scores 1 (loss 0)
and nothing divides by zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from medseg.errors import ConfigError
from medseg.losses.dice import RegionLoss
from medseg.losses.functional import check_same_shape, soft_dice_loss
from medseg.losses.registry import LOSSES


def _spatial_dims(x: Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def soft_jaccard_score(probs: Tensor, target: Tensor, smooth: float = 1e-5) -> Tensor:
    """Soft IoU per sample and channel (``B×K``): J = (Σpg + s) / (Σp + Σg − Σpg + s).

    The probabilistic Jaccard index of Rahman & Wang 2016 ("Optimizing intersection-over-union
    in deep neural networks for image segmentation", ISVC, §3: I/U with I = Σpg and
    U = Σ(p + g − pg)).
    """
    check_same_shape(probs, target, "soft_jaccard_score")
    target = target.to(probs.dtype)
    dims = _spatial_dims(probs)
    intersection = (probs * target).sum(dims)
    union = probs.sum(dims) + target.sum(dims) - intersection
    return (intersection + smooth) / (union + smooth)


def tversky_index(
    probs: Tensor, target: Tensor, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5
) -> Tensor:
    """Tversky index per sample and channel (``B×K``), Salehi et al. 2017 (MLMI, arXiv 1706.05721, §2).

    TI = (TP + s) / (TP + α·FP + β·FN + s) with TP = Σp·g, FP = Σp·(1 − g), FN = Σ(1 − p)·g.
    α weights false positives and β false negatives (Salehi's α, β); α = β = 0.5 is Dice,
    α = β = 1 is Jaccard. Salehi's best lesion setting is α = 0.3, β = 0.7 (recall favoured).
    """
    check_same_shape(probs, target, "tversky_index")
    target = target.to(probs.dtype)
    dims = _spatial_dims(probs)
    tp = (probs * target).sum(dims)
    fp = (probs * (1.0 - target)).sum(dims)
    fn = ((1.0 - probs) * target).sum(dims)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def focal_tversky_loss(
    probs: Tensor,
    target: Tensor,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1e-5,
) -> Tensor:
    """Focal Tversky loss, Abraham & Khan 2019 (ISBI, arXiv 1810.07842, eq. 4): mean of (1 − TI)^(1/γ).

    FTL = Σ_c (1 − TI_c)^(1/γ), γ ∈ [1, 3], γ = 4/3 in the paper; medseg averages over samples
    and channels instead of summing over classes (a constant factor). With γ > 1 the exponent
    1/γ < 1 raises the loss of well-segmented (high TI) examples less than it raises their
    gradient: training focuses on the hard, small regions. TI is :func:`tversky_index`; the
    paper writes α for the false-negative weight (α = 0.7, β = 0.3), medseg keeps Salehi's
    naming (``alpha`` = FP weight, ``beta`` = FN weight), so the paper's setting is
    ``alpha=0.3, beta=0.7`` (the default). Paper 004 only lists the loss by name, so the
    paper's eq. 4 form is followed. (1 − TI) is clamped to ≥ 1e-12 before the power so the
    gradient stays finite at a perfect score (there it is 0).
    """
    index = tversky_index(probs, target, alpha, beta, smooth)
    return (1.0 - index).clamp_min(1e-12).pow(1.0 / gamma).mean()


def log_cosh(x: Tensor) -> Tensor:
    """log(cosh x), computed as |x| + softplus(−2|x|) − log 2 (no overflow for large |x|)."""
    a = x.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


def sensitivity_specificity_loss(
    probs: Tensor, target: Tensor, r: float = 0.05, smooth: float = 1e-5
) -> Tensor:
    """Sensitivity–specificity loss, Brosch et al. 2015 (MICCAI, "Deep convolutional encoder
    networks for multiple sclerosis lesion segmentation", §2 objective), mean over samples and channels.

        SS = r·Σ(g − p)²·g / (Σg + s) + (1 − r)·Σ(g − p)²·(1 − g) / (Σ(1 − g) + s).

    The first term is the mean squared error over the foreground (sensitivity), the second over
    the background (specificity); r = 0.05 weights sensitivity (Brosch: r ∈ [0.01, 0.10]). An
    empty target contributes only its specificity term (the first is 0/s = 0).
    """
    check_same_shape(probs, target, "sensitivity_specificity_loss")
    target = target.to(probs.dtype)
    dims = _spatial_dims(probs)
    error = (target - probs) ** 2
    sensitivity = (error * target).sum(dims) / (target.sum(dims) + smooth)
    specificity = (error * (1.0 - target)).sum(dims) / ((1.0 - target).sum(dims) + smooth)
    return (r * sensitivity + (1.0 - r) * specificity).mean()


class JaccardLoss(RegionLoss):
    """1 − soft Jaccard (IoU), per sample and channel, averaged (:func:`soft_jaccard_score`).

    Args: see :class:`~medseg.losses.DiceLoss` (``smooth``, ``activation``, ``include_background``).
    """

    name = "jaccard"

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar Jaccard loss; ``batch`` is unused."""
        probs, dense = self._probs(logits, target)
        return (1.0 - soft_jaccard_score(probs, dense, self.smooth)).mean()


class TverskyLoss(RegionLoss):
    """1 − Tversky index (Salehi et al. 2017), per sample and channel, averaged (:func:`tversky_index`).

    Args:
        alpha: weight of false positives (0.3).
        beta: weight of false negatives (0.7).
        smooth, activation, include_background: as :class:`~medseg.losses.DiceLoss`.
    """

    name = "tversky"

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-5,
        activation: str = "auto",
        include_background: bool = True,
    ) -> None:
        super().__init__(smooth, activation, include_background)
        if alpha < 0 or beta < 0:
            raise ConfigError(f"alpha and beta must be ≥ 0, got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar Tversky loss; ``batch`` is unused."""
        probs, dense = self._probs(logits, target)
        return (1.0 - tversky_index(probs, dense, self.alpha, self.beta, self.smooth)).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss (Abraham & Khan 2019, eq. 4): mean (1 − TI)^(1/γ) (:func:`focal_tversky_loss`).

    Args:
        alpha, beta: Tversky weights of FP and FN (0.3, 0.7: the paper's FN weight 0.7).
        gamma: γ ∈ [1, 3] (paper: 4/3); the exponent is 1/γ.
        smooth, activation, include_background: as :class:`~medseg.losses.DiceLoss`.
    """

    name = "focal_tversky"

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1e-5,
        activation: str = "auto",
        include_background: bool = True,
    ) -> None:
        super().__init__(alpha, beta, smooth, activation, include_background)
        if gamma <= 0:
            raise ConfigError(f"gamma must be positive, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar focal Tversky loss; ``batch`` is unused."""
        probs, dense = self._probs(logits, target)
        return focal_tversky_loss(probs, dense, self.alpha, self.beta, self.gamma, self.smooth)


class LogCoshDiceLoss(RegionLoss):
    """log(cosh(DiceLoss)), Jadon 2020 (survey of loss functions, CIBCB; paper 004 §5.4).

    L = log(cosh(L_Dice)) with L_Dice the scalar soft Dice loss (per sample and channel,
    averaged, as :class:`~medseg.losses.DiceLoss`); the log-cosh is applied to that scalar, as
    in Jadon's reference code. ``squared`` selects the V-Net denominator; ``batch_dice`` pools
    the sums over the batch first (nnU-Net's batch Dice, for data sets of mostly empty slices).
    """

    name = "logcosh_dice"

    def __init__(
        self,
        squared: bool = False,
        smooth: float = 1e-5,
        activation: str = "auto",
        include_background: bool = True,
        batch_dice: bool = False,
    ) -> None:
        super().__init__(smooth, activation, include_background)
        self.squared = squared
        self.batch_dice = batch_dice

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar log-cosh Dice loss; ``batch`` is unused."""
        probs, dense = self._probs(logits, target)
        return log_cosh(soft_dice_loss(probs, dense, self.squared, self.smooth, self.batch_dice))


class SensSpecLoss(RegionLoss):
    """Sensitivity–specificity loss (Brosch et al. 2015; :func:`sensitivity_specificity_loss`).

    Args:
        r: weight of the sensitivity term, 1 − r of the specificity term (0.05).
        smooth, activation, include_background: as :class:`~medseg.losses.DiceLoss`.
    """

    name = "sens_spec"

    def __init__(
        self,
        r: float = 0.05,
        smooth: float = 1e-5,
        activation: str = "auto",
        include_background: bool = True,
    ) -> None:
        super().__init__(smooth, activation, include_background)
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"r must be in [0, 1], got {r}")
        self.r = float(r)

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar sensitivity–specificity loss; ``batch`` is unused."""
        probs, dense = self._probs(logits, target)
        return sensitivity_specificity_loss(probs, dense, self.r, self.smooth)


@LOSSES.register("jaccard")
def jaccard(smooth: float = 1e-5, activation: str = "auto", include_background: bool = True) -> JaccardLoss:
    """Soft Jaccard (IoU) loss, 1 − Σpg/(Σp + Σg − Σpg) (Rahman & Wang 2016)."""
    return JaccardLoss(smooth, activation, include_background)


@LOSSES.register("tversky")
def tversky(
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1e-5,
    activation: str = "auto",
    include_background: bool = True,
) -> TverskyLoss:
    """Tversky loss (Salehi et al. 2017), alpha 0.3 on FP, beta 0.7 on FN."""
    return TverskyLoss(alpha, beta, smooth, activation, include_background)


@LOSSES.register("focal_tversky")
def focal_tversky(
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1e-5,
    activation: str = "auto",
    include_background: bool = True,
) -> FocalTverskyLoss:
    """Focal Tversky loss (Abraham & Khan 2019), (1 − TI)^(1/gamma), gamma 4/3."""
    return FocalTverskyLoss(alpha, beta, gamma, smooth, activation, include_background)


@LOSSES.register("logcosh_dice")
def logcosh_dice(
    squared: bool = False,
    smooth: float = 1e-5,
    activation: str = "auto",
    include_background: bool = True,
    batch_dice: bool = False,
) -> LogCoshDiceLoss:
    """Log-cosh Dice loss, log(cosh(DiceLoss)) (Jadon 2020; paper 004 §5.4)."""
    return LogCoshDiceLoss(squared, smooth, activation, include_background, batch_dice)


@LOSSES.register("sens_spec")
def sens_spec(
    r: float = 0.05, smooth: float = 1e-5, activation: str = "auto", include_background: bool = True
) -> SensSpecLoss:
    """Sensitivity–specificity loss (Brosch et al. 2015), r 0.05 on sensitivity."""
    return SensSpecLoss(r, smooth, activation, include_background)
