from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.config import load_config
from medseg.data.sample import Sample
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.inference import load_model
from medseg.engine.predict import image_to_channels_first, predict_files, predict_probabilities
from medseg.errors import DataError
from medseg.models import build_from_config


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    cfg = load_config(None, ["data.image_size=[32, 32]", "model.options={features: [4, 8]}"])
    model = build_from_config(cfg)
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "model.pt")


def test_probabilities_come_back_at_input_size(checkpoint: Path) -> None:
    model, cfg = load_model(checkpoint)
    volume = Sample(np.random.rand(1, 3, 50, 40), {}, "expert", (2.0, 0.5, 0.4), "v")
    probs = predict_probabilities(model, volume, (32, 32), "zscore", torch.device("cpu"))
    assert probs.shape == (3, 50, 40)
    assert ((probs >= 0) & (probs <= 1)).all()


def test_2d_flip_tta_averages_the_mirrored_predictions_mirrored_back() -> None:
    class LeftEdge(torch.nn.Module):
        """Not mirror-symmetric: logit = 4·(x − 0.5) + a ramp along W."""

        promptable = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ramp = torch.linspace(-1, 1, x.shape[-1])
            return 4 * (x[:, :1] - 0.5) + ramp

    image = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    sample = Sample(image, {}, "expert", (1.0, 1.0), "s")
    cpu = torch.device("cpu")
    plain = predict_probabilities(LeftEdge(), sample, (8, 8), "none", cpu)
    tta = predict_probabilities(LeftEdge(), sample, (8, 8), "none", cpu, tta_flips=True)
    x = torch.from_numpy(image)[None]
    expected = (
        sum(torch.sigmoid(LeftEdge()(x.flip(dims)).flip(dims)) for dims in [(), (2,), (3,), (2, 3)]) / 4
    )
    np.testing.assert_allclose(tta, expected[0, 0].numpy(), atol=1e-6)
    assert not np.allclose(plain, tta)  # the ramp changes sign under a left-right flip


def test_nifti_prediction_keeps_affine(checkpoint: Path, tmp_path: Path) -> None:
    affine = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, 0.4, 0.0, -3.0], [0.6, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((30, 28, 5)).astype(np.float32)
    src = tmp_path / "scan_01.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), src)
    (result,) = predict_files(checkpoint, [src], tmp_path / "out", save_probabilities=True, device="cpu")
    mask = nib.load(result.mask)
    np.testing.assert_allclose(mask.affine, affine)
    assert mask.shape == data.shape
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert result.probabilities is not None and nib.load(result.probabilities).shape == data.shape


def test_png_prediction_and_overlay(checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "img one (1).png"
    Image.fromarray((np.random.rand(45, 37, 3) * 255).astype(np.uint8)).save(src)
    (result,) = predict_files(checkpoint, [tmp_path], tmp_path / "out", save_overlays=True, device="cpu")
    assert np.asarray(Image.open(result.mask)).shape == (45, 37)
    assert result.overlay is not None and result.overlay.is_file()


def test_channel_handling_and_errors(tmp_path: Path, checkpoint: Path) -> None:
    rgb = np.zeros((5, 6, 3))
    assert image_to_channels_first(rgb, 1, "x.png", False).shape == (1, 5, 6)
    assert image_to_channels_first(np.zeros((5, 6)), 3, "x.png", False).shape == (3, 5, 6)
    with pytest.raises(DataError, match="x.nii"):
        image_to_channels_first(np.zeros((5, 6)), 1, "x.nii", True)
    with pytest.raises(DataError, match="missing.png"):
        predict_files(checkpoint, [tmp_path / "missing.png"], tmp_path / "out", device="cpu")
