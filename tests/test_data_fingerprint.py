"""Dataset fingerprint on synthetic samples whose statistics are computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.data.fingerprint import Fingerprint, IntensityStats, compute_fingerprint
from medseg.data.sample import Sample
from medseg.errors import DataError


def _sample(
    image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...], case: str, **meta: object
) -> Sample:
    return Sample(
        image=image[None], masks={"expert": mask}, target="expert", spacing=spacing, case_id=case, meta=meta
    )


def _three_2d_samples() -> list[Sample]:
    mask_a = np.zeros((4, 4), np.uint8)
    mask_a[:2, :2] = 1  # object of 4 pixels over values 0, 1, 4, 5
    mask_a[3, 3] = 1  # object of 1 pixel over value 15
    mask_c = np.zeros((8, 4), np.uint8)
    mask_c[0, :3] = 1  # object of 3 pixels over value 7
    return [
        _sample(np.arange(16, dtype=np.float32).reshape(4, 4), mask_a, (1.0, 1.0), "a"),
        _sample(np.full((4, 6), 3.0, np.float32), np.zeros((4, 6), np.uint8), (2.0, 1.0), "b"),
        _sample(np.full((8, 4), 7.0, np.float32), mask_c, (3.0, 0.5), "c"),
    ]


def test_spacing_and_shape() -> None:
    fp = compute_fingerprint(_three_2d_samples())
    assert (fp.n_cases, fp.n_samples, fp.spatial_dims, fp.n_channels) == (3, 3, 2, 1)
    assert fp.spacing_median == (2.0, 1.0)
    assert fp.anisotropy == 2.0
    # 10th percentile, linear: [1, 2, 3] → 1.2; [0.5, 1, 1] → 0.6.
    assert fp.spacing_p10 == pytest.approx((1.2, 0.6))
    assert fp.shape_median == (4.0, 4.0)
    assert (fp.shape_min, fp.shape_max) == ((4, 4), (8, 6))
    assert fp.n_voxels_total == 16 + 24 + 32


def test_foreground_and_image_intensities() -> None:
    fp = compute_fingerprint(_three_2d_samples())
    fg = fp.intensity_foreground[0]
    # Foreground values 0, 1, 4, 5, 15, 7, 7, 7: mean 46/8, Σ(x − mean)² = 149.5.
    assert fg.mean == pytest.approx(5.75)
    assert fg.std == pytest.approx(math.sqrt(149.5 / 8))
    # Sorted 0 1 4 5 7 7 7 15: percentile 0.5 lies 0.035 into the first gap, 99.5 0.965 into the last.
    assert fg.percentile_00_5 == pytest.approx(0.035)
    assert fg.percentile_99_5 == pytest.approx(7 + 0.965 * 8)
    assert (fg.min, fg.max) == (0.0, 15.0)
    whole = fp.intensity_image[0]
    assert whole.mean == pytest.approx((120 + 24 * 3 + 32 * 7) / 72)
    assert (whole.min, whole.max) == (0.0, 15.0)


def test_classes_and_empty_slices() -> None:
    fp = compute_fingerprint(_three_2d_samples())
    (fg,) = fp.classes
    assert fg.label == 1
    assert fg.foreground_fraction == pytest.approx(8 / 72)
    assert fg.case_share == pytest.approx(2 / 3)
    assert fg.objects_per_case == pytest.approx(1.0)
    assert fg.object_size_voxels_median == 3.0  # sizes 4, 1, 3
    assert fg.object_size_physical_median == 4.0  # 4 mm², 1 mm², 3 × 1.5 mm²
    assert fp.empty_slice_share == pytest.approx(1 / 3)


def test_volume_slices_anisotropy_and_multiple_classes() -> None:
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[1, :2, :2] = 1
    labels[1, 3, 3] = 2
    image = np.stack([np.ones((3, 4, 4)), 2 * np.ones((3, 4, 4))]).astype(np.float32)
    volume = Sample(image, {"expert": labels}, "expert", (5.0, 1.0, 1.0), "v", meta={"num_classes": 3})
    fp = compute_fingerprint([volume], modality="CT")
    assert fp.modality == "ct"
    assert (fp.spatial_dims, fp.n_channels, fp.num_classes, fp.anisotropy) == (3, 2, 3, 5.0)
    assert fp.empty_slice_share == pytest.approx(2 / 3)  # slices 0 and 2 are empty
    assert [c.label for c in fp.classes] == [1, 2]
    assert [c.foreground_fraction for c in fp.classes] == pytest.approx([4 / 48, 1 / 48])
    assert [c.object_size_physical_median for c in fp.classes] == [20.0, 5.0]  # mm³: voxel = 5 mm³
    assert [s.mean for s in fp.intensity_foreground] == [1.0, 2.0]


def test_class_absent_everywhere_and_no_foreground() -> None:
    blank = _sample(np.ones((4, 4), np.float32), np.zeros((4, 4), np.uint8), (1.0, 1.0), "z")
    fp = compute_fingerprint([blank])
    assert fp.intensity_foreground == (None,)
    assert fp.classes[0].object_size_voxels_median == 0.0 and fp.empty_slice_share == 1.0


def test_subsampling_is_seeded_and_capped() -> None:
    rng = np.random.default_rng(1)
    samples = [
        _sample(rng.normal(size=(32, 32)).astype(np.float32), np.ones((32, 32), np.uint8), (1, 1), "r")
    ]
    a = compute_fingerprint(samples, max_voxels_per_sample=50, seed=3)
    b = compute_fingerprint(samples, max_voxels_per_sample=50, seed=3)
    full = compute_fingerprint(samples)
    assert a.intensity_image == b.intensity_image
    assert a.intensity_image[0] != full.intensity_image[0]
    assert full.intensity_image[0].mean == pytest.approx(float(samples[0].image.astype(np.float64).mean()))


def test_to_dict_round_trip() -> None:
    fp = compute_fingerprint(_three_2d_samples(), modality="mr")
    data = fp.to_dict()
    assert data["spacing_median"] == [2.0, 1.0] and data["classes"][0]["label"] == 1
    assert isinstance(data["intensity_foreground"][0], dict)
    assert Fingerprint.from_dict(data) == fp
    assert IntensityStats.of(np.array([])) is None


def test_bad_inputs_raise_data_errors() -> None:
    with pytest.raises(DataError, match="empty data set"):
        compute_fingerprint([])
    volume = Sample(np.ones((1, 2, 4, 4), np.float32), {}, "expert", (1, 1, 1), "v")
    with pytest.raises(DataError, match="mix spatial dims"):
        compute_fingerprint([volume, _three_2d_samples()[0]])
    two = _three_2d_samples()[:2]
    two[0].meta["modality"], two[1].meta["modality"] = "CT", "MR"
    with pytest.raises(DataError, match="several modalities"):
        compute_fingerprint(two)


def test_label_names_values_and_class_centroids() -> None:
    labels = np.zeros((5, 5, 9), np.uint8)
    labels[2, 2, 0:3] = 1  # class 1 near the start of the last axis: centroid x = 1 / 8
    labels[2, 2, 6:9] = 2  # class 2 near its end: x = 7 / 8
    meta = {"num_classes": 3, "label_names": ["background", "left", "right"], "class_values": [0, 1, 2]}
    volume = Sample(
        np.ones((1, 5, 5, 9), np.float32), {"expert": labels}, "expert", (1, 1, 1), "v", meta=meta
    )
    fp = compute_fingerprint([volume])
    assert fp.label_names == ("background", "left", "right") and fp.class_values == (0, 1, 2)
    assert fp.classes[0].centroid_relative == pytest.approx((0.5, 0.5, 1 / 8))
    assert fp.classes[1].centroid_relative == pytest.approx((0.5, 0.5, 7 / 8))
    assert Fingerprint.from_dict(fp.to_dict()) == fp
    other = Sample(
        volume.image,
        {"expert": labels},
        "expert",
        (1, 1, 1),
        "w",
        meta={**meta, "label_names": ["a", "b", "c"]},
    )
    with pytest.raises(DataError, match="disagree on meta\\['label_names'\\]"):
        compute_fingerprint([volume, other])


def test_modality_comes_from_dicom_meta_or_ct_channel_names() -> None:
    samples = _three_2d_samples()
    for s in samples:
        s.meta["channel_names"] = ["CT"]  # an nnU-Net / Decathlon dataset.json channel name
    assert compute_fingerprint(samples).modality == "ct"
    samples[0].meta["channel_names"] = ["T2"]
    assert compute_fingerprint(samples[:1]).modality == "mr"  # an MR sequence
    samples[0].meta["channel_names"] = ["MRI"]  # the Decathlon's Hippocampus dataset.json
    assert compute_fingerprint(samples[:1]).modality == "mr"
    samples[0].meta["channel_names"] = ["T2", "CT"]  # mixed: no modality claimed
    assert compute_fingerprint(samples[:1]).modality is None
    samples[0].meta["channel_names"] = ["optical"]  # unknown name: none either
    assert compute_fingerprint(samples[:1]).modality is None
    samples[0].meta["modality"] = "MR"  # DICOM's Modality wins over channel names
    assert compute_fingerprint(samples[:1]).modality == "mr"
    assert compute_fingerprint(samples, modality="US").modality == "us"  # the caller's override
