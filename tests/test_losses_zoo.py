"""The loss zoo: hand-computed values, gradients, 2D/3D, empty masks, registry, sums."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import medseg.losses as losses
from medseg.errors import ConfigError
from medseg.losses.boundary import boundary_signed_distance, contour_distance_map
from medseg.losses.compound_zoo import log_probabilities
from medseg.losses.distribution import wbce_weight_map
from medseg.losses.functional import one_hot

NEW = [
    "wbce",
    "balanced_ce",
    "jaccard",
    "tversky",
    "focal_tversky",
    "logcosh_dice",
    "sens_spec",
    "shape_aware",
    "hausdorff_dt",
    "boundary",
    "combo",
    "exp_log",
]
ALL_15 = ["bce", "focal", "dice", *NEW]
BINARY_ONLY = ["wbce", "balanced_ce"]
SIGMOID_EQUALS_SOFTMAX = [
    "jaccard",
    "tversky",
    "focal_tversky",
    "logcosh_dice",
    "sens_spec",
    "boundary",
    "hausdorff_dt",
]

# The 2×2 example of test_losses.py: target g = [[1, 0], [1, 0]], σ(X) = [[0.5, 0.75], [0.25, 0.25]].
G = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
LN2, LN3, LN4, LN43 = math.log(2.0), math.log(3.0), math.log(4.0), math.log(4.0 / 3.0)
X = torch.tensor([[0.0, LN3], [-LN3, -LN3]]).view(1, 1, 2, 2)
# Per-element BCE of X against G: −ln 0.5, −ln 0.25, −ln 0.25, −ln 0.75.
BCE_G = [LN2, LN4, LN4, LN43]
# Sums for p = σ(X), g = G: TP = Σpg = 0.5 + 0.25 = 0.75; Σp = 1.75; Σg = 2;
# FP = Σp(1 − g) = 0.75 + 0.25 = 1.0; FN = Σ(1 − p)g = 0.5 + 0.75 = 1.25.


def _square(shape: tuple[int, ...]) -> Tensor:
    """B×1×spatial target: a centred block of half the size in every spatial dim."""
    target = torch.zeros(shape)
    index = (slice(None), slice(None), *(slice(s // 4, s // 4 + s // 2) for s in shape[2:]))
    target[index] = 1.0
    return target


# --------------------------------------------------------------------------------------------
# Registry and configuration
# --------------------------------------------------------------------------------------------


def test_available_has_the_15_names() -> None:
    assert set(ALL_15) <= set(losses.available())
    # the pre-existing names are still there
    assert {"adaptive_focal", "ag_bce", "ag_bce_ds", "ce", "dice_bce"} <= set(losses.available())
    descriptions = losses.describe()
    assert all(descriptions[name] for name in NEW)


def test_combining_by_config() -> None:
    total = losses.build("0.5*dice+shape_aware")
    expected = 0.5 * losses.build("dice")(X, G) + losses.build("shape_aware")(X, G)
    assert total(X, G).item() == pytest.approx(expected.item())
    summed = losses.build("dice+0.01*boundary", boundary={"region_weight": 0.0})
    assert summed(X, G).item() == pytest.approx(losses.build("dice")(X, G).item() + 0.01 * 0.25, rel=1e-5)
    assert torch.isfinite(losses.build("tversky+wbce+exp_log")(X, G))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("wbce", {"clip": (0.0, 0.9)}),
        ("tversky", {"alpha": -1.0}),
        ("focal_tversky", {"gamma": 0.0}),
        ("sens_spec", {"r": 2.0}),
        ("jaccard", {"activation": "tanh"}),
        ("shape_aware", {"spacing": (1.0, 0.0)}),
        ("hausdorff_dt", {"alpha": 0.0}),
        ("boundary", {"region_weight": -1.0}),
        ("combo", {"alpha": 1.5}),
        ("exp_log", {"smooth": 0.0}),
    ],
)
def test_bad_options_raise(name: str, options: dict) -> None:
    with pytest.raises(ConfigError):
        losses.build(name, **options)


@pytest.mark.parametrize("name", BINARY_ONLY)
def test_binary_only_losses_reject_softmax_logits(name: str) -> None:
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="binary loss"):
        losses.build(name)(logits, torch.zeros(1, 3, 4, 4))


# --------------------------------------------------------------------------------------------
# Hand-computed values on the 2×2 example (and a few purpose-built tiny tensors)
# --------------------------------------------------------------------------------------------


def test_jaccard_by_hand() -> None:
    # J = TP / (Σp + Σg − TP) = 0.75 / (1.75 + 2 − 0.75) = 0.25 → loss 0.75.
    assert losses.build("jaccard", smooth=0.0)(X, G).item() == pytest.approx(0.75)


def test_tversky_by_hand() -> None:
    # TI = TP / (TP + 0.3·FP + 0.7·FN) = 0.75 / (0.75 + 0.3 + 0.875) = 0.75 / 1.925.
    assert losses.build("tversky", smooth=0.0)(X, G).item() == pytest.approx(1 - 0.75 / 1.925)
    # α = β = 0.5 is Dice: 1 − 1.5/3.75 = 0.6; α = β = 1 is Jaccard: 0.75.
    assert losses.build("tversky", alpha=0.5, beta=0.5, smooth=0.0)(X, G).item() == pytest.approx(0.6)
    assert losses.build("tversky", alpha=1.0, beta=1.0, smooth=0.0)(X, G).item() == pytest.approx(0.75)


def test_focal_tversky_by_hand() -> None:
    # (1 − TI)^(1/γ) with γ = 4/3: (1.175 / 1.925)^0.75 ≈ 0.69057.
    value = losses.build("focal_tversky", smooth=0.0)(X, G).item()
    assert value == pytest.approx((1.175 / 1.925) ** 0.75)
    # γ = 1 is the Tversky loss.
    assert losses.build("focal_tversky", gamma=1.0, smooth=0.0)(X, G).item() == pytest.approx(
        1 - 0.75 / 1.925
    )


def test_logcosh_dice_by_hand() -> None:
    # Dice = 2·0.75 / 3.75 = 0.4 → DiceLoss 0.6 → log(cosh 0.6) = log((e^0.6 + e^−0.6)/2) ≈ 0.17014.
    expected = math.log((math.exp(0.6) + math.exp(-0.6)) / 2)
    assert losses.build("logcosh_dice", smooth=0.0)(X, G).item() == pytest.approx(expected)


def test_sens_spec_by_hand() -> None:
    # (g − p)² = [0.25, 0.5625, 0.5625, 0.0625]; foreground (0.25 + 0.5625)/2 = 0.40625;
    # background (0.5625 + 0.0625)/2 = 0.3125 → 0.05·0.40625 + 0.95·0.3125 = 0.3171875.
    assert losses.build("sens_spec", smooth=0.0)(X, G).item() == pytest.approx(0.3171875)


def test_wbce_by_hand_rare_foreground() -> None:
    # g = [1, 0, 0, 0]: W_f = 0.25 ≤ 0.5 → foreground weight (1 − 0.25)/0.25 = 3, background 1.
    # BCE: x=0,y=1 → ln 2; x=ln3,y=0 → ln 4; x=−ln3,y=0 → ln 4/3 (twice).
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    expected = (3 * LN2 + LN4 + 2 * LN43) / 4
    assert losses.build("wbce")(X, target).item() == pytest.approx(expected)


def test_wbce_by_hand_rare_background() -> None:
    # g = [1, 1, 1, 0]: W_f = 0.75 > 0.5 → foreground weight 1, background 0.75/0.25 = 3.
    # BCE: x=0,y=1 → ln 2; x=ln3,y=1 → ln 4/3; x=−ln3,y=1 → ln 4; x=−ln3,y=0 → ln 4/3 (×3).
    target = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    expected = (LN2 + LN43 + LN4 + 3 * LN43) / 4
    assert losses.build("wbce")(X, target).item() == pytest.approx(expected)


def test_wbce_weights_favour_the_minority_class_in_both_regimes() -> None:
    # W_f = 0.25: the code's case 2, (1 − W_f)/W_f·Y + (1 − Y) → foreground 3 > background 1.
    rare_fg = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    weights = wbce_weight_map(rare_fg).flatten().tolist()
    assert weights == pytest.approx([3.0, 1.0, 1.0, 1.0])
    # The survey's case 2, W_f/(1 − W_f)·Y + (1 − Y), would give the rare foreground 1/3 < 1.
    w_f = 0.25
    assert w_f / (1 - w_f) < 1.0
    # W_f = 0.75: the code's case 1, Y + W_f/(1 − W_f)·(1 − Y) → background (minority) 3 > foreground 1.
    rare_bg = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    weights = wbce_weight_map(rare_bg).flatten().tolist()
    assert weights == pytest.approx([1.0, 1.0, 1.0, 3.0])
    # The single formula (1 − W_f)/W_f·Y + (1 − Y) at W_f = 0.75 gives foreground 1/3 < 1 and
    # background 1: the background (minority) still weighs relatively more, with the same
    # foreground:background ratio as the code (1/3), only scaled by (1 − W_f)/W_f.
    w_f = 0.75
    single_fg, single_bg = (1 - w_f) / w_f, 1.0
    assert single_fg < 1.0 and single_bg > single_fg
    assert single_fg / single_bg == pytest.approx(weights[0] / weights[3])


def test_wbce_weights_clip_per_sample_and_single_label() -> None:
    # Sample 0: 1 foreground pixel of 100 → W_f = 0.01, clipped to 0.05 → weight 0.95/0.05 = 19.
    # Sample 1: empty → uniform weight 1 (the code's single-label case). Sample 2: full → 1.
    target = torch.zeros(3, 1, 10, 10)
    target[0, 0, 0, 0] = 1.0
    target[2] = 1.0
    weights = wbce_weight_map(target)
    assert weights[0, 0, 0, 0].item() == pytest.approx(19.0)
    assert weights[0].sum().item() == pytest.approx(19.0 + 99.0)
    assert torch.equal(weights[1:], torch.ones_like(weights[1:]))
    # 3D: same rule over D·H·W.
    volume = torch.zeros(1, 1, 2, 2, 2)
    volume[0, 0, 0, 0, :] = 1.0  # W_f = 2/8 → foreground weight 3
    assert wbce_weight_map(volume).max().item() == pytest.approx(3.0)


def test_balanced_ce_by_hand() -> None:
    # g = [1, 0, 0, 0]: β = fraction of negatives = 0.75 on the positive, 1 − β = 0.25 on negatives.
    # −0.75·ln 0.5 − 0.25·(ln 0.25 + 2·ln 0.75) → (0.75·ln 2 + 0.25·(ln 4 + 2·ln 4/3)) / 4.
    target = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2)
    expected = (0.75 * LN2 + 0.25 * (LN4 + 2 * LN43)) / 4
    assert losses.build("balanced_ce")(X, target).item() == pytest.approx(expected)
    # Empty mask: β = 0.5 by policy → half the plain BCE, not 0.
    empty = torch.zeros(1, 1, 2, 2)
    plain = losses.build("bce")(X, empty).item()
    assert losses.build("balanced_ce")(X, empty).item() == pytest.approx(0.5 * plain)


def test_combo_by_hand() -> None:
    # wCE with β = 0.5: 0.5·mean BCE = 0.5·(ln 2 + 2 ln 4 + ln 4/3)/4; Dice = 0.4;
    # L = 0.5·wCE − 0.5·0.4 ≈ 0.03459.
    weighted_ce = 0.5 * sum(BCE_G) / 4
    expected = 0.5 * weighted_ce - 0.5 * 0.4
    assert losses.build("combo", smooth=0.0)(X, G).item() == pytest.approx(expected)
    # β = 1: positives only: −(ln 0.5 + ln 0.25)/4.
    only_pos = losses.build("combo", alpha=1.0, beta=1.0)(X, G).item()
    assert only_pos == pytest.approx((LN2 + LN4) / 4)
    # α = 0: −Dice; a perfect prediction reaches the minimum −(1 − α) = −1.
    perfect = (G * 2 - 1) * 50
    assert losses.build("combo", alpha=0.0)(perfect, G).item() == pytest.approx(-1.0, abs=1e-5)


def test_exp_log_by_hand() -> None:
    # Dice with ε = 1: (2·0.75 + 1)/(1.75 + 2 + 1) = 2.5/4.75; term (−ln Dice)^0.3.
    dice_term = (-math.log(2.5 / 4.75)) ** 0.3
    # Labels: 2 background, 2 foreground → w = (4/2)^0.5 = √2 for both; −ln p_l = BCE_G.
    cross_term = math.sqrt(2) * sum(v**0.3 for v in BCE_G) / 4
    expected = 0.8 * dice_term + 0.2 * cross_term  # ≈ 0.96835
    assert losses.build("exp_log")(X, G).item() == pytest.approx(expected)
    # γ = 1, w_cross = 1 and unit class weights: the CE term is the plain mean BCE.
    plain = losses.build("exp_log", w_dice=0.0, w_cross=1.0, gamma_cross=1.0, class_weights=[1.0, 1.0])
    assert plain(X, G).item() == pytest.approx(sum(BCE_G) / 4)


def test_shape_aware_by_hand() -> None:
    # G's two foreground pixels are both on the contour (D = 0); the background pixels are at
    # distance 1 → weights [1, 2, 1, 2] on BCE [ln 2, ln 4, ln 4, ln 4/3].
    expected = (LN2 + 2 * LN4 + LN4 + 2 * LN43) / 4
    assert losses.build("shape_aware")(X, G).item() == pytest.approx(expected)
    # One foreground pixel in a 3×3 image, logits 0 (BCE ln 2 everywhere): D = 0 at the centre,
    # 1 at the 4 edge neighbours, √2 at the 4 corners → ln 2 · (1 + (4 + 4√2)/9).
    dot = torch.zeros(1, 1, 3, 3)
    dot[0, 0, 1, 1] = 1.0
    value = losses.build("shape_aware")(torch.zeros(1, 1, 3, 3), dot).item()
    assert value == pytest.approx(LN2 * (1 + (4 + 4 * math.sqrt(2)) / 9))
    # normalize=True divides D by its maximum √2: corners weigh 2, edges 1 + 1/√2.
    normalized = losses.build("shape_aware", normalize=True)(torch.zeros(1, 1, 3, 3), dot).item()
    assert normalized == pytest.approx(LN2 * (1 + (4 / math.sqrt(2) + 4) / 9))


def test_contour_distance_map_spacing_and_3d() -> None:
    dot = torch.zeros(1, 1, 3, 3)
    dot[0, 0, 1, 1] = 1.0
    # Spacing (2, 1): rows are 2 apart → above/below 2, left/right 1, corners √5.
    distance = contour_distance_map(dot, spacing=(2.0, 1.0))[0, 0]
    assert distance[0, 1].item() == pytest.approx(2.0) and distance[1, 0].item() == pytest.approx(1.0)
    assert distance[0, 0].item() == pytest.approx(math.sqrt(5))
    cube = torch.zeros(1, 1, 3, 3, 3)
    cube[0, 0, 1, 1, 1] = 1.0
    assert contour_distance_map(cube)[0, 0, 0, 0, 0].item() == pytest.approx(math.sqrt(3))


def test_boundary_signed_distance_by_hand() -> None:
    # Row g = [1, 1, 1, 0, 0]: inside −(distance to background − 1) = [−2, −1, 0];
    # outside distance to the object = [1, 2].
    row = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 5)
    assert boundary_signed_distance(row).flatten().tolist() == pytest.approx([-2.0, -1.0, 0.0, 1.0, 2.0])
    # Empty and full channels have no contour: φ = 0 (documented policy).
    assert torch.count_nonzero(boundary_signed_distance(torch.zeros(1, 1, 3, 3))) == 0
    assert torch.count_nonzero(boundary_signed_distance(torch.ones(1, 1, 3, 3))) == 0


def test_boundary_by_hand() -> None:
    # φ = [−2, −1, 0, 1, 2], p = [0.9, 0.8, 0.5, 0.3, 0.1] (activation none):
    # mean(φ·p) = (−1.8 − 0.8 + 0 + 0.3 + 0.2)/5 = −0.42.
    row = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 5)
    probs = torch.tensor([0.9, 0.8, 0.5, 0.3, 0.1]).view(1, 1, 1, 5)
    assert losses.build("boundary", activation="none")(probs, row).item() == pytest.approx(-0.42)
    # + region_weight·Dice: Σpg = 2.2, Σp = 2.6, Σg = 3 → Dice loss 1 − 4.4/5.6.
    combined = losses.build("boundary", activation="none", region_weight=0.5)(probs, row).item()
    assert combined == pytest.approx(-0.42 + 0.5 * (1 - 4.4 / 5.6), rel=1e-4)
    # On the 2×2 example: φ = [[0, 1], [0, 1]] → (0.75 + 0.25)/4 = 0.25.
    assert losses.build("boundary")(X, G).item() == pytest.approx(0.25)


def test_hausdorff_dt_by_hand() -> None:
    # Row g = [1, 1, 0, 0], p = [0.9, 0.6, 0.4, 0.2] → thresholded prediction = g.
    # MONAI's field = edt(fg) + edt(bg) = [2, 1, 1, 2] for both; d_p² + d_g² = [8, 2, 2, 8];
    # (p − g)² = [0.01, 0.16, 0.16, 0.04] → mean([0.08, 0.32, 0.32, 0.32]) = 0.26.
    row = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
    probs = torch.tensor([0.9, 0.6, 0.4, 0.2]).view(1, 1, 1, 4)
    assert losses.build("hausdorff_dt", activation="none")(probs, row).item() == pytest.approx(0.26)
    # Same as MONAI on sigmoid logits.
    from monai.losses import HausdorffDTLoss

    logits = torch.randn(2, 1, 6, 6)
    target = _square((2, 1, 6, 6))
    expected = HausdorffDTLoss(sigmoid=True, include_background=True)(logits, target)
    assert losses.build("hausdorff_dt")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_gradcheck_float64(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64)
    # Keep |logits| ≥ 0.2 so that no perturbation flips hausdorff_dt's thresholded prediction.
    logits = (logits.sign() * (logits.abs() + 0.2)).requires_grad_()
    target = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    target[0, 0, :2, :2] = 1.0
    target[1, 0, 1:, 1] = 1.0
    loss = losses.build(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,))


@pytest.mark.parametrize("name", [n for n in NEW if n not in BINARY_ONLY])
def test_gradcheck_float64_softmax(name: str) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 3, 3, 3, generator=gen, dtype=torch.float64)
    logits = (logits.sign() * (logits.abs() + 0.2)).requires_grad_()
    labels = torch.tensor([[0, 1, 1], [0, 2, 2], [0, 0, 2]], dtype=torch.float64).view(1, 1, 3, 3)
    loss = losses.build(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,))


@pytest.mark.parametrize("name", NEW)
def test_gradient_signs(name: str) -> None:
    # At logits 0 every loss must push foreground logits up (gradient ≤ 0) and background
    # logits down (gradient ≥ 0), with some non-zero gradient.
    target = _square((1, 1, 8, 8))
    logits = torch.zeros(1, 1, 8, 8, requires_grad=True)
    losses.build(name)(logits, target).backward()
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert (grad[target == 1] <= 1e-12).all() and (grad[target == 0] >= -1e-12).all()
    assert grad.abs().max() > 0


# --------------------------------------------------------------------------------------------
# Shapes, empty masks, AMP, multi-class
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 1, 4, 8, 8)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", NEW)
def test_2d_and_3d(name: str, shape: tuple[int, ...]) -> None:
    target = _square(shape)
    logits = torch.randn(shape, requires_grad=True)
    value = losses.build(name)(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 1, 6, 6), (1, 1, 3, 6, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("name", NEW)
def test_empty_and_full_masks_give_no_nan(name: str, shape: tuple[int, ...]) -> None:
    loss = losses.build(name)
    for target in (torch.zeros(shape), torch.ones(shape)):
        for logits in (torch.randn(shape), torch.full(shape, -30.0), torch.full(shape, 30.0)):
            x = logits.clone().requires_grad_()
            value = loss(x, target)
            value.backward()
            assert torch.isfinite(value), (name, target.mean().item(), logits.mean().item())
            assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ["jaccard", "tversky", "focal_tversky", "logcosh_dice", "exp_log"])
def test_empty_target_empty_prediction_is_perfect(name: str) -> None:
    empty = torch.zeros(1, 1, 4, 4)
    value = losses.build(name)(torch.full((1, 1, 4, 4), -30.0), empty).item()
    assert value == pytest.approx(0.0, abs=1e-3)


def test_boundary_empty_mask_policy() -> None:
    # φ = 0 on an empty target: the bare boundary loss is 0 whatever the prediction, and the
    # region term (region_weight) still penalises predicted foreground.
    empty = torch.zeros(1, 1, 4, 4)
    full_prediction = torch.full((1, 1, 4, 4), 30.0)
    assert losses.build("boundary")(full_prediction, empty).item() == 0.0
    assert losses.build("boundary", region_weight=1.0)(full_prediction, empty).item() == pytest.approx(
        1.0, abs=1e-4
    )


def test_shape_aware_empty_mask_is_plain_bce() -> None:
    empty = torch.zeros(2, 1, 4, 4)
    logits = torch.randn(2, 1, 4, 4)
    assert losses.build("shape_aware")(logits, empty).item() == pytest.approx(
        losses.build("bce")(logits, empty).item()
    )


@pytest.mark.parametrize("name", NEW)
def test_half_precision_logits_compute_in_float32(name: str) -> None:
    target = _square((1, 1, 64, 64))
    logits = (target * 4 - 2).to(torch.float16)
    value = losses.build(name)(logits, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize("name", [n for n in NEW if n not in BINARY_ONLY])
def test_softmax_indices_equal_one_hot(name: str) -> None:
    logits = torch.randn(2, 3, 6, 6)
    labels = torch.randint(0, 3, (2, 1, 6, 6)).float()
    loss = losses.build(name)
    assert loss(logits, labels).item() == pytest.approx(loss(logits, one_hot(labels, 3)).item(), rel=1e-5)


def test_two_channel_softmax_matches_sigmoid_for_region_losses() -> None:
    # softmax([0, x]) = [σ(−x), σ(x)]: without background the K = 2 loss equals the K = 1 loss.
    logits = torch.randn(2, 1, 5, 5)
    target = _square((2, 1, 5, 5))
    two = torch.cat([torch.zeros_like(logits), logits], 1)
    for name in SIGMOID_EQUALS_SOFTMAX:
        single = losses.build(name)(logits, target).item()
        options = {} if name in ("boundary", "hausdorff_dt") else {"include_background": False}
        two_channel = losses.build(name, **options)(two, target.long()).item()
        assert two_channel == pytest.approx(single, rel=1e-5), name
    # Shape-aware: the foreground contour of the K = 2 target is the K = 1 contour; CE = BCE.
    shape_single = losses.build("shape_aware")(logits, target).item()
    assert losses.build("shape_aware")(two, target).item() == pytest.approx(shape_single, rel=1e-5)


def test_log_probabilities_softmax_is_exact() -> None:
    logits = torch.tensor([[0.0, 1.0, -2.0], [100.0, 0.0, 0.0]], dtype=torch.float64).view(2, 3, 1, 1)
    log_p, log_not_p = log_probabilities(logits)
    probs = torch.softmax(logits, 1)
    assert torch.allclose(log_p, probs.log())
    # log(1 − p) for p ≈ 1 − 2e−44: exact, where log1p(−p) would give −inf.
    assert torch.isfinite(log_not_p).all()
    assert log_not_p[1, 0].item() == pytest.approx(math.log(2.0) - 100.0)
    assert torch.allclose(log_not_p[0], torch.log1p(-probs[0]))


def test_logcosh_dice_batch_dice_equals_log_cosh_of_the_batch_dice_loss() -> None:
    import medseg.losses as losses_pkg

    logits = torch.randn(3, 1, 6, 6)
    target = (torch.rand(3, 1, 6, 6) > 0.7).float()
    target[0] = 0.0  # an empty slice: batch Dice pools it with the others
    dice = losses_pkg.build("dice", batch_dice=True, smooth=1.0)(logits, target)
    logcosh = losses_pkg.build("logcosh_dice", batch_dice=True, smooth=1.0)(logits, target)
    assert logcosh.item() == pytest.approx(math.log(math.cosh(dice.item())), rel=1e-6)
