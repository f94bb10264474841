"""U-Net++: shapes in 2D/3D, fast vs deep-supervision modes, accurate-mode average, pruning, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medseg.models as models
from medseg.config import load_config
from medseg.errors import ConfigError
from medseg.losses import DeepSupervisionLoss
from medseg.models import UNetPlusPlus, build_from_config

SMALL = (4, 8, 16, 32, 64)  # 4 levels of nesting (L1–L4) → inputs must be multiples of 16


def _bce(logits: torch.Tensor, target: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def _called_modules(model: UNetPlusPlus, x: torch.Tensor) -> set[str]:
    """Names of the encoder stages, nodes and heads whose forward ran on ``x``."""
    called: set[str] = set()
    named = {f"enc{k}": stage for k, stage in enumerate(model.encoder.stages)}
    named |= {f"node_{name}": node for name, node in model.nodes.items()}
    named |= {f"head_{name}": head for name, head in model.heads.items()}
    handles = [m.register_forward_hook(lambda *_, n=n: called.add(n)) for n, m in named.items()]
    model(x)
    for handle in handles:
        handle.remove()
    return called


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_2d_output_shape(upsample: str) -> None:
    model = UNetPlusPlus(in_channels=3, out_channels=2, features=SMALL, upsample=upsample)
    assert model(torch.randn(2, 3, 32, 48)).shape == (2, 2, 32, 48)


@pytest.mark.parametrize("upsample", ["transpose", "trilinear"])
def test_3d_output_shape(upsample: str) -> None:
    model = UNetPlusPlus(spatial_dims=3, features=(2, 4, 8), upsample=upsample, deep_supervision=True)
    outs = model.train()(torch.randn(1, 1, 4, 8, 12))
    assert [tuple(o.shape) for o in outs] == [(1, 1, 4, 8, 12)] * 2
    assert model.eval()(torch.randn(1, 1, 4, 8, 12)).shape == (1, 1, 4, 8, 12)


def test_nested_nodes_follow_features() -> None:
    model = UNetPlusPlus(features=SMALL)
    assert model.depth == 4 and model.size_multiple == 16
    assert sorted(model.nodes) == sorted(f"x{i}_{j}" for i in range(4) for j in range(1, 5 - i))
    # x^{i,j} = H([x^{i,0..j-1}, U(x^{i+1,j-1})]): H sees (j + 1) × features[i] channels.
    assert model.nodes["x0_4"].conv[0].in_channels == 5 * 4
    assert model.nodes["x3_1"].conv[0].in_channels == 2 * 32
    assert model.nodes["x3_1"].up.in_channels == 64
    assert list(model.heads) == ["x0_4"]


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_norm_options(norm: str) -> None:
    model = UNetPlusPlus(features=(4, 8, 16), norm=norm)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_fast_mode_single_output_in_train_and_eval() -> None:
    model = UNetPlusPlus(features=SMALL)
    x = torch.randn(2, 1, 32, 32)
    assert isinstance(model.train()(x), torch.Tensor)
    model.eval()
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32)
    assert torch.allclose(out, model.heads["x0_4"](model.nested_features(x, 4)[-1]))


def test_deep_supervision_train_list_eval_average() -> None:
    model = UNetPlusPlus(features=SMALL, deep_supervision=True)
    x = torch.randn(2, 1, 32, 32)
    outs = model.train()(x)
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [(2, 1, 32, 32)] * 4
    model.eval()
    top = model.nested_features(x, 4)
    heads = [model.heads[f"x0_{j}"](t) for j, t in enumerate(top, start=1)]
    out = model(x)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, torch.stack(heads).mean(dim=0))  # accurate mode
    assert not torch.allclose(out, heads[-1])
    # The training list is [x04, x03, x02, x01]: same weights, so in eval mode it matches the heads.
    with torch.no_grad():
        model.training = True  # only this module's flag: BN stays in eval mode for the comparison
        listed = model(x)
        model.training = False
    for got, want in zip(listed, heads[::-1], strict=True):
        assert torch.allclose(got, want)


def test_deep_supervision_loss_takes_full_resolution_heads() -> None:
    model = UNetPlusPlus(features=SMALL, deep_supervision=True).train()
    outs = model(torch.randn(2, 1, 32, 32))
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = DeepSupervisionLoss(_bce)
    value = loss(outs, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_pruning_returns_level_head_and_skips_deeper_modules(level: int) -> None:
    model = UNetPlusPlus(features=SMALL, deep_supervision=True).eval()
    model.prune = level
    x = torch.randn(1, 1, 32, 32)
    out = model(x)
    assert out.shape == (1, 1, 32, 32)
    assert torch.allclose(out, model.heads[f"x0_{level}"](model.nested_features(x, level)[-1]))
    expected = {f"enc{k}" for k in range(level + 1)}
    expected |= {f"node_x{i}_{j}" for i in range(level) for j in range(1, level - i + 1)}
    expected |= {f"head_x0_{level}"}
    called = _called_modules(model, x)
    assert called == expected
    used = [model.encoder.stages[int(n[3:])] for n in called if n.startswith("enc")]
    used += [model.nodes[n[5:]] for n in called if n.startswith("node_")]
    used += [model.heads[n[5:]] for n in called if n.startswith("head_")]
    assert model.parameter_count(level) == sum(p.numel() for m in used for p in m.parameters())
    if level < 4:
        assert model.parameter_count(level) < model.parameter_count(level + 1)
    # The same head computed inside the full network gives the same logits (pruning changes nothing
    # upstream of x^{0,L}, Zhou et al. 2019).
    model.prune = None
    assert torch.allclose(out, model.heads[f"x0_{level}"](model.nested_features(x, 4)[level - 1]))


def test_unpruned_calls_every_module_and_prune_ignored_in_training() -> None:
    model = UNetPlusPlus(features=SMALL, deep_supervision=True, prune=1)
    x = torch.randn(2, 1, 32, 32)
    n_modules = len(model.encoder.stages) + len(model.nodes) + len(model.heads)
    assert len(_called_modules(model.train(), x)) == n_modules  # training supervises every head
    assert len(model(x)) == 4
    assert _called_modules(model.eval(), x) == {"enc0", "enc1", "node_x0_1", "head_x0_1"}
    assert model.parameter_count(1) < model.parameter_count(4) < model.parameter_count()


def test_prune_without_deep_supervision_only_full_depth() -> None:
    model = UNetPlusPlus(features=SMALL, prune=4).eval()
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ConfigError, match="deep_supervision=True"):
        model.prune = 2
    with pytest.raises(ConfigError, match="deep_supervision=True"):
        UNetPlusPlus(features=SMALL, prune=1)


@pytest.mark.parametrize("level", [0, 5, 2.0, True, "2"])
def test_bad_prune_level(level: object) -> None:
    model = UNetPlusPlus(features=SMALL, deep_supervision=True)
    with pytest.raises(ConfigError, match=r"prune must be None or an integer in 1\.\.4"):
        model.prune = level  # type: ignore[assignment]


def test_divisibility_error_names_size() -> None:
    model = UNetPlusPlus(features=SMALL)
    with pytest.raises(ValueError, match=r"multiple of 16.*\(24, 32\)"):
        model(torch.randn(1, 1, 24, 32))
    with pytest.raises(ValueError, match="expects a 4-D input"):
        model(torch.randn(1, 1, 16, 16, 16))


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
        UNetPlusPlus(**{"features": (4, 8, 16), **kwargs})


def test_registered_and_built_by_name() -> None:
    assert "unetpp" in models.available()
    assert "Zhou" in models.describe()["unetpp"]
    model = models.build(
        "unetpp",
        in_channels=3,
        out_channels=1,
        spatial_dims=2,
        features=SMALL,
        deep_supervision=True,
        prune=2,
    )
    assert isinstance(model, UNetPlusPlus) and model.prune == 2
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_builds_from_config() -> None:
    cfg = load_config(
        None,
        [
            "model.name=unetpp",
            "model.options={features: [4, 8, 16, 32, 64], deep_supervision: true, prune: 3}",
            "data.in_channels=3",
            "data.image_size=[32, 32]",
        ],
    )
    model = build_from_config(cfg)
    assert isinstance(model, UNetPlusPlus)
    assert model.features == SMALL and model.deep_supervision and model.prune == 3
    assert model.encoder.stages[0][0].in_channels == 3
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.parametrize("deep_supervision", [False, True])
def test_one_step_reduces_loss(deep_supervision: bool) -> None:
    torch.manual_seed(0)
    model = UNetPlusPlus(features=SMALL, deep_supervision=deep_supervision).train()
    x = torch.randn(4, 1, 32, 32)
    target = (x > 0.5).float()
    loss_fn = DeepSupervisionLoss(_bce, weights=[1.0] * 4)  # UNet++ weights its heads equally
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = loss_fn(model(x), target)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = loss_fn(model(x), target)
    assert after.item() < before.item()


def test_default_parameter_count() -> None:
    # (32, 64, 128, 256, 512) with 2×2 up-convolutions; the TMI 2019 paper lists UNet++ at ≈9.0M.
    model = UNetPlusPlus(in_channels=3, out_channels=1)
    assert model.parameter_count() == 9_045_825
    assert abs(model.parameter_count() - 9.0e6) < 0.1e6
