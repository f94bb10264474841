"""U-MedSAM's uncertainty-aware loss and the LiteMedSAM baseline loss, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

import medseg.losses as losses
from medseg.errors import ConfigError
from medseg.losses.umedsam import (
    LiteMedSAMLoss,
    UMedSAMLoss,
    kendall_weighted_sum,
    mask_iou,
    sdm_loss,
    signed_distance_map,
    split_outputs,
    uncertainty_weighted_sum,
)

# One row of five pixels, B×1×1×5: target 1 1 1 0 0.
X = [2.0, 0.0, -1.0, 0.0, 3.0]
G = [1.0, 1.0, 1.0, 0.0, 0.0]
P = [1.0 / (1.0 + math.exp(-x)) for x in X]
# Normalised SDM of G: inside d_in = 3, 2, 1 (max 3), outside d_out = 1, 2 (max 2).
ABS_PHI = [1.0, 2.0 / 3.0, 1.0 / 3.0, 0.5, 1.0]

MSE = sum((p - g) ** 2 for p, g in zip(P, G, strict=True)) / 5
BCE = -sum(g * math.log(p) + (1 - g) * math.log(1 - p) for p, g in zip(P, G, strict=True)) / 5
SMOOTH = 1e-5
DICE_SQ = 1 - (2 * sum(p * g for p, g in zip(P, G, strict=True)) + SMOOTH) / (
    sum(p * p for p in P) + sum(g * g for g in G) + SMOOTH
)
SDM = sum(a * abs(p - g) for a, p, g in zip(ABS_PHI, P, G, strict=True)) / 5
# Hausdorff DT (Karimi 2019, MONAI): prediction P > 0.5 is 1 0 0 0 1 → distance field 1 1 2 1 1;
# target field (distance to the other class) 3 2 1 1 2; loss = mean((p − g)²·(d_P² + d_G²)).
D_PRED = [1, 1, 2, 1, 1]
D_GT = [3, 2, 1, 1, 2]
HAUSDORFF = sum((p - g) ** 2 * (dp**2 + dg**2) for p, g, dp, dg in zip(P, G, D_PRED, D_GT, strict=True)) / 5


def _logits(requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(X, dtype=torch.float64).view(1, 1, 1, 5).requires_grad_(requires_grad)


def _target() -> torch.Tensor:
    return torch.tensor(G, dtype=torch.float64).view(1, 1, 1, 5)


def _loss(**options: object) -> UMedSAMLoss:
    return UMedSAMLoss(**options).double()  # type: ignore[arg-type]


def test_each_term_matches_the_hand_computed_value() -> None:
    terms = _loss().components(_logits(), _target())
    assert terms["mse"].item() == pytest.approx(MSE, rel=1e-12)
    assert terms["bce"].item() == pytest.approx(BCE, rel=1e-12)
    assert terms["dice"].item() == pytest.approx(DICE_SQ, rel=1e-12)
    assert terms["shape"].item() == pytest.approx(SDM, rel=1e-12)
    hd = _loss(shape_distance="hausdorff_dt").components(_logits(), _target())["shape"]
    assert hd.item() == pytest.approx(HAUSDORFF, rel=1e-6)


def test_plain_dice_when_not_squared() -> None:
    plain = 1 - (2 * sum(p * g for p, g in zip(P, G, strict=True)) + SMOOTH) / (sum(P) + sum(G) + SMOOTH)
    terms = _loss(dice_squared=False).components(_logits(), _target())
    assert terms["dice"].item() == pytest.approx(plain, rel=1e-12)


def test_signed_distance_map_by_hand_and_edge_cases() -> None:
    phi = signed_distance_map(_target())
    expected = torch.tensor([-1.0, -2.0 / 3.0, -1.0 / 3.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(phi.view(-1), expected)
    assert torch.equal(signed_distance_map(torch.zeros(1, 1, 3, 3)), torch.ones(1, 1, 3, 3))
    assert torch.equal(signed_distance_map(torch.ones(1, 1, 3, 3)), -torch.ones(1, 1, 3, 3))
    # per sample: a batch gives each sample its own normalisation
    batch = torch.stack([_target()[0], torch.zeros(1, 1, 5, dtype=torch.float64)])
    torch.testing.assert_close(signed_distance_map(batch)[0], phi[0])
    # 3D
    vol = torch.zeros(1, 1, 3, 3, 3)
    vol[0, 0, 1, 1, 1] = 1
    phi3 = signed_distance_map(vol)
    assert phi3[0, 0, 1, 1, 1] == -1.0 and phi3[0, 0, 0, 0, 0] == 1.0  # corner at √3, the farthest


def test_sdm_loss_is_zero_for_a_perfect_prediction_and_bounded() -> None:
    g = _target()
    assert sdm_loss(g, g).item() == 0.0
    assert 0.0 <= sdm_loss(1 - g, g).item() <= 1.0


def test_learned_weighting_at_sigma_one_is_half_the_terms_plus_log2() -> None:
    loss = _loss()
    assert torch.equal(loss.sigma.detach(), torch.ones(4, dtype=torch.float64))
    total = loss(_logits(), _target())
    expected = sum(v / 2 + math.log(2) for v in (MSE, DICE_SQ, BCE, SDM))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    assert loss.effective_weights() == {"mse": 0.5, "dice": 0.5, "bce": 0.5, "shape": 0.5}


def test_learned_weighting_formula_away_from_one() -> None:
    values = torch.tensor([0.3, 1.2], dtype=torch.float64)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    expected = 0.3 / (2 * 0.25) + math.log(1.25) + 1.2 / (2 * 4.0) + math.log(5.0)
    assert uncertainty_weighted_sum(values, sigma).item() == pytest.approx(expected, rel=1e-12)


def test_gradients_reach_sigma() -> None:
    loss = _loss()
    loss(_logits(), _target()).backward()
    # d/dσ [L/(2σ²) + log(1 + σ²)] = −L/σ³ + 2σ/(1 + σ²) = 1 − L at σ = 1
    expected = torch.tensor([1 - MSE, 1 - DICE_SQ, 1 - BCE, 1 - SDM], dtype=torch.float64)
    torch.testing.assert_close(loss.sigma.grad, expected)


def test_kendall_weighting_half_variant() -> None:
    loss = _loss(weighting="kendall")
    assert torch.equal(loss.log_var.detach(), torch.zeros(4, dtype=torch.float64))
    total = loss(_logits(), _target())
    assert total.item() == pytest.approx((MSE + DICE_SQ + BCE + SDM) / 2, rel=1e-12)
    total.backward()
    # d/ds [½e^{−s}L + ½s] = ½(1 − L) at s = 0
    expected = 0.5 * (1 - torch.tensor([MSE, DICE_SQ, BCE, SDM], dtype=torch.float64))
    torch.testing.assert_close(loss.log_var.grad, expected)
    s = torch.tensor([math.log(4.0)], dtype=torch.float64)  # σ² = 4
    value = kendall_weighted_sum(torch.tensor([2.0], dtype=torch.float64), s).item()
    assert value == pytest.approx(2.0 / 8 + math.log(2.0), rel=1e-12)  # L/(2σ²) + log σ


def test_fixed_weighting_and_term_subsets() -> None:
    loss = _loss(weighting="fixed", weights={"mse": 2.0, "shape": 0.5})
    assert list(loss.parameters()) == []
    expected = 2 * MSE + DICE_SQ + BCE + 0.5 * SDM
    assert loss(_logits(), _target()).item() == pytest.approx(expected, rel=1e-12)
    only_shape = _loss(weighting="fixed", terms=["shape"])
    assert only_shape(_logits(), _target()).item() == pytest.approx(SDM, rel=1e-12)
    listed = _loss(weighting="fixed", weights=[1, 0, 0, 0])
    assert listed(_logits(), _target()).item() == pytest.approx(MSE, rel=1e-12)


def test_dict_and_tensor_outputs_give_the_same_umedsam_loss() -> None:
    loss = _loss()
    as_tensor = loss(_logits(), _target())
    as_dict = loss({"logits": _logits(), "iou": torch.zeros(1, 1, dtype=torch.float64)}, _target())
    assert torch.equal(as_tensor, as_dict)


def test_litemedsam_baseline_by_hand() -> None:
    loss = losses.build("litemedsam_baseline")
    assert isinstance(loss, LiteMedSAMLoss)
    logits = _logits(requires_grad=True)
    iou_pred = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)
    terms = loss.components({"logits": logits, "iou": iou_pred}, _target())
    # prediction σ(x) > 0.5 is 1 0 0 0 1, target 1 1 1 0 0: IoU = 1/4
    assert terms["iou"].item() == pytest.approx((0.5 - 0.25) ** 2, rel=1e-12)
    assert terms["dice"].item() == pytest.approx(DICE_SQ, rel=1e-12)
    assert terms["bce"].item() == pytest.approx(BCE, rel=1e-12)
    total = loss({"logits": logits, "iou": iou_pred}, _target())
    assert total.item() == pytest.approx(DICE_SQ + BCE + 0.0625, rel=1e-12)
    # the real IoU is a detached target: the IoU term sends gradient to the head only
    terms["iou"].backward()
    assert logits.grad is None or torch.count_nonzero(logits.grad) == 0
    assert iou_pred.grad.item() == pytest.approx(2 * (0.5 - 0.25))


def test_litemedsam_baseline_drops_the_iou_term_on_a_tensor() -> None:
    loss = LiteMedSAMLoss().double()
    assert loss(_logits(), _target()).item() == pytest.approx(DICE_SQ + BCE, rel=1e-12)
    with pytest.raises(ValueError, match="IoU head shape"):
        loss({"logits": _logits(), "iou": torch.zeros(1, 2, dtype=torch.float64)}, _target())


def test_mask_iou_empty_masks_score_one() -> None:
    empty = torch.zeros(2, 1, 4, 4)
    full = torch.ones(2, 1, 4, 4)
    assert torch.equal(mask_iou(empty, empty), torch.ones(2, 1))
    assert torch.equal(mask_iou(full, empty), torch.zeros(2, 1))


def test_registry_options_and_errors() -> None:
    assert isinstance(losses.build("umedsam", shape_distance="hausdorff_dt"), UMedSAMLoss)
    with pytest.raises(ConfigError):
        losses.build("umedsam", shape_distance="sd")
    with pytest.raises(ConfigError):
        losses.build("umedsam", weighting="uniform")
    with pytest.raises(ConfigError, match="weighting='fixed'"):
        losses.build("umedsam", weights=[1, 1, 1, 1])
    with pytest.raises(ConfigError):
        losses.build("umedsam", weighting="fixed", weights=[1, 1])
    with pytest.raises(ConfigError):
        losses.build("umedsam", terms=["mse", "mse"])
    with pytest.raises(ValueError, match="shape"):
        UMedSAMLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="'logits'"):
        split_outputs({"iou": torch.zeros(1, 1)})


def test_half_precision_logits_and_3d_input() -> None:
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 6, 8, 8) > 0.5).float()
    logits = torch.randn(2, 1, 6, 8, 8).to(torch.bfloat16).requires_grad_()
    total = UMedSAMLoss()(logits, target)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()
