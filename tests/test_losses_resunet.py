"""Res-UNet loss: WBCE(mask) + WBCE(boundary), boundary derived per slice from instance labels."""

from __future__ import annotations

import math

import pytest
import torch

import medseg.losses as losses
from medseg.errors import ConfigError
from medseg.losses.resunet import boundary_target_for


def test_resunet_wbce_by_hand() -> None:
    # target [[1, 0], [0, 0]]: W_f = 0.25 → foreground weight (1 − 0.25)/0.25 = 3, background 1;
    # zero logits → BCE ln 2 everywhere → mask term = mean(3, 1, 1, 1)·ln 2 = 1.5 ln 2.
    # Boundary: every 3×3 neighbourhood of a 2×2 plane holds both labels → all boundary → one
    # class only → W = 1 → boundary term ln 2. Total 2.5 ln 2.
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 1, 1, 2, 2)
    logits = torch.zeros(1, 2, 1, 2, 2)
    value = losses.build("resunet_wbce")(logits, target, {})
    assert value.item() == pytest.approx(2.5 * math.log(2.0))
    weighted = losses.build("resunet_wbce", mask_weight=2.0, boundary_weight=0.0)(logits, target, {})
    assert weighted.item() == pytest.approx(3.0 * math.log(2.0))


def test_boundary_from_instances_separates_touching_objects() -> None:
    instance = torch.zeros(1, 1, 1, 1, 6, dtype=torch.long)
    instance[..., :3], instance[..., 3:] = 1, 2  # two touching objects, one mask
    target = (instance > 0).float()
    from_mask = boundary_target_for(target, None, 1)
    assert from_mask.sum() == 0  # the binary mask has no inner edge
    from_instances = boundary_target_for(target, {"instance": instance}, 1)
    assert from_instances.flatten().tolist() == [0, 0, 1, 1, 0, 0]


def test_resunet_wbce_gradient_and_errors() -> None:
    logits = torch.randn(2, 2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(2, 1, 3, 8, 8) > 0.6).double()
    loss = losses.build("resunet_wbce")(logits, target, None)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # finite differences cost two loss calls per input element: check them on a smaller volume
    small = torch.randn(1, 2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    small_target = torch.zeros(1, 1, 2, 5, 5, dtype=torch.float64)
    small_target[..., 1:4, 1:3] = 1.0  # foreground, background and a boundary on both slices
    assert torch.autograd.gradcheck(lambda x: losses.build("resunet_wbce")(x, small_target, None), (small,))
    with pytest.raises(ValueError, match="2 logit channels"):
        losses.build("resunet_wbce")(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="instance"):
        boundary_target_for(torch.zeros(1, 1, 4, 4), {"instance": torch.zeros(1, 1, 2, 2)}, 1)
    with pytest.raises(ConfigError, match="boundary_width"):
        losses.build("resunet_wbce", boundary_width=0)
