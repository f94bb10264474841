"""Loss maths as pure functions on tensors (MONAI's pattern: the function computes, a class configures).

Conventions: ``logits``/``probs`` are ``B×K×spatial``; ``target`` has the same shape (binary or
one-hot) unless stated. Everything is vectorised over the batch and stays on the input's device.
"""

from __future__ import annotations

from collections.abc import Sequence

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


# --------------------------------------------------------------------------------------------
# Annotation-guided losses: MicroSegNet's AG-BCE (Jiang et al. 2023, arXiv 2305.19956) and the
# adaptive focal loss of the micro-ultrasound capstone thesis (Thakur 2024, §3.3.3–§3.3.6).
# --------------------------------------------------------------------------------------------

AnnotationList = Tensor | Sequence[Tensor] | None


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half/bfloat16 inputs (AMP), the input's dtype for float32/float64."""
    return torch.promote_types(x.dtype, torch.float32)


def _log_sigmoid_eps(x: Tensor, eps: float) -> Tensor:
    """log(σ(x) + ε), finite with finite gradients for any logit; ε = 0 → ``logsigmoid(x)``.

    With ε > 0 the sigmoid is never clamped: σ(x) ∈ [0, 1] so σ(x) + ε ≥ ε, and d/dx =
    σ(x)·σ(−x) / (σ(x) + ε) is bounded. Call it with −x for log(1 − σ(x) + ε): σ(−x) is exact
    where 1 − σ(x) would cancel.
    """
    if eps < 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")
    if eps == 0:
        return F.logsigmoid(x)
    return torch.log(torch.sigmoid(x) + eps)


def _as_list(annotations: AnnotationList) -> list[Tensor]:
    if annotations is None:
        return []
    if isinstance(annotations, Tensor):
        return [annotations]
    return list(annotations)


def _dilate(x: Tensor, ks: int) -> Tensor:
    """Separable max filter over every dim after the first two, OpenCV anchor; keeps the dtype."""
    before = ks // 2  # OpenCV's default anchor (-1, -1) is the kernel centre (ks//2, ks//2)
    after = ks - 1 - before
    for dim in range(2, x.ndim):
        n = x.shape[dim]
        out = x.clone()
        for offset in range(-before, after + 1):
            if offset == 0 or abs(offset) >= n:
                continue
            length = n - abs(offset)
            dst = out.narrow(dim, max(0, -offset), length)  # out[i] = max(out[i], x[i + offset])
            torch.maximum(dst, x.narrow(dim, max(0, offset), length), out=dst)
        x = out
    return x


def dilate_mask(mask: Tensor, ks: int) -> Tensor:
    """Binary dilation with a ``ks×ks`` square (``ks×ks×ks`` cube in 3D), anchored as OpenCV does.

    Equivalent to ``cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_RECT, (ks, ks)))`` per 2D
    image, the operation MicroSegNet applies to the hard region (official ``utils.py``,
    ``attention_BCE_loss``). OpenCV's default anchor is the kernel centre ``(ks//2, ks//2)``, so
    output pixel ``i`` is the maximum of the input over offsets ``-(ks//2) … ks-1-ks//2``: for an
    odd ``ks`` the window is centred; for an even ``ks`` it reaches one pixel further back than
    forward (``ks = 4``: offsets −2…+1; ``ks = 2``: −1…0). ``ks = 1`` is the identity. Pixels
    outside the image never win (OpenCV's default border for dilation), as with zero padding
    for masks ≥ 0.

    Implemented as a separable max filter (a square is separable): ``ks − 1`` element-wise
    maxima of shifted views per spatial axis, i.e. ``max_pool`` with stride 1 and asymmetric
    zero padding for even ``ks``, without the padded copy. On the mask's device, vectorised over
    the batch; bool masks are dilated as bool.

    Args:
        mask: ``B×H×W``, ``B×C×H×W`` or ``B×C×D×H×W``, values ≥ 0 (bool, integer or float).
        ks: kernel size ≥ 1.

    Returns:
        A floating tensor with ``mask``'s shape (``mask``'s dtype if floating, else float32).
    """
    if ks < 1:
        raise ValueError(f"dilate_mask: kernel size must be ≥ 1, got {ks}")
    if mask.ndim not in (3, 4, 5):
        raise ValueError(f"dilate_mask expects B×H×W, B×C×H×W or B×C×D×H×W, got {tuple(mask.shape)}")
    x = mask.unsqueeze(1) if mask.ndim == 3 else mask
    out = _dilate(x, ks) if ks > 1 else x
    out = out.squeeze(1) if mask.ndim == 3 else out
    return out if out.is_floating_point() else out.to(torch.float32)


def _disagreement(reference: Tensor, others: list[Tensor]) -> Tensor:
    """Bool map of the pixels where not all of ``reference`` and ``others`` agree (binarised at 0.5)."""
    ref = reference >= 0.5
    disagree = torch.zeros_like(ref)
    for other in others:
        check_same_shape(reference, other, "hard region (annotations)")
        disagree |= (other >= 0.5) != ref
    return disagree


def hard_region(reference: Tensor, others: AnnotationList, ks: int = 1) -> Tensor:
    """MicroSegNet's hard region: where the annotators disagree, dilated by a ``ks×ks`` square.

    With one other annotator this is ``reference XOR other`` (MicroSegNet §2.3; thesis §3.3.6
    "hard = y_true ⊕ y_std"); with several it is the OR of the XORs with the reference, i.e. the
    pixels where not all annotators agree. Masks are binarised at 0.5 first. No other annotator
    gives an empty hard region. The result is float (``reference``'s dtype if floating), on
    ``reference``'s device, with ``reference``'s shape.
    """
    disagree = _disagreement(reference, _as_list(others))
    dtype = reference.dtype if reference.is_floating_point() else torch.float32
    return dilate_mask(disagree, ks).to(dtype)


def ag_bce(
    logits: Tensor,
    expert: Tensor,
    non_expert: AnnotationList,
    *,
    w_hard: float = 4.0,
    ks: int = 4,
    beta: float = 0.5,
    eps: float = 1e-6,
) -> Tensor:
    """Annotation-guided BCE (MicroSegNet, arXiv 2305.19956, §2.3 "AG-BCE loss"), a scalar.

    ``hard`` = (expert XOR non-expert) dilated by a ``ks×ks`` square (:func:`hard_region`,
    OpenCV anchor), ``easy = 1 − hard``. Per pixel (the official code's β-weighted BCE)

        ℓᵢ = −β·yᵢ·log(pᵢ + ε) − (1 − β)·(1 − yᵢ)·log(1 − pᵢ + ε),   p = σ(logits), y = expert,

    and, with W = W_hard / W_easy and N the number of elements (B·H·W for one channel),

        L = (Σ_easy ℓᵢ + W·Σ_hard ℓᵢ) / ((1 + W)·N).

    This is the official ``attention_BCE_loss(h_W, y_true, y_pred, y_std, ks)`` value
    (``((1/(1+h_W))·easy_loss + (h_W/(1+h_W))·hard_loss) / number_of_pixels``, β = 0.5). The
    official code uses W = 4 (its ``--weight`` default), the paper's text reports W = 12 as the
    best ratio: pass ``w_hard=12`` for that. The official ε = 1e-6 is kept (default), so the
    value equals the official one to float rounding; log(1 − p + ε) is computed as
    log(σ(−x) + ε) (no cancellation in 1 − σ(x)), nothing is clamped, and logits of ±100 give
    finite values and gradients. As in the official loss, ε caps a pixel's loss at
    −log ε ≈ 13.8 and its gradient vanishes for very wrong logits (|x| ≫ 14); ``eps=0`` uses
    ``logsigmoid(±x)`` instead (exact log-likelihood, no cap).

    Args:
        logits: ``B×1×H×W`` or ``B×H×W`` (any shape that the masks share).
        expert: the expert mask (the target), same shape.
        non_expert: the other annotation(s), same shape; several → hard where any disagree;
            ``None``/empty → empty hard region, L = mean(ℓ) / (1 + W).
        w_hard: W, the hard/easy weight ratio (> 0).
        ks: dilation kernel size (official: 4 at full resolution, 3, 2, 1 at ½, ¼, ⅛).
        beta: β ∈ [0, 1], weight of the foreground term (official 0.5).
        eps: ε inside the logs (official 1e-6; 0 for exact log-likelihoods).
    """
    check_same_shape(logits, expert, "ag_bce")
    if w_hard <= 0:
        raise ValueError(f"ag_bce: w_hard must be positive, got {w_hard}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"ag_bce: beta must be in [0, 1], got {beta}")
    x = logits.to(_compute_dtype(logits))
    y = expert.to(x.dtype)
    hard = hard_region(expert, _as_list(non_expert), ks).to(x.dtype)
    # log(σ(x) + ε) and log(1 − σ(x) + ε) = log(σ(−x) + ε), from the logits: finite for any logit.
    per_pixel = -(beta * y * _log_sigmoid_eps(x, eps) + (1.0 - beta) * (1.0 - y) * _log_sigmoid_eps(-x, eps))
    weight = 1.0 + (w_hard - 1.0) * hard  # W on hard pixels, 1 on easy ones
    return (per_pixel * weight).sum() / ((1.0 + w_hard) * per_pixel.numel())


def focal(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    alpha_mode: str = "balanced",
) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over elements; the thesis baseline (§3.3.1–§3.3.3).

    ``alpha_mode="balanced"`` is ``torchvision.ops.sigmoid_focal_loss(reduction="mean")``:
    FL = α_t·(1 − p_t)^γ·BCE with α_t = α for y = 1 and 1 − α for y = 0 (Lin et al. eq. 5).
    ``alpha_mode="uniform"`` is the thesis' §3.3.3 pseudocode ("focal_weight = α·(1 − p_t)^γ"),
    the same α on every pixel: α · torchvision's loss with α-weighting disabled. Defaults
    α = 0.25, γ = 2 (§3.2.4). The BCE factor is computed from logits (stable at ±100); γ < 1
    makes the gradient at p_t = 1 infinite, so keep γ = 0 or γ ≥ 1.
    """
    from torchvision.ops import sigmoid_focal_loss

    check_same_shape(logits, target, "focal")
    x = logits.to(_compute_dtype(logits))
    y = target.to(x.dtype)
    if alpha_mode == "balanced":
        return sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="mean")
    if alpha_mode == "uniform":
        return alpha * sigmoid_focal_loss(x, y, alpha=-1.0, gamma=gamma, reduction="mean")
    raise ValueError(f"focal: alpha_mode must be 'balanced' or 'uniform', got {alpha_mode!r}")


def adaptive_focal_gamma(logits: Tensor, y_std: AnnotationList) -> Tensor:
    """γ of the adaptive focal loss (thesis §3.3.6): sample_difficulty + annotation_variability.

    sample_difficulty = 1 − mean(σ(logits)) and annotation_variability = mean(y_std), both means
    over the whole batch (every pixel of every sample: one γ per call). With several second
    annotations, the variability is the mean over all of them. A 0-dim tensor, with gradient
    through the difficulty term (detach it to treat γ as a constant).
    """
    x = logits.to(_compute_dtype(logits))
    difficulty = 1.0 - torch.sigmoid(x).mean()
    others = _as_list(y_std)
    if not others:
        return difficulty
    variability = torch.stack([o.to(x.dtype).mean() for o in others]).mean()
    return difficulty + variability


def adaptive_focal(
    logits: Tensor,
    y_true: Tensor,
    y_std: AnnotationList,
    *,
    ks: int = 4,
    theta: float = 0.5,
    detach_gamma: bool = True,
    gamma_min: float = 1e-6,
    eps: float = 1e-6,
) -> Tensor:
    """Adaptive focal loss, thesis "Prostate cancer segmentation from micro-ultrasound images using
    adaptive focal loss" (Thakur 2024) §3.3.6, a scalar.

    Algorithm (§3.3.6, in order): hard = dilate(y_true ⊕ y_std, ks×ks) (:func:`hard_region`),
    easy = 1 − hard; per pixel FL = −θ·(1 − p_t)^γ·log(p_t + ε) with p_t = p if y = 1 else 1 − p,
    p = σ(logits); hard_loss = Σ FL·hard, easy_loss = Σ FL·easy; γ =
    :func:`adaptive_focal_gamma` = (1 − mean p) + mean(y_std);

        LOSS = (γ·hard_loss + easy_loss / γ) / N_pixels.

    Choices where the thesis is ambiguous:

    * **one γ for both roles.** §3.3.6 uses the same symbol in the focusing exponent
      (1 − p_t)^γ and in the hard/easy weights γ·, 1/γ; so do we (as does the public code that
      accompanies the pseudocode).
    * **probabilities, not logits.** "mean(y_pred) is the average prediction confidence", so
      the difficulty uses σ(logits) (1 − mean of logits would be unbounded).
    * **per batch.** Means and sums run over the whole batch (one γ per call) and
      N_pixels = B·C·H·W, as in the AG-BCE code the loss is derived from
      (``number_of_pixels = y_true.shape[0]·shape[1]·shape[2]`` on B×H×W tensors).
    * **γ is a constant for autograd** (``detach_gamma=True``, like the reference's
      ``.item()``); ``detach_gamma=False`` also back-propagates through the difficulty term.
    * **θ = 0.5** (§3.3.6 leaves θ, §3.3.9's β, unspecified; 0.5 is AG-BCE's β).
    * **stability.** log(p_t + ε) = log(σ(±logits) + ε) (ε = 1e-6 as in the reference; nothing
      clamped; ``eps=0`` → logsigmoid) and (1 − p_t)^γ = exp(γ·logsigmoid(∓logits)):
      finite values and gradients at any logit and any γ ≥ 0 (a plain ``(1 − p_t) ** γ`` has
      an infinite derivative at p_t = 1 when γ < 1). γ is clamped to ≥ ``gamma_min`` so that
      1/γ stays finite.
    * Targets are binarised at 0.5 for p_t (the reference tests ``y_true == 1``); y_std enters
      the variability as given.
    * **no second annotation** (``y_std=None`` or empty): y_std is taken equal to y_true, as if
      the annotators agreed: empty hard region, variability = mean(y_true), so γ keeps the scale
      it has on batches that do have a second annotation.

    Args:
        logits: ``B×1×H×W`` or ``B×H×W``.
        y_true: expert mask, same shape.
        y_std: the second annotation(s) ("y_std" in the thesis), same shape.
        ks: dilation kernel (OpenCV anchor, as in AG-BCE).
        theta: θ, the constant factor of the focal term.
        detach_gamma: treat γ as a constant (no gradient through it).
        gamma_min: lower clamp of γ.
        eps: ε inside the log (1e-6).
    """
    check_same_shape(logits, y_true, "adaptive_focal")
    x = logits.to(_compute_dtype(logits))
    others = [o.to(x.dtype) for o in _as_list(y_std)] or [y_true.to(x.dtype)]
    hard = hard_region(y_true, others, ks).to(x.dtype)
    gamma = adaptive_focal_gamma(x, others).clamp_min(gamma_min)
    if detach_gamma:
        gamma = gamma.detach()
    z = torch.where(y_true >= 0.5, x, -x)  # p_t = σ(z), 1 − p_t = σ(−z)
    per_pixel = -theta * torch.exp(gamma * F.logsigmoid(-z)) * _log_sigmoid_eps(z, eps)
    hard_loss = (per_pixel * hard).sum()
    easy_loss = (per_pixel * (1.0 - hard)).sum()
    return (gamma * hard_loss + easy_loss / gamma) / per_pixel.numel()


# --------------------------------------------------------------------------------------------
# Shared by the loss zoo: logits → probabilities and a dense target, AMP-safe.
# --------------------------------------------------------------------------------------------

ACTIVATIONS = ("auto", "sigmoid", "softmax", "none")


def activate(logits: Tensor, activation: str = "auto") -> Tensor:
    """Probabilities from logits: ``auto`` is sigmoid for K = 1 channel and softmax for K ≥ 2.

    ``none`` returns the input unchanged (it already holds probabilities).
    """
    if activation == "auto":
        activation = "sigmoid" if logits.shape[1] == 1 else "softmax"
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "none":
        return logits
    raise ValueError(f"unknown activation '{activation}'. Available: {', '.join(ACTIVATIONS)}")


def probabilities_and_target(
    logits: Tensor,
    target: Tensor,
    name: str = "loss",
    activation: str = "auto",
    include_background: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(probs, dense target)``, both ``B×K'×spatial`` in float32 or float64, for region losses.

    Half-precision logits (AMP) are cast to float32 first, as :class:`DiceLoss` does: the spatial
    sums overflow float16 on a 256×256 image. The target may be ``B×1×spatial`` class indices
    when K ≥ 2 (:func:`dense_target`). With K ≥ 2 and ``include_background=False`` channel 0 is
    dropped (K' = K − 1); for K = 1 the single sigmoid channel is the foreground and is kept.
    """
    logits = logits.to(_compute_dtype(logits))
    dense = dense_target(logits, target, name)
    probs = activate(logits, activation)
    if not include_background and logits.shape[1] > 1:
        probs, dense = probs[:, 1:], dense[:, 1:]
    return probs, dense


def require_binary(logits: Tensor, name: str) -> None:
    """Raise ``ValueError`` unless ``logits`` is ``B×1×spatial`` (one sigmoid channel)."""
    if logits.ndim < 3 or logits.shape[1] != 1:
        raise ValueError(
            f"{name} is a binary loss: it expects B×1×spatial logits (one sigmoid channel), got "
            f"{tuple(logits.shape)}; for K ≥ 2 softmax channels use 'ce' (class_weights) or a region loss"
        )
