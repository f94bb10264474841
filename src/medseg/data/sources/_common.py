"""Helpers shared by the sources: channel handling, mask reading, shape checks, natural order.

The reader contract of every source (:func:`read_binary_label`, and
:func:`medseg.data.pairs.read_label_on_image` underneath): masks are read by the mask policy and
checked against their image's grid; a source never casts, rounds or binarises label values itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry import Geometry, geometry_from
from medseg.data.mask_policy import binary_mask, read_binary_mask
from medseg.data.pairs import read_label_on_image
from medseg.data.plausibility import check_spacing_plausible
from medseg.errors import DataError

# ITU-R BT.601 luma weights (what Pillow's "L" conversion uses)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def natural_key(text: str) -> list[int | str]:
    """Sort key that orders embedded integers numerically (``x_2`` before ``x_10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def to_channels_first_2d(arr: np.ndarray, channels: int | None, path: str | Path) -> np.ndarray:
    """``H×W`` or ``H×W×C`` → float32 ``C×H×W``.

    ``channels=1`` converts colour to grey (BT.601 luma, alpha dropped); ``channels=3`` gives RGB
    (grey is replicated, alpha dropped); ``None`` keeps the stored channels (alpha dropped).
    """
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise DataError(f"expected a 2D image (H×W or H×W×C), got shape {a.shape}", path)
    if a.shape[-1] in (2, 4):  # grey+alpha / RGBA: drop alpha
        a = a[..., :-1]
    a = a.astype(np.float32)
    if channels == 1 and a.shape[-1] == 3:
        a = (a @ _LUMA)[..., None]
    elif channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif channels is not None and a.shape[-1] != channels:
        raise DataError(f"cannot convert an image with {a.shape[-1]} channels to {channels}", path)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def read_mask_2d(path: str | Path) -> np.ndarray:
    """Read a 2D mask file as uint8 {0, 1} by the mask policy (:mod:`medseg.data.mask_policy`).

    {0, 1}, {0, 255} or {0, k}; colour masks: any colour channel non-zero; palette images through
    their palette (a colour brighter than mid-grey is foreground: DRIVE ``2nd_manual``). JPEG,
    NaN, non-integer values and several labels are errors naming the file.
    """
    mask, _, _ = read_binary_mask(path)
    if mask.ndim != 2:
        raise DataError(f"expected a 2D mask, got shape {mask.shape}", path)
    return mask


def image_geometry(spatial_shape: tuple[int, ...], meta: dict[str, Any]) -> Geometry:
    """The grid of an image read with ``meta`` (its spatial shape, without channels)."""
    return geometry_from(tuple(spatial_shape), meta)


def read_binary_label(
    mask_path: str | Path,
    image_path: str | Path,
    geometry: Geometry,
    label: int | None = None,
    multi_label: str = "error",
    hint: str | None = None,
) -> np.ndarray:
    """A binary (uint8 {0, 1}) mask on its image's grid, by the reader contract: the mask policy
    (values, JPEG, colour), the geometry check against the image, then
    :func:`~medseg.data.mask_policy.binary_mask` (``label``: that value is the foreground; else a
    map with several labels is an error, or their union with ``multi_label="union"``)."""
    labels, _ = read_label_on_image(mask_path, image_path, geometry)
    kwargs = {} if hint is None else {"hint": hint}
    return binary_mask(labels, mask_path, label, multi_label, **kwargs)


def check_same_shape(
    image_shape: tuple[int, ...], image_path: str | Path, mask_shape: tuple[int, ...], mask_path: str | Path
) -> None:
    """Raise a :class:`DataError` naming both files when the spatial shapes differ."""
    if tuple(image_shape) != tuple(mask_shape):
        raise DataError(
            f"mask shape {tuple(mask_shape)} ({Path(mask_path).name}) does not match image "
            f"shape {tuple(image_shape)} ({Path(image_path).name})",
            mask_path,
        )


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else a :class:`DataError` naming it."""
    if not path.is_dir():
        raise DataError(f"expected the {what} folder here, but it does not exist", path)
    return path


def spacing_values(value: float | str | tuple[float, ...] | list[float], where: str) -> tuple[float, ...]:
    """The numbers of a spacing option (a number, a list, or text with commas such as
    ``"0.5,0.5"``), not yet checked; text that is no number is a :class:`DataError`."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else value
    try:
        return (float(parts),) if np.isscalar(parts) else tuple(float(v) for v in parts)  # type: ignore[union-attr,arg-type]
    except (TypeError, ValueError):
        raise DataError(f"spacing option must be positive numbers in mm, got {value!r}", where) from None


def parse_spacing(
    value: float | str | tuple[float, ...] | list[float], ndim: int, where: str, plausible: bool = True
) -> tuple[float, ...]:
    """A scalar or per-axis spacing option → a tuple of ``ndim`` positive floats.

    Text with commas (``-o spacing=0.5,0.5``, as ``--spacing 0.5,0.5`` is written) is split.
    ``plausible`` warns about values outside [1 µm, 100 mm] (:mod:`medseg.data.plausibility`).
    """
    vals = spacing_values(value, where)
    if len(vals) == 1 and not isinstance(value, (list, tuple)):  # one number: every axis
        vals = vals * ndim
    if len(vals) != ndim or any(not np.isfinite(v) or v <= 0 for v in vals):
        raise DataError(f"spacing option must be positive, one value per axis ({ndim}); got {value}", where)
    if plausible:
        check_spacing_plausible(vals, where, what="spacing option")
    return vals


def check_finite(arr: np.ndarray, path: str | Path) -> None:
    """Raise a :class:`DataError` naming ``path`` when ``arr`` holds NaN or inf."""
    if np.issubdtype(np.asarray(arr).dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"image contains {bad} NaN/inf values", path)
