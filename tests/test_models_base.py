"""SegmentationModel: the declared model contract every architecture shares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medseg.models as models
from medseg.errors import ConfigError
from medseg.export.runtime import OnnxPromptableSAM, OnnxSegmenter
from medseg.models.base import SegmentationModel, check_spatial_input


class Identity3D(SegmentationModel):
    spatial_dims = 3
    size_multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x


def test_defaults_describe_a_binary_2d_model_of_any_size() -> None:
    model = SegmentationModel()
    assert (model.spatial_dims, model.size_multiple, model.mask_channel) == (2, 1, 0)
    assert model.num_classes is None and not model.deep_supervision and not model.promptable
    assert model.export_spatial_divisor == 1  # follows size_multiple
    model.check_input(torch.zeros(1, 1, 5, 7))


def test_check_input_names_the_shape() -> None:
    model = Identity3D()
    assert model.export_spatial_divisor == 4
    assert model(torch.zeros(1, 1, 4, 8, 12)).shape == (1, 1, 4, 8, 12)
    with pytest.raises(
        ValueError, match=r"Identity3D\(spatial_dims=3\) expects a 5-D input .*\(1, 1, 8, 8\)"
    ):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"multiple of 4; got spatial shape \(4, 8, 10\)"):
        model(torch.zeros(1, 1, 4, 8, 10))
    check_spatial_input(torch.zeros(2, 3, 6, 6), "any", 2)  # size_multiple 1: any size


def _build(name: str, **options: object) -> nn.Module:
    return models.build(name, **options)


@pytest.mark.parametrize(
    ("name", "options", "declared"),
    [
        (
            "unet",
            {"features": (4, 8, 16)},
            {"spatial_dims": 2, "size_multiple": 4, "export_spatial_divisor": 4},
        ),
        (
            "unet",
            {"features": (4, 8), "deep_supervision": True, "spatial_dims": 3},
            {"deep_supervision": True},
        ),
        ("unetpp", {"features": (4, 8)}, {"size_multiple": 2, "export_spatial_divisor": 2}),
        ("vnet", {"spatial_dims": 3}, {"spatial_dims": 3, "export_spatial_divisor": 16}),
        (
            "pdvnet",
            {"layers": (1,), "growth_rates": (2,), "skip_channels": (2,), "down_channels": ()},
            {"spatial_dims": 3, "export_spatial_divisor": None},
        ),
        ("resunet_r", {"features": (4, 4)}, {"spatial_dims": 3, "size_multiple": 2, "mask_channel": 0}),
        ("resunet_h", {"features": (4, 4)}, {"spatial_dims": 3, "out_channels": 2}),
        (
            "monai_unet",
            {"features": (2, 4), "num_res_units": 0},
            {"spatial_dims": 2, "export_spatial_divisor": None},
        ),
        (
            "litemedsam",
            {"variant": "tiny", "img_size": 32},
            {"promptable": True, "export_spatial_divisor": None},
        ),
    ],
)
def test_every_model_declares_its_contract(name: str, options: dict, declared: dict) -> None:
    model = _build(name, **options)
    assert isinstance(model, SegmentationModel)
    for attribute, value in declared.items():
        assert getattr(model, attribute) == value, attribute


def test_transunet_and_microsegnet_are_2d_and_deep_supervised() -> None:
    tiny = {"variant": "tiny", "img_size": 32}
    micro = models.build("microsegnet", **tiny)
    assert isinstance(micro, models.MicroSegNet) and micro.deep_supervision and micro.spatial_dims == 2
    assert micro.export_spatial_divisor is None and micro.size_multiple == 16
    with pytest.raises(ConfigError, match="2D models"):
        models.build("transunet", spatial_dims=3, **tiny)


def test_onnx_wrappers_declare_the_same_contract() -> None:
    assert issubclass(OnnxSegmenter, SegmentationModel) and not OnnxSegmenter.promptable
    assert issubclass(OnnxPromptableSAM, SegmentationModel) and OnnxPromptableSAM.promptable


def test_the_base_adds_no_state_so_older_checkpoints_load() -> None:
    from monai.networks.nets import UNet as MonaiUNet

    assert SegmentationModel().state_dict() == {}
    torch.manual_seed(0)
    ours = models.build("monai_unet", features=(2, 4), num_res_units=1)
    torch.manual_seed(0)
    theirs = MonaiUNet(2, 1, 1, channels=(2, 4), strides=(2,), num_res_units=1, norm="BATCH")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    )
