"""Device-side batch augmentation: image and masks move alike, exact flips, identity, dtypes, CUDA."""

from __future__ import annotations

import pytest
import torch

from medseg.data.device_augment import DeviceAugment, _rotation_3d
from medseg.errors import ConfigError

OFF = {
    "flip_prob": 0.0,
    "affine_prob": 0.0,
    "intensity_scale_prob": 0.0,
    "intensity_shift_prob": 0.0,
    "gamma_prob": 0.0,
    "noise_prob": 0.0,
}


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blobs(batch: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image and the mask that thresholds it at 0.5."""
    coarse = torch.rand(batch, 1, *(max(s // 4, 1) for s in shape), generator=_generator(7))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    image = torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=False)
    return image, (image > 0.5).to(torch.uint8)


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_when_every_probability_is_zero(dims: int) -> None:
    image, mask = _blobs(3, (8, 12, 10)[-dims:])
    out, out_mask = DeviceAugment(dims, **OFF)(image, mask, _generator())
    assert torch.equal(out, image) and torch.equal(out_mask, mask)


@pytest.mark.parametrize("dims", [2, 3])
def test_flips_are_exact_and_shared(dims: int) -> None:
    image, mask = _blobs(6, (8, 12, 10)[-dims:])
    augment = DeviceAugment(dims, **{**OFF, "flip_prob": 0.5})
    params = augment.draw_spatial(6, _generator(3))
    out, out_mask = augment(image, mask, _generator(3))
    assert params.flips.any() and not params.flips.all()
    for b in range(6):
        expected = image[b]
        for axis in range(dims):
            if params.flips[b, axis]:
                expected = expected.flip(1 + axis)
        assert torch.equal(out[b], expected)
    assert torch.equal(out_mask, (out > 0.5).to(torch.uint8))  # the mask still thresholds the image


@pytest.mark.parametrize("dims", [2, 3])
def test_affine_moves_image_and_masks_alike(dims: int) -> None:
    image, mask = _blobs(4, (16, 32, 32)[-dims:])
    augment = DeviceAugment(dims, **{**OFF, "flip_prob": 0.5, "affine_prob": 1.0, "rotate_deg": 30.0})
    params = augment.draw_spatial(4, _generator(1))
    out, out_mask = augment(image, {"expert": mask, "other": mask.float()}, _generator(1))
    assert not torch.equal(out, image)
    # Same warp with nearest sampling on the image: the mask is exactly its threshold.
    nearest = augment.apply_spatial(image, params, "nearest")
    assert torch.equal(out_mask["expert"], (nearest > 0.5).to(torch.uint8))
    assert torch.equal(out_mask["other"], out_mask["expert"].float())
    # Bilinear image vs nearest mask disagree only within 2 voxels of the mask's boundary (the
    # edge of the field of view counts: bilinear blends in the zero padding there).
    disagree = (out > 0.5).to(torch.uint8) != out_mask["expert"]
    m = torch.nn.functional.pad(out_mask["expert"].float(), [2] * 2 * dims)
    pool = torch.nn.functional.max_pool2d if dims == 2 else torch.nn.functional.max_pool3d
    near_boundary = (pool(m, 5, 1) + pool(-m, 5, 1)) > 0
    assert disagree.any() and not (disagree & ~near_boundary).any()
    assert set(out_mask["expert"].unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("dims", [2, 3])
def test_class_index_masks_stay_class_indices(dims: int) -> None:
    image, _ = _blobs(4, (16, 32, 32)[-dims:])
    classes = torch.bucketize(image, torch.tensor([0.3, 0.5, 0.7])).float()  # classes 0..3
    augment = DeviceAugment(dims, **{**OFF, "flip_prob": 0.5, "affine_prob": 1.0, "scale_range": (0.8, 1.3)})
    params = augment.draw_spatial(4, _generator(2))
    _, out = augment(image, classes, _generator(2))
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # nearest: no value between classes
    # the warp of the class map is the classes of the same warp of the image (sampled by nearest)
    nearest = augment.apply_spatial(image, params, "nearest")
    inside = nearest > 0  # zero padding outside the field of view is background in both
    expected = torch.bucketize(nearest, torch.tensor([0.3, 0.5, 0.7])).float()
    assert torch.equal(out[inside], expected[inside])


def test_anisotropic_volumes_never_mix_slices() -> None:
    volume = torch.arange(1, 7, dtype=torch.float32).view(1, 1, 6, 1, 1).expand(2, 1, 6, 16, 16).contiguous()
    augment = DeviceAugment(3, **{**OFF, "affine_prob": 1.0, "rotate_deg": 40.0}, anisotropic=True)
    params = augment.draw_spatial(2, _generator(4))
    out = augment.apply_spatial(volume, params, "nearest")
    for z in range(6):
        assert set(out[:, :, z].unique().tolist()) <= {0.0, float(z + 1)}
    assert torch.allclose(params.theta[:, 2], torch.tensor([0.0, 0.0, 1.0, 0.0]).expand(2, 4))


def test_rotation_matrices_are_orthonormal() -> None:
    r = _rotation_3d(torch.tensor([[0.3, -0.2, 0.5]]))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).unsqueeze(0), atol=1e-6)
    quarter = _rotation_3d(torch.tensor([[0.0, 0.0, torch.pi / 2]]))[0]
    assert torch.allclose(quarter @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_intensity_ops_by_hand() -> None:
    image = torch.linspace(0, 1, 16).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    scale = DeviceAugment(2, **{**OFF, "intensity_scale_prob": 1.0, "intensity_scale": 0.2})
    rand = torch.rand(2, 8, generator=_generator(5))
    out = scale.apply_intensity(image, _generator(5))
    expected = image * (1 + (rand[:, 1] * 2 - 1) * 0.2).view(-1, 1, 1, 1)
    assert torch.allclose(out, expected)
    gamma = DeviceAugment(2, **{**OFF, "gamma_prob": 1.0, "gamma_range": (2.0, 2.0)})
    assert torch.allclose(gamma.apply_intensity(image, _generator()), image**2)  # range [0, 1] kept
    noise = DeviceAugment(2, **{**OFF, "noise_prob": 1.0, "noise_std": 0.5})
    noisy = noise.apply_intensity(image, _generator())
    assert not torch.equal(noisy, image) and torch.equal(noisy, noise.apply_intensity(image, _generator()))


def test_shapes_dtypes_and_reproducibility() -> None:
    image = torch.randn(4, 2, 16, 16).half()
    masks = {
        "a": torch.randint(0, 3, (4, 1, 16, 16)),
        "b": torch.randint(0, 2, (4, 1, 16, 16), dtype=torch.uint8),
    }
    augment = DeviceAugment(2, affine_prob=1.0, gamma_prob=1.0, noise_prob=1.0)
    out, out_masks = augment(image, masks, _generator(9))
    assert out.shape == image.shape and out.dtype == torch.float16
    assert {k: (v.shape, v.dtype) for k, v in out_masks.items()} == {
        k: (v.shape, v.dtype) for k, v in masks.items()
    }
    again, again_masks = augment(image, masks, _generator(9))
    assert torch.equal(out, again) and all(torch.equal(out_masks[k], again_masks[k]) for k in masks)
    assert augment(image, None, _generator())[1] is None


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="spatial_dims"):
        DeviceAugment(4)
    with pytest.raises(ConfigError, match="flip_prob"):
        DeviceAugment(2, flip_prob=2.0)
    with pytest.raises(ConfigError, match="flip_axes"):
        DeviceAugment(2, flip_axes=(2,))
    with pytest.raises(ConfigError, match="scale_range"):
        DeviceAugment(2, scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="expects B×C×spatial"):
        DeviceAugment(3)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="does not match image shape"):
        DeviceAugment(2)(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_the_same_seed() -> None:
    image, mask = _blobs(4, (32, 32))
    augment = DeviceAugment(2, affine_prob=1.0, noise_prob=0.0)
    cpu, cpu_mask = augment(image, mask, _generator(2))
    gpu, gpu_mask = augment(image.cuda(), mask.cuda(), _generator(2))
    assert gpu.device.type == "cuda" and gpu_mask.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    assert (gpu_mask.cpu() != cpu_mask).float().mean() < 0.01  # nearest ties may round differently
