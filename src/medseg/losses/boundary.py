"""Boundary-based losses of the loss zoo: shape-aware CE, Hausdorff-DT (MONAI), boundary loss.

Each needs a distance map of the ground truth. Distance maps are computed from the target only,
under ``torch.no_grad``, on the CPU with ``scipy.ndimage.distance_transform_edt``, one call per
sample (and channel), for 2D and 3D alike, then moved to the logits' device: no gradient flows
through a distance. This is the one per-sample loop of these losses (scipy has no batched EDT);
it costs a few milliseconds per 256×256 image (``benchmarks/loss_speed.py``).

Masks are binarised at 0.5. A mask that is empty or full has no contour; what each loss does then
is stated in its docstring (never NaN).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.functional import (
    ACTIVATIONS,
    _compute_dtype,
    check_same_shape,
    dense_target,
    probabilities_and_target,
    soft_dice_loss,
)
from medseg.losses.registry import LOSSES


def _binary_masks(target: Tensor) -> np.ndarray:
    """``target ≥ 0.5`` as a bool numpy array on the CPU (no gradient)."""
    return (target.detach() >= 0.5).cpu().numpy()


def _check_spatial(x: Tensor, name: str) -> None:
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} expects B×K×H×W or B×K×D×H×W, got {tuple(x.shape)}")


def _inner_contour(mask: np.ndarray) -> np.ndarray:
    """Foreground elements with a face neighbour in the background; the image border is not a contour."""
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


@torch.no_grad()
def contour_distance_map(
    target: Tensor, spacing: Sequence[float] | None = None, normalize: bool = False
) -> Tensor:
    """Euclidean distance from every element to the nearest ground-truth contour, ``B×1×spatial``.

    Per sample, the contour is the union over the channels of each channel's inner contour
    (foreground elements with a face neighbour in the background, :func:`_inner_contour`), and
    D = ``distance_transform_edt(~contour, sampling=spacing)``: 0 on the contour, in pixels
    (or in the units of ``spacing``, one value per spatial axis). ``normalize=True`` divides each
    sample's map by its maximum, so D ∈ [0, 1]. A sample without any contour (every channel
    empty or full) gets D = 0. ``target`` is ``B×C×spatial`` binary/one-hot; pass the foreground
    channels only (e.g. drop the background channel of a one-hot target).
    """
    _check_spatial(target, "contour_distance_map")
    masks = _binary_masks(target)
    out = np.zeros((masks.shape[0], 1, *masks.shape[2:]), dtype=np.float32)
    for b in range(masks.shape[0]):
        contour = np.zeros(masks.shape[2:], dtype=bool)
        for mask in masks[b]:
            if mask.any() and not mask.all():
                contour |= _inner_contour(mask)
        if not contour.any():
            continue  # no contour: D = 0, the loss reduces to plain CE for this sample
        distance = ndimage.distance_transform_edt(~contour, sampling=spacing)
        if normalize and distance.max() > 0:
            distance = distance / distance.max()
        out[b, 0] = distance
    dtype = target.dtype if target.is_floating_point() else torch.float32
    return torch.from_numpy(out).to(device=target.device, dtype=dtype)


@torch.no_grad()
def boundary_signed_distance(target: Tensor) -> Tensor:
    """Kervadec et al.'s signed distance φ_G per sample and channel, ``target``'s shape, in pixels.

    As the authors' ``one_hot2dist`` (LIVIAETS/boundary-loss, ``utils.py``): with G the mask,
    φ = edt(¬G)·¬G − (edt(G) − 1)·G, i.e. outside the object the distance to the nearest
    object element (≥ 1), inside minus the distance to the nearest background element plus one
    (≤ 0, 0 on the inner contour). Negative inside, positive outside. A channel that is empty
    or full has no contour: φ = 0 there (the authors' code does so for empty masks; scipy's
    EDT of an all-true array is not a distance to anything, so full masks are treated alike).
    """
    _check_spatial(target, "boundary_signed_distance")
    masks = _binary_masks(target)
    out = np.zeros(masks.shape, dtype=np.float32)
    for b, c in itertools.product(range(masks.shape[0]), range(masks.shape[1])):
        mask = masks[b, c]
        if not mask.any() or mask.all():
            continue
        outside = ~mask
        out[b, c] = (
            ndimage.distance_transform_edt(outside) * outside
            - (ndimage.distance_transform_edt(mask) - 1.0) * mask
        )
    dtype = target.dtype if target.is_floating_point() else torch.float32
    return torch.from_numpy(out).to(device=target.device, dtype=dtype)


def shape_aware_ce(logits: Tensor, target: Tensor, distance: Tensor) -> Tensor:
    """Shape-aware cross-entropy, L = mean_i (1 + D_i)·CE_i, a scalar.

    CE_i is the per-element BCE on logits (K = 1) or the softmax CE of element i (K ≥ 2, target
    one-hot or ``B×1×spatial`` indices); D is ``B×1×spatial`` (:func:`contour_distance_map`),
    a constant for autograd.
    """
    x = logits.to(_compute_dtype(logits))
    if x.shape[1] == 1:
        check_same_shape(x, target, "shape_aware")
        per_element = F.binary_cross_entropy_with_logits(x, target.to(x.dtype), reduction="none")
    else:
        dense = dense_target(x, target, "shape_aware")
        labels = dense.argmax(1) if target.shape == x.shape else target[:, 0].long()
        per_element = F.cross_entropy(x, labels, reduction="none").unsqueeze(1)
    return ((1.0 + distance.to(x.dtype)) * per_element).mean()


def boundary_loss(probs: Tensor, phi: Tensor) -> Tensor:
    """Kervadec et al. 2019 boundary loss, L_B = mean over elements (and channels) of φ_G·s_θ.

    The discrete form of L_B(θ) = ∫_Ω φ_G(q)·s_θ(q) dq (Kervadec et al., "Boundary loss for
    highly unbalanced segmentation", MIDL 2019 / MedIA 2021, §2), with s_θ the softmax/sigmoid
    probabilities and φ_G :func:`boundary_signed_distance`; the mean replaces the integral's sum, as
    the authors' ``SurfaceLoss`` does. The minimum is negative (all of the object predicted,
    nothing outside).
    """
    check_same_shape(probs, phi, "boundary_loss")
    return (probs * phi.to(probs.dtype)).mean()


class ShapeAwareLoss(nn.Module):
    """Shape-aware loss (Jadon 2020 survey, CIBCB; paper 004 §5.3), medseg's per-pixel reading.

    L = mean_i (1 + D_i)·CE_i, with D_i the Euclidean distance from element i to the nearest
    ground-truth contour (:func:`contour_distance_map`: scipy EDT of the target on the CPU,
    no gradient through D), in pixels or in ``spacing`` units, divided by its per-sample maximum
    with ``normalize=True``.

    The survey (and paper 004 §5.3) describe the coefficient as "the average point-to-curve
    Euclidean distance among points around the curve of the predicted segmentation to the
    ground truth", L = Σ CE + Σ E_i·CE, with E_i = D(Ĉ, C_GT). That needs a contour of the
    thresholded prediction and leaves empty predictions undefined. medseg's interpretation
    weights each element's CE by its own point-to-curve distance to the GT contour: an error
    far from the true boundary (a shape error) costs more than one on it, the weights depend on
    the target only (fixed per sample, nothing thresholded), and the loss is exactly CE where
    D = 0. Empty or full targets have no contour: D = 0, so the loss is plain CE.

    Args:
        normalize: divide D by its per-sample maximum (weights in [1, 2]); default pixels.
        spacing: element spacing per spatial axis for the EDT (default 1 per axis).
        include_background: K ≥ 2 only: whether channel 0's contour counts (default: the
            foreground classes' contours, which for K = 2 equals the K = 1 sigmoid case).
    """

    def __init__(
        self,
        normalize: bool = False,
        spacing: Sequence[float] | None = None,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        if spacing is not None and any(s <= 0 for s in spacing):
            raise ConfigError(f"spacing must be positive, got {spacing}")
        self.normalize = normalize
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar shape-aware loss; ``batch`` is unused."""
        _check_spatial(logits, "shape_aware")
        dense = dense_target(logits, target, "shape_aware")
        if logits.shape[1] > 1 and not self.include_background:
            dense = dense[:, 1:]
        if self.spacing is not None and len(self.spacing) != logits.ndim - 2:
            raise ValueError(f"shape_aware: {len(self.spacing)} spacings for {logits.ndim - 2} spatial dims")
        distance = contour_distance_map(dense, self.spacing, self.normalize)
        return shape_aware_ce(logits, target, distance)


class HausdorffDTLoss(nn.Module):
    """Hausdorff distance-transform loss (Karimi & Salcudean 2020, IEEE TMI 39(2), "HD_DT" loss).

    L = mean over elements of (p − g)² ∘ (d_p^α + d_g^α), with d_g and d_p the unsigned distance
    maps of the target and of the thresholded prediction (p > 0.5), per channel, averaged over
    samples and channels. A wrapper of ``monai.losses.HausdorffDTLoss`` (MONAI 1.6) that takes
    logits: medseg applies the activation (sigmoid for K = 1, softmax for K ≥ 2), builds the
    one-hot target, drops the background channel, casts AMP logits to float32, and hands
    probabilities to MONAI (``sigmoid=False, softmax=False, include_background=True``).
    MONAI computes the distance maps under ``no_grad`` with scipy on the CPU (cuCIM on a GPU
    when installed). Empty or full masks: MONAI sets that distance map to 0 (so an empty target
    with an empty prediction gives 0, and predicted foreground on an empty target is still
    penalised through d_p).

    Args:
        alpha: exponent α of the distances (2, the paper's and MONAI's default).
        activation: ``auto``, ``sigmoid``, ``softmax`` or ``none``.
        include_background: K ≥ 2 only: keep channel 0 (default False, as MONAI).
        batch_dice: average over the batch before the channels (MONAI's ``batch=True``).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        activation: str = "auto",
        include_background: bool = False,
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        from monai.losses import HausdorffDTLoss as MonaiHausdorffDTLoss

        if alpha <= 0:
            raise ConfigError(f"alpha must be positive, got {alpha}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}'. Available: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.include_background = include_background
        self.monai_loss = MonaiHausdorffDTLoss(
            alpha=alpha,
            include_background=True,
            sigmoid=False,
            softmax=False,
            reduction="mean",
            batch=batch_dice,
        )

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar Hausdorff-DT loss; ``batch`` is unused."""
        _check_spatial(logits, "hausdorff_dt")
        probs, dense = probabilities_and_target(
            logits, target, "hausdorff_dt", self.activation, self.include_background
        )
        return self.monai_loss(probs, dense)


class BoundaryLoss(nn.Module):
    """Boundary loss (Kervadec et al. 2019; :func:`boundary_loss`), optionally plus Dice.

    L = region_weight·DiceLoss + L_B, L_B = mean φ_G·s_θ with φ_G the signed distance map of the
    target (:func:`boundary_signed_distance`: negative inside, positive outside, in pixels; scipy on
    the CPU, no gradient). The paper trains α·L_region + (1 − α)·L_B (MedIA) or L_region + α·L_B
    (MIDL) with a scheduled α; the schedule is out of scope here: ``region_weight`` is fixed,
    default 0 (the bare L_B; combine by config, e.g. ``"dice+0.01*boundary"``, or set
    ``region_weight``). The paper notes that L_B alone can collapse to an empty prediction.

    Empty-mask policy: a channel whose target is empty (or full) has φ = 0, so it adds 0 to
    L_B (as the authors' code) and is supervised only by the region term; no NaN.

    Args:
        region_weight: weight of the soft Dice term (0: boundary loss only).
        activation: ``auto`` (sigmoid for K = 1, softmax for K ≥ 2), ``sigmoid``, ``softmax``, ``none``.
        include_background: K ≥ 2 only: include channel 0 (default False: the paper applies L_B
            to the foreground classes).
    """

    def __init__(
        self, region_weight: float = 0.0, activation: str = "auto", include_background: bool = False
    ) -> None:
        super().__init__()
        if region_weight < 0:
            raise ConfigError(f"region_weight must be ≥ 0, got {region_weight}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}'. Available: {', '.join(ACTIVATIONS)}")
        self.region_weight = float(region_weight)
        self.activation = activation
        self.include_background = include_background

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar boundary loss (plus weighted Dice); ``batch`` is unused."""
        _check_spatial(logits, "boundary")
        probs, dense = probabilities_and_target(
            logits, target, "boundary", self.activation, self.include_background
        )
        loss = boundary_loss(probs, boundary_signed_distance(dense))
        if self.region_weight > 0:
            loss = loss + self.region_weight * soft_dice_loss(probs, dense)
        return loss


@LOSSES.register("shape_aware")
def shape_aware(
    normalize: bool = False, spacing: Sequence[float] | None = None, include_background: bool = False
) -> ShapeAwareLoss:
    """Shape-aware loss (Jadon 2020): CE weighted by 1 + distance to the ground-truth contour."""
    return ShapeAwareLoss(normalize, spacing, include_background)


@LOSSES.register("hausdorff_dt")
def hausdorff_dt(
    alpha: float = 2.0, activation: str = "auto", include_background: bool = False, batch_dice: bool = False
) -> HausdorffDTLoss:
    """Hausdorff distance-transform loss (Karimi & Salcudean 2020), MONAI's HausdorffDTLoss on logits."""
    return HausdorffDTLoss(alpha, activation, include_background, batch_dice)


@LOSSES.register("boundary")
def boundary(
    region_weight: float = 0.0, activation: str = "auto", include_background: bool = False
) -> BoundaryLoss:
    """Boundary loss (Kervadec et al. 2019): mean signed GT distance × probability, optional + Dice."""
    return BoundaryLoss(region_weight, activation, include_background)
