"""Model registry: build by name, listing, descriptions, unknown names, the MONAI wrapper."""

from __future__ import annotations

import pytest
import torch

import medseg.models as models
from medseg.models import UNet


def test_available_and_describe() -> None:
    assert {"unet", "monai_unet"} <= set(models.available())
    assert models.available() == sorted(models.available())
    descriptions = models.describe()
    assert set(descriptions) == set(models.available())
    assert "Ronneberger" in descriptions["unet"]


def test_build_unet_by_name() -> None:
    model = models.build("unet", in_channels=1, out_channels=1, spatial_dims=2, features=(4, 8, 16))
    assert isinstance(model, UNet)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(KeyError, match="unknown model.*Available: .*monai_unet.*unet"):
        models.build("unet_plus_plus_plus")


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_monai_unet_2d(norm: str) -> None:
    model = models.build("monai_unet", features=(4, 8, 16), num_res_units=1, norm=norm)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)


def test_monai_unet_3d() -> None:
    model = models.build("monai_unet", spatial_dims=3, out_channels=2, features=(2, 4), num_res_units=0)
    assert model(torch.randn(1, 1, 4, 4, 4)).shape == (1, 2, 4, 4, 4)


def test_monai_unet_bad_features() -> None:
    with pytest.raises(ValueError, match="at least 2 levels"):
        models.build("monai_unet", features=(4,))


def test_registered_traits_are_declared_facts() -> None:
    assert models.MODELS.traits("transunet") == {"input_size": True}
    assert models.MODELS.traits("unet") == {}
    with pytest.raises(KeyError, match="unknown model"):
        models.MODELS.traits("nope")


def test_build_from_config_passes_dims_input_size_and_classes() -> None:
    from medseg.config import load_config
    from medseg.errors import ConfigError

    cfg = load_config(None, ["model.options={features: [4, 8]}", "data.in_channels=3"])
    unet = models.build_from_config(cfg)
    assert isinstance(unet, UNet) and unet.spatial_dims == 2 and unet.num_classes is None
    assert unet(torch.zeros(1, 3, 8, 8)).shape == (1, 1, 8, 8)
    vit = load_config(
        None, ["model.name=transunet", "model.options={variant: tiny}", "data.image_size=[32, 48]"]
    )
    assert models.build_from_config(vit)(torch.zeros(1, 1, 32, 48)).shape == (1, 1, 32, 48)  # img_size given
    three = load_config(
        None, ["data.spatial_dims=3", "data.num_classes=3", "model.options={features: [4, 8]}"]
    )
    multi = models.build_from_config(three)
    assert multi.num_classes == 3 and multi.spatial_dims == 3
    assert multi(torch.zeros(1, 1, 4, 8, 8)).shape == (1, 3, 4, 8, 8)
    with pytest.raises(ConfigError, match="3D only"):
        models.build_from_config(load_config(None, ["model.name=resunet_r"]))
    with pytest.raises(ConfigError, match="data.spatial_dims must be 2 or 3"):
        models.build_from_config(cfg, spatial_dims=4)


def test_build_from_config_gives_the_same_weights_as_build_for_a_seed() -> None:
    from medseg.config import load_config

    torch.manual_seed(0)
    direct = models.build("unet", features=(4, 8), spatial_dims=2)
    torch.manual_seed(0)
    configured = models.build_from_config(load_config(None, ["model.options={features: [4, 8]}"]))
    assert direct.state_dict().keys() == configured.state_dict().keys()
    assert all(
        torch.equal(a, b)
        for a, b in zip(direct.state_dict().values(), configured.state_dict().values(), strict=True)
    )
