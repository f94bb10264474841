"""TransUNet / MicroSegNet: shapes, deep supervision, channels, sizes, registry, gradients, variants.

Everything runs on the CPU-sized ``tiny`` variant except one build (and one 224² forward) of the
full R50+ViT-B/16 model. ``pretrained`` is never ``True`` here (no downloads).
"""

from __future__ import annotations

import pytest
import torch

import medseg.models as models
from medseg.errors import ConfigError
from medseg.models.transunet import VARIANTS, MicroSegNet, TransUNet

pytest.importorskip("timm")

SIZE = 64  # tiny variant: stride 16 → a 4×4 token grid


@pytest.fixture(scope="module")
def tiny() -> MicroSegNet:
    return MicroSegNet(in_channels=1, out_channels=2, img_size=SIZE, variant="tiny")


@pytest.fixture(scope="module")
def base() -> MicroSegNet:
    return MicroSegNet(in_channels=1, out_channels=1, img_size=224, variant="base", pretrained=False)


def test_registry_names_and_factories() -> None:
    assert {"transunet", "microsegnet"} <= set(models.available())
    assert "Chen et al. 2021" in models.describe()["transunet"]
    net = models.build(
        "microsegnet", in_channels=1, out_channels=1, spatial_dims=2, img_size=SIZE, variant="tiny"
    )
    assert isinstance(net, MicroSegNet) and net.deep_supervision
    plain = models.build("transunet", in_channels=3, out_channels=4, img_size=SIZE, variant="tiny")
    assert type(plain) is TransUNet and not plain.deep_supervision and len(plain.aux_heads) == 0


@pytest.mark.parametrize("name", ["transunet", "microsegnet"])
def test_spatial_dims_must_be_2(name: str) -> None:
    with pytest.raises(ConfigError, match="spatial_dims must be 2"):
        models.build(name, spatial_dims=3, img_size=SIZE, variant="tiny")


def test_deep_supervision_train_list_eval_tensor(tiny: MicroSegNet) -> None:
    x = torch.randn(2, 1, SIZE, SIZE)
    tiny.train()
    outs = tiny(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 64, 64), (2, 2, 32, 32), (2, 2, 16, 16), (2, 2, 8, 8)]
    tiny.eval()
    out = tiny(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, SIZE, SIZE)


def test_transunet_returns_tensor_in_train_mode() -> None:
    net = TransUNet(in_channels=1, out_channels=1, img_size=SIZE, variant="tiny").train()
    out = net(torch.randn(2, 1, SIZE, SIZE))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, SIZE, SIZE)


def test_tiny_structure_mirrors_transunet() -> None:
    net = TransUNet(img_size=SIZE, variant="tiny")
    enc = net.encoder
    assert enc.stride == 16 and enc.backbone_stride == 16
    assert enc.skip_channels == {2: 32, 4: 128, 8: 256}  # stem, stage 1, stage 2 (computed from timm)
    assert net.decoder.reductions == (8, 4, 2, 1)
    assert len(enc.vit.blocks) == VARIANTS["tiny"].vit_kwargs["depth"] and enc.embed_dim == 192
    assert net.encoder.vit.cls_token is None  # TransUNet drops the class token
    assert sum(p.numel() for p in net.parameters()) < 5e6


def test_base_is_r50_vit_b16_with_transunet_decoder(base: MicroSegNet) -> None:
    enc = base.encoder
    assert enc.variant.timm_name == "vit_base_r50_s16_224"
    assert enc.skip_channels == {2: 64, 4: 256, 8: 512}
    assert enc.embed_dim == 768 and len(enc.vit.blocks) == 12 and enc.grid_size == (14, 14)
    assert [len(s.blocks) for s in enc.vit.patch_embed.backbone.stages] == [3, 4, 9]
    assert base.decoder.conv_more[0].in_channels == 768 and base.decoder.conv_more[0].out_channels == 512
    assert base.decoder.out_channels == (256, 128, 64, 16)
    assert [b.conv1[0].in_channels for b in base.decoder.blocks] == [512 + 512, 256 + 256, 128 + 64, 64]
    assert {k: h.in_channels for k, h in base.aux_heads.items()} == {"2": 64, "4": 128, "8": 256}
    assert all(h.kernel_size == (3, 3) for h in base.aux_heads.values())
    n_params = sum(p.numel() for p in base.parameters())
    assert 100e6 < n_params < 110e6  # TransUNet reports 105.3 M
    base.eval()
    with torch.no_grad():
        out = base(torch.randn(1, 1, 224, 224))
    assert out.shape == (1, 1, 224, 224) and torch.isfinite(out).all()


def test_one_channel_is_repeated_to_three() -> None:
    grey = TransUNet(in_channels=1, out_channels=1, img_size=SIZE, variant="tiny").eval()
    rgb = TransUNet(in_channels=3, out_channels=1, img_size=SIZE, variant="tiny").eval()
    rgb.load_state_dict(grey.state_dict())  # same parameters: the stem is 3-channel in both
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5)


def test_three_and_other_channel_counts() -> None:
    rgb = TransUNet(in_channels=3, out_channels=1, img_size=SIZE, variant="tiny")
    assert rgb(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)
    four = TransUNet(in_channels=4, out_channels=1, img_size=SIZE, variant="tiny")
    assert four.encoder.vit.patch_embed.backbone.stem.conv.in_channels == 4
    assert four(torch.randn(1, 4, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)


def test_other_sizes_use_resampled_position_embedding(tiny: MicroSegNet) -> None:
    tiny.eval()
    x = torch.randn(1, 1, 96, 128)  # not the 64² the embedding was laid out for
    assert tiny(x).shape == (1, 2, 96, 128)
    tiny.train()
    assert [tuple(o.shape[2:]) for o in tiny(x)] == [(96, 128), (48, 64), (24, 32), (12, 16)]


def test_invalid_sizes_and_channels(tiny: MicroSegNet) -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        tiny(torch.randn(1, 1, 64, 72))
    with pytest.raises(ValueError, match="1 input channel"):
        tiny(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="4-D input"):
        tiny(torch.randn(1, 64, 64))
    with pytest.raises(ConfigError, match="multiple of the token stride 16"):
        TransUNet(img_size=72, variant="tiny")


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown TransUNet variant"):
        TransUNet(variant="huge")
    with pytest.raises(ConfigError, match="one width per"):
        TransUNet(img_size=SIZE, variant="tiny", decoder_channels=(32, 16))
    with pytest.raises(ConfigError, match="pretrained=True"):
        TransUNet(img_size=SIZE, variant="tiny", pretrained=True)  # raised before any download


def test_encoder_matches_timm_forward_features(tiny: MicroSegNet) -> None:
    tiny.eval()
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        grid, skips = tiny.encoder(x)
        tokens = tiny.encoder.vit.forward_features(x)
    assert torch.allclose(grid.flatten(2).transpose(1, 2), tokens, atol=1e-5)
    assert {r: tuple(s.shape[1:]) for r, s in skips.items()} == {
        2: (32, 48, 32),
        4: (128, 24, 16),
        8: (256, 12, 8),
    }


def test_gradients_reach_every_parameter() -> None:
    net = MicroSegNet(in_channels=1, out_channels=1, img_size=SIZE, variant="tiny").train()
    outs = net(torch.randn(2, 1, SIZE, SIZE))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    for name in (
        "encoder.vit.pos_embed",
        "encoder.vit.patch_embed.backbone.stem.conv.weight",
        "aux_heads.8.weight",
    ):
        assert net.get_parameter(name).grad.abs().sum() > 0, name


def test_any_timm_resnetv2_hybrid_by_name() -> None:
    # R-stem-only + ViT-Ti/8: backbone stride 4, patch 8 → token stride 32, one skip (the stem).
    net = MicroSegNet(img_size=SIZE, variant="vit_tiny_r_s16_p8_224", backbone_kwargs={"depth": 1}).train()
    assert net.encoder.stride == 32 and net.encoder.skip_channels == {2: 64}
    assert net.decoder.reductions == (16, 8, 4, 2, 1)
    outs = net(torch.randn(1, 1, SIZE, SIZE))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 64), (32, 32), (16, 16), (8, 8)]
