"""Image readers and writers that return arrays in medseg's axis order, with spacing.

* 2D formats (PNG, TIFF, GIF, JPEG, BMP): the array as stored, ``H×W`` or ``H×W×C`` (a
  multi-page TIFF gives ``pages×H×W[×C]``); spacing is ``None`` (these files carry none).
  Palette ("P" mode) images are returned as their palette *indices*, because label maps are
  stored that way (DRIVE ``2nd_manual`` is palette 0/1); ``meta["palette"]`` keeps the palette.
* NIfTI (``.nii``, ``.nii.gz``, via nibabel): nibabel's ``x, y, z`` voxel array is transposed to
  ``D×H×W`` (``z, y, x``) and the spacing is ``(sz, sy, sx)`` from the header zooms; a 2D NIfTI
  (``x, y``) gives ``H×W`` and ``(sy, sx)``. 2D NRRD/MHA likewise give ``H×W`` and ``(sy, sx)``.
  ``meta["affine"]`` and ``meta["header"]`` keep the geometry, so :func:`write_volume` can write a
  prediction back on the same grid.
* NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, via SimpleITK):
  ``GetArrayFromImage`` is already ``z, y, x``; spacing is ``GetSpacing()`` reversed;
  ``meta`` keeps ``origin``, ``direction`` and ``spacing_xyz``. Vector images come back as
  ``D×H×W×C``.

Every failure (missing, empty, truncated, corrupt file, unknown extension, missing spacing) is a
:class:`~medseg.errors.DataError` that names the file.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.plausibility import check_spacing_plausible
from medseg.errors import DataError
from medseg.io_utils import atomic_path

#: extensions read with Pillow / tifffile (2D, no spacing)
IMAGE_2D_EXTS = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")
#: NIfTI extensions (nibabel)
NIFTI_EXTS = (".nii.gz", ".nii")
#: extensions read with SimpleITK
ITK_EXTS = (".nrrd", ".nhdr", ".mha", ".mhd")

Spacing = tuple[float, ...]

# RAS (nibabel) <-> LPS (ITK): flip the first two world axes
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def file_format(path: str | Path) -> str:
    """Format of ``path`` from its extension: ``"2d"``, ``"nifti"`` or ``"itk"``; ``"dicom"`` for
    a DICOM file (``.dcm`` or the ``DICM`` preamble) or a folder holding DICOM slices.

    Raises :class:`DataError` for any other extension.
    """
    name = Path(path).name.lower()
    if name.endswith(NIFTI_EXTS):
        return "nifti"
    if name.endswith(ITK_EXTS):
        return "itk"
    if name.endswith(IMAGE_2D_EXTS):
        return "2d"
    from medseg.data.dicom import is_dicom_file, is_dicom_series_dir

    if is_dicom_file(path) or is_dicom_series_dir(path):
        return "dicom"  # a DICOM file or a folder of slices (medseg.data.dicom)
    known = ", ".join(IMAGE_2D_EXTS + NIFTI_EXTS + ITK_EXTS)
    raise DataError(f"unknown image file extension (known: {known})", path)


def strip_extension(name: str | Path) -> str:
    """File name without its image extension (``a.nii.gz`` → ``a``, ``b.png`` → ``b``)."""
    base = Path(name).name
    low = base.lower()
    for ext in NIFTI_EXTS + ITK_EXTS + IMAGE_2D_EXTS:
        if low.endswith(ext):
            return base[: -len(ext)]
    return Path(base).stem


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError("file does not exist", path)
    if not path.is_file():
        raise DataError("not a regular file", path)
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", path)


def read_image(path: str | Path) -> tuple[np.ndarray, Spacing | None, dict[str, Any]]:
    """Read any supported image: ``(array, spacing or None, meta)`` in medseg axis order.

    See the module docstring for the per-format axis order and meta keys. ``meta["format"]`` is
    ``"2d"``, ``"nifti"``, ``"itk"`` or ``"dicom"`` (:func:`medseg.data.dicom.read_dicom`: a series
    folder or file, ``D×H×W`` in HU with ITK-style geometry keys); ``meta["path"]`` is the file read.
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt == "2d":
        _check_file(path)
        return _read_2d(path)
    if fmt == "dicom":
        from medseg.data.dicom import read_dicom

        array, spacing, meta = read_dicom(path)
    else:
        _check_file(path)
        array, spacing, meta = _read_nifti(path) if fmt == "nifti" else _read_itk(path)
    check_spacing_plausible(spacing, path, np.shape(array)[: len(spacing)])
    return array, spacing, meta


def _read_2d(path: Path) -> tuple[np.ndarray, None, dict[str, Any]]:
    meta: dict[str, Any] = {"format": "2d", "path": str(path)}
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            arr = tifffile.imread(path)
        except (tifffile.TiffFileError, OSError, ValueError, EOFError, zlib.error) as e:
            raise DataError(f"cannot read TIFF ({type(e).__name__}: {e})", path) from e
        return np.asarray(arr), None, meta

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            meta["mode"] = im.mode
            if im.mode == "P":
                meta["palette"] = im.getpalette()
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"cannot read image ({type(e).__name__}: {e})", path) from e
    return arr, None, meta


def _raw_nifti_zooms(path: Path, img: Any) -> tuple[float, ...]:
    """Voxel sizes as stored in the file: nibabel silently turns a zero pixdim into 1 on load."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"cannot read NIfTI header ({type(e).__name__}: {e})", path) from e
    pixdim = raw["pixdim"]
    return tuple(float(z) for z in pixdim[1:4])


def _read_nifti(path: Path) -> tuple[np.ndarray, Spacing, dict[str, Any]]:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"cannot read NIfTI, corrupt or truncated ({type(e).__name__}: {e})", path) from e
    # drop trailing singleton dims (e.g. x,y,z,1), keep at most 3 spatial axes
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D NIfTI image, got data shape {data.shape}", path)
    ndim = data.ndim  # a 2D NIfTI (H×W, as 2D data sets ship masks) stays 2D: metrics in 2D
    raw = _raw_nifti_zooms(path, img)[:ndim]
    zooms = tuple(float(z) for z in img.header.get_zooms()[:ndim])
    if any(not np.isfinite(z) or z == 0 for z in raw) or any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise DataError(f"missing or invalid voxel spacing in the NIfTI header (pixdim {raw})", path)
    arr = np.ascontiguousarray(data.T)  # x,y[,z] -> [z,]y,x
    spacing = tuple(reversed(zooms))
    meta = {
        "format": "nifti",
        "path": str(path),
        "affine": np.array(img.affine, dtype=np.float64),
        "header": img.header.copy(),
    }
    return arr, spacing, meta


def _read_itk(path: Path) -> tuple[np.ndarray, Spacing, dict[str, Any]]:
    import SimpleITK as sitk  # noqa: N813

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read image with SimpleITK, corrupt or truncated ({msg})", path) from e
    arr = sitk.GetArrayFromImage(img)
    spacing_xyz = tuple(float(s) for s in img.GetSpacing())
    if any(not np.isfinite(s) or s <= 0 for s in spacing_xyz):
        raise DataError(f"missing or invalid voxel spacing {spacing_xyz}", path)
    meta = {
        "format": "itk",
        "path": str(path),
        "origin": tuple(float(o) for o in img.GetOrigin()),
        "direction": tuple(float(d) for d in img.GetDirection()),
        "spacing_xyz": spacing_xyz,
        "components": img.GetNumberOfComponentsPerPixel(),
    }
    return arr, tuple(reversed(spacing_xyz)), meta


def _reference_meta(reference: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    if reference is None:
        return {}
    if isinstance(reference, (str, Path)):
        return read_image(reference)[2]
    return dict(reference)


def _nifti_affine_to_itk(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """NIfTI affine (RAS) → ITK ``(spacing_xyz, origin, direction)`` (LPS)."""
    lin = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    direction = lin / spacing
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())


def _itk_to_nifti_affine(
    spacing_xyz: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]
) -> np.ndarray:
    """ITK geometry (LPS) → NIfTI affine (RAS)."""
    aff = np.eye(4)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    aff[:3, :3] = _RAS_TO_LPS @ d @ np.diag(spacing_xyz)
    aff[:3, 3] = _RAS_TO_LPS @ np.asarray(origin, dtype=float)
    return aff


def write_volume(
    path: str | Path,
    array_zyx: np.ndarray,
    meta_or_reference: Mapping[str, Any] | str | Path | None = None,
    spacing: Spacing | None = None,
) -> Path:
    """Write a ``D×H×W`` (or 2D ``H×W``) array as NIfTI or NRRD/MHA, keeping the geometry.

    Args:
        path: output file; the extension picks the format.
        array_zyx: ``D×H×W`` array (medseg order); it is transposed back to ``x, y, z``.
        meta_or_reference: the ``meta`` returned by :func:`read_image` (or a sample's meta with
            the same keys), or a path to a reference image whose geometry is copied. A NIfTI
            reference's affine and header are reused as they are (only the data type, the shape
            and the intensity scaling — reset to none — follow the new array); an ITK reference's
            origin, direction and spacing are copied.
        spacing: ``(sz, sy, sx)`` used when there is no reference geometry.

    Returns:
        The written path.
    """
    path = Path(path)
    arr = np.asarray(array_zyx)
    if arr.ndim not in (2, 3):
        raise DataError(f"write_volume needs a D×H×W (or 2D H×W) array, got shape {arr.shape}", path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    fmt = file_format(path)
    if fmt == "2d":
        raise DataError("write_volume writes NIfTI or NRRD/MHA, not a 2D format", path)
    meta = _reference_meta(meta_or_reference)

    if fmt == "nifti":
        import nibabel as nib

        xyz = np.ascontiguousarray(arr.T)
        if "affine" in meta:
            header = meta["header"].copy() if meta.get("header") is not None else None
            if header is not None:
                header.set_data_dtype(xyz.dtype)
                header.set_slope_inter(np.nan, np.nan)  # no scaling of the new data
            img = nib.Nifti1Image(xyz, np.asarray(meta["affine"]), header)
        elif "origin" in meta and arr.ndim == 3:
            img = nib.Nifti1Image(
                xyz, _itk_to_nifti_affine(meta["spacing_xyz"], meta["origin"], meta["direction"])
            )
        else:
            zyx = tuple(spacing) if spacing is not None else (1.0,) * arr.ndim
            sx, sy, sz = (*reversed(zyx), 1.0)[:3]
            img = nib.Nifti1Image(xyz, np.diag([sx, sy, sz, 1.0]))
        img.header.set_xyzt_units("mm")
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
        return path

    import SimpleITK as sitk  # noqa: N813

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    if arr.ndim == 2 and "origin" not in meta:  # 2D ITK geometry from the header spacing only
        meta = {}
        spacing = spacing if spacing is not None else (1.0, 1.0)
        sp, origin, direction = tuple(reversed(spacing)), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)
    elif "origin" in meta:
        sp, origin, direction = meta["spacing_xyz"], meta["origin"], meta["direction"]
    elif "affine" in meta:
        sp, origin, direction = _nifti_affine_to_itk(np.asarray(meta["affine"]))
    else:
        sp = tuple(reversed(spacing)) if spacing is not None else (1.0, 1.0, 1.0)
        origin, direction = (0.0, 0.0, 0.0), tuple(np.eye(3).ravel().tolist())
    img.SetSpacing([float(s) for s in sp])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction])
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), True)
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise DataError(f"cannot write image ({reason})", path) from e
    return path


def write_image(path: str | Path, array2d: np.ndarray, label_map: bool = False) -> Path:
    """Write a 2D ``H×W`` (or ``H×W×3``) array as PNG/TIFF (by extension).

    Binary masks ({0,1}) are written as 0/255 so they are visible; other arrays must be uint8
    or uint16 (or be convertible without loss), and are written as they are. A ``label_map``
    (class label values) is written as its values, {0, 1} included.
    """
    from PIL import Image

    path = Path(path)
    arr = np.asarray(array2d)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise DataError(f"write_image needs H×W or H×W×3/4, got shape {arr.shape}", path)
    if file_format(path) != "2d":
        raise DataError("write_image writes 2D formats (PNG/TIFF); use write_volume", path)
    if label_map:
        if arr.size and (arr.min() < 0 or arr.max() > 65535 or not np.array_equal(arr, np.round(arr))):
            raise DataError(
                f"write_image: label values in [{arr.min()}, {arr.max()}] do not fit uint16", path
            )
        arr = arr.astype(np.uint8 if arr.max(initial=0) <= 255 else np.uint16)
    elif arr.dtype == bool or (
        arr.size and arr.min() >= 0 and arr.max() <= 1 and np.array_equal(arr, np.round(arr))
    ):
        arr = (arr > 0).astype(np.uint8) * 255
    elif arr.dtype not in (np.uint8, np.uint16):
        if arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"write_image: values in [{arr.min()}, {arr.max()}] do not fit uint8 without loss",
                path,
            )
        arr = arr.astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
    return path
