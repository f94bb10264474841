"""Geometry of files and its comparison (medseg.data.geometry), and scored pairs (medseg.data.pairs)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from medseg.data.geometry import (
    Geometry,
    check_label_geometry,
    check_same_geometry,
    geometry_from,
    geometry_mismatch,
    geometry_of,
    resample_to_reference,
)
from medseg.data.io import read_image
from medseg.data.pairs import read_label_on_image, read_mask_pair
from medseg.errors import DataError


def _nii(path: Path, zyx: np.ndarray, zooms=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> Path:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(np.asarray(zyx).T, affine), str(path))
    return path


def _cube(shape=(4, 6, 6)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[1:3, 2:4, 2:4] = 1
    return m


def test_geometry_of_nifti_is_in_itk_convention(tmp_path: Path) -> None:
    path = _nii(tmp_path / "a.nii.gz", _cube(), zooms=(0.5, 0.6, 2.0), origin=(10, 20, 30))
    arr, _, meta = read_image(path)
    g = geometry_of(arr, meta)
    assert g.shape == (4, 6, 6)
    assert g.spacing_xyz == pytest.approx((0.5, 0.6, 2.0))
    assert g.origin == pytest.approx((-10.0, -20.0, 30.0))  # RAS → LPS
    assert g.direction == pytest.approx((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    # the same grid written by SimpleITK as NRRD has the same geometry
    image = sitk.ReadImage(str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    arr2, _, meta2 = read_image(tmp_path / "a.nrrd")
    assert geometry_mismatch(geometry_of(arr2, meta2), g) == []


def test_geometry_of_2d_formats(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "a.png")
    arr, _, meta = read_image(tmp_path / "a.png")
    assert geometry_of(arr, meta) == Geometry((3, 4))
    affine = np.diag([0.25, 0.5, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((4, 3), np.uint8), affine), str(tmp_path / "b.nii.gz"))
    arr, spacing, meta = read_image(tmp_path / "b.nii.gz")
    g = geometry_of(arr, meta)
    assert arr.shape == (3, 4) and spacing == (0.5, 0.25)
    assert g.spacing_xyz == pytest.approx((0.25, 0.5)) and len(g.direction) == 4


def test_geometry_mismatch_and_tolerance() -> None:
    base = Geometry((4, 6, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert geometry_mismatch(base, base) == []
    near = Geometry(base.shape, (1.0 + 1e-6, 1.0, 2.0), (5e-4, 0.0, 0.0), base.direction)
    assert geometry_mismatch(near, base) == []  # within a thousandth of a voxel
    assert geometry_mismatch(Geometry((4, 6, 7)), base) == ["shape"]
    moved = Geometry(base.shape, (0.5, 0.5, 5.0), (100.0, 0.0, 0.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert geometry_mismatch(moved, base) == ["spacing", "origin", "direction"]
    assert geometry_mismatch(Geometry(base.shape), base) == []  # a PNG has only a shape


def test_check_same_geometry_names_both_files_and_geometries() -> None:
    gt = Geometry((2, 2), (1.0, 1.0), (0.0, 0.0), (1, 0, 0, 1))
    pred = Geometry((2, 2), (0.5, 1.0), (0.0, 0.0), (1, 0, 0, 1))
    with pytest.raises(DataError) as err:
        check_same_geometry(pred, "p.nii", gt, "g.nii")
    text = str(err.value)
    assert text.startswith("p.nii: prediction and ground truth are on different grids (spacing differ)")
    assert "spacing (0.5, 1) mm" in text and "ground truth g.nii" in text and "spacing (1, 1) mm" in text
    assert "--resample-pred" in text
    check_same_geometry(gt, "a", gt, "b")


def test_resample_to_reference_nearest_neighbour(tmp_path: Path) -> None:
    fine = np.repeat(np.repeat(_cube(), 2, axis=1), 2, axis=2)
    pred = _nii(tmp_path / "p.nii.gz", fine * 3, zooms=(0.5, 0.5, 2.0), origin=(-0.25, -0.25, 0))
    gt = _nii(tmp_path / "g.nii.gz", _cube())
    out = resample_to_reference(pred, gt)
    assert out.shape == (4, 6, 6) and np.array_equal(out, _cube() * 3)  # labels kept, no blending
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(DataError, match=r"x\.png: 2D image files carry no geometry"):
        resample_to_reference(tmp_path / "x.png", gt)
    nib.save(nib.Nifti1Image(np.zeros((6, 6), np.uint8), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DataError, match=r"flat\.nii\.gz: cannot resample a 2D prediction onto a 3D"):
        resample_to_reference(tmp_path / "flat.nii.gz", gt)


def test_read_mask_pair_binary_labels_and_missing(tmp_path: Path) -> None:
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[1, 1:3, 1:3] = 1
    gt[2, 3:5, 3:5] = 2
    gt_path = _nii(tmp_path / "g.nii.gz", gt)
    pred_path = _nii(tmp_path / "p.nii.gz", gt)
    with pytest.raises(DataError, match=r"g\.nii\.gz: mask holds several labels.*--labels all"):
        read_mask_pair(pred_path, gt_path)
    one = read_mask_pair(pred_path, gt_path, labels=[2])
    assert [p.label for p in one.pairs] == [2] and one.pairs[0].gt.sum() == 4
    every = read_mask_pair(pred_path, gt_path, labels="all")
    assert [p.label for p in every.pairs] == [1, 2] and every.spacing == (2.0, 1.0, 1.0)
    missing = read_mask_pair(None, _nii(tmp_path / "b.nii.gz", _cube()))
    assert missing.pairs[0].pred.sum() == 0 and missing.pairs[0].gt.sum() == 8
    empty = read_mask_pair(None, _nii(tmp_path / "e.nii.gz", np.zeros((2, 2, 2), np.uint8)), labels="all")
    assert [p.label for p in empty.pairs] == [None]


def test_read_mask_pair_checks_or_resamples_geometry(tmp_path: Path) -> None:
    gt_path = _nii(tmp_path / "g.nii.gz", _cube())
    far = _nii(tmp_path / "p.nii.gz", _cube(), origin=(100.0, 0.0, 0.0))
    with pytest.raises(DataError, match=r"p\.nii\.gz: .*\(origin differ\)"):
        read_mask_pair(far, gt_path)
    shifted = read_mask_pair(far, gt_path, resample_pred=True)
    assert shifted.resampled and shifted.pairs[0].pred.sum() == 0  # 100 mm away: nothing overlaps


def test_geometry_from_a_spatial_shape_and_dicom_meta() -> None:
    meta = {
        "format": "dicom",
        "origin": (1.0, 2.0, 3.0),
        "direction": tuple(np.eye(3).ravel()),
        "spacing_xyz": (0.5, 0.5, 2.0),
    }
    geometry = geometry_from((4, 8, 8), meta)
    assert (
        geometry.shape == (4, 8, 8)
        and geometry.origin == (1.0, 2.0, 3.0)
        and geometry.spacing_xyz == (0.5, 0.5, 2.0)
    )
    assert geometry_from((8, 8), {"format": "2d"}) == Geometry((8, 8))


def test_check_label_geometry_names_the_label_and_the_image() -> None:
    image = Geometry((4, 6, 6), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    check_label_geometry(image, "img.nii.gz", image, "lab.nii.gz")
    moved = Geometry((4, 6, 6), (1.0, 1.0, 2.0), (-50.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(
        DataError, match=r"^lab\.nii\.gz: label and image are on different grids \(origin differ\)"
    ) as e:
        check_label_geometry(image, "img.nii.gz", moved, "lab.nii.gz")
    assert "image img.nii.gz: shape (4, 6, 6)" in str(e.value) and "origin (-50, 0, 0)" in str(e.value)


def test_read_label_on_image_applies_the_policy_and_the_grid(tmp_path: Path) -> None:
    image_path = _nii(tmp_path / "img.nii.gz", _cube().astype(np.float32))
    array, _, meta = read_image(image_path)
    grid = geometry_of(array, meta)
    labels, label_meta = read_label_on_image(_nii(tmp_path / "lab.nii.gz", _cube() * 3), image_path, grid)
    assert labels.max() == 3 and label_meta["format"] == "nifti"
    with pytest.raises(DataError, match=r"lab2\.nii\.gz: mask holds non-integer values"):
        read_label_on_image(_nii(tmp_path / "lab2.nii.gz", _cube() * np.float32(0.5)), image_path, grid)
    with pytest.raises(
        DataError, match=r"lab3\.nii\.gz: label and image are on different grids \(spacing differ\)"
    ):
        read_label_on_image(_nii(tmp_path / "lab3.nii.gz", _cube(), zooms=(0.5, 0.5, 2.0)), image_path, grid)
