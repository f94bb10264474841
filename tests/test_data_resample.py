import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from medseg.data import sources
from medseg.data.resample import (
    GRID_KEY,
    GridChange,
    Resampling,
    anisotropic_axis,
    bspline_coefficients,
    crop,
    grid_change_of,
    labels_to_input_grid,
    nonzero_box,
    paste,
    plan_resampling,
    resample_image,
    resample_labels,
    scores_to_input_labels,
    scores_to_labels,
    to_target_grid,
    values_to_input_grid,
)
from medseg.data.sample import Sample
from medseg.errors import DataError

RNG = np.random.default_rng(0)


def grid(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], separate_axis: int | None = None
) -> Resampling:
    ones = (1.0,) * len(in_shape)
    return Resampling(in_shape, out_shape, ones, ones, separate_axis, "")


def ball(
    shape: tuple[int, ...], spacing: tuple[float, ...], centre_mm: np.ndarray, radius_mm: float
) -> np.ndarray:
    """1 where a voxel centre lies inside the ball (uint8)."""
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    return (sum((g - c) ** 2 for g, c in zip(grids, centre_mm, strict=True)) <= radius_mm**2).astype(np.uint8)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


# ---------------------------------------------------------------- the grid


def test_plan_resampling_keeps_the_field_of_view() -> None:
    g = plan_resampling((10, 7, 7), (3.0, 0.7, 0.7), (1.0, 1.0, 1.0))
    # 10·3 = 30 mm → 30 voxels; 7·0.7 = 4.9 mm → round(4.9) = 5 voxels of 4.9 / 5 = 0.98 mm
    assert g.out_shape == (30, 5, 5)
    assert g.out_spacing == pytest.approx((1.0, 0.98, 0.98))
    assert g.inverse().out_shape == (10, 7, 7) and g.inverse().out_spacing == (3.0, 0.7, 0.7)
    in_plane = plan_resampling((10, 8, 8), (3.0, 1.0, 1.0), (0.5, 0.5))
    assert in_plane.out_shape == (10, 16, 16) and "in-plane" in in_plane.reason
    assert plan_resampling((4, 4), (1.0, 1.0), (2.0, 2.0)).out_shape == (2, 2)
    assert plan_resampling((4, 4, 4), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)).is_identity
    with pytest.raises(ValueError, match="does not fit"):
        plan_resampling((4, 4), (1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        plan_resampling((4, 4, 4), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0))


def test_anisotropic_spacing_sets_the_out_of_plane_axis_apart_and_says_why() -> None:
    axis, reason = anisotropic_axis((3.0, 0.7, 0.7), (1.0, 1.0, 1.0))
    assert axis == 0 and "ratio 4.3 ≥ 3" in reason and "axis 0 is out-of-plane" in reason
    axis, reason = anisotropic_axis((1.0, 1.0, 1.0), (1.0, 1.0, 5.0))  # the target is anisotropic
    assert axis == 2 and "target" in reason
    assert anisotropic_axis((1.0, 1.0, 2.9), (1.0, 1.0, 1.0))[0] is None
    assert anisotropic_axis((3.0, 3.0, 0.5), (1.0, 1.0, 1.0))[0] is None  # two coarse axes: no single one
    g = plan_resampling((10, 20, 20), (3.0, 0.7, 0.7), (1.0, 1.0, 1.0))
    assert g.separate_axis == 0 and "out-of-plane" in g.reason
    sample = Sample(
        np.ones((1, 10, 20, 20)), {"expert": np.zeros((10, 20, 20))}, "expert", (3.0, 0.7, 0.7), "a"
    )
    moved = to_target_grid(sample, (1.0, 1.0, 1.0))
    assert "out-of-plane" in moved.meta[GRID_KEY]["reason"] and moved.meta[GRID_KEY]["separate_axis"] == 0


# ---------------------------------------------------------------- images


def test_resampling_to_the_own_spacing_is_the_identity_exactly() -> None:
    image = RNG.normal(size=(2, 5, 6, 7)).astype(np.float32)
    labels = RNG.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    own = plan_resampling((5, 6, 7), (2.5, 0.8, 0.8), (2.5, 0.8, 0.8))
    np.testing.assert_array_equal(resample_image(image, own), image)
    for method in ("linear", "nearest"):
        np.testing.assert_array_equal(resample_labels(labels, own, method), labels)
    sample = Sample(image, {"expert": labels.clip(0, 1)}, "expert", (2.5, 0.8, 0.8), "a")
    same = to_target_grid(sample, (2.5, 0.8, 0.8))
    np.testing.assert_array_equal(same.image, image)
    np.testing.assert_array_equal(same.masks["expert"], sample.masks["expert"])
    assert same.spacing == sample.spacing


def test_cubic_resampling_equals_scipy_3d_spline_zoom() -> None:
    """Axis by axis equals SciPy's 3D cubic spline (64 taps per voxel) up to float32 rounding."""
    image = RNG.random((1, 17, 23, 29)).astype(np.float32)
    for out_shape in [(17, 30, 20), (9, 23, 40), (25, 11, 8)]:
        zoom = [m / n for m, n in zip(out_shape, image.shape[1:], strict=True)]
        expected = ndimage.zoom(image[0].astype(np.float64), zoom, order=3, mode="reflect", grid_mode=True)
        result = resample_image(image, grid(image.shape[1:], out_shape), order=3)
        np.testing.assert_allclose(result[0], expected, atol=2e-6)


def test_linear_resampling_equals_torch_trilinear_and_hand_values() -> None:
    image = RNG.random((2, 6, 9, 11)).astype(np.float32)
    result = resample_image(image, grid((6, 9, 11), (8, 5, 13)), order=1)
    expected = F.interpolate(torch.from_numpy(image)[None], (8, 5, 13), mode="trilinear", align_corners=False)
    np.testing.assert_allclose(result, expected[0].numpy(), atol=1e-5)
    # 4 → 2 voxels: output centres at input positions (j + 0.5)·2 − 0.5 = 0.5 and 2.5
    ramp = np.array([[0.0, 1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(resample_image(ramp, grid((4,), (2,)), order=1), [[0.5, 2.5]])
    # a constant stays constant under the cubic spline (its B-splines sum to one)
    constant = np.full((1, 4, 5), 7.0, np.float32)
    np.testing.assert_allclose(resample_image(constant, grid((4, 5), (9, 3)), order=3), 7.0, rtol=1e-6)


def test_out_of_plane_axis_is_nearest_neighbour_by_default() -> None:
    image = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1) * np.ones((1, 4, 6, 6), np.float32)
    g = grid((4, 6, 6), (8, 3, 3), separate_axis=0)
    nearest = resample_image(image, g, order=3)
    np.testing.assert_allclose(nearest[0, :, 1, 1], [0, 0, 1, 1, 2, 2, 3, 3], atol=1e-6)  # each slice twice
    linear = resample_image(image, g, order=3, out_of_plane_order=1)
    np.testing.assert_allclose(linear[0, :, 1, 1], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)
    with pytest.raises(ValueError, match="order"):
        resample_image(image, g, order=2)
    with pytest.raises(ValueError, match="out_of_plane_order"):
        resample_image(image, g, out_of_plane_order=3)
    with pytest.raises(ValueError, match="does not match"):
        resample_image(image[:, :2], g)


def test_bspline_coefficients_interpolate_their_samples() -> None:
    """(c[k−1] + 4 c[k] + c[k+1]) / 6 = x[k], with mirrored edges c[−1] = c[0], c[n] = c[n−1]."""
    for n in (1, 2, 3, 5, 40):
        for axis in (0, 1, 2):
            shape = [3, 4, 5]
            shape[axis] = n
            x = RNG.random(shape).astype(np.float32)
            c = np.moveaxis(bspline_coefficients(x, axis), axis, 0).astype(np.float64)
            padded = np.concatenate([c[:1], c, c[-1:]])
            rebuilt = (padded[:-2] + 4 * padded[1:-1] + padded[2:]) / 6
            np.testing.assert_allclose(rebuilt, np.moveaxis(x, axis, 0), atol=1e-5)


# ---------------------------------------------------------------- labels


def test_label_resampling_never_invents_a_value() -> None:
    values = np.array([0, 3, 7, 250], np.uint8)
    for trial in range(6):
        rng = np.random.default_rng(trial)
        shape = tuple(int(s) for s in rng.integers(3, 12, size=3))
        out = tuple(int(s) for s in rng.integers(2, 15, size=3))
        smooth = ndimage.gaussian_filter(rng.random(shape), 1.0)
        labels = values[np.digitize(smooth, np.quantile(smooth, [0.4, 0.6, 0.8]))]
        for separate in (None, 0):
            g = grid(shape, out, separate)
            for method in ("linear", "nearest"):
                result = resample_labels(labels, g, method)
                assert result.shape == out and result.dtype == labels.dtype
                assert set(np.unique(result)) <= set(np.unique(labels))
    signed = np.array([[-5, 2], [2, 9]], np.int16)
    assert set(np.unique(resample_labels(signed, grid((2, 2), (5, 3))))) <= {-5, 2, 9}
    flags = np.zeros((4, 4), bool)
    flags[1:3, 1:3] = True
    assert resample_labels(flags, grid((4, 4), (8, 8))).dtype == bool
    assert (resample_labels(np.full((3, 3), 4, np.uint8), grid((3, 3), (5, 5))) == 4).all()
    with pytest.raises(ValueError, match="label resampling"):
        resample_labels(flags, grid((4, 4), (8, 8)), "cubic")


def test_linear_labels_are_the_argmax_of_the_interpolated_indicators() -> None:
    labels = np.random.default_rng(1).integers(0, 3, size=(7, 9, 11)).astype(np.uint8)
    out = (5, 13, 8)
    result = resample_labels(labels, grid(labels.shape, out), "linear")
    indicators = torch.from_numpy(np.stack([labels == v for v in range(3)]).astype(np.float32))[None]
    scores = F.interpolate(indicators, out, mode="trilinear", align_corners=False)[0].numpy()
    chosen = np.take_along_axis(scores, result[None].astype(np.int64), 0)[0]
    np.testing.assert_allclose(chosen, scores.max(0), atol=1e-5)  # the top score (ties aside)
    # any dtype and any most frequent label (5; 0 or −3 a minority): the same top scores
    cases = [([5, 0, 2], dtype) for dtype in (np.uint8, np.uint16, np.int32, np.int64)] + [
        ([5, -3, 2], np.int16)
    ]
    for values, dtype in cases:
        relabelled = np.asarray(values, dtype)[labels]
        twos = np.flatnonzero(relabelled == 2)
        relabelled.flat[twos[::3]] = 5  # 5 becomes the most frequent label
        again = resample_labels(relabelled, grid(labels.shape, out), "linear")
        present = np.sort(values)
        indicators = torch.from_numpy(np.stack([relabelled == v for v in present]).astype(np.float32))[None]
        scores = F.interpolate(indicators, out, mode="trilinear", align_corners=False)[0].numpy()
        chosen = np.take_along_axis(scores, np.searchsorted(present, again)[None], 0)[0]
        np.testing.assert_allclose(chosen, scores.max(0), atol=1e-5)
        assert again.dtype == dtype
    nearest = resample_labels(labels, grid(labels.shape, out), "nearest")
    expected = F.interpolate(torch.from_numpy(labels)[None, None].float(), out, mode="nearest-exact")
    np.testing.assert_array_equal(nearest, expected[0, 0].numpy())


def test_linear_labels_keep_class_volumes_better_than_nearest() -> None:
    """Why ``linear`` is the default: ellipsoids of three classes, 0.7 mm → 1.5 mm, 6 random sets
    (``benchmarks/resampling.py`` measures more cases)."""
    errors: dict[str, list[float]] = {"linear": [], "nearest": []}
    spacing, shape = (0.7, 0.7, 0.7), (57, 57, 57)
    for trial in range(6):
        rng = np.random.default_rng(trial)
        labels = np.zeros(shape, np.uint8)
        for value in (1, 2, 3):
            radius = rng.uniform(3.0, 9.0)
            labels[ball(shape, spacing, rng.uniform(radius + 1, 40 - radius - 1, 3), radius) == 1] = value
        g = plan_resampling(shape, spacing, (1.5, 1.5, 1.5))
        for method, found in errors.items():
            result = resample_labels(labels, g, method)
            for value in (1, 2, 3):
                before = (labels == value).sum() * math.prod(spacing)
                if before:
                    found.append(abs((result == value).sum() * math.prod(g.out_spacing) - before) / before)
    assert np.mean(errors["linear"]) < np.mean(errors["nearest"])


def test_a_sphere_keeps_its_volume_from_thick_slices_to_1mm() -> None:
    """0.7 × 0.7 × 3 mm → 1 mm: the 10 mm sphere's volume stays within 2 % of 4/3 π r³.

    On the 3 mm grid itself the sphere is voxelised with up to 1 % error, and the 1 mm grid adds
    its own (about √(surface voxels) voxels, 35 mm³ ≈ 0.8 %).
    """
    spacing, radius = (3.0, 0.7, 0.7), 10.0
    shape = (12, 52, 52)  # 36 mm each way
    exact = 4 / 3 * math.pi * radius**3
    for offset in (0.0, 0.37, 1.1):
        centre = np.full(3, 18.0 + offset)
        sphere = ball(shape, spacing, centre, radius)
        g = plan_resampling(shape, spacing, (1.0, 1.0, 1.0))
        assert g.out_shape == (36, 36, 36) and g.separate_axis == 0
        voxel = math.prod(g.out_spacing)
        labels = resample_labels(sphere, g)
        assert abs(labels.sum() * voxel - exact) / exact < 0.02
        image = resample_image(sphere[None].astype(np.float32), g, order=3)[0]
        assert abs((image > 0.5).sum() * voxel - exact) / exact < 0.02


def test_scores_to_labels_is_the_argmax_after_resampling() -> None:
    scores = RNG.random((3, 6, 7, 8)).astype(np.float32)
    g = grid((6, 7, 8), (9, 5, 8))
    result = scores_to_labels(scores, g)
    expected = resample_image(scores, g, order=1).argmax(0)
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == np.uint8


# ---------------------------------------------------------------- cropping


def test_nonzero_box_crop_and_paste_round_trip() -> None:
    image = np.zeros((2, 6, 7, 8), np.float32)
    image[0, 1:3, 2:5, 3] = 1.0
    image[1, 4, 6, 7] = -2.0  # a non-zero voxel in another channel widens the box
    box = nonzero_box(image)
    assert box == ((1, 5), (2, 7), (3, 8))
    inside = crop(image, box)
    assert inside.shape == (2, 4, 5, 5)
    np.testing.assert_array_equal(paste(inside, box, (6, 7, 8)), image)
    mask = (image[0] > 0).astype(np.uint8)
    np.testing.assert_array_equal(paste(crop(mask, box), box, mask.shape), mask)
    assert nonzero_box(np.zeros((1, 3, 4))) == ((0, 3), (0, 4))  # nothing non-zero: everything
    with pytest.raises(ValueError, match="does not fill"):
        paste(inside, ((0, 1), (0, 1), (0, 1)), (6, 7, 8))


def test_crop_and_resample_a_sample_then_take_predictions_back() -> None:
    shape, spacing = (10, 40, 36), (2.0, 0.5, 0.6)
    image = np.zeros((1, *shape), np.float32)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    smooth = 2.0 + np.sin(z / 6.0) * np.cos(y / 5.0) + 0.05 * x  # smooth in mm: resampling keeps it
    image[0, 2:9, 5:33, 4:30] = smooth[2:9, 5:33, 4:30]
    truth = ball(shape, spacing, np.array([10.0, 9.0, 10.0]), 5.0) * (image[0] > 0)
    instance = truth * 4  # an instance map of the image's shape travels too (nearest neighbour)
    sample = Sample(image, {"expert": truth}, "expert", spacing, "case", meta={"instance": instance})
    moved = to_target_grid(sample, (1.0, 1.0, 1.0), crop_nonzero=True)
    change = grid_change_of(moved)
    assert change is not None and change.box == ((2, 9), (5, 33), (4, 30))
    assert moved.spatial_shape == change.shape == (14, 14, 16)
    assert moved.spacing == pytest.approx(change.spacing) and moved.masks["expert"].shape == (14, 14, 16)
    assert set(np.unique(moved.meta["instance"])) <= {0, 4} and moved.meta["instance"].shape == (14, 14, 16)
    assert GridChange.from_dict(change.to_dict()) == change
    assert grid_change_of(sample) is None

    back = labels_to_input_grid(moved.masks["expert"], change)
    assert back.shape == shape
    assert dice(back == 1, truth == 1) > 0.9
    probability = values_to_input_grid(moved.masks["expert"].astype(np.float32), change)
    assert probability.shape == shape and probability.dtype == np.float32
    assert probability[:2].max() == 0.0  # outside the box: 0
    two_channels = values_to_input_grid(np.stack([moved.image[0], moved.image[0]]), change)
    assert two_channels.shape == (2, *shape)
    scores = np.stack([1.0 - moved.masks["expert"], moved.masks["expert"]]).astype(np.float32)
    from_scores = scores_to_input_labels(scores, change)
    assert from_scores.shape == shape and set(np.unique(from_scores)) <= {0, 1}
    assert np.mean((from_scores == 1) != (back == 1)) < 0.01  # ties (0.5 / 0.5) may break either way
    # the smooth image comes back where it was (inside the box, away from its edges)
    restored = values_to_input_grid(moved.image, change)[0]
    inner = (slice(4, 7), slice(10, 28), slice(9, 25))
    np.testing.assert_allclose(restored[inner], image[0][inner], atol=0.02)

    with pytest.raises(DataError, match="already"):
        to_target_grid(moved, (1.0, 1.0, 1.0))
    flat = Sample(np.ones((1, 4, 4)), {}, "expert", (1.0, 1.0), "flat")
    with pytest.raises(DataError, match="3 values for a 2D image"):
        to_target_grid(flat, (1.0, 1.0, 1.0))
    cropped_only = to_target_grid(sample, None, crop_nonzero=True)
    np.testing.assert_array_equal(cropped_only.image, crop(image, change.box))
    assert cropped_only.spacing == spacing


@pytest.mark.realdata
def test_real_hippocampus_labels_survive_a_round_trip_through_1_5mm(shared_data: Path) -> None:
    src = sources.build("msd", root=shared_data / "hippocampus_mr")
    for case in src.case_ids()[:2]:
        (sample,) = src.load_case(case)
        same = to_target_grid(sample, sample.spacing, crop_nonzero=True)
        np.testing.assert_array_equal(same.target_mask, sample.target_mask)  # 1 mm, nothing to crop
        moved = to_target_grid(sample, (1.5, 1.5, 1.5))
        assert set(np.unique(moved.target_mask)) == {0, 1, 2}
        back = labels_to_input_grid(moved.target_mask, grid_change_of(moved))
        assert back.shape == sample.target_mask.shape
        for value in (1, 2):
            assert dice(back == value, sample.target_mask == value) > 0.7
