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
