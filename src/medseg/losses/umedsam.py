"""U-MedSAM's uncertainty-aware loss and the LiteMedSAM baseline loss (Wang et al. 2024, arXiv 2408.08881).

The paper combines a pixel loss (MSE), a region loss (Dice) and two distribution losses
(cross-entropy and a "Shape-Distance" loss, "SD") with uncertainty weighting, but defines neither
the SD loss nor the weighting. What this module does where the paper is silent is **medseg's
interpretation**, marked as such below; the section "U-MedSAM losses" of ``losses/README.md``
says the same.

Both losses accept the two output forms of the SAM-family models: the ``{"logits": B×1×H×W,
"iou": B×1}`` dict of training mode, or the plain logits tensor of eval mode.

The learned σ of :class:`UMedSAMLoss` are parameters of the loss module: the engine must move the
loss to the model's device and give ``loss.parameters()`` to the optimizer in a param group
**without weight decay** (weight decay would pull σ towards 0 and inflate every weight);
:func:`medseg.optim.sam.param_groups_with_loss` builds those groups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import HausdorffDTLoss
from monai.transforms.utils import distance_transform_edt
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.deep_supervision import ModelOutputsLoss
from medseg.losses.functional import bce_with_logits, check_same_shape, soft_dice_loss
from medseg.losses.registry import LOSSES

__all__ = [
    "TERMS",
    "LiteMedSAMLoss",
    "UMedSAMLoss",
    "kendall_weighted_sum",
    "mask_iou",
    "sdm_loss",
    "signed_distance_map",
    "split_outputs",
    "uncertainty_weighted_sum",
]

TERMS = ("mse", "dice", "bce", "shape")
SHAPE_DISTANCES = ("sdm", "hausdorff_dt")
WEIGHTINGS = ("learned", "kendall", "fixed")

ModelOutput = Tensor | Mapping[str, Tensor]


# --------------------------------------------------------------------------- pure functions


def split_outputs(outputs: ModelOutput) -> tuple[Tensor, Tensor | None]:
    """``(logits, iou)`` from a SAM-family output: the training dict, or eval-mode logits (iou None)."""
    if isinstance(outputs, Tensor):
        return outputs, None
    if isinstance(outputs, Mapping):
        if "logits" not in outputs:
            raise ValueError(f"model output dict has keys {sorted(outputs)}; expected 'logits' (and 'iou')")
        return outputs["logits"], outputs.get("iou")
    raise TypeError(f"expected a logits tensor or a {{'logits', 'iou'}} dict, got {type(outputs).__name__}")


@torch.no_grad()
def signed_distance_map(target: Tensor) -> Tensor:
    """Normalised signed distance map φ ∈ [−1, 1] of a binary target, per sample and channel.

    φ = d_out / max d_out − d_in / max d_in, where d_in is the Euclidean distance (pixels) of a
    foreground pixel to the nearest background pixel and d_out that of a background pixel to the
    nearest foreground pixel (exact EDT: MONAI's ``distance_transform_edt``, cuCIM on a GPU when
    installed, scipy otherwise). Each side is normalised by its own maximum, as in the SDM
    regression of Xue et al. 2020 (AAAI, "Shape-aware organ segmentation by predicting signed
    distance maps") and the SDF losses of Ma et al. 2020 (MIDL, "How distance transform maps boost
    segmentation CNNs"). Empty target: φ = +1 everywhere; all-foreground target: φ = −1.

    Args:
        target: ``B×K×spatial`` (2D or 3D), binarised at 0.5. No gradient flows through φ.

    Returns:
        φ with ``target``'s shape, in float32 (or ``target``'s floating dtype if wider).
    """
    if target.ndim not in (4, 5):
        raise ValueError(f"signed_distance_map expects B×K×H×W or B×K×D×H×W, got {tuple(target.shape)}")
    dtype = torch.promote_types(target.dtype, torch.float32) if target.is_floating_point() else torch.float32
    fg = (target >= 0.5).reshape(-1, *target.shape[2:])  # one EDT "channel" per sample and channel
    d_in = torch.as_tensor(distance_transform_edt(fg), device=target.device).to(dtype)
    d_out = torch.as_tensor(distance_transform_edt(~fg), device=target.device).to(dtype)
    spatial = tuple(range(1, fg.ndim))
    max_in = d_in.amax(dim=spatial, keepdim=True).clamp_min(1.0)
    max_out = d_out.amax(dim=spatial, keepdim=True).clamp_min(1.0)
    phi = torch.where(fg, -d_in / max_in, d_out / max_out)
    has_fg = fg.flatten(1).any(1).view(-1, *([1] * (fg.ndim - 1)))
    has_bg = (~fg).flatten(1).any(1).view(-1, *([1] * (fg.ndim - 1)))
    # EDT is undefined without a counterpart: every pixel is then maximally inside/outside.
    phi = torch.where(has_fg, phi, torch.ones_like(phi))
    phi = torch.where(has_bg, phi, -torch.ones_like(phi))
    return phi.reshape(target.shape)


def sdm_loss(probs: Tensor, target: Tensor, sdm: Tensor | None = None) -> Tensor:
    """Signed-distance-map loss: mean(|φ_G| · |p − g|), a scalar in [0, 1].

    Errors are weighted by how far they lie from the ground-truth boundary (normalised SDM φ_G of
    :func:`signed_distance_map`), so a false-positive blob far from the object costs much more than
    a one-pixel boundary error. This is Kervadec et al.'s boundary loss (MIDL 2019, mean(φ_G · p))
    plus the constant mean(|φ_G| · g): the two have the same gradient in p, but this form is ≥ 0
    and is 0 for a perfect prediction, which the uncertainty weighting Σ L/(2σ²) needs (a
    negative term would drive its σ to 0 and the total to −∞).

    Args:
        probs: probabilities ``B×K×spatial``.
        target: binary target, same shape.
        sdm: a precomputed :func:`signed_distance_map` of ``target`` (computed here if None).
    """
    check_same_shape(probs, target, "sdm_loss")
    phi = signed_distance_map(target) if sdm is None else sdm
    check_same_shape(probs, phi, "sdm_loss (sdm)")
    return (phi.abs().to(probs.dtype) * (probs - target.to(probs.dtype)).abs()).mean()


def uncertainty_weighted_sum(losses: Tensor, sigma: Tensor) -> Tensor:
    """Σ_k L_k / (2σ_k²) + log(1 + σ_k²), the learned weighting of the issue (σ_k = 1 → L_k/2 + log 2).

    This is the positive-regulariser form of Liebel & Körner 2018 ("Auxiliary tasks in multi-task
    learning", arXiv 1805.06334): log(1 + σ²) ≥ 0, unlike Kendall's log σ, so the total cannot
    fall below Σ L/(2σ²) by shrinking the regulariser. ``losses`` and ``sigma`` are 1-D, same length.
    """
    if losses.shape != sigma.shape or losses.ndim != 1:
        raise ValueError(f"losses {tuple(losses.shape)} and sigma {tuple(sigma.shape)} must be equal 1-D")
    var = sigma.to(losses.dtype) ** 2
    return (losses / (2.0 * var) + torch.log1p(var)).sum()


def kendall_weighted_sum(losses: Tensor, log_var: Tensor) -> Tensor:
    """Σ_k ½·exp(−s_k)·L_k + ½·s_k with s_k = log σ_k² (Kendall, Gal & Cipolla, CVPR 2018).

    The ½ variant: it equals Σ L_k/(2σ_k²) + log σ_k, Kendall's regression likelihood (their
    eq. 5 per task), so s_k = 0 (σ = 1) gives L_k/2 per term. Learning s = log σ² keeps σ² > 0.
    """
    if losses.shape != log_var.shape or losses.ndim != 1:
        raise ValueError(f"losses {tuple(losses.shape)} and log_var {tuple(log_var.shape)} must be equal 1-D")
    s = log_var.to(losses.dtype)
    return (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()


@torch.no_grad()
def mask_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU |P∩G| / |P∪G| of binary masks per sample and channel, ``B×K``; 1 when both are empty.

    ``pred`` and ``target`` are ``B×K×spatial`` (bool, or binarised at 0.5). LiteMedSAM's
    ``cal_iou`` divides 0 by 0 there (NaN); medseg uses its empty-mask policy (IoU 1) instead.
    """
    check_same_shape(pred, target, "mask_iou")
    p = pred if pred.dtype == torch.bool else pred >= 0.5
    g = target if target.dtype == torch.bool else target >= 0.5
    dims = tuple(range(2, p.ndim))
    inter = (p & g).sum(dims).float()
    union = (p | g).sum(dims).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def _as_float(logits: Tensor) -> Tensor:
    # Under AMP, spatial sums overflow float16; compute every term in float32.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


# --------------------------------------------------------------------------- U-MedSAM loss


class UMedSAMLoss(ModelOutputsLoss):
    """U-MedSAM's uncertainty-aware loss: MSE + Dice + BCE + shape distance, uncertainty-weighted.

    Terms (binary, sigmoid; p = σ(logits), g = target):

    * ``mse``: mean((p − g)²), the paper's pixel loss.
    * ``dice``: 1 − soft Dice, per sample and channel, averaged. Squared denominator by default
      (``dice_squared``), as LiteMedSAM's ``monai.losses.DiceLoss(squared_pred=True)``: medseg's
      interpretation, the paper names only "Dice".
    * ``bce``: binary cross-entropy on the logits, the paper's cross-entropy.
    * ``shape``: the paper's undefined "Shape-Distance" loss. **medseg's interpretation**: by
      default (``shape_distance="sdm"``) the signed-distance-map loss :func:`sdm_loss`,
      mean(|φ_G|·|p − g|) with the normalised SDM φ_G of the ground truth. Chosen over the
      distance-transform Hausdorff loss because (1) it is bounded in [0, 1] like the other three
      terms, which matters here: the learned σ move by about one learning rate per step (5e-5 in
      the paper), so the terms must start on comparable scales; (2) it needs the distance
      transform of the ground truth only, not of the prediction at every step; (3) "shape" +
      "distance" names SDM-based shape-aware losses (Xue et al. 2020; Ma et al. 2020, by MedSAM's
      first author). ``shape_distance="hausdorff_dt"`` uses MONAI's ``HausdorffDTLoss`` instead
      (Karimi & Salcudean 2019: mean((p − g)²·(d_P^α + d_G^α)), α = ``hausdorff_alpha``),
      unnormalised, in pixels^α.

    Weighting (``weighting``; **medseg's interpretation**, the paper gives no weights):

    * ``"learned"`` (default): Σ_k L_k/(2σ_k²) + log(1 + σ_k²), σ_k initialised to 1
      (:func:`uncertainty_weighted_sum`); ``sigma`` is an ``nn.Parameter`` of this module.
    * ``"kendall"``: Σ_k ½·exp(−s_k)·L_k + ½·s_k, s_k = log σ_k² initialised to 0
      (:func:`kendall_weighted_sum`, the ½ variant); ``log_var`` is the parameter.
    * ``"fixed"``: Σ_k w_k·L_k with ``weights`` (default 1 each); no parameters.

    Learned σ / s must be optimised **without weight decay**; see
    :func:`medseg.optim.sam.param_groups_with_loss`.

    Args:
        shape_distance: ``"sdm"`` or ``"hausdorff_dt"``.
        weighting: ``"learned"``, ``"kendall"`` or ``"fixed"``.
        weights: with ``weighting="fixed"`` only: {term: weight} or one weight per term.
        terms: which of ``mse, dice, bce, shape`` to use (default all four, in that order).
        dice_squared: squared (V-Net) Dice denominator.
        smooth: Dice smoothing.
        hausdorff_alpha: α of the Hausdorff DT loss.

    ``forward(logits, target, batch=None)`` takes ``logits`` as a tensor ``B×K×spatial`` or the
    ``{"logits", "iou"}`` dict (the IoU head is ignored), ``target`` binary with the logits' shape.
    """

    def __init__(
        self,
        shape_distance: str = "sdm",
        weighting: str = "learned",
        weights: Mapping[str, float] | Sequence[float] | None = None,
        terms: Sequence[str] = TERMS,
        dice_squared: bool = True,
        smooth: float = 1e-5,
        hausdorff_alpha: float = 2.0,
    ) -> None:
        super().__init__()
        if shape_distance not in SHAPE_DISTANCES:
            raise ConfigError(f"shape_distance must be one of {SHAPE_DISTANCES}, got {shape_distance!r}")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        terms = tuple(terms)
        unknown = [t for t in terms if t not in TERMS]
        if not terms or unknown or len(set(terms)) != len(terms):
            raise ConfigError(f"terms must be distinct names from {TERMS}, got {list(terms)}")
        if smooth < 0:
            raise ConfigError(f"smooth must be ≥ 0, got {smooth}")
        if hausdorff_alpha <= 0:
            raise ConfigError(f"hausdorff_alpha must be positive, got {hausdorff_alpha}")
        if weights is not None and weighting != "fixed":
            raise ConfigError(f"weights are only used with weighting='fixed' (got weighting={weighting!r})")
        self.terms = terms
        self.shape_distance = shape_distance
        self.weighting = weighting
        self.dice_squared = dice_squared
        self.smooth = smooth
        self.hausdorff_alpha = hausdorff_alpha
        self.fixed_weights = self._fixed_weights(weights, terms)
        n = len(terms)
        if weighting == "learned":
            self.sigma = nn.Parameter(torch.ones(n))
        elif weighting == "kendall":
            self.log_var = nn.Parameter(torch.zeros(n))
        self._hausdorff = (
            HausdorffDTLoss(alpha=hausdorff_alpha, include_background=True, sigmoid=False)
            if shape_distance == "hausdorff_dt"
            else None
        )

    @staticmethod
    def _fixed_weights(
        weights: Mapping[str, float] | Sequence[float] | None, terms: tuple[str, ...]
    ) -> list[float]:
        if weights is None:
            return [1.0] * len(terms)
        if isinstance(weights, Mapping):
            extra = sorted(set(weights) - set(terms))
            if extra:
                raise ConfigError(f"weights for {extra}, which are not among the terms {list(terms)}")
            values = [float(weights.get(t, 1.0)) for t in terms]
        else:
            values = [float(w) for w in weights]
            if len(values) != len(terms):
                raise ConfigError(f"{len(values)} weights for {len(terms)} terms {list(terms)}")
        if any(w < 0 or not math.isfinite(w) for w in values):
            raise ConfigError(f"weights must be finite and ≥ 0, got {values}")
        return values

    def components(
        self, logits: ModelOutput, target: Tensor, batch: Mapping[str, Any] | None = None
    ) -> dict[str, Tensor]:
        """Each term's unweighted value, by name (for logging)."""
        x, _ = split_outputs(logits)
        x = _as_float(x)
        check_same_shape(x, target, "UMedSAMLoss")
        g = target.to(x.dtype)
        p = torch.sigmoid(x)
        out: dict[str, Tensor] = {}
        for term in self.terms:
            if term == "mse":
                out[term] = F.mse_loss(p, g)
            elif term == "dice":
                out[term] = soft_dice_loss(p, g, squared=self.dice_squared, smooth=self.smooth)
            elif term == "bce":
                out[term] = bce_with_logits(x, g)
            elif self._hausdorff is not None:
                out[term] = self._hausdorff(p, g)
            else:
                out[term] = sdm_loss(p, g)
        return out

    def effective_weights(self) -> dict[str, float]:
        """The current multiplier of each term: 1/(2σ²), ½·exp(−s) or the fixed weight."""
        if self.weighting == "learned":
            w = 1.0 / (2.0 * self.sigma.detach() ** 2)
        elif self.weighting == "kendall":
            w = 0.5 * torch.exp(-self.log_var.detach())
        else:
            w = torch.tensor(self.fixed_weights)
        return dict(zip(self.terms, w.tolist(), strict=True))

    def forward(self, logits: ModelOutput, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """The weighted total (a scalar); ``batch`` is unused."""
        terms = self.components(logits, target, batch)
        values = torch.stack([terms[t] for t in self.terms])
        if self.weighting == "learned":
            return uncertainty_weighted_sum(values, self.sigma)
        if self.weighting == "kendall":
            return kendall_weighted_sum(values, self.log_var)
        weights = torch.tensor(self.fixed_weights, dtype=values.dtype, device=values.device)
        return (weights * values).sum()

    def extra_repr(self) -> str:
        return (
            f"terms={list(self.terms)}, shape_distance={self.shape_distance!r}, weighting={self.weighting!r}"
        )


# --------------------------------------------------------------------------- LiteMedSAM baseline


class LiteMedSAMLoss(ModelOutputsLoss):
    """LiteMedSAM's training loss: Dice + BCE + MSE(IoU head, real IoU).

    As LiteMedSAM's ``train_one_gpu.py``: Dice is ``monai.losses.DiceLoss(sigmoid=True,
    squared_pred=True)`` (squared denominator, smooth 1e-5, per sample), BCE is
    ``BCEWithLogitsLoss``, and the IoU term is the MSE between the IoU head's prediction and the
    IoU of the thresholded prediction σ(logits) > 0.5 against the target, computed without
    gradient (:func:`mask_iou`; IoU 1 when both masks are empty, where LiteMedSAM divides 0 by 0).
    Weights 1, 1, 1 by default.

    ``logits`` is the training dict ``{"logits": B×1×H×W, "iou": B×1}``; a plain tensor (eval
    mode, no IoU head output) drops the IoU term and returns Dice + BCE.
    """

    def __init__(
        self,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        iou_weight: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        for name, w in (("dice_weight", dice_weight), ("bce_weight", bce_weight), ("iou_weight", iou_weight)):
            if w < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {w}")
        if smooth < 0:
            raise ConfigError(f"smooth must be ≥ 0, got {smooth}")
        self.dice_weight = float(dice_weight)
        self.bce_weight = float(bce_weight)
        self.iou_weight = float(iou_weight)
        self.smooth = smooth

    def components(
        self, logits: ModelOutput, target: Tensor, batch: Mapping[str, Any] | None = None
    ) -> dict[str, Tensor]:
        """Unweighted ``dice``, ``bce`` and (with the dict output) ``iou`` terms."""
        x, iou_pred = split_outputs(logits)
        x = _as_float(x)
        check_same_shape(x, target, "LiteMedSAMLoss")
        g = target.to(x.dtype)
        out = {
            "dice": soft_dice_loss(torch.sigmoid(x), g, squared=True, smooth=self.smooth),
            "bce": bce_with_logits(x, g),
        }
        if iou_pred is not None:
            iou_gt = mask_iou(x.detach() > 0, g)  # σ(x) > 0.5 ⇔ x > 0
            if iou_pred.shape != iou_gt.shape:
                raise ValueError(
                    f"LiteMedSAMLoss: IoU head shape {tuple(iou_pred.shape)} and the real IoU's shape "
                    f"{tuple(iou_gt.shape)} (B×K) differ"
                )
            out["iou"] = F.mse_loss(_as_float(iou_pred), iou_gt.to(x.dtype))
        return out

    def forward(self, logits: ModelOutput, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """dice_weight·Dice + bce_weight·BCE (+ iou_weight·MSE_IoU with the dict output)."""
        terms = self.components(logits, target, batch)
        total = self.dice_weight * terms["dice"] + self.bce_weight * terms["bce"]
        if "iou" in terms:
            total = total + self.iou_weight * terms["iou"]
        return total


@LOSSES.register("umedsam")
def umedsam(
    shape_distance: str = "sdm",
    weighting: str = "learned",
    weights: Mapping[str, float] | Sequence[float] | None = None,
    terms: Sequence[str] = TERMS,
    dice_squared: bool = True,
    smooth: float = 1e-5,
    hausdorff_alpha: float = 2.0,
) -> UMedSAMLoss:
    """U-MedSAM uncertainty-aware loss: MSE + Dice + BCE + shape distance, learned weights."""
    return UMedSAMLoss(shape_distance, weighting, weights, terms, dice_squared, smooth, hausdorff_alpha)


@LOSSES.register("litemedsam_baseline")
def litemedsam_baseline(
    dice_weight: float = 1.0, bce_weight: float = 1.0, iou_weight: float = 1.0, smooth: float = 1e-5
) -> LiteMedSAMLoss:
    """LiteMedSAM loss: Dice + BCE + MSE of the IoU head against the real IoU (dropped without it)."""
    return LiteMedSAMLoss(dice_weight, bce_weight, iou_weight, smooth)
