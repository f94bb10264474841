"""The one mask-reading policy every reader applies (sources, ``evaluate --pred/--gt``).

A mask file is trusted only when its values say unambiguously what is foreground:

* a **binary** mask holds at most one non-zero value: {0, 1}, {0, 255}, or {0, k} for a single
  label k; it is read as foreground = that value;
* a **label map** (several non-zero integer values, e.g. 0/1/7/8/9) is never binarised silently:
  the caller must say which label is meant (``label=K``), score every label (``--labels all``) or
  take the union on purpose (the folder source's ``label: any``);
* any other value is an error naming the file and showing the values found: NaN or inf, negative
  values, non-integer values (a probability map, or a mask resampled with linear interpolation);
* an **RGB(A)** mask (``H×W×3``/``H×W×4``) is foreground where any colour channel is non-zero,
  alpha ignored; each colour channel must itself be binary ({0, k}), so an anti-aliased drawing
  (edge values between 0 and 255) is refused instead of being counted as foreground;
* a **palette** image using at most two colours is foreground where the colour is brighter than
  mid-grey (DRIVE ``2nd_manual``: index 0 = (4, 2, 4), index 1 = (252, 254, 252));
* **JPEG** masks are refused: lossy compression moves the values near every edge (a 0/255 mask
  comes back with values in between), so no threshold recovers the drawn mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import Spacing, file_format, read_image
from medseg.errors import DataError

#: extensions refused for masks (lossy compression)
LOSSY_MASK_EXTS = (".jpg", ".jpeg")
#: ``multi_label`` choices of :func:`binary_mask`
MULTI_LABEL_CHOICES = ("error", "union")
# ITU-R BT.601 luma weights (Pillow's "L" conversion) for palette colours
_LUMA = np.array([0.299, 0.587, 0.114])
_SHOWN_VALUES = 8


def format_values(values: np.ndarray) -> str:
    """The first few distinct values of an array, for an error message (``0, 0.3, 1 (3 values)``)."""
    found = np.unique(np.asarray(values))
    shown = ", ".join(f"{v:g}" if np.isfinite(v) else str(v) for v in found[:_SHOWN_VALUES].tolist())
    more = f", … ({found.size} distinct values)" if found.size > _SHOWN_VALUES else ""
    return f"{{{shown}{more}}}"


def refuse_lossy(path: str | Path) -> None:
    """Raise a :class:`DataError` for a mask stored in a lossy format (JPEG)."""
    if Path(path).name.lower().endswith(LOSSY_MASK_EXTS):
        raise DataError(
            "JPEG is refused for masks: its lossy compression changes the values near every edge "
            "(a 0/255 mask comes back with values in between), so the drawn mask cannot be recovered; "
            "save masks as PNG, TIFF or NIfTI",
            path,
        )


def check_label_values(array: np.ndarray, path: str | Path) -> np.ndarray:
    """``array`` as integer labels: raise on NaN/inf, negative or non-integer values (named file)."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int((~finite).sum())
            raise DataError(
                f"mask holds {bad} NaN/inf values (values found: {format_values(arr)}); "
                "a mask must be 0 and one label value",
                path,
            )
        if not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"mask holds non-integer values {format_values(arr)}: a probability map or an "
                "interpolated mask? threshold or resample it with nearest neighbour first",
                path,
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"mask has a non-numeric data type {arr.dtype}", path)
    if arr.size and arr.min() < 0:
        raise DataError(
            f"mask holds negative values {format_values(arr)}; labels are 0 (background) and positive",
            path,
        )
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.int64)
    return arr


def _colour_to_foreground(array: np.ndarray, path: str | Path) -> np.ndarray:
    """``H×W×C`` colour mask → uint8 {0, 1}: any colour channel non-zero, alpha ignored."""
    colour = array[..., :1] if array.shape[-1] == 2 else array[..., :3]  # LA / RGB(A): drop alpha
    for channel in range(colour.shape[-1]):
        values = check_label_values(colour[..., channel], path)
        nonzero = np.unique(values[values != 0])
        if nonzero.size > 1:
            raise DataError(
                f"colour mask channel {channel} holds values {format_values(values)}: each colour "
                "channel of a mask must be 0 and one value (anti-aliased or lossy drawing?)",
                path,
            )
    return (colour != 0).any(axis=-1).astype(np.uint8)


def _palette_to_foreground(array: np.ndarray, palette: list[int], path: str | Path) -> np.ndarray:
    used = np.unique(array)
    if used.size > 2:
        raise DataError(
            f"palette mask uses {used.size} colours (indices {format_values(used)}); a binary mask uses two",
            path,
        )
    pal = np.asarray(palette, dtype=np.float64)
    pal = np.pad(pal, (0, max(0, 768 - pal.size)))[:768].reshape(256, 3)
    return ((pal @ _LUMA)[array] > 127.5).astype(np.uint8)


def read_label_map(path: str | Path) -> tuple[np.ndarray, Spacing | None, dict[str, Any]]:
    """Read a mask file as integer labels, by the policy (module docstring).

    Colour and palette images become {0, 1}; other arrays keep their label values (checked).
    Returns ``(labels, spacing or None, meta)`` like :func:`~medseg.data.io.read_image`.
    """
    refuse_lossy(path)
    array, spacing, meta = read_image(path)
    if file_format(path) == "2d":
        if meta.get("palette") and array.ndim == 2:
            return _palette_to_foreground(array, meta["palette"], path), spacing, meta
        if array.ndim == 3 and array.shape[-1] in (2, 3, 4):
            return _colour_to_foreground(array, path), spacing, meta
    return check_label_values(array, path), spacing, meta


def binary_mask(
    labels: np.ndarray,
    path: str | Path,
    label: int | None = None,
    multi_label: str = "error",
    hint: str = "choose one label (label=K) or take every label as its own class (labels=[…])",
) -> np.ndarray:
    """Integer labels → uint8 {0, 1}.

    ``label`` picks one value as foreground. Without it, a binary map (at most one non-zero value)
    is foreground where non-zero, and a map with several labels is an error (``multi_label``
    ``"error"``, with ``hint`` saying how to choose) or their union (``"union"``, on purpose).
    """
    if multi_label not in MULTI_LABEL_CHOICES:
        raise ValueError(f"multi_label must be one of {MULTI_LABEL_CHOICES}, got {multi_label!r}")
    labels = check_label_values(labels, path)
    if label is not None:
        return (labels == label).astype(np.uint8)
    if multi_label == "error":
        nonzero = label_values(labels)
        if len(nonzero) > 1:
            raise DataError(
                f"mask holds several labels {format_values(labels)}, not a binary mask; {hint}", path
            )
    return (labels != 0).astype(np.uint8)


def class_index_map(
    labels: np.ndarray,
    path: str | Path,
    class_values: list[int],
    others: str = "error",
    where: str = "the declared labels",
) -> np.ndarray:
    """Integer labels → uint8 class indices: ``class_values[i]`` becomes class ``i``.

    ``class_values`` starts with the background value (usually 0). A value not listed is an
    error naming the file and ``where`` the labels were declared (``others="error"``: a Decathlon or
    nnU-Net ``dataset.json``), or background on purpose (``others="background"``: the folder
    source's ``labels`` option picks some labels of a map).
    """
    if others not in ("error", "background"):
        raise ValueError(f"others must be 'error' or 'background', got {others!r}")
    if len(class_values) > 256:
        raise DataError(f"{len(class_values)} classes do not fit uint8 class indices", path)
    labels = check_label_values(labels, path)
    if others == "error":
        unknown = sorted(set(label_values(labels)) - set(int(v) for v in class_values))
        if unknown:
            raise DataError(f"label values {unknown} are not in {where} {list(class_values)}", path)
    classes = np.zeros(labels.shape, np.uint8)
    for index, value in enumerate(class_values):
        if index:
            classes[labels == value] = index
    return classes


def label_values(labels: np.ndarray) -> list[int]:
    """Sorted distinct non-zero values of an integer label map."""
    arr = np.asarray(labels)
    return [int(v) for v in np.unique(arr[arr != 0])]


def read_binary_mask(
    path: str | Path, label: int | None = None, multi_label: str = "error", hint: str | None = None
) -> tuple[np.ndarray, Spacing | None, dict[str, Any]]:
    """Read a mask file as uint8 {0, 1} by the policy: :func:`read_label_map` then :func:`binary_mask`."""
    labels, spacing, meta = read_label_map(path)
    kwargs = {} if hint is None else {"hint": hint}
    return binary_mask(labels, path, label, multi_label, **kwargs), spacing, meta
