"""Sliding-window inference: seamless blending, identity, flip TTA, CPU stitching, 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.inference import (
    SlidingWindow,
    class_index_to_value,
    class_logits,
    flip_axes,
    load_model,
    mask_logits,
    model_from_state,
    resolve_device,
    sliding_window_from_config,
    sliding_window_predict,
)
from medseg.models import SegmentationModel, build_from_config
from medseg.models.unet import UNet


class ConstantLogits(nn.Module):
    """Returns ``value`` everywhere, ``channels`` channels (a model with no spatial dependence)."""

    def __init__(self, value: float = 2.5, channels: int = 2) -> None:
        super().__init__()
        self.value, self.channels = value, channels
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: Tensor) -> Tensor:
        shape = (x.shape[0], self.channels, *x.shape[2:])
        return torch.full(shape, self.value, dtype=x.dtype, device=x.device) + 0 * self.anchor


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.clone()


class BorderArtefact(nn.Module):
    """The input, plus ``error`` in a band of ``width`` voxels along every window face.

    Stands in for a zero-padded CNN, which is least reliable at the border of its window: the
    artefact shows as a seam wherever a window border falls inside the volume.
    """

    def __init__(self, error: float = 1.0, width: int = 2) -> None:
        super().__init__()
        self.error, self.width = error, width

    def forward(self, x: Tensor) -> Tensor:
        band = torch.ones_like(x)
        w = self.width
        inner = (slice(None), slice(None), *[slice(w, s - w) for s in x.shape[2:]])
        band[inner] = 0
        return x + self.error * band


class SymmetricBlur(nn.Module):
    """3×3(×3) mean filter with zero padding: commutes with every flip."""

    def forward(self, x: Tensor) -> Tensor:
        pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
        return pool(x, 3, stride=1, padding=1)


class DeepSupervisionInTraining(nn.Module):
    """Returns ``[main, aux]`` whatever the mode, as a careless deep-supervision model might."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x + 1, torch.zeros_like(x[..., ::2, ::2])]


@pytest.mark.parametrize("shape", [(1, 1, 40, 52), (2, 1, 20, 36, 28)])
def test_constant_model_gives_seamless_constant(shape: tuple[int, ...]) -> None:
    roi = (16,) * (len(shape) - 2)
    volume = torch.randn(shape)
    out = sliding_window_predict(ConstantLogits(2.5, channels=2), volume, roi)  # gaussian, overlap 0.5
    assert out.shape == (shape[0], 2, *shape[2:])
    assert (out - 2.5).abs().max().item() < 1e-5


def test_gaussian_blending_hides_window_borders() -> None:
    volume = torch.randn(1, 1, 40, 40, 40)
    model = BorderArtefact(error=1.0, width=2)
    interior = (slice(None), slice(None), *[slice(4, -4)] * 3)  # away from the volume's own border
    gaussian = sliding_window_predict(model, volume, 16)
    constant = sliding_window_predict(model, volume, 16, overlap=0.25, mode="constant")  # MONAI's default
    err_gaussian = (gaussian - volume)[interior].abs().max().item()
    err_constant = (constant - volume)[interior].abs().max().item()
    assert err_constant > 0.5  # seams: band voxels of up to 3 windows averaged with full weight (0.875)
    assert err_gaussian < 0.1  # a 2-voxel border band weighs < 1% of a window centre (measured 0.057)
    assert err_gaussian < err_constant / 10


def test_identity_model_returns_the_input() -> None:
    volume = torch.randn(1, 3, 24, 30, 34)
    out = sliding_window_predict(Identity(), volume, (16, 16, 16), sw_batch_size=4)
    assert torch.allclose(out, volume, atol=1e-5)


def test_volume_smaller_than_window_is_padded_and_cropped() -> None:
    volume = torch.randn(1, 1, 10, 12, 20)
    out = sliding_window_predict(Identity(), volume, 16)
    assert out.shape == volume.shape
    assert torch.allclose(out, volume, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 30, 26), (1, 2, 18, 22, 20)])
def test_flip_tta_on_equivariant_model_equals_plain(shape: tuple[int, ...]) -> None:
    volume = torch.randn(shape)
    roi = (16,) * (len(shape) - 2)
    plain = sliding_window_predict(SymmetricBlur(), volume, roi)
    tta = sliding_window_predict(SymmetricBlur(), volume, roi, tta_flips=True)
    some = sliding_window_predict(SymmetricBlur(), volume, roi, tta_flips=[(0,), (0, 1)], output="sigmoid")
    assert torch.allclose(tta, plain, atol=1e-5)
    plain_probabilities = sliding_window_predict(SymmetricBlur(), volume, roi, output="sigmoid")
    assert torch.allclose(some, plain_probabilities, atol=1e-5)


def test_flip_tta_averages_a_non_equivariant_model() -> None:
    class Ramp(nn.Module):  # output depends on the position along the last axis: not flip-equivariant
        def forward(self, x: Tensor) -> Tensor:
            return x + torch.linspace(0, 1, x.shape[-1])

    volume = torch.zeros(1, 1, 16, 16)
    out = sliding_window_predict(Ramp(), volume, 16, tta_flips=[(1,)])
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=1e-5)  # ramp + reversed ramp, halved


def test_flip_axes() -> None:
    assert flip_axes(False, 3) == [()]
    assert len(flip_axes(True, 3)) == 8 and flip_axes(True, 2) == [(), (2,), (3,), (2, 3)]
    assert flip_axes([(2,), (2,), (0, 1)], 3) == [(), (4,), (2, 3)]
    with pytest.raises(ValueError, match="spatial axes 0..1"):
        flip_axes([(2,)], 2)


def test_cpu_stitching_matches_and_lands_on_cpu() -> None:
    volume = torch.randn(1, 1, 20, 24, 24)
    default = sliding_window_predict(SymmetricBlur(), volume, 16)
    stitched = sliding_window_predict(SymmetricBlur(), volume, 16, device="cpu", stitch_device="cpu")
    assert stitched.device.type == "cpu"
    assert torch.allclose(default, stitched)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_windows_cpu_stitching() -> None:
    volume = torch.randn(1, 1, 40, 40, 40)
    out = sliding_window_predict(ConstantLogits().cuda(), volume, 16, stitch_device="cpu")
    assert out.device.type == "cpu" and (out - 2.5).abs().max().item() < 1e-5


def test_list_output_takes_the_first_and_training_flag_is_restored() -> None:
    model = DeepSupervisionInTraining().train()
    volume = torch.randn(1, 1, 20, 20)
    out = sliding_window_predict(model, volume, 16)
    assert torch.allclose(out, volume + 1, atol=1e-5)
    assert model.training


def test_deep_supervision_unet_gives_one_tensor() -> None:
    model = UNet(
        in_channels=1, out_channels=2, spatial_dims=3, features=(2, 4), deep_supervision=True
    ).train()
    model.encoder.eval()  # e.g. a frozen encoder: mixed modes must come back as they were
    volume = torch.randn(1, 1, 12, 20, 20)
    out = sliding_window_predict(model, volume, (8, 16, 16))
    assert isinstance(out, Tensor) and out.shape == (1, 2, 12, 20, 20)
    assert model.training and model.decoder.training and not model.encoder.training


def test_bad_arguments() -> None:
    volume = torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="roi_size needs 3"):
        sliding_window_predict(Identity(), volume, (16, 16))
    with pytest.raises(ValueError, match="blend mode"):
        sliding_window_predict(Identity(), volume, 16, mode="cosine")
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(Identity(), volume, 16, overlap=1.0)
    with pytest.raises(ValueError, match="B×C×H×W"):
        sliding_window_predict(Identity(), torch.randn(16, 16), 16)


# --------------------------------------------------------------------------- checkpoint model, channels


def test_load_model_rebuilds_from_config_without_reading_pretraining_files(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.image_size=[32, 32]", "model.options={features: [4, 8]}"])
    model = build_from_config(cfg)
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "model.pt")
    loaded, loaded_cfg = load_model(path)
    assert not loaded.training and loaded_cfg.data.image_size == [32, 32]
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    assert resolve_device("cpu").type == "cpu"
    state = {"model": model.state_dict(), "config": cfg.to_dict()}
    state["config"]["model"]["options"]["pretrained"] = str(tmp_path / "absent.npz")  # not read again
    rebuilt, rebuilt_cfg = model_from_state(state)
    assert "pretrained" not in rebuilt_cfg.model.options and isinstance(rebuilt, SegmentationModel)


def test_mask_and_class_logits_pick_the_declared_channels() -> None:
    logits = torch.arange(4.0).view(1, 4, 1, 1)
    model = SegmentationModel()
    assert mask_logits(logits, model).flatten().tolist() == [0.0]
    model.mask_channel = 2
    assert mask_logits(logits, model).flatten().tolist() == [2.0]
    model.mask_channel = 4
    with pytest.raises(ValueError, match="mask channel 4 is outside the model's 4 logit channel"):
        mask_logits(logits, model)
    assert class_logits(logits, 3).flatten().tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="5 classes but the model gives 4"):
        class_logits(logits, 5)


def test_class_index_to_value_and_sliding_window_from_config() -> None:
    classes = np.array([[0, 1], [2, 1]])
    assert class_index_to_value(classes, None).dtype == np.uint8
    mapped = class_index_to_value(classes, [0, 7, 300])
    assert mapped.tolist() == [[0, 7], [300, 7]] and mapped.dtype == np.int16
    with pytest.raises(ValueError, match="class index 2 has no value"):
        class_index_to_value(classes, [0, 1])
    assert sliding_window_from_config(load_config(None, [])) is None
    cfg = load_config(None, ["data.spatial_dims=3", "data.patch_size=[4, 8, 8]", "inference.sw_overlap=0.25"])
    assert sliding_window_from_config(cfg) == SlidingWindow(roi_size=(4, 8, 8), overlap=0.25)


def test_normalized_volume_and_whole_volume_probabilities() -> None:
    from medseg.data.sample import Sample
    from medseg.engine.inference import normalized_volume, predict_volume_probabilities
    from medseg.errors import DataError

    volume = Sample(np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4), {}, "expert", (1.0,) * 3, "v")
    image = normalized_volume(volume, "zscore")
    assert image.shape == (1, 1, 2, 4, 4) and abs(float(image.mean())) < 1e-6
    flat = Sample(np.zeros((1, 4, 4), np.float32), {}, "expert", (1.0, 1.0), "slice", source_path="s.png")
    with pytest.raises(DataError, match="s.png: a 3D model needs a C×D×H×W volume"):
        normalized_volume(flat, "zscore")

    class Sign(SegmentationModel):
        spatial_dims = 3

        def forward(self, x: Tensor) -> Tensor:
            return torch.where(x > 0, 10.0, -10.0)

    probs = predict_volume_probabilities(
        Sign(), volume, "zscore", torch.device("cpu"), SlidingWindow((2, 4, 4))
    )
    assert probs.shape == (2, 4, 4) and ((probs > 0.5) == (image[0, 0].numpy() > 0)).all()
