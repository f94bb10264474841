"""Readers/writers in medseg.data.io: axis order, spacing, geometry round trips, bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from medseg.data.io import file_format, read_image, strip_extension, write_image, write_volume
from medseg.errors import DataError


def _nifti(path: Path, xyz: np.ndarray, zooms=(0.5, 0.6, 2.0)) -> Path:
    aff = np.diag([*zooms, 1.0])
    aff[:3, 3] = [10.0, -20.0, 5.0]
    nib.save(nib.Nifti1Image(xyz, aff), str(path))
    return path


def test_file_format_and_strip_extension() -> None:
    assert file_format("a/b.nii.gz") == "nifti"
    assert file_format("x.NRRD") == "itk"
    assert file_format("benign (1).png") == "2d"
    assert strip_extension("case_01.nii.gz") == "case_01"
    assert strip_extension("benign (12).png") == "benign (12)"
    with pytest.raises(DataError, match="unknown image file extension") as e:
        file_format("scan.xyz")
    assert "scan.xyz" in str(e.value)


def test_read_nifti_axis_order_spacing_and_meta(tmp_path: Path) -> None:
    xyz = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    p = _nifti(tmp_path / "v.nii.gz", xyz)
    arr, spacing, meta = read_image(p)
    assert arr.shape == (6, 5, 4)
    np.testing.assert_array_equal(arr, xyz.transpose(2, 1, 0))
    assert spacing == pytest.approx((2.0, 0.6, 0.5))
    assert meta["format"] == "nifti"
    np.testing.assert_allclose(meta["affine"][:3, 3], [10.0, -20.0, 5.0])


def test_write_volume_nifti_preserves_geometry(tmp_path: Path) -> None:
    xyz = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    ref = _nifti(tmp_path / "ref.nii.gz", xyz)
    arr, spacing, meta = read_image(ref)
    pred = (arr > 0).astype(np.uint8)
    out = write_volume(tmp_path / "pred.nii.gz", pred, meta)
    back, sp2, meta2 = read_image(out)
    np.testing.assert_array_equal(back, pred)
    assert back.dtype == np.uint8
    assert sp2 == spacing
    np.testing.assert_array_equal(meta2["affine"], meta["affine"])
    assert meta2["header"].get_qform(coded=True)[1] == meta["header"].get_qform(coded=True)[1]
    # a path works as the reference too
    out2 = write_volume(tmp_path / "pred2.nii", pred, ref)
    np.testing.assert_array_equal(read_image(out2)[2]["affine"], meta["affine"])


def test_itk_round_trip_and_conversion(tmp_path: Path) -> None:
    zyx = np.random.default_rng(1).integers(0, 100, size=(3, 7, 9)).astype(np.int16)
    img = sitk.GetImageFromArray(zyx)
    img.SetSpacing((0.7, 0.8, 3.0))
    img.SetOrigin((1.0, 2.0, 3.0))
    p = tmp_path / "a.nrrd"
    sitk.WriteImage(img, str(p))
    arr, spacing, meta = read_image(p)
    np.testing.assert_array_equal(arr, zyx)
    assert spacing == pytest.approx((3.0, 0.8, 0.7))
    out = write_volume(tmp_path / "b.mha", arr, meta)
    arr2, sp2, meta2 = read_image(out)
    np.testing.assert_array_equal(arr2, zyx)
    assert sp2 == pytest.approx(spacing)
    assert meta2["origin"] == pytest.approx(meta["origin"])
    # ITK geometry → NIfTI and back keeps spacing and origin
    nii = write_volume(tmp_path / "c.nii.gz", arr, meta)
    arr3, sp3, meta3 = read_image(nii)
    np.testing.assert_array_equal(arr3, zyx)
    assert sp3 == pytest.approx(spacing)
    back = write_volume(tmp_path / "d.nrrd", arr3, meta3)
    assert read_image(back)[2]["origin"] == pytest.approx(meta["origin"])
    # plain spacing, no reference
    e = write_volume(tmp_path / "e.nrrd", arr, spacing=(2.0, 1.0, 0.5))
    assert read_image(e)[1] == pytest.approx((2.0, 1.0, 0.5))


def test_2d_png_gif_tiff(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 1
    p = write_image(tmp_path / "m.png", mask)
    arr, spacing, meta = read_image(p)
    assert spacing is None and meta["format"] == "2d"
    np.testing.assert_array_equal(arr, mask * 255)
    # palette GIF: indices are returned, not colours
    im = Image.fromarray(mask, mode="P")
    im.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    im.save(tmp_path / "p.gif")
    arr, _, meta = read_image(tmp_path / "p.gif")
    np.testing.assert_array_equal(arr, mask)
    assert meta["mode"] == "P" and meta["palette"][:3] == [4, 2, 4]
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3)).astype(np.uint8)
    write_image(tmp_path / "c.tif", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif")[0], rgb)
    with pytest.raises(DataError, match="fit uint8"):
        write_image(tmp_path / "bad.png", np.full((3, 3), 300.5))


def test_label_maps_are_written_as_their_values(tmp_path: Path) -> None:
    only_one = np.array([[0, 1], [1, 0]], np.int16)  # a label map whose only label is 1 stays 1
    np.testing.assert_array_equal(
        read_image(write_image(tmp_path / "a.png", only_one, label_map=True))[0], only_one
    )
    wide = np.array([[0, 300], [7, 0]], np.int32)
    saved = read_image(write_image(tmp_path / "b.png", wide, label_map=True))[0]
    np.testing.assert_array_equal(saved, wide)  # uint16 PNG above 255
    with pytest.raises(DataError, match="fit uint16"):
        write_image(tmp_path / "c.png", np.array([[-1, 2]]), label_map=True)


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii", "scan.nrrd", "img.png", "img.tif"])
def test_missing_and_empty_files(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="does not exist") as e:
        read_image(tmp_path / name)
    assert name in str(e.value)
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match="empty") as e:
        read_image(tmp_path / name)
    assert name in str(e.value)


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.nii", "scan.nrrd", "scan.mha", "img.png", "img.tif"])
def test_garbage_bytes(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(DataError) as e:
        read_image(p)
    assert name in str(e.value)


def test_truncated_nifti_gz(tmp_path: Path) -> None:
    xyz = np.random.default_rng(0).normal(size=(24, 24, 24)).astype(np.float32)
    p = _nifti(tmp_path / "t.nii.gz", xyz)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as e:
        read_image(p)
    assert "t.nii.gz" in str(e.value)


def test_nifti_zero_spacing_is_an_error(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "z.nii", np.zeros((3, 4, 5), np.uint8))
    raw = bytearray(p.read_bytes())
    raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="spacing") as e:
        read_image(p)
    assert "z.nii" in str(e.value)
    gz = tmp_path / "z.nii.gz"
    gz.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="spacing"):
        read_image(gz)


def test_write_volume_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="D×H×W"):
        write_volume(tmp_path / "a.nii.gz", np.zeros((3, 3, 3, 3)))
    with pytest.raises(DataError, match="2D format"):
        write_volume(tmp_path / "a.png", np.zeros((3, 3, 3)))


@pytest.mark.parametrize("name", ["m.nii.gz", "m.nii", "m.nrrd", "m.mha"])
def test_2d_header_formats_are_first_class(tmp_path: Path, name: str) -> None:
    """A 2D NIfTI/NRRD/MHA (H×W) reads as H×W with its header spacing (sy, sx), and round-trips."""
    hw = np.zeros((5, 7), np.uint8)
    hw[1:3, 2:6] = 1
    path = write_volume(tmp_path / name, hw, spacing=(0.5, 0.25))
    arr, spacing, _ = read_image(path)
    assert arr.shape == (5, 7) and np.array_equal(arr, hw)
    assert spacing == pytest.approx((0.5, 0.25))
    again = write_volume(tmp_path / f"copy_{name}", arr, read_image(path)[2])
    arr2, spacing2, _ = read_image(again)
    assert np.array_equal(arr2, hw) and spacing2 == pytest.approx((0.5, 0.25))
