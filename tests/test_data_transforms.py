import numpy as np
import pytest
import torch

from medseg.config import AugmentConfig, config_from_dict
from medseg.data.transforms import (
    augment_transform,
    mask_key,
    normalize_intensity,
    preprocess_images,
    preprocess_transform,
    window_intensity,
)
from medseg.errors import ConfigError


def _item() -> dict:
    image = np.zeros((1, 40, 40), np.float32)
    image[0, 10:30, 12:28] = 5.0
    mask = (image > 0).astype(np.float32)
    return {"image": image, "mask_expert": mask.copy(), "mask_non_expert": mask.copy()}


def test_normalize_intensity_modes() -> None:
    image = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    z = normalize_intensity(image, "zscore")
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-6)
    m = normalize_intensity(image, "minmax")
    assert m.min() == 0 and m.max() == 1
    const = normalize_intensity(np.ones((1, 3, 3)), "zscore")
    assert np.isfinite(const).all()
    with pytest.raises(ValueError):
        normalize_intensity(image, "bogus")


def test_window_intensity_clips_then_zscores_with_fixed_statistics() -> None:
    # channel 0: clip to [-100, 300] HU, then (x − 40) / 10; channel 1: [0, 1], (x − 0.5) / 0.25
    image = np.array([[[-1000.0, 0.0], [40.0, 2000.0]], [[-1.0, 0.5], [0.75, 3.0]]], np.float32)
    windows = [{"clip": [-100, 300], "mean": 40, "std": 10}, {"clip": [0, 1], "mean": 0.5, "std": 0.25}]
    expected = np.array([[[-14.0, -4.0], [0.0, 26.0]], [[-2.0, 0.0], [1.0, 2.0]]], np.float32)
    np.testing.assert_allclose(window_intensity(image, windows), expected)
    np.testing.assert_allclose(normalize_intensity(image, windows), expected)
    # the 2D preprocessing applies the same mapping (no resize: image_size = the image's own)
    out = preprocess_transform([], (2, 2), windows)({"image": image})["image"]
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    with pytest.raises(ValueError, match="2 intensity windows for an image with 1 channels"):
        window_intensity(image[:1], windows)
    with pytest.raises(ValueError, match="channel 1: clip must be"):
        normalize_intensity(image, [windows[0], {"clip": [1, 0], "mean": 0, "std": 1}])
    with pytest.raises(ValueError, match="std > 0"):
        normalize_intensity(image[:1], [{"clip": [0, 1], "mean": 0, "std": 0}])


def test_config_accepts_intensity_windows_and_names_a_bad_one() -> None:
    window = {"clip": [-100.0, 300.0], "mean": 40.0, "std": 10.0}
    assert config_from_dict({"data": {"intensity": [window]}}).data.intensity == [window]
    with pytest.raises(ConfigError, match="data.intensity.*keys must be clip, mean, std"):
        config_from_dict({"data": {"intensity": [{"clip": [0, 1]}]}})
    with pytest.raises(ConfigError, match="data.intensity = 'ct'"):
        config_from_dict({"data": {"intensity": "ct"}})


def test_preprocess_resizes_image_linear_and_masks_nearest() -> None:
    out = preprocess_transform(["expert", "non_expert"], (20, 20), "zscore")(_item())
    assert tuple(out["image"].shape) == (1, 20, 20)
    for key in ("mask_expert", "mask_non_expert"):
        values = set(torch.as_tensor(out[key]).unique().tolist())
        assert values <= {0.0, 1.0}
    assert mask_key("expert") == "mask_expert"


def test_augmentation_moves_image_and_every_mask_together() -> None:
    cfg = AugmentConfig(prob=1.0, rotate_deg=15, scale=0.05, flip=True, intensity_scale=0, intensity_shift=0)
    transform = augment_transform(["expert", "non_expert"], 2, cfg)
    transform.set_random_state(seed=3)
    out = transform(_item())
    image = torch.as_tensor(out["image"])[0]
    expert = torch.as_tensor(out["mask_expert"])[0]
    other = torch.as_tensor(out["mask_non_expert"])[0]
    assert torch.equal(expert, other)  # identical masks stay identical
    assert set(expert.unique().tolist()) <= {0.0, 1.0}
    # the bright square and the mask stay aligned (image ≈ 5 inside the mask)
    assert float(image[expert > 0].mean()) > 4.0
    assert float(image[expert == 0].abs().mean()) < 1.0
    # seeded: the same seed gives the same draw
    transform.set_random_state(seed=3)
    assert torch.equal(torch.as_tensor(transform(_item())["image"]), torch.as_tensor(out["image"]))


def test_disabled_augmentation_is_identity() -> None:
    transform = augment_transform(["expert"], 2, AugmentConfig(enabled=False))
    item = _item()
    out = transform(dict(item))
    np.testing.assert_array_equal(np.asarray(out["image"]), item["image"])


def test_preprocess_images_batches_what_preprocess_transform_gives_each_image() -> None:
    rng = np.random.default_rng(0)
    images = [rng.normal(5.0, 2.0, size=(1, 20, 30)).astype(np.float32) for _ in range(3)]
    batch = preprocess_images(images, (16, 16), "zscore")
    assert batch.shape == (3, 1, 16, 16) and batch.dtype == torch.float32
    one = np.asarray(preprocess_transform([], (16, 16), "zscore")({"image": images[1]})["image"])
    np.testing.assert_allclose(batch[1].numpy(), one, atol=1e-6)
