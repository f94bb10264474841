"""Losses against hand-computed values, gradients, stability, shape errors, sums, deep supervision."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import medseg.losses as losses
from medseg.errors import ConfigError
from medseg.losses import (
    BCELoss,
    CELoss,
    CompoundLoss,
    DeepSupervisionLoss,
    DiceLoss,
    ModelOutputsLoss,
    build,
    combine,
    for_model_outputs,
)
from medseg.losses.compound import parse_spec
from medseg.losses.deep_supervision import downsample_mask
from medseg.losses.functional import (
    bce_with_logits,
    cross_entropy,
    dense_target,
    one_hot,
    soft_dice_loss,
    soft_dice_score,
)

# 2×2 example used throughout: target g = [[1, 0], [1, 0]].
G = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
# Probabilities p = [[0.9, 0.2], [0.6, 0.1]].
P = torch.tensor([[0.9, 0.2], [0.6, 0.1]]).view(1, 1, 2, 2)
# Logits whose sigmoids are 0.5, 0.75, 0.25, 0.25.
LN3 = math.log(3.0)
X = torch.tensor([[0.0, LN3], [-LN3, -LN3]]).view(1, 1, 2, 2)


def test_soft_dice_by_hand() -> None:
    # Σpg = 0.9 + 0.6 = 1.5; Σp = 1.8; Σg = 2 → D = 3.0 / 3.8.
    assert soft_dice_score(P, G, smooth=0.0).item() == pytest.approx(3.0 / 3.8)
    assert soft_dice_loss(P, G, smooth=0.0).item() == pytest.approx(1 - 3.0 / 3.8)


def test_squared_dice_by_hand() -> None:
    # V-Net eq. 1: Σp² = 0.81 + 0.04 + 0.36 + 0.01 = 1.22; Σg² = 2 → D = 3.0 / 3.22.
    assert soft_dice_loss(P, G, squared=True, smooth=0.0).item() == pytest.approx(1 - 3.0 / 3.22)
    loss = losses.build("dice", squared=True, smooth=0.0, activation="none")
    assert loss(P, G).item() == pytest.approx(1 - 3.0 / 3.22)


def test_dice_loss_from_logits_by_hand() -> None:
    # σ(X) = [[0.5, 0.75], [0.25, 0.25]]: Σpg = 0.75; Σp = 1.75; Σg = 2 → D = 1.5 / 3.75 = 0.4.
    assert DiceLoss(smooth=0.0)(X, G).item() == pytest.approx(0.6)


def test_bce_by_hand() -> None:
    # Elements: −ln 0.5 (x=0,y=1), −ln 0.25 (x=ln3,y=0), −ln 0.25 (x=−ln3,y=1), −ln 0.75 (x=−ln3,y=0).
    terms = [-math.log(0.5), -math.log(0.25), -math.log(0.25), -math.log(0.75)]
    assert bce_with_logits(X, G).item() == pytest.approx(sum(terms) / 4)
    assert BCELoss()(X, G).item() == pytest.approx(sum(terms) / 4)
    # pos_weight = 2 doubles the two positive terms.
    weighted = [2 * terms[0], terms[1], 2 * terms[2], terms[3]]
    assert BCELoss(pos_weight=2.0)(X, G).item() == pytest.approx(sum(weighted) / 4)


def test_per_sample_versus_batch_dice() -> None:
    # Sample A perfect (D = 1). Sample B: p = [0.5, 0, 0, 0], g = [1, 0, 0, 0] → D = 1 / 1.5.
    probs = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    per_sample = soft_dice_loss(probs, target, smooth=0.0)
    assert per_sample.item() == pytest.approx((0.0 + (1 - 1 / 1.5)) / 2)
    # Batch Dice pools sums: Σpg = 2.5; Σp = 2.5; Σg = 3 → D = 5 / 5.5.
    pooled = soft_dice_loss(probs, target, smooth=0.0, batch_dice=True)
    assert pooled.item() == pytest.approx(1 - 5 / 5.5)
    assert soft_dice_score(probs, target, batch_dice=True).shape == (1,)
    assert soft_dice_score(probs, target).shape == (2, 1)


def test_perfect_prediction_gives_zero_dice() -> None:
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = (target * 2 - 1) * 100.0
    assert DiceLoss()(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(squared=True)(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_empty_target_policy() -> None:
    empty = torch.zeros(1, 1, 4, 4)
    assert DiceLoss()(torch.full((1, 1, 4, 4), -100.0), empty).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss()(torch.full((1, 1, 4, 4), 100.0), empty).item() == pytest.approx(1.0, abs=1e-5)


def test_softmax_dice_with_class_indices() -> None:
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 1, 4, 4)).float()
    onehot = one_hot(labels, 3)
    assert onehot.shape == (2, 3, 4, 4) and torch.equal(onehot.argmax(1, keepdim=True).float(), labels)
    probs = torch.softmax(logits, 1)
    expected = soft_dice_loss(probs, onehot)
    assert DiceLoss()(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    no_bg = soft_dice_loss(probs[:, 1:], onehot[:, 1:])
    assert DiceLoss(include_background=False)(logits, labels).item() == pytest.approx(no_bg.item(), rel=1e-6)
    assert DiceLoss()(logits, onehot).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cross_entropy_multiclass_and_binary_fallback() -> None:
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 1, 4, 4)).float()
    expected = nn.functional.cross_entropy(logits, labels[:, 0].long())
    assert CELoss()(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert CELoss()(logits, one_hot(labels, 3)).item() == pytest.approx(expected.item(), rel=1e-6)
    weighted = nn.functional.cross_entropy(logits, labels[:, 0].long(), weight=torch.tensor([1.0, 2.0, 3.0]))
    assert CELoss(class_weights=[1, 2, 3])(logits, labels).item() == pytest.approx(weighted.item(), rel=1e-6)
    assert CELoss()(X, G).item() == pytest.approx(BCELoss()(X, G).item())
    with pytest.raises(ValueError, match="2 class_weights for 3"):
        CELoss(class_weights=[1, 2])(logits, labels)


def test_gradcheck_float64() -> None:
    logits = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64).view(2, 1, 2, 2)
    assert torch.autograd.gradcheck(lambda x: DiceLoss()(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: DiceLoss(squared=True, batch_dice=True)(x, target), (logits,))
    assert torch.autograd.gradcheck(lambda x: BCELoss(pos_weight=2.0)(x, target), (logits,))
    multi = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0.0, 1.0, 2.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    assert torch.autograd.gradcheck(lambda x: losses.build("dice+ce")(x, labels), (multi,))


@pytest.mark.parametrize("name", ["dice", "bce", "ce", "dice_bce"])
def test_large_logits_are_finite(name: str) -> None:
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 2, 2)
    logits = torch.tensor([-100.0, 100.0, 100.0, -100.0]).view(1, 1, 2, 2).requires_grad_()
    value = losses.build(name)(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("loss", [DiceLoss(), BCELoss(), CELoss(), losses.build("dice_bce")])
def test_shape_mismatch_message_has_both_shapes(loss: nn.Module) -> None:
    with pytest.raises(ValueError) as info:
        loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    assert "(2, 1, 4, 4)" in str(info.value) and "(2, 1, 4, 5)" in str(info.value)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 2, 4, 4\)"):
        dense_target(torch.zeros(2, 3, 4, 4), torch.zeros(2, 2, 4, 4))


def test_bad_options_raise() -> None:
    with pytest.raises(ConfigError):
        DiceLoss(activation="tanh")
    with pytest.raises(ConfigError):
        DiceLoss(smooth=-1.0)
    with pytest.raises(ConfigError):
        BCELoss(pos_weight=0.0)


def test_combine_weights() -> None:
    dice = DiceLoss(smooth=0.0)(X, G)
    bce = BCELoss()(X, G)
    total = combine("0.5*dice+2*bce", dice={"smooth": 0.0})
    assert isinstance(total, CompoundLoss)
    assert total.weights == {"dice": 0.5, "bce": 2.0}
    assert total(X, G).item() == pytest.approx(0.5 * dice.item() + 2 * bce.item())
    parts = total.components(X, G)
    assert parts["dice"].item() == pytest.approx(dice.item())
    same = combine({"dice": 0.5, "bce": 2.0}, dice={"smooth": 0.0})
    assert same(X, G).item() == pytest.approx(total(X, G).item())
    built = losses.build("dice+bce", dice={"smooth": 0.0})
    assert built(X, G).item() == pytest.approx(dice.item() + bce.item())
    registered = losses.build("dice_bce", smooth=0.0, bce_weight=3.0)
    assert registered(X, G).item() == pytest.approx(dice.item() + 3 * bce.item())


def test_parse_spec_errors() -> None:
    assert parse_spec("dice + bce") == {"dice": 1.0, "bce": 1.0}
    with pytest.raises(ConfigError, match="twice"):
        parse_spec("dice+dice")
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_spec("dice+")
    with pytest.raises(ConfigError, match="not terms"):
        combine("dice", bce={"pos_weight": 2.0})
    with pytest.raises(KeyError, match="Available"):
        combine("dice+no_such_loss")


def test_registry() -> None:
    assert {"bce", "ce", "dice", "dice_bce"} <= set(losses.available())
    assert set(losses.describe()) == set(losses.available())
    assert isinstance(losses.build("dice", squared=True), DiceLoss)
    with pytest.raises(KeyError, match=r"Available: .*bce.*, ce, .*dice"):
        losses.build("no_such_loss")


class _Recorder(nn.Module):
    """Returns the output's width as the loss and records what it was given at each scale."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, Tensor, Mapping[str, Any] | None]] = []

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        self.calls.append((logits, target, batch))
        return logits.new_tensor(float(logits.shape[-1]))


def test_deep_supervision_known_value_and_downsampling() -> None:
    recorder = _Recorder()
    wrapper = DeepSupervisionLoss(recorder)
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, :4, :4] = 1.0
    outputs = [torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 2, 2)]
    expert = target.clone()
    batch = {"target": target, "masks": {"expert": expert, "missing": None}, "image": torch.zeros(2, 1, 8, 8)}
    value = wrapper(outputs, target, batch)
    # Default weights 1, 1/2, 1/4 normalised: 4/7, 2/7, 1/7 → (4·8 + 2·4 + 1·2) / 7 = 6.
    assert value.item() == pytest.approx(6.0)
    assert [tuple(c[1].shape) for c in recorder.calls] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    small_target, small_batch = recorder.calls[2][1], recorder.calls[2][2]
    assert small_target[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert small_batch["target"] is small_target
    assert torch.equal(small_batch["masks"]["expert"], small_target)
    assert small_batch["masks"]["missing"] is None
    assert small_batch["image"].shape == (2, 1, 8, 8)  # other keys untouched
    assert batch["masks"]["expert"].shape == (2, 1, 8, 8)  # the caller's batch is not modified


def test_deep_supervision_explicit_weights_and_eval_tensor() -> None:
    wrapper = DeepSupervisionLoss(_Recorder(), weights=[1.0, 0.0, 0.5])
    outputs = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    assert wrapper(outputs, torch.zeros(1, 1, 8, 8)).item() == pytest.approx(1.0 * 8 + 0.5 * 2)
    assert wrapper(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)).item() == pytest.approx(8.0)
    with pytest.raises(ValueError, match="3 weights for 2 outputs"):
        wrapper(outputs[:2], torch.zeros(1, 1, 8, 8))


def test_deep_supervision_one_loss_per_scale() -> None:
    # Scale s gets its own loss: values 8 (8×8), 4 (4×4) and 2 (2×2) from three recorders.
    recorders = [_Recorder(), _Recorder(), _Recorder()]
    wrapper = DeepSupervisionLoss(recorders, weights=[1.0, 2.0, 3.0])
    outputs = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    assert wrapper(outputs, torch.zeros(1, 1, 8, 8)).item() == pytest.approx(1 * 8 + 2 * 4 + 3 * 2)
    assert [len(r.calls) for r in recorders] == [1, 1, 1]
    assert [tuple(r.calls[0][0].shape) for r in recorders] == [(1, 1, 8, 8), (1, 1, 4, 4), (1, 1, 2, 2)]
    assert [t.item() for t in wrapper.components(outputs, torch.zeros(1, 1, 8, 8))] == [8.0, 4.0, 2.0]
    # eval mode: a tensor goes to the full-resolution loss only
    assert wrapper(outputs[0], torch.zeros(1, 1, 8, 8)).item() == 8.0 and len(recorders[0].calls) == 3
    with pytest.raises(ValueError, match="3 losses for 2 outputs"):
        DeepSupervisionLoss(recorders)(outputs[:2], torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="one per scale"):
        DeepSupervisionLoss(recorders, weights=[1.0, 1.0])


def test_for_model_outputs_wraps_only_plain_losses() -> None:
    dice = DiceLoss()
    wrapped = for_model_outputs(dice, [0.5, 0.5])
    assert (
        isinstance(wrapped, DeepSupervisionLoss)
        and wrapped.losses[0] is dice
        and wrapped.weights == [0.5, 0.5]
    )
    deep = DeepSupervisionLoss(dice)
    assert for_model_outputs(deep) is deep
    umedsam = build("umedsam")
    assert isinstance(umedsam, ModelOutputsLoss) and for_model_outputs(umedsam) is umedsam
    # a promptable model's training dict: a plain loss sees its logits
    logits = torch.full((1, 1, 4, 4), 20.0)
    target = torch.ones(1, 1, 4, 4)
    assert wrapped({"logits": logits, "iou": torch.ones(1, 1)}, target).item() == dice(logits, target).item()


def test_deep_supervision_with_dice_perfect_at_every_scale() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1.0
    outputs = [(downsample_mask(target, s, "area") * 2 - 1) * 100 for s in [(8, 8), (4, 4), (2, 2)]]
    wrapper = DeepSupervisionLoss(DiceLoss(), mode="area")
    assert wrapper(outputs, target).item() == pytest.approx(0.0, abs=1e-5)


def test_downsample_mask_modes() -> None:
    # Top-left 2×2 block has 3 foreground pixels (area 0.75 → 1); top-right has 1 (0.25 → 0).
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.uint8)
    mask = mask.view(1, 1, 4, 4)
    area = downsample_mask(mask, (2, 2), "area")
    assert area.dtype == torch.uint8 and area[0, 0].tolist() == [[1, 0], [0, 1]]
    nearest = downsample_mask(mask, (2, 2), "nearest")
    assert nearest[0, 0].tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ConfigError):
        DeepSupervisionLoss(DiceLoss(), mode="bicubic")
    with pytest.raises(ConfigError):
        DeepSupervisionLoss(DiceLoss(), weights=[])


def test_half_precision_logits_do_not_overflow() -> None:
    # 2·Σp over 512×512 exceeds float16's max (65504); the loss must compute in float32.
    logits = torch.full((1, 1, 512, 512), 10.0, dtype=torch.float16)
    target = torch.ones(1, 1, 512, 512)
    value = DiceLoss()(logits, target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(0.0, abs=1e-3)
    wrapped = DeepSupervisionLoss(DiceLoss())([logits, logits[..., ::2, ::2]], target)
    assert wrapped.dtype == torch.float32 and torch.isfinite(wrapped)


def test_scaled_batch_downsamples_masks_without_touching_the_original() -> None:
    from medseg.losses.deep_supervision import scaled_batch

    mask = torch.ones(1, 1, 4, 4)
    batch = {"masks": {"expert": mask, "note": "x"}, "case_id": ["a"]}
    out = scaled_batch(batch, torch.zeros(1, 1, 2, 2), (2, 2), lambda m, s: m[..., : s[0], : s[1]])
    assert out["masks"]["expert"].shape == (1, 1, 2, 2) and out["masks"]["note"] == "x"
    assert out["target"].shape == (1, 1, 2, 2) and batch["masks"]["expert"].shape == (1, 1, 4, 4)
