"""The synthetic micro-ultrasound phantom: determinism, annotations, layout on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.inspect import dice
from medseg.data.phantom import (
    faint_region,
    generate_phantom,
    generate_phantom_case,
    phantom_case_id,
    write_phantom_microus,
)

SHAPE = (12, 64, 64)


@pytest.fixture(scope="module")
def phantoms() -> list:
    return generate_phantom(n_patients=3, shape=SHAPE, seed=0)


def test_shapes_types_ids(phantoms: list) -> None:
    assert [s.case_id for s in phantoms] == ["phantom_00", "phantom_01", "phantom_02"]
    for s in phantoms:
        assert s.image.shape == (1, *SHAPE) and s.image.dtype == np.float32
        assert s.image.min() >= 0 and s.image.max() <= 255
        assert np.array_equal(s.image, np.round(s.image))  # uint8-representable
        assert set(s.masks) == {"expert", "non_expert"} and s.target == "expert"
        for m in s.masks.values():
            assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
        assert s.spacing == (1.0, 0.3, 0.3)
    assert phantom_case_id(5, 200) == "phantom_005"


def test_deterministic_and_seed_dependent(phantoms: list) -> None:
    again = generate_phantom_case(1, SHAPE, seed=0, n_patients=3)
    assert again.image.tobytes() == phantoms[1].image.tobytes()
    assert again.masks["non_expert"].tobytes() == phantoms[1].masks["non_expert"].tobytes()
    other = generate_phantom_case(1, SHAPE, seed=1)
    assert not np.array_equal(other.image, phantoms[1].image)
    assert not np.array_equal(phantoms[0].masks["expert"], phantoms[1].masks["expert"])


def test_non_expert_disagrees_in_faint_region(phantoms: list) -> None:
    for s in phantoms:
        e, n = s.masks["expert"].astype(bool), s.masks["non_expert"].astype(bool)
        xor = e ^ n
        assert xor.sum() > 0
        assert 0.85 < dice(e, n) < 0.99
        region = faint_region(s)
        assert xor[region].sum() / xor.sum() > 0.75
        # the boundary band of the region is a minority of the whole boundary band
        band = np.zeros_like(e)
        for z in range(e.shape[0]):
            from scipy.ndimage import binary_dilation, binary_erosion

            band[z] = binary_dilation(e[z], iterations=2) & ~binary_erosion(e[z], iterations=2)
        assert band[region].sum() / band.sum() < 0.6


def test_gland_hypoechoic_and_calcification_shadow() -> None:
    s = generate_phantom_case(0, (16, 96, 96), seed=0)
    img, e = s.image[0], s.masks["expert"].astype(bool)
    assert img[e].mean() < img[~e].mean() - 10
    z, y, x, r = s.meta["phantom"]["calcifications_zyxr"][0]
    z, y, x = int(z), int(y), int(x)
    assert img[z, y, x] > 200  # bright calcification
    below = img[z, y + 6 : y + 20, x - 1 : x + 2].mean()
    side = img[z, y + 6 : y + 20, x + 12 : x + 15].mean()
    assert below < side  # acoustic shadow down the rows


def test_write_phantom_microus_layout(tmp_path: Path) -> None:
    root = write_phantom_microus(tmp_path / "mu", n_train=1, n_test=1, shape=(4, 16, 16))
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.nii.gz"))
    assert names == [
        "test/expert_annotations/expert_annotation_test_01.nii.gz",
        "test/micro_ultrasound_scans/microUS_test_01.nii.gz",
        "test/non_expert_annotations/nonexpert_annotation_test_01.nii.gz",
        "train/expert_annotations/expert_annotation_train_01.nii.gz",
        "train/micro_ultrasound_scans/microUS_train_01.nii.gz",
        "train/non_expert_annotations/nonexpert_annotation_train_01.nii.gz",
    ]
    import nibabel as nib

    img = nib.load(str(root / "train/micro_ultrasound_scans/microUS_train_01.nii.gz"))
    assert img.shape == (16, 16, 4)  # x, y, z on disk
    assert img.header.get_zooms() == pytest.approx((0.3, 0.3, 1.0))
    assert img.get_data_dtype() == np.uint8


def test_bad_shape() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        generate_phantom_case(0, (2, 64, 64))
