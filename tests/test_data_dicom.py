"""DICOM series in: a series written by the test (pydicom, oblique, HU rescale), read back voxel by
voxel with its geometry, cross-checked against SimpleITK's series reader; every bad input's error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from medseg.data.dicom import (
    dicom_files_in,
    is_dicom_file,
    is_dicom_series_dir,
    list_series,
    read_dicom,
    read_dicom_series,
    select_series,
    write_dicom_series,
)
from medseg.data.io import file_format, read_image
from medseg.data.sources import build
from medseg.errors import DataError

SPACING = (2.5, 0.7, 0.9)  # (sz, sy, sx) mm
ORIGIN = (10.0, -20.0, 30.0)
DIRECTION = Rotation.from_euler("xyz", [20, 10, 30], degrees=True).as_matrix()  # oblique


def _volume(seed: int = 0) -> np.ndarray:
    """HU values on the int16 grid of slope 0.5, intercept -1024 (so they round-trip exactly)."""
    stored = np.random.default_rng(seed).integers(0, 6000, size=(6, 9, 11))
    return stored * 0.5 - 1024.0


def _write(folder: Path, volume: np.ndarray, **kwargs: object) -> list[Path]:
    return write_dicom_series(
        folder,
        volume,
        SPACING,
        ORIGIN,
        DIRECTION.ravel(),
        rescale_slope=0.5,
        rescale_intercept=-1024.0,
        **kwargs,
    )


def test_written_series_is_what_simpleitk_reads(tmp_path: Path) -> None:
    """The writer checked by an independent reader (SimpleITK/GDCM)."""
    volume = _volume()
    _write(tmp_path / "ct", volume)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume)
    np.testing.assert_allclose(image.GetSpacing(), SPACING[::-1], atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-6)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), DIRECTION, atol=1e-6)


def test_series_reads_back_voxel_by_voxel_with_geometry(tmp_path: Path) -> None:
    volume = _volume()
    files = _write(tmp_path / "ct", volume)
    # shuffle the file names: the order must come from ImagePositionPatient, not the names
    for i, f in enumerate(files):
        f.rename(f.with_name(f"img_{(7 * i) % len(files)}_{i}.dcm"))
    array, spacing, meta = read_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(array, volume)  # HU: slope and intercept applied
    assert array.dtype == np.float32
    np.testing.assert_allclose(spacing, SPACING, atol=1e-6)
    np.testing.assert_allclose(meta["origin"], ORIGIN, atol=1e-6)
    np.testing.assert_allclose(np.reshape(meta["direction"], (3, 3)), DIRECTION, atol=1e-6)
    np.testing.assert_allclose(meta["spacing_xyz"], SPACING[::-1], atol=1e-6)
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in meta["files"]]
    assert sops == meta["sop_instance_uids"] and len(set(sops)) == volume.shape[0]
    positions = [pydicom.dcmread(f).ImagePositionPatient for f in meta["files"]]
    along = [float(np.dot(p, DIRECTION[:, 2])) for p in positions]
    assert along == sorted(along)


def test_read_image_dispatches_folders_and_files_without_suffix(tmp_path: Path) -> None:
    volume = _volume(1)
    files = _write(tmp_path / "ct", volume)
    for f in files:
        f.rename(f.with_suffix(""))  # PACS exports often have no suffix: the DICM preamble tells
    assert is_dicom_series_dir(tmp_path / "ct") and file_format(tmp_path / "ct") == "dicom"
    assert is_dicom_file(tmp_path / "ct" / "slice_0000") and not is_dicom_file(tmp_path / "nothing")
    array, spacing, meta = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(array, volume)
    assert meta["format"] == "dicom" and len(dicom_files_in(tmp_path / "ct")) == 6
    single, single_spacing, _ = read_dicom(tmp_path / "ct" / "slice_0002")
    np.testing.assert_array_equal(single[0], volume[2])
    assert single_spacing[0] == pytest.approx(SPACING[0])  # one slice: its SliceThickness


def test_file_list_and_series_choice(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    a = _write(folder / "a", _volume(2), series_description="axial", series_uid="1.2.826.0.1.1")
    b = _write(folder / "b", _volume(3)[:4], series_description="thin", series_uid="1.2.826.0.1.2")
    for f in [*a, *b]:
        f.rename(folder / f"{f.parent.name}_{f.name}")
    series = list_series(folder)
    assert sorted(s.n_slices for s in series) == [4, 6]
    with pytest.raises(
        DataError,
        match=r"2 image series here, pick one.*"
        r"1.2.826.0.1.1 \(CT 'axial', 6 slices\); 1.2.826.0.1.2 \(CT 'thin', 4 slices\)",
    ):
        read_dicom_series(folder)
    thin = next(s for s in series if s.description == "thin")
    array, _, meta = read_dicom_series(folder, series_uid=thin.series_uid)
    np.testing.assert_array_equal(array, _volume(3)[:4])
    assert meta["series_uid"] == thin.series_uid
    with pytest.raises(DataError, match="no series with SeriesInstanceUID 1.2.3"):
        select_series(series, "1.2.3", folder)
    # a list of files of one series reads; a list mixing two is an error
    array, _, _ = read_dicom_series(list(thin.files))
    assert array.shape == (4, 9, 11)
    with pytest.raises(DataError, match="the files mix 2 series"):
        read_dicom_series([*thin.files, series[0].files[0]])


def test_missing_slice_names_the_file_after_the_gap(tmp_path: Path) -> None:
    files = _write(tmp_path / "ct", _volume())
    files[3].unlink()
    with pytest.raises(
        DataError, match=r"irregular slice spacing: a gap of 5.000 mm .* steps 2.500 mm"
    ) as err:
        read_dicom_series(tmp_path / "ct")
    assert err.value.path == str(files[4])


def _seg_like(path: Path) -> None:
    """A DICOM Segmentation object header (what a viewer writes next to the images)."""
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.Rows, ds.Columns = "SEG", generate_uid(), 9, 11
    ds.save_as(path, enforce_file_format=True)


def test_non_image_object_is_named(tmp_path: Path) -> None:
    _seg_like(tmp_path / "seg.dcm")
    with pytest.raises(
        DataError, match=r"not an image: a DICOM SEG object \(SOP class Segmentation Storage\)"
    ) as err:
        read_dicom_series(tmp_path / "seg.dcm")
    assert err.value.path == str(tmp_path / "seg.dcm")
    # beside an image series, the SEG is ignored when choosing the series
    _write(tmp_path / "ct", _volume())
    _seg_like(tmp_path / "ct" / "zz_seg.dcm")
    array, _, _ = read_dicom_series(tmp_path / "ct")
    assert array.shape == (6, 9, 11)


def test_compressed_transfer_syntax_without_decoder(tmp_path: Path) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import MPEG2MPML, HTJ2KLossless, JPEGLosslessSV1

    def available(uid: pydicom.uid.UID) -> bool:
        try:
            return get_decoder(uid).is_available
        except NotImplementedError:
            return False

    syntax = next(u for u in (JPEGLosslessSV1, HTJ2KLossless, MPEG2MPML) if not available(u))
    files = _write(tmp_path / "ct", _volume())
    ds = pydicom.dcmread(files[2])
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(files[2], enforce_file_format=True)
    with pytest.raises(
        DataError,
        match=re.escape(f"compressed transfer syntax {syntax.name} ({syntax}) and no installed decoder"),
    ) as err:
        read_dicom_series(tmp_path / "ct")
    assert err.value.path == str(files[2])


def test_other_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder holds no DICOM files"):
        read_dicom_series(tmp_path)
    files = _write(tmp_path / "ct", _volume())
    ds = pydicom.dcmread(files[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(files[1], enforce_file_format=True)
    with pytest.raises(DataError, match="ImageOrientationPatient differs") as err:
        read_dicom_series(tmp_path / "ct")
    assert err.value.path == str(files[1])
    (tmp_path / "bad.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="cannot read DICOM header"):
        read_dicom_series(tmp_path / "bad.dcm")
    with pytest.raises(DataError, match="int16"):
        write_dicom_series(tmp_path / "big", np.full((1, 2, 2), 1e6), SPACING)


def test_folder_source_reads_dicom_series_with_nifti_masks(tmp_path: Path) -> None:
    from medseg.data.io import write_volume

    volume = _volume()
    _write(tmp_path / "images" / "case1", volume)
    _, _, meta = read_image(tmp_path / "images" / "case1")
    mask = (volume > 500).astype(np.uint8)
    write_volume(tmp_path / "masks" / "case1.nii.gz", mask, meta)
    source = build("folder", root=str(tmp_path), images="images/*", masks="masks/*.nii.gz")
    assert source.case_ids() == ["case1"]
    (sample,) = source.load_case("case1")
    np.testing.assert_array_equal(sample.image[0], volume)
    np.testing.assert_array_equal(sample.target_mask, mask)
    np.testing.assert_allclose(sample.spacing, SPACING, atol=1e-6)


def test_export_dicom_of_a_source_reads_back(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli import app
    from medseg.data.export_dicom import int16_rescale

    assert int16_rescale(np.array([-1024.0, 3000.0])) == (1.0, 0.0)  # HU: stored as they are
    slope, intercept = int16_rescale(np.array([0.0, 0.5, 1.0]))
    assert slope == pytest.approx(1 / 65000) and intercept == pytest.approx(0.5)
    result = CliRunner().invoke(
        app,
        [
            "data",
            "export",
            "--to",
            "dicom",
            "--source",
            "phantom",
            "--option",
            "n_patients=1",
            "-o",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    (sample,) = build("phantom", n_patients=1).load_case("phantom_00")
    array, spacing, meta = read_image(tmp_path / "phantom_00")
    step = float(np.ptp(sample.image[0])) / 65000
    np.testing.assert_allclose(array, sample.image[0], atol=step)  # int16 quantisation
    np.testing.assert_allclose(spacing, sample.spacing, rtol=1e-6)
    mask, _, _ = read_image(tmp_path / "phantom_00_mask.nii.gz")
    np.testing.assert_array_equal(mask, sample.target_mask)
