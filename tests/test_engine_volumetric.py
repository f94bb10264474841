"""The 3D path end to end: train on patches, validate/evaluate/predict by sliding window."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from PIL import Image
from torch import nn

from medseg.config import Config, EvalConfig, load_config
from medseg.data.sample import Sample
from medseg.data.volumes import VolumeDataset
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.evaluate import evaluate_checkpoint, evaluate_model
from medseg.engine.inference import SlidingWindow, load_model, mask_logits, sliding_window_from_config
from medseg.engine.predict import predict_files
from medseg.engine.train import train
from medseg.engine.validation import validate_volumes
from medseg.errors import ConfigError, DataError
from medseg.losses import build as build_loss
from medseg.models import SegmentationModel, build_from_config

TINY_3D = [
    "data.options={n_patients: 4, seed: 0, shape: [6, 24, 24]}",
    "data.spatial_dims=3",
    "data.patch_size=[8, 16, 16]",  # deeper than the 6-slice volumes: padded
    "data.samples_per_volume=2",
    "model.options={features: [4, 8, 16]}",
    "loss.name=dice",
    "loss.options={squared: true}",
    "train.epochs=2",
    "train.batch_size=2",
    "train.progress=false",
    "train.tensorboard=false",
]


def tiny_3d(out: Path, *extra: str) -> Config:
    cfg = load_config(None, [*TINY_3D, *extra])
    cfg.output_dir = str(out)
    return cfg


class ThresholdModel(SegmentationModel):
    """A parameter-light 3D "model": logit +10 where the (normalised) image is positive, else −10."""

    spatial_dims = 3

    def __init__(self, extra_channel: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.extra_channel = extra_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.where(x[:, :1] > 0, 10.0, -10.0) * self.scale
        return torch.cat([logits, -logits], dim=1) if self.extra_channel else logits


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_3d_training_writes_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    const = "optim.scheduler=constant"
    full = train(tiny_3d(tmp_path / "full", const, "train.tensorboard=true"))
    assert full.best_checkpoint.is_file() and full.last_checkpoint.is_file()
    assert (tmp_path / "full" / "history.csv").read_text().count("\n") == 3
    assert list((tmp_path / "full" / "tensorboard").iterdir())
    assert 0.0 <= full.best_dice <= 1.0
    state = load_checkpoint(full.last_checkpoint)
    assert state["config"]["data"]["spatial_dims"] == 3 and state["annotators"][0] == "expert"
    model, cfg = load_model(full.last_checkpoint)
    assert model.spatial_dims == 3 and cfg.data.patch_size == [8, 16, 16]

    train(tiny_3d(tmp_path / "part", const, "train.epochs=1"))
    resumed = train(tiny_3d(tmp_path / "part", const), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    for key, value in _weights(full.last_checkpoint).items():
        torch.testing.assert_close(_weights(resumed.last_checkpoint)[key], value, rtol=0, atol=1e-6)


def test_3d_config_needs_a_patch_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patch_size"):
        train(tiny_3d(tmp_path / "nopatch", "data.patch_size=null"))
    with pytest.raises(ConfigError, match="spatial_dims"):
        build_from_config(tiny_3d(tmp_path, "data.spatial_dims=4"))


def test_window_comes_from_the_patch_or_the_inference_section(tmp_path: Path) -> None:
    cfg = tiny_3d(tmp_path, "inference.sw_overlap=0.25", "inference.tta_flips=true")
    assert sliding_window_from_config(cfg) == SlidingWindow((8, 16, 16), 0.25, "gaussian", 1, True, None)
    assert sliding_window_from_config(tiny_3d(tmp_path, "inference.roi_size=[4, 8, 8]")).roi_size == (4, 8, 8)
    assert sliding_window_from_config(load_config(None)) is None  # 2D


def _gt_volume(spacing: tuple[float, float, float] = (3.0, 0.5, 0.5)) -> tuple[np.ndarray, Sample]:
    gt = np.zeros((6, 20, 20), np.uint8)
    gt[1:4, 5:15, 5:15] = 1
    # the image is the ground truth moved one slice deeper: the prediction is off by one z step
    image = np.roll(gt, 1, axis=0).astype(np.float32)[None]
    return gt, Sample(image, {"expert": gt}, "expert", spacing, "vol")


def test_3d_evaluation_reports_per_volume_metrics_in_mm() -> None:
    gt, volume = _gt_volume()
    window = SlidingWindow((4, 8, 8))
    cfg = EvalConfig(hd95_mode="max")
    result, predictions = evaluate_model(
        ThresholdModel(), [volume], (0, 0), "zscore", cfg, torch.device("cpu"), False, window=window
    )
    np.testing.assert_array_equal(predictions["vol"], np.roll(gt, 1, axis=0))  # seamless windows
    patient = result.per_patient.iloc[0]
    assert patient["level"] == "patient" and patient["case"] == "vol"
    assert patient["dice"] == pytest.approx(2 / 3)  # 2 of 3 slices overlap
    assert patient["hd_mm"] == pytest.approx(3.0)  # one slice of 3 mm
    assert len(result.per_case) == 6 and (result.per_case["level"] == "slice").all()
    with pytest.raises(DataError, match="C×D×H×W"):
        flat = Sample(np.zeros((1, 8, 8)), {"expert": np.zeros((8, 8))}, "expert", (1.0, 1.0), "flat")
        evaluate_model(
            ThresholdModel(), [flat], (0, 0), "zscore", cfg, torch.device("cpu"), False, window=window
        )


def test_validation_dice_uses_the_mask_channel() -> None:
    gt, volume = _gt_volume()
    volume.image = gt.astype(np.float32)[None]  # now the prediction is exact
    val_set = VolumeDataset([volume], 1)
    model = ThresholdModel(extra_channel=True)  # channel 1 (say a boundary) is the opposite
    loss, dice = validate_volumes(
        model, val_set, build_loss("dice"), torch.device("cpu"), SlidingWindow((4, 8, 8))
    )
    assert dice == pytest.approx(1.0) and np.isfinite(loss)
    model.mask_channel = 1
    assert validate_volumes(
        model, val_set, build_loss("dice"), torch.device("cpu"), SlidingWindow((4, 8, 8))
    )[1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="mask channel 2"):
        model.mask_channel = 2
        mask_logits(torch.zeros(1, 2, 4, 4, 4), model)


@pytest.fixture()
def checkpoint_3d(tmp_path: Path) -> Path:
    cfg = tiny_3d(tmp_path)
    model = build_from_config(cfg)
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "model3d.pt")


def test_3d_prediction_keeps_the_nifti_affine(checkpoint_3d: Path, tmp_path: Path) -> None:
    affine = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, 0.4, 0.0, -3.0], [0.6, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((30, 28, 5)).astype(np.float32)
    src = tmp_path / "scan_01.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    (result,) = predict_files(checkpoint_3d, [src], tmp_path / "out", save_probabilities=True, device="cpu")
    mask = nib.load(result.mask)
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.shape == data.shape
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert result.probabilities is not None and nib.load(result.probabilities).shape == data.shape


def test_3d_prediction_keeps_nrrd_geometry_and_refuses_2d_images(checkpoint_3d: Path, tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(1).random((5, 18, 22)).astype(np.float32))
    image.SetSpacing((0.5, 0.4, 2.0))
    image.SetOrigin((1.0, -2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "vol.nrrd"))
    (result,) = predict_files(checkpoint_3d, [tmp_path / "vol.nrrd"], tmp_path / "out", device="cpu")
    mask = sitk.ReadImage(str(result.mask))
    assert mask.GetSize() == (22, 18, 5)
    np.testing.assert_allclose(mask.GetSpacing(), (0.5, 0.4, 2.0))
    np.testing.assert_allclose(mask.GetOrigin(), (1.0, -2.0, 3.0))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(DataError, match="3D model"):
        predict_files(checkpoint_3d, [tmp_path / "slice.png"], tmp_path / "out", device="cpu")


def test_evaluate_checkpoint_on_3d_validation_volumes(checkpoint_3d: Path, tmp_path: Path) -> None:
    result = evaluate_checkpoint(checkpoint_3d, tmp_path / "eval", split="val", device="cpu", progress=False)
    assert len(result.per_patient) == 1 and result.per_patient["hd95_mm"].notna().all()
    table = pd.read_csv(tmp_path / "eval" / "metrics.csv")
    assert set(table["level"]) == {"patient", "slice"}
    assert (tmp_path / "eval" / "overlays.png").is_file()
