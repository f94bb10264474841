"""Annotation-guided losses that read every annotator from ``batch["masks"]``.

* :class:`AGBCELoss` (``ag_bce``): MicroSegNet's annotation-guided BCE (Jiang et al. 2023,
  arXiv 2305.19956, §2.3), value-identical to the official ``attention_BCE_loss``.
* ``ag_bce_ds`` (:func:`ag_bce_ds_loss`): MicroSegNet's multi-scale deep supervision (§2.2) for
  the outputs ``[full, 1/2, 1/4, 1/8]``, a :class:`DeepSupervisionLoss` with AG-BCE per scale.
* :class:`AdaptiveFocalLoss` (``adaptive_focal``): the adaptive focal loss of the capstone
  thesis (Thakur 2024, §3.3.6).

Annotators: the ``target`` argument is the expert's mask; the other annotators are
``batch["masks"][name]`` for every name in ``others`` (default: every tensor in
``batch["masks"]`` except ``expert``). With two or more annotators the hard region is where not
all of them agree. A batch without a second annotator falls back to the formula with an empty
hard region (as if the annotators agreed) and warns once per loss instance.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.ce import BCELoss
from medseg.losses.deep_supervision import MODES, DeepSupervisionLoss
from medseg.losses.functional import adaptive_focal, ag_bce, check_same_shape
from medseg.losses.registry import LOSSES

INTERMEDIATE = ("ag_bce", "bce")


def _check_ks(ks: int) -> int:
    if int(ks) != ks or ks < 1:
        raise ConfigError(f"dilation kernel size must be an integer ≥ 1, got {ks}")
    return int(ks)


class _AnnotatorMixin:
    """Finds the non-expert annotations of a batch and warns once when there are none."""

    expert: str
    others: tuple[str, ...] | None
    _warned: bool

    def _init_annotators(self, expert: str, others: Sequence[str] | None) -> None:
        if isinstance(others, str):
            others = [others]
        if others is not None and expert in others:
            raise ConfigError(f"the expert annotator '{expert}' is also listed in others={list(others)}")
        self.expert = expert
        self.others = None if others is None else tuple(others)
        self._warned = False

    def other_annotations(self, target: Tensor, batch: Mapping[str, Any] | None) -> list[Tensor]:
        """The non-expert masks of ``batch`` (shape-checked against ``target``), maybe empty.

        ``others=None``: every tensor in ``batch["masks"]`` except ``expert``; an explicit list of
        names must all be present (``ValueError`` otherwise).
        """
        masks = batch.get("masks") if isinstance(batch, Mapping) else None
        masks = masks if isinstance(masks, Mapping) else {}
        if self.others is None:
            names = [k for k, v in masks.items() if k != self.expert and isinstance(v, Tensor)]
            if masks and self.expert not in masks and not self._warned:
                self._warned = True
                warnings.warn(
                    f"{type(self).__name__}: expert '{self.expert}' is not among batch['masks'] "
                    f"{sorted(masks)}; every mask is treated as another annotator (set expert= to "
                    "the target annotator's name)",
                    stacklevel=3,
                )
        else:
            missing = [k for k in self.others if k not in masks]
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: annotators {missing} not in batch['masks'] (has {sorted(masks)})"
                )
            names = list(self.others)
        annotations = []
        for name in names:
            mask = masks[name]
            check_same_shape(target, mask, f"{type(self).__name__} (target vs masks['{name}'])")
            annotations.append(mask.to(target.device))
        if not annotations and not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__}: no annotator besides '{self.expert}' in batch['masks'] "
                f"(has {sorted(masks)}); the hard region is empty, falling back to the "
                "formula without hard pixels (see the class docstring)",
                stacklevel=3,
            )
        return annotations


class AGBCELoss(_AnnotatorMixin, nn.Module):
    """MicroSegNet's annotation-guided BCE (arXiv 2305.19956, §2.3); see :func:`ag_bce`.

    L = (Σ_easy ℓ + W·Σ_hard ℓ) / ((1 + W)·N), ℓ = −β·y·log p − (1 − β)·(1 − y)·log(1 − p),
    hard = (expert XOR others) dilated by a ``ks×ks`` square (OpenCV anchor), easy = 1 − hard.

    Args:
        w_hard: W = W_hard / W_easy. Default 4, the official code's ``--weight``; the paper's
            text reports 12 as the best ratio.
        ks: dilation kernel size (official: 4 at full resolution).
        beta: β, weight of the foreground term (official 0.5).
        expert: the name of the target annotator in ``batch["masks"]`` (excluded from others;
            a warning is issued once if it is absent while other masks are present).
        others: names of the other annotators; default all of ``batch["masks"]`` but ``expert``.
        eps: ε inside the logs, log(p + ε) (official 1e-6, computed stably from the logits).

    Fallback: with no other annotator in the batch the hard region is empty and the loss is
    mean(ℓ) / (1 + W), i.e. β-weighted BCE (β = 0.5: half the BCE) scaled by 1/(1 + W) — the value
    the formula gives when the annotators agree everywhere. A warning is issued once.
    """

    def __init__(
        self,
        w_hard: float = 4.0,
        ks: int = 4,
        beta: float = 0.5,
        expert: str = "expert",
        others: Sequence[str] | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if w_hard <= 0:
            raise ConfigError(f"w_hard must be positive, got {w_hard}")
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"beta must be in [0, 1], got {beta}")
        self.w_hard = float(w_hard)
        self.ks = _check_ks(ks)
        self.beta = float(beta)
        if eps < 0:
            raise ConfigError(f"eps must be ≥ 0, got {eps}")
        self.eps = float(eps)
        self._init_annotators(expert, others)

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar AG-BCE; the other annotators come from ``batch["masks"]``."""
        check_same_shape(logits, target, "AGBCELoss")
        others = self.other_annotations(target, batch)
        return ag_bce(logits, target, others, w_hard=self.w_hard, ks=self.ks, beta=self.beta, eps=self.eps)


class AdaptiveFocalLoss(_AnnotatorMixin, nn.Module):
    """Adaptive focal loss (Thakur 2024, §3.3.6); see :func:`adaptive_focal` for the formula and
    the choices made where the thesis is ambiguous.

    LOSS = (γ·Σ_hard FL + Σ_easy FL / γ) / N, FL = −θ·(1 − p_t)^γ·log p_t,
    γ = (1 − mean σ(logits)) + mean(y_std), hard = dilate(y_true ⊕ y_std).

    Args:
        ks: dilation kernel size (OpenCV anchor).
        theta: θ, constant factor of the focal term (0.5).
        detach_gamma: γ is a constant for autograd (the reference computes it with ``.item()``).
        expert: the target annotator, as in :class:`AGBCELoss`.
        others: the other annotators, as in :class:`AGBCELoss`; with several, y_std is all of them
            (hard where any disagree, variability = mean over them).
        eps: ε in log(p_t + ε) (1e-6, computed stably from the logits).

    Fallback: with no other annotator, y_std is taken equal to the target (empty hard region,
    variability = mean(target)); a warning is issued once.
    """

    def __init__(
        self,
        ks: int = 4,
        theta: float = 0.5,
        detach_gamma: bool = True,
        expert: str = "expert",
        others: Sequence[str] | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if theta <= 0:
            raise ConfigError(f"theta must be positive, got {theta}")
        self.ks = _check_ks(ks)
        self.theta = float(theta)
        self.detach_gamma = bool(detach_gamma)
        if eps < 0:
            raise ConfigError(f"eps must be ≥ 0, got {eps}")
        self.eps = float(eps)
        self._init_annotators(expert, others)

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """Scalar adaptive focal loss; the other annotators come from ``batch["masks"]``."""
        check_same_shape(logits, target, "AdaptiveFocalLoss")
        others = self.other_annotations(target, batch)
        return adaptive_focal(
            logits,
            target,
            others,
            ks=self.ks,
            theta=self.theta,
            detach_gamma=self.detach_gamma,
            eps=self.eps,
        )


@LOSSES.register("ag_bce")
def ag_bce_loss(
    w_hard: float = 4.0,
    ks: int = 4,
    beta: float = 0.5,
    expert: str = "expert",
    others: Sequence[str] | None = None,
    eps: float = 1e-6,
) -> AGBCELoss:
    """MicroSegNet annotation-guided BCE: hard = dilated expert XOR others, weight w_hard (4; paper 12)."""
    return AGBCELoss(w_hard=w_hard, ks=ks, beta=beta, expert=expert, others=others, eps=eps)


@LOSSES.register("ag_bce_ds")
def ag_bce_ds_loss(
    w_hard: float = 4.0,
    ks_per_scale: Sequence[int] = (4, 3, 2, 1),
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    intermediate: str = "ag_bce",
    target_downsample: str = "area",
    beta: float = 0.5,
    expert: str = "expert",
    others: Sequence[str] | None = None,
    eps: float = 1e-6,
) -> DeepSupervisionLoss:
    """MicroSegNet multi-scale AG-BCE for [full, 1/2, 1/4, 1/8] outputs (ks 4, 3, 2, 1, summed).

    A :class:`~medseg.losses.deep_supervision.DeepSupervisionLoss` with one loss per scale
    (arXiv 2305.19956, §2.2). The full-resolution output always gets AG-BCE with
    ``ks_per_scale[0]``; the other scales get

    * ``intermediate="ag_bce"`` (default): AG-BCE with that scale's kernel — the official code
      (``trainer_MicroUS.py``: ks = 4, 3, 2, 1 at full, ½, ¼, ⅛, the four losses summed);
    * ``intermediate="bce"``: plain mean BCE on logits, as the paper's text says ("the BCE loss
      is applied to predictions generated by intermediate layers, while the AG-BCE loss is
      applied to predictions for the final output layer").

    Targets and every tensor in ``batch["masks"]`` are downsampled from full resolution to each
    output's size with ``target_downsample`` (:func:`~medseg.losses.deep_supervision.downsample_mask`):
    ``area`` (default), ``nearest``, or ``official`` (bilinear then truncation). ``weights`` are
    used as given (official: all 1, a plain sum).
    """
    if intermediate not in INTERMEDIATE:
        raise ConfigError(f"unknown intermediate loss '{intermediate}'. Available: {', '.join(INTERMEDIATE)}")
    if target_downsample not in MODES:
        raise ConfigError(f"unknown target_downsample '{target_downsample}'. Available: {', '.join(MODES)}")
    if len(ks_per_scale) == 0 or len(weights) != len(ks_per_scale):
        raise ConfigError(
            f"need one weight per scale: ks_per_scale={list(ks_per_scale)}, weights={list(weights)}"
        )
    if any(w < 0 for w in weights):
        raise ConfigError(f"weights must be non-negative, got {list(weights)}")
    kernels = [_check_ks(k) for k in ks_per_scale]
    scale_losses: list[nn.Module] = [
        AGBCELoss(w_hard=w_hard, ks=k, beta=beta, expert=expert, others=others, eps=eps)
        if scale == 0 or intermediate == "ag_bce"
        else BCELoss()
        for scale, k in enumerate(kernels)
    ]
    return DeepSupervisionLoss(scale_losses, [float(w) for w in weights], mode=target_downsample)


@LOSSES.register("adaptive_focal")
def adaptive_focal_loss(
    ks: int = 4,
    theta: float = 0.5,
    detach_gamma: bool = True,
    expert: str = "expert",
    others: Sequence[str] | None = None,
    eps: float = 1e-6,
) -> AdaptiveFocalLoss:
    """Adaptive focal loss (thesis §3.3.6): gamma = difficulty + variability weights hard/easy regions."""
    return AdaptiveFocalLoss(
        ks=ks, theta=theta, detach_gamma=detach_gamma, expert=expert, others=others, eps=eps
    )
