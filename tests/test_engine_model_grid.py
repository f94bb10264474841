from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from PIL import Image
from torch import nn

from medseg.config import EvalConfig, load_config
from medseg.data.geometry import geometry_mismatch, geometry_of
from medseg.data.io import read_image
from medseg.data.resample import GRID_KEY
from medseg.data.sample import Sample
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.evaluate import evaluate_model
from medseg.engine.inference import SlidingWindow
from medseg.engine.model_grid import (
    labels_on_input,
    on_model_grid,
    predict_classes_on_input,
    uncertainty_on_input,
    values_on_input,
)
from medseg.engine.predict import predict_files
from medseg.engine.uncertainty import UncertaintyMaps
from medseg.errors import DataError
from medseg.models import build_from_config

CPU = torch.device("cpu")
WINDOW = SlidingWindow((8, 16, 16))


class Threshold(nn.Module):
    """Logits that make the prediction a known function of the intensity: foreground where the
    image exceeds 0.5 (binary), or class round(image) of ``num_classes`` (multi-class)."""

    promptable = False
    mask_channel = 0

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_classes is None:
            return 20.0 * (x[:, :1] - 0.5)
        return torch.cat([-10.0 * (x[:, :1] - k) ** 2 for k in range(self.num_classes)], dim=1)


def blob_volume(shape: tuple[int, ...], spacing: tuple[float, ...], levels: int = 1) -> np.ndarray:
    """A smooth blob (values 0..levels) inside a zero border: what a crop box finds."""
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    blob = levels * np.exp(-(z**2 / 150 + y**2 / 60 + x**2 / 90))
    blob[blob < 0.05] = 0.0
    return blob.astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def checkpoint(tmp_path: Path, *overrides: str, class_values: list[int] | None = None) -> Path:
    cfg = load_config(
        None,
        [
            "data.spatial_dims=3",
            "data.patch_size=[8, 16, 16]",
            "data.target_spacing=[1.0, 1.0, 1.0]",
            "data.crop_nonzero=true",
            "model.options={features: [4, 8]}",
            *overrides,
        ],
    )
    state = {"model": build_from_config(cfg).state_dict(), "config": cfg.to_dict()}
    if class_values is not None:
        state["class_values"] = class_values
    return save_checkpoint(state, tmp_path / "model.pt")


def test_prediction_comes_back_on_the_inputs_exact_grid(tmp_path: Path) -> None:
    """NIfTI in (oblique affine, 0.7 × 0.8 × 3 mm, zero border) → mask out on the same grid."""
    affine = np.array(
        [[0.0, 0.0, -3.0, 12.5], [0.56, -0.42, 0.0, -7.25], [0.48, 0.64, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
    )
    data_xyz = blob_volume((23, 19, 9), (0.7, 0.8, 3.0)).astype(np.float32)
    source = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data_xyz, affine), source)
    image, _, meta = read_image(source)
    expected = geometry_of(image, meta)
    for name, overrides, values in (
        ("binary", (), None),
        ("classes", ("data.num_classes=3", "loss.name=ce"), [0, 3, 5]),
    ):
        ckpt = checkpoint(tmp_path / name, *overrides, class_values=values)
        (result,) = predict_files(
            ckpt, [source], tmp_path / name / "out", save_probabilities=True, device="cpu"
        )
        mask, _, mask_meta = read_image(result.mask)
        got = geometry_of(mask, mask_meta)
        assert got == expected, f"{name}: {got.describe()} != {expected.describe()}"
        assert geometry_mismatch(got, expected) == []
        np.testing.assert_allclose(nib.load(result.mask).affine, affine)
        assert set(np.unique(mask)) <= ({0, 1} if values is None else {0, 3, 5})
        assert result.probabilities is not None
        assert nib.load(result.probabilities).shape == data_xyz.shape

    # NRRD: spacing, origin and direction of the ITK header
    itk = sitk.GetImageFromArray(np.ascontiguousarray(data_xyz.T))
    itk.SetSpacing((0.7, 0.8, 3.0))
    itk.SetOrigin((4.0, -2.0, 30.5))
    itk.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    nrrd = tmp_path / "scan.nrrd"
    sitk.WriteImage(itk, str(nrrd))
    array, _, nrrd_meta = read_image(nrrd)
    (result,) = predict_files(checkpoint(tmp_path / "nrrd"), [nrrd], tmp_path / "nrrd_out", device="cpu")
    mask, _, mask_meta = read_image(result.mask)
    assert geometry_of(mask, mask_meta) == geometry_of(array, nrrd_meta)


def test_prediction_without_spacing_cannot_be_resampled(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.image_size=[32, 32]", "model.options={features: [4, 8]}"])
    cfg.data.target_spacing = [0.5, 0.5]
    ckpt = save_checkpoint(
        {"model": build_from_config(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "m.pt"
    )
    png = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)).save(png)
    with pytest.raises(DataError, match="photo.png.*carries no spacing|carries no spacing.*photo.png"):
        predict_files(ckpt, [png], tmp_path / "out", device="cpu")


def test_evaluation_scores_the_prediction_on_the_samples_own_grid() -> None:
    spacing = (3.0, 0.7, 0.8)
    image = blob_volume((9, 40, 30), spacing)
    truth = (image > 0.5).astype(np.uint8)
    sample = Sample(image[None], {"expert": truth}, "expert", spacing, "case")
    result, predictions = evaluate_model(
        Threshold(),
        [sample],
        (16, 16),
        "none",
        EvalConfig(),
        CPU,
        progress=False,
        window=WINDOW,
        target_spacing=(1.0, 1.0, 1.0),
        crop_nonzero=True,
    )
    assert predictions[sample.key].shape == truth.shape
    assert result.per_patient["dice"].iloc[0] > 0.95  # on the input grid, no shift from the round trip
    seen = []
    evaluate_model(
        Threshold(),
        [sample],
        (16, 16),
        "none",
        EvalConfig(),
        CPU,
        progress=False,
        window=WINDOW,
        predictor=lambda s: seen.append(s.spatial_shape) or (s.image[0] > 0.5).astype(np.float32),
        target_spacing=(1.0, 1.0, 1.0),
        crop_nonzero=True,
    )
    assert seen and seen[0] != truth.shape  # the predictor sees the training grid

    classes = blob_volume((9, 40, 30), spacing, levels=2)
    labels = np.rint(classes).astype(np.uint8)
    multi = Sample(classes[None], {"expert": labels}, "expert", spacing, "multi", meta={"num_classes": 3})
    scored, predicted = evaluate_model(
        Threshold(3),
        [multi],
        (16, 16),
        "none",
        EvalConfig(),
        CPU,
        False,
        WINDOW,
        target_spacing=(1.0, 1.0, 1.0),
    )
    assert predicted[multi.key].shape == labels.shape
    assert scored.per_class is not None and (scored.per_class["dice"] > 0.9).all()  # classes 1 and 2
    assert list(scored.per_class["class_index"]) == [1, 2]


def test_classes_go_back_through_their_probabilities() -> None:
    spacing = (2.0, 0.5, 0.5)
    image = blob_volume((10, 36, 36), spacing, levels=2)
    sample = Sample(image[None], {}, "expert", spacing, "v")
    moved, change = on_model_grid(sample, (1.0, 1.0, 1.0), True)
    assert change is not None and moved.spatial_shape == change.shape
    labels, foreground = predict_classes_on_input(Threshold(3), moved, "none", CPU, WINDOW, 3, change)
    assert labels.shape == foreground.shape == image.shape and labels.dtype == np.uint8
    expected = np.rint(image).astype(np.uint8)
    for k in (1, 2):
        assert dice(labels == k, expected == k) > 0.9
    assert ((foreground >= 0) & (foreground <= 1)).all()
    plain_labels, _ = predict_classes_on_input(Threshold(3), sample, "none", CPU, WINDOW, 3, None)
    np.testing.assert_array_equal(plain_labels, expected)  # no grid change: the model's own argmax


def test_without_grid_change_everything_passes_through() -> None:
    sample = Sample(np.ones((1, 4, 5, 6)), {}, "expert", (1.0, 1.0, 1.0), "v")
    same, change = on_model_grid(sample, None, False)
    assert same is sample and change is None
    values = np.random.default_rng(0).random((4, 5, 6))
    assert values_on_input(values, None) is values and labels_on_input(values, None) is values
    moved, change = on_model_grid(sample, (2.0, 2.0, 2.0), False)
    assert GRID_KEY in moved.meta and moved.spatial_shape == (2, 2, 3)
    assert values_on_input(np.ones((2, 2, 3)), change).shape == (4, 5, 6)
    assert labels_on_input(np.ones((2, 2, 3), np.uint8), change).shape == (4, 5, 6)


def test_uncertainty_maps_go_back_and_the_binary_mask_is_rethresholded() -> None:
    sample = Sample(np.ones((1, 6, 8, 8)), {}, "expert", (1.0, 1.0, 1.0), "v")
    _, change = on_model_grid(sample, (2.0, 2.0, 2.0), False)
    assert change is not None
    probability = np.zeros((3, 4, 4), np.float32)
    probability[1:, 1:3, 1:3] = 0.9
    maps = UncertaintyMaps(probability, probability / 2, probability / 4, probability / 4, None, 8)
    mask, probs, back = uncertainty_on_input((probability > 0.5).astype(np.uint8), maps, change, 0.5)
    assert mask.shape == probs.shape == back.entropy.shape == back.mutual_information.shape == (6, 8, 8)
    np.testing.assert_array_equal(mask, (probs >= 0.5).astype(np.uint8))
    classes = (probability > 0.5).astype(np.uint8) * 2
    with_classes = UncertaintyMaps(probability, probability, probability, probability, classes, 8)
    mask, _, back = uncertainty_on_input(classes * 3, with_classes, change, 0.5)  # label values 0 / 6
    assert set(np.unique(mask)) <= {0, 6} and back.classes is not None and back.classes.shape == (6, 8, 8)
    unchanged = uncertainty_on_input(classes, with_classes, None, 0.5)
    assert unchanged[0] is classes and unchanged[2] is with_classes
