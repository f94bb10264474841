"""DICOM series in: a folder of slices (or a list of files) → a ``D×H×W`` volume with its geometry.

pydicom reads the headers and decodes the pixels; medseg only orders the slices and checks them:

* **series**: a folder may hold several series; ``series_uid`` picks one by SeriesInstanceUID.
  Without it a folder with several image series is an error that lists each (UID, description,
  number of slices), and a file list mixing series is an error too.
* **order and geometry**: slices are sorted along the slice normal (row cosine × column cosine of
  ImageOrientationPatient) by the projection of ImagePositionPatient, as DICOM PS3.3 C.7.6.2.1.1
  defines the patient coordinates. Spacing is ``(gap, PixelSpacing[0], PixelSpacing[1])`` =
  ``(sz, sy, sx)``; ``meta`` keeps ``origin`` (the first slice's position), ``direction`` (ITK
  order: the columns are the row, column and normal directions) and ``spacing_xyz``, the keys
  :func:`medseg.data.io.write_volume` uses, so a mask is written back on the same grid.
* **values**: the Modality LUT (RescaleSlope / RescaleIntercept, CT in HU) is applied by
  :func:`pydicom.pixels.apply_modality_lut`.

Errors are :class:`~medseg.errors.DataError` naming the file: a missing slice (a gap that is not
the series' regular spacing), mixed series, a non-image object (SR, SEG, RT structure set…), a
compressed transfer syntax with no installed decoder, inconsistent orientation or matrix size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.io_utils import atomic_path

#: modalities of DICOM objects that carry no image to segment
NON_IMAGE_MODALITIES = ("SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "REG", "DOC")
# a gap may differ from the median gap by this fraction before it counts as a missing slice
_GAP_TOLERANCE = 0.05


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder: its UID, description, modality and files."""

    series_uid: str
    description: str
    modality: str
    files: tuple[Path, ...]

    @property
    def n_slices(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return f"{self.series_uid} ({self.modality} '{self.description}', {self.n_slices} slices)"


def is_dicom_file(path: str | Path) -> bool:
    """A ``.dcm`` file, or any file with the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files_in(folder: str | Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and is_dicom_file(p))


def is_dicom_series_dir(path: str | Path) -> bool:
    """A folder that directly holds at least one DICOM file."""
    return Path(path).is_dir() and bool(dicom_files_in(path))


def _read_header(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as e:
        raise DataError(f"cannot read DICOM header ({type(e).__name__}: {e})", path) from e


def _files_of(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = dicom_files_in(path)
            if not files:
                raise DataError("folder holds no DICOM files", path)
            return files
        if not path.exists():
            raise DataError("file does not exist", path)
        return [path]
    files = [Path(p) for p in source]
    if not files:
        raise DataError("empty list of DICOM files")
    for f in files:
        if not f.is_file():
            raise DataError("file does not exist", f)
    return files


def list_series(source: str | Path | Sequence[str | Path]) -> list[SeriesInfo]:
    """The series in a folder or file list, by SeriesInstanceUID (headers only), in UID order."""
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for f in _files_of(source):
        ds = _read_header(f)
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    out = []
    for uid in sorted(groups):
        first = groups[uid][0][1]
        out.append(
            SeriesInfo(
                series_uid=uid,
                description=str(first.get("SeriesDescription", "")),
                modality=str(first.get("Modality", "")),
                files=tuple(f for f, _ in groups[uid]),
            )
        )
    return out


def _is_image(ds: Any) -> bool:
    return str(ds.get("Modality", "")).upper() not in NON_IMAGE_MODALITIES and "Rows" in ds


def _check_image(path: Path, ds: Any) -> None:
    if not _is_image(ds):
        sop = ds.get("SOPClassUID")
        name = getattr(sop, "name", sop)
        raise DataError(
            f"not an image: a DICOM {ds.get('Modality', '?')} object (SOP class {name}); "
            "medseg reads image series (CT, MR, US, ...)",
            path,
        )


def _check_decodable(path: Path, ds: Any) -> None:
    from pydicom.pixels import get_decoder

    file_meta = getattr(ds, "file_meta", None)
    syntax = None if file_meta is None else file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DataError(
            f"compressed transfer syntax {syntax.name} ({syntax}) and no installed decoder for it "
            "(install pylibjpeg with its plugins, or python-gdcm, or decompress the series with "
            "`gdcmconv --raw` / dcmtk's `dcmdjpeg`)",
            path,
        )


def select_series(series: Sequence[SeriesInfo], series_uid: str | None, where: str | Path) -> SeriesInfo:
    """The series to read: the one with ``series_uid``, or the only image series there is."""
    if series_uid is not None:
        match = [s for s in series if s.series_uid == series_uid]
        if not match:
            listing = "; ".join(s.describe() for s in series)
            raise DataError(f"no series with SeriesInstanceUID {series_uid} (found: {listing})", where)
        return match[0]
    images = [s for s in series if s.modality.upper() not in NON_IMAGE_MODALITIES]
    if len(images) > 1:
        listing = "; ".join(s.describe() for s in images)
        raise DataError(
            f"{len(images)} image series here, pick one with series_uid (SeriesInstanceUID): {listing}",
            where,
        )
    return (images or list(series))[0]


def _slice_geometry(path: Path, ds: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(row and column cosines 2×3, position 3, (row spacing, column spacing)) of one slice."""
    try:
        cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float).reshape(2, 3)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
    except (AttributeError, ValueError, TypeError) as e:
        raise DataError(
            "missing or invalid geometry (ImageOrientationPatient, ImagePositionPatient, PixelSpacing)",
            path,
        ) from e
    if len(spacing) != 2 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise DataError(f"invalid PixelSpacing {spacing}", path)
    return cosines, position, (spacing[0], spacing[1])


def read_dicom_series(
    source: str | Path | Sequence[str | Path], series_uid: str | None = None
) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """Read a DICOM series: ``(array D×H×W float32, (sz, sy, sx), meta)``.

    Args:
        source: a folder of slices, one file, or a list of files of one series.
        series_uid: the SeriesInstanceUID to read when the folder holds several series.

    ``meta`` has ``format`` (``"dicom"``), ``path``, ``origin``, ``direction``, ``spacing_xyz``
    (ITK/LPS order, as :func:`medseg.data.io.read_image` gives for NRRD), ``series_uid``,
    ``study_uid``, ``sop_instance_uids`` and ``files`` (both in slice order), and ``modality``.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    where = source if isinstance(source, (str, Path)) else Path(_files_of(source)[0]).parent
    series = list_series(source)
    if not isinstance(source, (str, Path)) and series_uid is None and len(series) > 1:
        listing = "; ".join(s.describe() for s in series)
        raise DataError(f"the files mix {len(series)} series: {listing}", where)
    chosen = select_series(series, series_uid, where)
    headers = [(f, _read_header(f)) for f in chosen.files]
    for f, ds in headers:
        _check_image(f, ds)
    geometry = [_slice_geometry(f, ds) for f, ds in headers]
    cosines, _, pixel_spacing = geometry[0]
    shape = (int(headers[0][1].Rows), int(headers[0][1].Columns))
    for (f, ds), (cos, _, spacing) in zip(headers, geometry, strict=True):
        if not np.allclose(cos, cosines, atol=1e-4):
            raise DataError("ImageOrientationPatient differs from the series' first slice", f)
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise DataError(f"matrix {int(ds.Rows)}×{int(ds.Columns)} differs from {shape[0]}×{shape[1]}", f)
        if not np.allclose(spacing, pixel_spacing, rtol=1e-4):
            raise DataError(f"PixelSpacing {spacing} differs from the series' {pixel_spacing}", f)
    normal = np.cross(cosines[0], cosines[1])
    along = np.asarray([float(g[1] @ normal) for g in geometry])
    order = np.argsort(along, kind="stable")
    sorted_files = [headers[i][0] for i in order]
    positions = along[order]
    gaps = np.diff(positions)
    if gaps.size and np.any(gaps < 1e-6):
        i = int(np.argmin(gaps))
        raise DataError(
            f"two slices at the same position ({positions[i]:.3f} mm along the normal)", sorted_files[i + 1]
        )
    if gaps.size:
        step = float(np.median(gaps))
        bad = np.flatnonzero(np.abs(gaps - step) > _GAP_TOLERANCE * step)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"irregular slice spacing: a gap of {gaps[i]:.3f} mm before this slice where the series "
                f"steps {step:.3f} mm (a missing slice?)",
                sorted_files[i + 1],
            )
    else:
        thickness = headers[0][1].get("SpacingBetweenSlices") or headers[0][1].get("SliceThickness") or 1.0
        step = float(thickness)

    planes = []
    for i in order:
        f, _ = headers[i]
        ds = pydicom.dcmread(f, stop_before_pixels=False)
        _check_decodable(f, ds)
        try:
            pixels = ds.pixel_array
        except (NotImplementedError, RuntimeError, ValueError, AttributeError) as e:
            raise DataError(f"cannot decode the pixel data ({type(e).__name__}: {e})", f) from e
        if pixels.shape != shape:
            raise DataError(
                f"pixel data of shape {pixels.shape}, expected one {shape[0]}×{shape[1]} frame", f
            )
        planes.append(np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32))
    array = np.stack(planes)
    direction = np.stack([cosines[0], cosines[1], normal], axis=1)  # columns: x, y, z index axes
    first = headers[order[0]][1]
    meta = {
        "format": "dicom",
        "path": str(where),
        "origin": tuple(float(v) for v in geometry[order[0]][1]),
        "direction": tuple(float(v) for v in direction.ravel()),
        "spacing_xyz": (pixel_spacing[1], pixel_spacing[0], step),
        "series_uid": chosen.series_uid,
        "study_uid": str(first.get("StudyInstanceUID", "")),
        "sop_instance_uids": [str(headers[i][1].SOPInstanceUID) for i in order],
        "files": [str(f) for f in sorted_files],
        "modality": chosen.modality,
    }
    return array, (step, pixel_spacing[0], pixel_spacing[1]), meta


def read_dicom(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """:func:`read_dicom_series` of a folder of slices, or of one DICOM file (a one-slice series:
    pass a list of files to read several)."""
    return read_dicom_series(path)


def write_dicom_series(
    folder: str | Path,
    volume_zyx: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    modality: str = "CT",
    series_description: str = "medseg",
    patient_id: str = "anonymous",
    series_uid: str | None = None,
) -> list[Path]:
    """Write a ``D×H×W`` volume (e.g. in HU) as one uncompressed DICOM file per slice.

    ``spacing`` is ``(sz, sy, sx)``; ``origin`` and ``direction`` (ITK order, 9 values, columns =
    row, column and slice directions) place the grid in patient coordinates. Values are stored as
    int16 ``round((value − intercept) / slope)`` with the RescaleSlope / RescaleIntercept given, so
    the Modality LUT gives them back. For examples and tests: an anonymous CT (or ``modality``)
    image series, not a faithful copy of any scanner's output.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = Path(folder)
    volume = np.asarray(volume_zyx, dtype=np.float64)
    if volume.ndim != 3:
        raise DataError(f"write_dicom_series needs a D×H×W volume, got shape {volume.shape}", folder)
    stored = np.round((volume - rescale_intercept) / rescale_slope)
    if stored.min(initial=0) < -32768 or stored.max(initial=0) > 32767:
        raise DataError("values do not fit int16 with this rescale slope and intercept", folder)
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    sz, sy, sx = (float(s) for s in spacing)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series_uid = series_uid or generate_uid()
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    paths = []
    for z in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = (
            patient_id,
            f"{patient_id}^",
            "",
            "O",
        )
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "000000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "medseg"
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = (
            modality,
            series_description,
            1,
            z + 1,
        )
        ds.ImageOrientationPatient = [*(float(v) for v in matrix[:, 0]), *(float(v) for v in matrix[:, 1])]
        position = np.asarray(origin, dtype=float) + z * sz * matrix[:, 2]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = rescale_slope, rescale_intercept, "HU"
        ds.PixelData = stored[z].astype("<i2").tobytes()
        path = folder / f"slice_{z:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
