"""Residual-encoder U-Net: shapes 2D/3D, deep-supervision contract, gradients, size, errors, cost."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import medseg.losses as losses
import medseg.models as models
from medseg.errors import ConfigError
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.models import ResEncUNet, SegmentationModel, UNet
from medseg.models.resenc_unet import ResidualBlock, default_blocks, default_features, training_cost

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = (4, 8, 16)  # 3 stages → inputs must be multiples of 4


def test_registered_and_defaults() -> None:
    model = models.build("resenc_unet", in_channels=2, out_channels=3)
    assert isinstance(model, ResEncUNet) and isinstance(model, SegmentationModel)
    assert model.features == (32, 64, 128, 256, 320)
    assert model.blocks == (1, 2, 2, 3, 3)
    assert model.deep_supervision is True
    assert (model.mask_channel, model.num_classes) == (0, None)
    assert model.size_multiple == 16 == model.export_spatial_divisor
    assert "resenc_unet" in models.describe()


def test_default_widths_and_blocks() -> None:
    assert default_features(6, spatial_dims=3) == (32, 64, 128, 256, 320, 320)
    assert default_features(4, spatial_dims=2, base=16) == (16, 32, 64, 128)
    assert default_blocks(6) == (1, 2, 2, 3, 3, 3)
    assert ResEncUNet(spatial_dims=3, n_stages=4).features == (32, 64, 128, 256)


@pytest.mark.parametrize(("dims", "shape"), [(2, (2, 3, 8, 12)), (3, (2, 1, 4, 8, 12))])
def test_eval_returns_main_logits(dims: int, shape: tuple[int, ...]) -> None:
    model = ResEncUNet(in_channels=shape[1], out_channels=2, spatial_dims=dims, features=TINY).eval()
    out = model(torch.randn(*shape))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (shape[0], 2, *shape[2:])


@pytest.mark.parametrize("dims", [2, 3])
def test_training_returns_deep_supervision_list_like_unet(dims: int) -> None:
    spatial = (8, 16, 16)[-dims:]
    x = torch.randn(1, 1, *spatial)
    features = (4, 8, 16, 32)
    ours = ResEncUNet(spatial_dims=dims, features=features).train()(x)
    unet = UNet(spatial_dims=dims, features=features, deep_supervision=True, norm="instance").train()(x)
    # Same contract as the U-Net: [main, aux_1/2, aux_1/4], highest resolution first.
    assert [o.shape for o in ours] == [o.shape for o in unet]
    assert [tuple(o.shape[2:]) for o in ours] == [
        spatial,
        tuple(s // 2 for s in spatial),
        tuple(s // 4 for s in spatial),
    ]


def test_deep_supervision_off_returns_a_tensor_in_training() -> None:
    model = ResEncUNet(features=TINY, deep_supervision=False).train()
    assert isinstance(model(torch.randn(2, 1, 8, 8)), torch.Tensor)
    assert len(model.aux_heads) == 0


def test_gradients_reach_every_parameter_through_the_ds_loss() -> None:
    model = ResEncUNet(features=TINY).train()
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    loss_fn = DeepSupervisionLoss(losses.build("bce"))
    loss_fn(model(torch.randn(2, 1, 8, 8)), target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0


def test_strided_downsampling_and_residual_shortcuts() -> None:
    model = ResEncUNet(features=TINY, blocks=(1, 2, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    first = model.encoder.stages[1][0]
    assert isinstance(first, ResidualBlock) and first.body[0][0].stride == (2, 2)
    assert isinstance(model.encoder.stages[1][1].shortcut, nn.Identity)
    assert isinstance(model.encoder.stages[1][0].shortcut, nn.Sequential)  # projection
    assert len(model.encoder.stages[1]) == 2
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(n.affine for n in norms)
    assert any(isinstance(m, nn.LeakyReLU) for m in model.modules())
    # Few convolutions at full resolution: stem + one residual block (2 convs) + one decoder conv.
    full_res = [m for m in model.encoder.stages[0].modules() if isinstance(m, nn.Conv2d)]
    assert len(full_res) == 2


def test_parameters_and_flops_against_unet_at_the_same_widths() -> None:
    """At equal widths the deeper residual encoder has more weights than the U-Net (2 to 3 times) but
    only about 1.35 times its FLOPs: the extra blocks sit at low resolution, the decoder is light."""
    widths = (32, 64, 128, 256, 320)
    ours_model = ResEncUNet(features=widths, deep_supervision=False).eval()
    unet_model = UNet(features=widths).eval()
    ours = sum(p.numel() for p in ours_model.parameters())
    unet = sum(p.numel() for p in unet_model.parameters())
    assert 2 * unet < ours < 3 * unet
    x = torch.randn(1, 1, 64, 64)
    flops = []
    for model in (ours_model, unet_model):
        with FlopCounterMode(display=False) as counter:
            model(x)
        flops.append(counter.get_total_flops())
    assert 1.2 < flops[0] / flops[1] < 1.5
    # The analytic estimate (forward = a third of a training step) matches torch's count.
    estimate = training_cost((64, 64), 1, features=widths, deep_supervision=False).flops / 3
    assert estimate == pytest.approx(flops[0], rel=0.02)


def test_odd_input_size_gives_a_clear_error() -> None:
    model = ResEncUNet(features=TINY)
    with pytest.raises(
        ValueError, match=r"ResEncUNet with strides .* needs spatial sizes that are multiples of \(4, 4\)"
    ):
        model(torch.randn(1, 1, 10, 8))
    with pytest.raises(ValueError, match="expects a 4-D input"):
        model(torch.randn(1, 1, 8, 8, 8))


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="spatial_dims"):
        ResEncUNet(spatial_dims=1)
    with pytest.raises(ConfigError, match="blocks needs 3 counts"):
        ResEncUNet(features=TINY, blocks=(1, 2))
    with pytest.raises(ConfigError, match="n_stages=4 but features has 3"):
        ResEncUNet(features=TINY, n_stages=4)
    with pytest.raises(ConfigError, match="at least 2"):
        ResEncUNet(features=(4,))
    with pytest.raises(ConfigError, match="positive"):
        ResEncUNet(in_channels=0, features=TINY)


@pytest.mark.parametrize("dims", [2, 3])
def test_training_cost_counts_the_parameters_exactly(dims: int) -> None:
    widths, blocks = (4, 8, 16), (1, 2, 2)
    model = ResEncUNet(in_channels=2, out_channels=3, spatial_dims=dims, features=widths, blocks=blocks)
    cost = training_cost((16,) * dims, 1, 2, 3, widths, blocks)
    assert cost.parameters == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_training_cost_activations_are_close_to_the_saved_tensors(dims: int) -> None:
    """The estimate is within 35 % of what autograd really saves for backward (distinct storages)."""
    widths, patch = (4, 8, 16, 32), (16, 32, 32)[-dims:]
    model = ResEncUNet(spatial_dims=dims, features=widths).train()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point() and t.numel() > 64:  # skip scalars and per-channel statistics
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes() // t.element_size()
        return t

    x = torch.randn(2, 1, *patch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    measured = sum(saved.values())
    estimate = training_cost(patch, 2, features=widths).activation_elements
    assert 0.65 * measured < estimate < 1.35 * measured


def test_training_cost_scales_with_batch_and_patch() -> None:
    one = training_cost((32, 32), 1, features=TINY)
    assert training_cost((32, 32), 4, features=TINY).activation_elements == pytest.approx(
        4 * one.activation_elements, rel=1e-6
    )
    assert training_cost((64, 64), 1, features=TINY).flops == pytest.approx(4 * one.flops, rel=1e-6)
    # One 3×3 conv 1→4 at 32² in the stem: 2·3 · 9·4·1024 FLOPs are part of the total.
    assert one.flops > 2 * 3 * 9 * 4 * 1024
    assert (
        one.memory_bytes(activation_bytes=2, optimizer_states=2)
        == 2 * one.activation_elements + 16 * one.parameters
    )


def test_per_axis_strides_pool_only_the_axes_asked_for() -> None:
    # axis 0 is pooled once (stage 2 only), the in-plane axes twice: sizes multiples of (2, 4, 4)
    model = ResEncUNet(
        spatial_dims=3, features=(4, 8, 16), strides=[1, [1, 2, 2], [2, 2, 2]], deep_supervision=True
    )
    assert model.size_multiples == (2, 4, 4) and model.size_multiple == 4
    outputs = model.train()(torch.randn(2, 1, 6, 12, 8))
    assert [tuple(o.shape[2:]) for o in outputs] == [(6, 12, 8), (6, 6, 4)]
    assert model.eval()(torch.randn(1, 1, 6, 12, 8)).shape == (1, 1, 6, 12, 8)
    with pytest.raises(ValueError, match=r"multiples of \(2, 4, 4\)"):
        model(torch.randn(1, 1, 6, 10, 8))


def test_bad_strides_are_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="strides needs 3 entries"):
        ResEncUNet(spatial_dims=3, features=(4, 8, 16), strides=[1, 2])
    with pytest.raises(ConfigError, match="the first all 1"):
        ResEncUNet(spatial_dims=2, features=(4, 8), strides=[2, 2])
    with pytest.raises(ConfigError, match=r"values in \{1, 2\}"):
        ResEncUNet(spatial_dims=2, features=(4, 8), strides=[1, [3, 1]])


def test_training_cost_follows_per_axis_strides() -> None:
    uniform = training_cost([16, 32, 32], 1, 1, 2, (4, 8, 16), (0, 1, 1))
    in_plane = training_cost([16, 32, 32], 1, 1, 2, (4, 8, 16), (0, 1, 1), strides=[1, [1, 2, 2], [1, 2, 2]])
    # the deeper stages keep twice the voxels when depth is not pooled: more FLOPs and memory
    assert in_plane.flops > uniform.flops and in_plane.activation_elements > uniform.activation_elements
    assert in_plane.parameters < uniform.parameters  # 1×2×2 transposed kernels instead of 2×2×2
    # the analytic FLOPs (forward = a third of a step) match torch's count for per-axis strides too
    model = ResEncUNet(
        spatial_dims=3,
        out_channels=2,
        features=(4, 8, 16),
        blocks=(0, 1, 1),
        strides=[1, [1, 2, 2], [1, 2, 2]],
        deep_supervision=False,
    )
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, 16, 32, 32))
    estimate = training_cost(
        [16, 32, 32],
        1,
        1,
        2,
        (4, 8, 16),
        (0, 1, 1),
        deep_supervision=False,
        strides=[1, [1, 2, 2], [1, 2, 2]],
    )
    assert estimate.flops / 3 == pytest.approx(counter.get_total_flops(), rel=0.02)
