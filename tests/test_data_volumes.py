"""VolumeDataset: patches with a foreground ratio, determinism, padding, anisotropic augmentation."""

import numpy as np
import pytest
import torch

from medseg.config import AugmentConfig
from medseg.data.sample import Sample
from medseg.data.transforms import augment_transform, is_anisotropic, normalize_intensity
from medseg.data.volumes import VolumeDataset, pad_to_size, sample_patch_start
from medseg.errors import ConfigError, DataError

NO_INTENSITY = {"intensity_scale": 0.0, "intensity_shift": 0.0}


def _volume(
    shape: tuple[int, int, int] = (8, 32, 32),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    case_id: str = "v",
    blob: tuple[slice, ...] = (slice(1, 3), slice(2, 5), slice(3, 6)),
    **meta: object,
) -> Sample:
    rng = np.random.default_rng(0)
    expert = np.zeros(shape, np.uint8)
    expert[blob] = 1
    non_expert = np.roll(expert, 1, axis=2)
    return Sample(
        rng.random((1, *shape)).astype(np.float32) * 100,
        {"expert": expert, "non_expert": non_expert},
        "expert",
        spacing,
        case_id,
        meta=dict(meta),
    )


def _patches(ds: VolumeDataset, seeds: range) -> list[dict]:
    items = []
    for seed in seeds:
        ds.set_epoch_seed(seed)
        items.extend(ds[i] for i in range(len(ds)))
    return items


def test_foreground_ratio_one_puts_foreground_in_every_patch() -> None:
    ds = VolumeDataset([_volume()], 1, patch_size=(4, 8, 8), foreground_ratio=1.0, samples_per_volume=8)
    items = _patches(ds, range(25))
    assert len(items) == 200
    assert all(item["target"].sum() > 0 for item in items)
    assert items[0]["image"].shape == (1, 4, 8, 8) and items[0]["target"].shape == (1, 4, 8, 8)


def test_foreground_ratio_zero_is_uniform_over_positions() -> None:
    shape, patch = (8, 32, 32), (4, 8, 8)
    foreground = np.flatnonzero(_volume(shape).target_mask)
    rng = np.random.default_rng(0)
    starts = np.array([sample_patch_start(shape, patch, foreground, 0.0, rng) for _ in range(5000)])
    for axis, (s, p) in enumerate(zip(shape, patch, strict=True)):
        counts = np.bincount(starts[:, axis], minlength=s - p + 1)
        assert len(counts) == s - p + 1  # every valid start occurs, none beyond
        expected = len(starts) / (s - p + 1)
        assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected
    # A small blob is then hit about as often as chance says, far below ratio 1.0.
    ds = VolumeDataset([_volume(shape)], 1, patch_size=patch, foreground_ratio=0.0, samples_per_volume=8)
    hit = np.mean([item["target"].sum() > 0 for item in _patches(ds, range(25))])
    assert hit < 0.2


def test_foreground_ratio_half_mixes_both() -> None:
    shape, patch = (8, 32, 32), (4, 8, 8)
    ds = VolumeDataset([_volume(shape)], 1, patch_size=patch, foreground_ratio=0.5, samples_per_volume=8)
    hit = np.mean([item["target"].sum() > 0 for item in _patches(ds, range(50))])
    assert 0.45 < hit < 0.7  # 0.5 centred + 0.5 × the uniform chance (≈ 0.1)


def test_patches_are_deterministic_per_epoch_seed_in_any_order() -> None:
    aug = AugmentConfig(prob=1.0)
    ds = VolumeDataset([_volume(), _volume(case_id="w")], 1, patch_size=(4, 8, 8), augment=aug)
    ds.set_epoch_seed(3)
    forward = [ds[i] for i in range(len(ds))]
    backward = [ds[i] for i in reversed(range(len(ds)))][::-1]
    for a, b in zip(forward, backward, strict=True):
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
        assert torch.equal(a["patch_start"], b["patch_start"])
    ds.set_epoch_seed(4)
    other = [ds[i] for i in range(len(ds))]
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(forward, other, strict=True))
    assert [item["case_id"] for item in forward] == ["v"] * 4 + ["w"] * 4


def test_small_volume_is_padded_to_the_patch() -> None:
    small = _volume((3, 10, 12), (2.0, 0.5, 0.5), blob=(slice(0, 3), slice(2, 5), slice(3, 6)))
    ds = VolumeDataset([small], 1, patch_size=(4, 16, 16), foreground_ratio=1.0, samples_per_volume=2)
    item = ds[0]
    assert item["image"].shape == (1, 4, 16, 16)
    assert torch.equal(item["patch_start"], torch.zeros(3, dtype=torch.int64))
    assert item["image"][0, 3].abs().sum() == 0 and item["image"][0, :, 10:].abs().sum() == 0
    expected = normalize_intensity(small.image)
    np.testing.assert_allclose(item["image"][0, :3, :10, :12].numpy(), expected[0], rtol=1e-6)
    assert item["target"].sum() == small.target_mask.sum()
    assert item["spacing"].tolist() == [2.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="pad"):
        sample_patch_start((3, 10, 12), (4, 16, 16), np.array([0]), 1.0, np.random.default_rng(0))
    assert pad_to_size(np.ones((1, 2, 2)), (3, 1)).shape == (1, 3, 2)


def test_whole_volumes_keep_spacing_and_every_annotator() -> None:
    a = _volume((5, 16, 20), (3.0, 0.4, 0.5), "a")
    b = Sample(np.zeros((1, 4, 8, 8)), {"expert": np.zeros((4, 8, 8))}, "expert", (1.0, 1.0, 1.0), "b")
    ds = VolumeDataset([a, b], 1, intensity="none")
    assert len(ds) == 2 and ds.annotators == ["expert", "non_expert"]
    item = ds[0]
    assert item["image"].shape == (1, 5, 16, 20)
    np.testing.assert_array_equal(item["image"].numpy(), a.image)
    assert item["spacing"].tolist() == pytest.approx([3.0, 0.4, 0.5])
    assert torch.equal(item["masks"]["non_expert"][0], torch.from_numpy(a.masks["non_expert"]).float())
    assert item["annotator_present"] == {"expert": True, "non_expert": True}
    # an annotator a volume lacks falls back to the target mask, flagged absent
    assert ds[1]["annotator_present"] == {"expert": True, "non_expert": False}


def test_instance_labels_follow_the_patch() -> None:
    sample = _volume()
    instance = sample.target_mask.astype(np.int32) * 7
    instance[2, 2:5, 3:6] = 9
    sample.meta["instance"] = instance
    ds = VolumeDataset(
        [sample], 1, patch_size=(4, 8, 8), foreground_ratio=1.0, augment=AugmentConfig(prob=1.0)
    )
    for item in _patches(ds, range(5)):
        assert item["instance"].dtype == torch.int64
        assert set(item["instance"].unique().tolist()) <= {0, 7, 9}
        assert torch.equal(item["instance"] > 0, item["target"] > 0)


def test_anisotropic_volume_is_not_rotated_out_of_plane() -> None:
    slices = np.arange(1, 9, dtype=np.float32)[:, None, None] * np.ones((8, 24, 24), np.float32)
    cfg = AugmentConfig(prob=1.0, rotate_deg=30.0, scale=0.2, flip=False, **NO_INTENSITY)

    def centres(spacing: tuple[float, float, float]) -> list[np.ndarray]:
        sample = Sample(slices[None], {"expert": np.zeros((8, 24, 24))}, "expert", spacing, "s")
        ds = VolumeDataset([sample], 1, "none", (8, 24, 24), samples_per_volume=4, augment=cfg)
        return [ds[i]["image"][0, :, 10:14, 10:14].numpy() for i in range(len(ds))]

    for centre in centres((3.0, 0.5, 0.5)):  # z 6× coarser: in-plane rotation and scaling only
        np.testing.assert_allclose(centre, slices[:, :4, :4], atol=1e-4)
    assert any(not np.allclose(c, slices[:, :4, :4], atol=1e-2) for c in centres((1.0, 1.0, 1.0)))


def test_anisotropy_rule_and_2d_augmentation_unchanged() -> None:
    assert is_anisotropic((3.0, 1.0, 1.0)) and not is_anisotropic((2.0, 1.0, 1.0))
    assert is_anisotropic((2.0, 0.3, 1.0))  # against the finest in-plane spacing
    assert not is_anisotropic((5.0, 1.0, 1.0), ratio=6.0) and not is_anisotropic((1.0, 1.0))
    affine = augment_transform(["expert"], 2, AugmentConfig()).transforms[0]
    assert affine.rand_affine.rand_affine_grid.rotate_range == (pytest.approx(np.radians(15.0)),)
    assert affine.rand_affine.rand_affine_grid.scale_range == (0.05, 0.05)


def test_bad_volumes_are_clear_errors() -> None:
    with pytest.raises(DataError, match="spatial shape"):
        Sample(np.zeros((1, 4, 8, 8)), {"expert": np.zeros((4, 8, 9))}, "expert", (1.0, 1.0, 1.0), "x")
    edited = _volume()
    edited.masks["expert"] = np.zeros((8, 32, 31), np.uint8)  # edited after construction
    with pytest.raises(DataError, match="spatial shape"):
        VolumeDataset([edited], 1, patch_size=(4, 8, 8))
    flat = Sample(np.zeros((1, 8, 8)), {"expert": np.zeros((8, 8))}, "expert", (1.0, 1.0), "flat")
    with pytest.raises(DataError, match="spatial_dims: 2"):
        VolumeDataset([flat], 1)
    with pytest.raises(DataError, match="in_channels"):
        VolumeDataset([_volume()], 3)
    with pytest.raises(ConfigError, match="patch_size"):
        VolumeDataset([_volume()], 1, patch_size=(8, 8))
    with pytest.raises(ConfigError, match="foreground_ratio"):
        VolumeDataset([_volume()], 1, patch_size=(4, 8, 8), foreground_ratio=1.5)
    bad = _volume()
    bad.meta["instance"] = np.zeros((8, 32, 30), np.int32)
    with pytest.raises(DataError, match="instance"):
        VolumeDataset([bad], 1)
