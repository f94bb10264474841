"""U-Net: shapes in 2D/3D, depth and width, upsampling/norm options, deep supervision, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.errors import ConfigError
from medseg.models import UNet
from medseg.models.blocks import DoubleConv, DownBlock, UpBlock, norm_layer

TINY = (4, 8, 16)  # 3 levels → inputs must be multiples of 4


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_unet_2d_output_shape(upsample: str) -> None:
    model = UNet(in_channels=3, out_channels=2, spatial_dims=2, features=TINY, upsample=upsample)
    out = model(torch.randn(2, 3, 16, 20))
    assert out.shape == (2, 2, 16, 20)


@pytest.mark.parametrize("upsample", ["transpose", "trilinear"])
def test_unet_3d_output_shape(upsample: str) -> None:
    model = UNet(in_channels=1, out_channels=1, spatial_dims=3, features=(2, 4), upsample=upsample)
    out = model(torch.randn(2, 1, 4, 6, 8))
    assert out.shape == (2, 1, 4, 6, 8)


def test_depth_and_width_follow_features() -> None:
    shallow = UNet(features=(4, 8))
    deep = UNet(features=(4, 8, 16, 32, 64))
    assert len(shallow.encoder.stages) == 2 and len(shallow.decoder.stages) == 1
    assert len(deep.encoder.stages) == 5 and len(deep.decoder.stages) == 4
    assert deep.size_multiple == 16
    assert deep.head.in_channels == 4
    # Width: the bottleneck's last conv has features[-1] channels.
    bottleneck_convs = [m for m in deep.encoder.stages[-1].modules() if isinstance(m, nn.Conv2d)]
    assert bottleneck_convs[-1].out_channels == 64
    assert deep(torch.randn(2, 1, 16, 16)).shape == (2, 1, 16, 16)
    wide = UNet(features=(8, 16))
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in shallow.parameters())


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_norm_options(norm: str) -> None:
    model = UNet(features=TINY, norm=norm)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_dropout_only_in_bottleneck_and_inactive_in_eval() -> None:
    model = UNet(features=TINY, dropout=0.5)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 1
    model.eval()
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(model(x), model(x))


def test_deep_supervision_list_in_train_tensor_in_eval() -> None:
    model = UNet(features=(4, 8, 16, 32), deep_supervision=True)  # decoder stages at 1/4, 1/2, 1
    x = torch.randn(2, 1, 16, 16)
    model.train()
    outs = model(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 16, 16), (2, 1, 8, 8), (2, 1, 4, 4)]
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 16, 16)
    # Eval output equals the training main head in eval mode (no BN drift): same weights, same head.
    assert torch.allclose(out, model.head(model.decoder(model.encoder(x))[-1]))


def test_no_deep_supervision_returns_tensor_in_train() -> None:
    model = UNet(features=TINY).train()
    assert isinstance(model(torch.randn(2, 1, 8, 8)), torch.Tensor)


def test_divisibility_error_states_multiple() -> None:
    model = UNet(features=(4, 8, 16, 32))
    with pytest.raises(ValueError, match=r"multiple of 8.*\(12, 16\)"):
        model(torch.randn(1, 1, 12, 16))


def test_wrong_rank_error() -> None:
    with pytest.raises(ValueError, match="expects a 5-D input"):
        UNet(spatial_dims=3, features=TINY)(torch.randn(1, 1, 8, 8))


def test_gradient_reaches_every_parameter() -> None:
    model = UNet(features=TINY, deep_supervision=True).train()
    outs = model(torch.randn(2, 1, 8, 8))
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features": (4,)},
        {"features": (4, 0)},
        {"dropout": 1.0},
        {"spatial_dims": 1},
        {"norm": "layer"},
        {"upsample": "pixelshuffle"},
    ],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        UNet(**{"features": TINY, **kwargs})


def test_blocks_2d_and_3d() -> None:
    assert DoubleConv(1, 4, spatial_dims=3)(torch.randn(2, 1, 4, 4, 4)).shape == (2, 4, 4, 4, 4)
    assert DownBlock(4, 8)(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)
    up = UpBlock(8, 4, 4, spatial_dims=2, upsample="bilinear")
    assert up(torch.randn(2, 8, 4, 4), torch.randn(2, 4, 8, 8)).shape == (2, 4, 8, 8)
    assert isinstance(norm_layer("group", 2, 6), nn.GroupNorm)  # groups reduced to divide 6
    assert norm_layer("group", 2, 6).num_groups == 6
