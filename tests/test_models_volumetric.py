"""Volumetric models: V-Net, Res-UNet-R/H, PDV-Net: shapes, structure from the papers, errors, building."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

import medseg.models as models
from medseg.config import Config
from medseg.errors import ConfigError
from medseg.models import build_from_config
from medseg.models.pdvnet import DenseBlock, PDVNet
from medseg.models.resunet import AnisotropicConvBlock, ResUNet, resunet_h, resunet_r
from medseg.models.vnet import VNet, pad_to_multiple

torch.manual_seed(0)


@pytest.fixture(scope="module")
def vnet() -> VNet:
    return VNet(in_channels=1, out_channels=2).eval()


# ---------------------------------------------------------------- V-Net


def test_vnet_shape_and_paper_structure(vnet: VNet) -> None:
    with torch.no_grad():
        assert vnet(torch.randn(1, 1, 16, 16, 32)).shape == (1, 2, 16, 16, 32)
    convs = [m for m in vnet.modules() if isinstance(m, nn.Conv3d)]
    # 5×5×5 stage convolutions, 2×2×2 stride-2 down convolutions, PReLU activations.
    assert sum(m.kernel_size == (5, 5, 5) for m in convs) >= 16
    downs = [m for m in convs if m.kernel_size == (2, 2, 2)]
    assert len(downs) == 4 and all(m.stride == (2, 2, 2) for m in downs)
    ups = [m for m in vnet.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert len(ups) == 4 and all(m.stride == (2, 2, 2) and m.kernel_size == (2, 2, 2) for m in ups)
    assert any(isinstance(m, nn.PReLU) for m in vnet.modules())
    assert not any(isinstance(m, nn.ELU) for m in vnet.modules())


def test_vnet_dropout_off_by_default(vnet: VNet) -> None:
    # MONAI's VNet keeps Dropout3d(0.5) on the skips of its two highest up-stages whatever
    # dropout_prob_up says; medseg's default removes every dropout layer.
    assert [m for m in vnet.modules() if isinstance(m, _DropoutNd) and m.p > 0] == []
    net = VNet(dropout=0.2)
    ps = [m.p for m in net.modules() if isinstance(m, _DropoutNd)]
    assert len(ps) == 8 and set(ps) == {0.2}


def test_vnet_pads_to_16_and_crops_back(vnet: VNet) -> None:
    x = torch.randn(1, 1, 5, 9, 12)
    with torch.no_grad():
        out = vnet(x)
    assert out.shape == (1, 2, 5, 9, 12)
    padded, crop = pad_to_multiple(x, 16)
    assert padded.shape == (1, 1, 16, 16, 16)
    assert torch.equal(padded[crop], x)


def test_vnet_without_pad_names_the_shape(vnet: VNet) -> None:
    vnet.pad = False  # the same check VNet(pad=False) makes, without building 45 M parameters again
    try:
        with pytest.raises(ValueError, match=r"multiple of 16.*\(10, 32, 32\)"):
            vnet(torch.randn(1, 1, 10, 32, 32))
    finally:
        vnet.pad = True


def test_vnet_2d_and_rank_error() -> None:
    net = VNet(spatial_dims=2, out_channels=3).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 20, 16)).shape == (2, 3, 20, 16)
    with pytest.raises(ValueError, match="expects a 5-D input"):
        VNet()(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize(
    "kwargs", [{"in_channels": 3}, {"dropout": 1.0}, {"act": "gelu"}, {"spatial_dims": 1}]
)
def test_vnet_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        VNet(**kwargs)


# ---------------------------------------------------------------- Res-UNet-R / Res-UNet-H

SMALL = torch.randn(1, 1, 2, 16, 16)  # D free, H and W multiples of 16


def _conv_out_channels(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv3d)]


def test_resunet_r_one_decoder_two_channels() -> None:
    net = resunet_r().eval()
    assert len(net.decoders) == 1
    assert net.decoders[0].head.out_channels == 2
    with torch.no_grad():
        out = net(SMALL)
    assert out.shape == (1, 2, 2, 16, 16)  # channel 0 mask, channel 1 boundary


def test_resunet_h_two_decoders_one_channel_each() -> None:
    net = resunet_h()
    assert len(net.decoders) == 2
    assert [d.head.out_channels for d in net.decoders] == [1, 1]
    small = ResUNet(features=(4, 8), separate_boundary_decoder=True).eval()
    x = torch.randn(1, 1, 2, 8, 8)
    with torch.no_grad():
        out = small(x)
        assert out.shape == (1, 2, 2, 8, 8)
        # Channel 1 comes from the boundary decoder alone: changing it leaves channel 0 as it was.
        small.decoders[1].head.bias.add_(1.0)
        out2 = small(x)
    assert torch.equal(out[:, 0], out2[:, 0]) and torch.allclose(out2[:, 1], out[:, 1] + 1.0)


@pytest.mark.parametrize(
    ("factory", "widths"), [(resunet_r, [28, 36, 48, 64, 80]), (resunet_h, [16, 32, 48, 64, 80])]
)
def test_resunet_widths(factory, widths: list[int]) -> None:  # noqa: ANN001
    net = factory()
    assert [_conv_out_channels(stage)[-1] for stage in net.encoder.stages] == widths
    # Additive skips: each decoder stage keeps its skip's width (a concatenation would double it).
    for decoder in net.decoders:
        assert [stage.block.lateral[0].in_channels for stage in decoder.stages] == widths[-2::-1]
        assert decoder.head.kernel_size == (1, 5, 5)
    assert net.encoder.stages[0][0][0].kernel_size == (1, 5, 5)  # the embedding


def test_resunet_anisotropic_block() -> None:
    block = AnisotropicConvBlock(4, 6)
    kernels = [m.kernel_size for m in block.modules() if isinstance(m, nn.Conv3d)]
    assert kernels == [(1, 3, 3), (3, 3, 3), (3, 3, 3)]
    assert sum(isinstance(m, nn.ELU) for m in block.modules()) == 3
    assert block(torch.randn(1, 4, 3, 8, 8)).shape == (1, 6, 3, 8, 8)
    # Residual: with the 3×3×3 pair zeroed the block is ELU(ELU(lateral conv)).
    with torch.no_grad():
        for m in block.residual.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.zero_()
                m.bias.zero_()
        x = torch.randn(1, 4, 3, 8, 8)
        expected = nn.functional.elu(block.lateral(x))
        assert torch.allclose(block(x), expected)


def test_resunet_downsampling_is_lateral_only() -> None:
    net = resunet_r().eval()
    shapes: list[tuple[int, ...]] = []
    hooks = [
        s.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
        for s in net.encoder.stages
    ]
    with torch.no_grad():
        net(torch.randn(1, 1, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert [s[2] for s in shapes] == [3] * 5  # depth kept through the encoder
    assert [s[3] for s in shapes] == [16, 8, 4, 2, 1]
    strides = [m.stride for m in net.encoder.modules() if isinstance(m, nn.Conv3d) and m.stride != (1, 1, 1)]
    assert strides == [(1, 2, 2)] * 4


@pytest.mark.parametrize("norm", ["none", "batch", "instance", "group"])
def test_resunet_norm_options(norm: str) -> None:
    net = resunet_h(norm=norm, features=(4, 8), padding_mode="zeros")
    has_norm = any(isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d, nn.GroupNorm)) for m in net.modules())
    assert has_norm == (norm != "none")
    assert net(torch.randn(2, 1, 2, 4, 4)).shape == (2, 2, 2, 4, 4)


def test_resunet_errors() -> None:
    with pytest.raises(ConfigError, match="3D only"):
        resunet_r(spatial_dims=2)
    with pytest.raises(ConfigError, match="3D only"):
        models.MODELS.build("resunet_h", spatial_dims=2)
    with pytest.raises(ConfigError):
        resunet_r(norm="layer")
    with pytest.raises(ValueError, match=r"multiples of 16.*\(1, 1, 3, 24, 32\)"):
        resunet_r()(torch.randn(1, 1, 3, 24, 32))
    with pytest.raises(ValueError, match="5-D input"):
        resunet_r()(torch.randn(1, 1, 32, 32))


def test_resunet_gradients_reach_both_decoders() -> None:
    net = ResUNet(features=(4, 8, 8), separate_boundary_decoder=True)
    net(torch.randn(1, 1, 2, 8, 8)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []


# ---------------------------------------------------------------- PDV-Net


def test_pdvnet_dense_blocks_follow_the_paper() -> None:
    net = PDVNet(in_channels=1, out_channels=3)
    assert [len(b.layers) for b in net.blocks] == [5, 10, 10]
    assert [b.growth_rate for b in net.blocks] == [4, 6, 8]
    for block in net.blocks:  # each layer adds growth_rate channels with a 3×3×3 conv + BN + PReLU
        for layer in block.layers:
            conv, bn, act = layer
            assert conv.kernel_size == (3, 3, 3) and conv.out_channels == block.growth_rate
            assert isinstance(bn, nn.BatchNorm3d) and isinstance(act, nn.PReLU)
    stem = net.stem[0]
    assert stem.out_channels == 24 and stem.kernel_size == (5, 5, 5) and stem.stride == (2, 2, 2)
    assert net.blocks[0].layers[0][0].in_channels == 24 + 1  # stem ⊕ downsampled input
    assert net.merge.kernel_size == (1, 1, 1) and net.merge.in_channels == 12 + 24 + 24


def test_pdvnet_shapes_any_size_and_2d() -> None:
    net = PDVNet(out_channels=3).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 8, 16, 16)).shape == (1, 3, 8, 16, 16)
        assert net(torch.randn(1, 1, 5, 7, 9)).shape == (1, 3, 5, 7, 9)
        assert PDVNet(spatial_dims=2).eval()(torch.randn(2, 1, 12, 10)).shape == (2, 1, 12, 10)
    with pytest.raises(ValueError, match="expects a 5-D input"):
        net(torch.randn(1, 1, 16, 16))


def test_dense_block_concatenates_every_layer() -> None:
    block = DenseBlock(3, n_layers=4, growth_rate=5)
    x = torch.randn(1, 3, 4, 4, 4)
    out = block(x)
    assert out.shape == (1, 3 + 4 * 5, 4, 4, 4) and block.out_channels == 23
    assert torch.equal(out[:, :3], x)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layers": (5, 10)},
        {"down_channels": (24,)},
        {"dilations": [[1] * 5, [1] * 10]},
        {"dilations": [[1] * 4, [1] * 10, [1] * 10]},
        {"dropout": 1.0},
        {"spatial_dims": 4},
    ],
)
def test_pdvnet_bad_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PDVNet(**kwargs)


# ---------------------------------------------------------------- building by name


CLASSES = {"vnet": VNet, "resunet_r": ResUNet, "resunet_h": ResUNet, "pdvnet": PDVNet}


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [
        ("vnet", 1, None),
        ("resunet_r", 2, (2, 16, 16)),
        ("resunet_h", 2, (2, 16, 16)),
        ("pdvnet", 1, (8, 8, 8)),
    ],
)
def test_build_by_name_and_from_config(name: str, channels: int, size: tuple[int, ...] | None) -> None:
    assert name in models.available()
    assert models.describe()[name]
    assert isinstance(models.build(name, in_channels=1, out_channels=1, spatial_dims=3), CLASSES[name])
    cfg = Config()
    cfg.model.name = name
    cfg.model.options = {}
    cfg.data.spatial_dims = 3
    from_config = build_from_config(cfg).eval()
    assert from_config.spatial_dims == 3
    assert isinstance(from_config, CLASSES[name])
    if size is not None:  # V-Net's forward is tested above (45 M parameters are slow on a CPU)
        with torch.no_grad():
            assert from_config(torch.randn(1, 1, *size)).shape == (1, channels, *size)


def test_2d_config_refuses_3d_only_resunet() -> None:
    cfg = Config()
    cfg.model.name = "resunet_r"
    cfg.model.options = {}
    cfg.data.spatial_dims = 2
    with pytest.raises(ConfigError, match="3D only"):
        build_from_config(cfg)
