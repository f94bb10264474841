"""Image geometry (shape, spacing, origin, direction) of a file, compared between two files.

A prediction is scored voxel by voxel against its ground truth, so both must lie on the same grid
in the same world space. NIfTI and NRRD/MHA carry that grid in their header; 2D image formats
(PNG, TIFF) carry only a shape. Geometry here is in ITK's convention (LPS world, ``x, y[, z]``
order for spacing, origin and the row-major direction matrix), for every format.

Tolerances follow ITK's own check for "same physical space" (``ImageToImageFilter``), loosened
for float32 headers: spacing and origin within 1e-3 of the ground truth's smallest voxel size
(a thousandth of a voxel), direction cosines within 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import _nifti_affine_to_itk, file_format
from medseg.errors import DataError

#: fraction of the ground truth's smallest voxel size that spacing and origin may differ by
COORDINATE_TOLERANCE = 1e-3
#: absolute tolerance on the direction cosines
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Where an array lies in the world; ``spacing`` etc. are ``None`` for 2D image formats."""

    shape: tuple[int, ...]
    spacing_xyz: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None

    def describe(self) -> str:
        """One line: ``shape (4, 5, 6), spacing (1, 1, 2) mm, origin (0, 0, 0), direction …``."""
        parts = [f"shape {self.shape}"]
        if self.spacing_xyz is not None:
            parts.append(f"spacing {_fmt(self.spacing_xyz)} mm (x, y, z)")
        if self.origin is not None:
            parts.append(f"origin {_fmt(self.origin)}")
        if self.direction is not None:
            parts.append(f"direction {_fmt(self.direction)}")
        return ", ".join(parts)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def geometry_of(array: np.ndarray, meta: dict[str, Any]) -> Geometry:
    """The geometry of an array returned by :func:`~medseg.data.io.read_image` with its ``meta``."""
    return geometry_from(np.asarray(array).shape, meta)


def geometry_from(shape: tuple[int, ...], meta: dict[str, Any]) -> Geometry:
    """The geometry of a grid of ``shape`` (spatial axes only) described by a reader's ``meta``:
    NIfTI affine, ITK or DICOM origin / direction / spacing; a 2D image format has a shape only."""
    shape = tuple(int(s) for s in shape)
    fmt = meta.get("format")
    if fmt == "itk" or (fmt == "dicom" and "origin" in meta):
        return Geometry(shape, tuple(meta["spacing_xyz"]), tuple(meta["origin"]), tuple(meta["direction"]))
    if fmt == "nifti":
        ndim = len(shape)
        spacing, origin, direction = _nifti_affine_to_itk(np.asarray(meta["affine"], dtype=float))
        if ndim == 2:  # a 2D NIfTI: the in-plane part of its affine
            d = np.asarray(direction).reshape(3, 3)[:2, :2]
            return Geometry(shape, spacing[:2], origin[:2], tuple(d.ravel().tolist()))
        return Geometry(shape, spacing, origin, direction)
    return Geometry(shape)


def _close(a: tuple[float, ...] | None, b: tuple[float, ...] | None, tol: float) -> bool:
    if a is None or b is None:
        return True  # a 2D image format has no header geometry to compare
    return len(a) == len(b) and bool(np.all(np.abs(np.subtract(a, b)) <= tol))


def geometry_mismatch(pred: Geometry, gt: Geometry) -> list[str]:
    """Which of shape, spacing, origin and direction differ (empty when the grids match)."""
    if pred.shape != gt.shape:
        return ["shape"]
    scale = min(gt.spacing_xyz) if gt.spacing_xyz else 1.0
    tol = COORDINATE_TOLERANCE * scale
    out = []
    if not _close(pred.spacing_xyz, gt.spacing_xyz, tol):
        out.append("spacing")
    if not _close(pred.origin, gt.origin, tol):
        out.append("origin")
    if not _close(pred.direction, gt.direction, DIRECTION_TOLERANCE):
        out.append("direction")
    return out


def check_label_geometry(
    image: Geometry, image_path: str | Path, label: Geometry, label_path: str | Path, what: str = "label"
) -> None:
    """A source's label file (or another channel of the image: ``what``) must lie on its image's
    grid (shape, spacing, origin, direction, with :func:`geometry_mismatch`'s tolerances): else a
    :class:`DataError` naming both files and both geometries. A mask drawn on another grid would be
    trained on the wrong voxels."""
    differ = geometry_mismatch(label, image)
    if differ:
        raise DataError(
            f"{what} and image are on different grids ({', '.join(differ)} differ): {what} "
            f"{label_path}: {label.describe()}; image {image_path}: {image.describe()}. Resample "
            f"the {what} onto the image grid (nearest neighbour for labels), or pair the right files",
            label_path,
        )


def check_same_geometry(pred: Geometry, pred_path: str | Path, gt: Geometry, gt_path: str | Path) -> None:
    """Raise a :class:`DataError` naming both files and both geometries when the grids differ."""
    differ = geometry_mismatch(pred, gt)
    if differ:
        raise DataError(
            f"prediction and ground truth are on different grids ({', '.join(differ)} differ): "
            f"prediction {pred_path}: {pred.describe()}; ground truth {gt_path}: {gt.describe()}. "
            "Resample the prediction onto the ground-truth grid on purpose with --resample-pred "
            "(nearest neighbour)",
            pred_path,
        )


def resample_to_reference(moving_path: str | Path, reference_path: str | Path) -> np.ndarray:
    """A label image resampled onto another file's grid (nearest neighbour, SimpleITK).

    Returns the array in medseg axis order (``[z,] y, x``), on the reference's shape. Both files
    must carry a header geometry (NIfTI, NRRD/MHA); voxels outside the moving image are 0.
    """
    import SimpleITK as sitk  # noqa: N813

    for path in (moving_path, reference_path):
        if file_format(path) == "2d":
            raise DataError("2D image files carry no geometry to resample with; use NIfTI or NRRD/MHA", path)
    images = []
    for path in (moving_path, reference_path):
        try:
            images.append(sitk.ReadImage(str(path)))
        except RuntimeError as e:
            reason = str(e).strip().splitlines()[-1]
            raise DataError(f"cannot read image with SimpleITK ({reason})", path) from e
    moving, reference = images
    if moving.GetDimension() != reference.GetDimension():
        raise DataError(
            f"cannot resample a {moving.GetDimension()}D prediction onto a {reference.GetDimension()}D "
            f"ground truth ({reference_path})",
            moving_path,
        )
    resampled = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    return sitk.GetArrayFromImage(resampled)
