"""The CVPR 2024 "Segment Anything in Medical Images on Laptop" challenge's npz files.

Inputs (one ``.npz`` per case; the challenge names them ``2D_…`` / ``3D_…``):

* ``imgs``: the image, ``H×W×3`` (2D, uint8 0–255) or ``D×H×W`` (3D CT/MR/PET, uint8);
* ``boxes``: one box per object, ``N×4`` ``x_min, y_min, x_max, y_max`` in 2D, ``N×6``
  ``x_min, y_min, z_min, x_max, y_max, z_max`` in 3D (pixel indices; x is the column, z the slice);
* ``gts``: the label map (training and ground-truth files), ``H×W`` or ``D×H×W``;
* ``spacing``: the voxel size in mm (3D files). Kept exactly as stored: MedSAM's preprocessing
  (``pre_CT_MR.py``) writes SimpleITK's ``GetSpacing()``, i.e. ``(x, y, z)``, while the arrays are
  ``(z, y, x)``; :mod:`medseg.metrics.cvpr24` lets the scorer choose how to read it.

Outputs: one ``.npz`` per case with the same name and ``segs``, the label map in which label
``i`` (1-based) is the object of box ``i`` and 0 is background.

2D or 3D is decided by the boxes' width (4 or 6), else by ``gts.ndim``, else by the name prefix
``2D``/``3D``, else an ``H×W×3`` image is 2D; a name prefix that contradicts the boxes or labels,
and arrays that disagree with each other, are errors.
Every problem (missing file or key, bad shape, inconsistent arrays) is a
:class:`~medseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.io_utils import atomic_write

__all__ = [
    "Cvpr24Case",
    "case_name",
    "list_cases",
    "read_case",
    "read_labels",
    "read_segs",
    "write_case",
    "write_segs",
]

Spacing = tuple[float, ...]


@dataclass(frozen=True)
class Cvpr24Case:
    """One challenge case. ``spacing`` is as stored in the file (see the module docstring)."""

    name: str
    imgs: np.ndarray
    boxes: np.ndarray | None = None
    gts: np.ndarray | None = None
    spacing: Spacing | None = None
    path: Path | None = None

    @property
    def is_3d(self) -> bool:
        """True for a ``D×H×W`` volume, False for an ``H×W×3`` image."""
        return _dims(self.name, self.imgs, self.boxes, self.gts) == 3

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(H, W)`` in 2D, ``(D, H, W)`` in 3D: the shape of ``gts`` and of the output ``segs``."""
        return tuple(self.imgs.shape[:2]) if not self.is_3d else tuple(self.imgs.shape)

    @property
    def n_boxes(self) -> int:
        """Number of boxes (objects), 0 without boxes."""
        return 0 if self.boxes is None else int(self.boxes.shape[0])


def case_name(path: str | Path) -> str:
    """The case name of a file: its name without ``.npz``."""
    name = Path(path).name
    return name[: -len(".npz")] if name.lower().endswith(".npz") else name


def list_cases(directory: str | Path) -> list[Path]:
    """The ``.npz`` files of ``directory``, sorted by name (DataError if it is not a directory)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError("not a directory", d)
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.lower().endswith(".npz"))


def _load(path: Path, keys: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError("file does not exist", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DataError(f"missing key(s) {missing}; the file has {sorted(data.files)}", path)
            return {k: np.asarray(data[k]) for k in (*keys, *optional) if k in data.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"cannot read as npz ({err})", path) from err
    except ValueError as err:  # object arrays (allow_pickle=False) and corrupt members
        raise DataError(f"cannot read npz array ({err})", path) from err


def _dims_from_arrays(boxes: np.ndarray | None, gts: np.ndarray | None) -> int | None:
    """2 or 3 from the boxes' width or the label map's rank; None when neither decides."""
    if boxes is not None and boxes.ndim == 2 and boxes.shape[1] in (4, 6):
        return 2 if boxes.shape[1] == 4 else 3
    if gts is not None and gts.ndim in (2, 3):
        return gts.ndim
    return None


def _dims_from_name(name: str) -> int | None:
    upper = name.upper()
    if upper.startswith("2D"):
        return 2
    if upper.startswith("3D"):
        return 3
    return None


def _dims(name: str, imgs: np.ndarray, boxes: np.ndarray | None, gts: np.ndarray | None) -> int:
    """Boxes or labels decide, else the name prefix, else an ``H×W×3`` image is 2D."""
    decided = _dims_from_arrays(boxes, gts) or _dims_from_name(name)
    if decided is not None:
        return decided
    return 2 if imgs.ndim == 3 and imgs.shape[-1] == 3 else 3


def _check_numeric(array: np.ndarray, key: str, path: Path | None) -> None:
    if array.dtype.kind not in "biuf":
        raise DataError(f"'{key}' must be numeric, got dtype {array.dtype}", path)


def _check_labels(array: np.ndarray, key: str, path: Path | None) -> None:
    if array.dtype.kind not in "biu":
        raise DataError(f"'{key}' must be an integer label map, got dtype {array.dtype}", path)
    if array.size and array.dtype.kind == "i" and array.min() < 0:
        raise DataError(f"'{key}' has negative labels (min {array.min()})", path)


def _check_spacing(spacing: Any, path: Path | None) -> Spacing:
    sp = np.asarray(spacing, dtype=np.float64).ravel()
    if sp.size != 3 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DataError(f"'spacing' must be 3 finite values > 0 mm, got {np.asarray(spacing).tolist()}", path)
    return tuple(float(s) for s in sp)


def _check_boxes(boxes: np.ndarray, width: int, path: Path | None) -> np.ndarray:
    if boxes.ndim != 2 or boxes.shape[1] != width:
        layout = "x_min, y_min, x_max, y_max" if width == 4 else "x_min, y_min, z_min, x_max, y_max, z_max"
        raise DataError(f"'boxes' must be N×{width} ({layout}), got shape {boxes.shape}", path)
    _check_numeric(boxes, "boxes", path)
    if not np.all(np.isfinite(boxes)):
        raise DataError("'boxes' has non-finite values", path)
    half = width // 2
    bad = np.flatnonzero(np.any(boxes[:, :half] > boxes[:, half:], axis=1))
    if bad.size:
        raise DataError(f"box(es) {bad.tolist()} have a minimum above their maximum", path)
    return boxes


def _validate(case: Cvpr24Case) -> Cvpr24Case:
    path, imgs, boxes, gts = case.path, case.imgs, case.boxes, case.gts
    _check_numeric(imgs, "imgs", path)
    if imgs.ndim != 3:
        raise DataError(f"'imgs' must be H×W×3 (2D) or D×H×W (3D), got shape {imgs.shape}", path)
    named, from_arrays = _dims_from_name(case.name), _dims_from_arrays(boxes, gts)
    if named is not None and from_arrays is not None and named != from_arrays:
        raise DataError(f"the name says {named}D but the boxes/labels are {from_arrays}D", path)
    dims = _dims(case.name, imgs, boxes, gts)
    if dims == 2 and imgs.shape[-1] != 3:
        raise DataError(f"a 2D 'imgs' must be H×W×3, got shape {imgs.shape}", path)
    spatial = imgs.shape[:2] if dims == 2 else imgs.shape
    if gts is not None:
        _check_labels(gts, "gts", path)
        if gts.shape != spatial:
            raise DataError(f"'gts' shape {gts.shape} does not match the image's {tuple(spatial)}", path)
    if boxes is not None:
        _check_boxes(boxes, 4 if dims == 2 else 6, path)
    if case.spacing is not None and dims == 3:
        _check_spacing(case.spacing, path)
    return case


def read_case(path: str | Path, *, require_boxes: bool = False, require_gts: bool = False) -> Cvpr24Case:
    """Read and validate an input file (``imgs``, optional ``boxes``, ``gts``, ``spacing``).

    ``require_boxes`` / ``require_gts`` turn a missing key into a DataError (inference needs the
    boxes, training the labels).
    """
    p = Path(path)
    keys = ["imgs"] + (["boxes"] if require_boxes else []) + (["gts"] if require_gts else [])
    arrays = _load(p, keys, optional=("boxes", "gts", "spacing"))
    spacing = arrays.get("spacing")
    case = Cvpr24Case(
        name=case_name(p),
        imgs=arrays["imgs"],
        boxes=arrays.get("boxes"),
        gts=arrays.get("gts"),
        spacing=None if spacing is None else tuple(float(s) for s in np.asarray(spacing).ravel()),
        path=p,
    )
    return _validate(case)


def read_labels(path: str | Path) -> tuple[np.ndarray, Spacing | None]:
    """``(gts, spacing)`` of a ground-truth file, without loading the image.

    ``gts`` is ``H×W`` (2D) or ``D×H×W`` (3D); ``spacing`` is as stored (3 values) or None when
    the file has none. DataError if ``gts`` is missing or not a 2D/3D integer label map.
    """
    p = Path(path)
    arrays = _load(p, ["gts"], optional=("spacing",))
    gts = arrays["gts"]
    _check_labels(gts, "gts", p)
    if gts.ndim not in (2, 3):
        raise DataError(f"'gts' must be H×W or D×H×W, got shape {gts.shape}", p)
    named = _dims_from_name(case_name(p))
    if named is not None and named != gts.ndim:
        raise DataError(f"the name says {named}D but 'gts' is {gts.ndim}D (shape {gts.shape})", p)
    spacing = arrays.get("spacing")
    if spacing is None:
        return gts, None
    if gts.ndim == 2:
        return gts, tuple(float(s) for s in np.asarray(spacing).ravel())
    return gts, _check_spacing(spacing, p)


def read_segs(path: str | Path, shape: Sequence[int] | None = None) -> np.ndarray:
    """The ``segs`` label map of an output file; DataError if missing, or if ``shape`` differs."""
    p = Path(path)
    segs = _load(p, ["segs"])["segs"]
    _check_labels(segs, "segs", p)
    if shape is not None and segs.shape != tuple(shape):
        raise DataError(f"'segs' shape {segs.shape} differs from the ground truth's {tuple(shape)}", p)
    return segs


def _label_dtype(max_label: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_label <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def write_segs(path: str | Path, segs: np.ndarray, *, n_boxes: int | None = None) -> Path:
    """Write ``segs`` (label i = box i) as a compressed npz, in the smallest unsigned dtype.

    ``n_boxes`` checks that no label exceeds the number of boxes. Creates parent directories.
    """
    p = Path(path)
    arr = np.asarray(segs)
    if arr.ndim not in (2, 3):
        raise DataError(f"'segs' must be H×W or D×H×W, got shape {arr.shape}", p)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError("'segs' must hold integer labels", p)
    elif arr.dtype.kind not in "biu":
        raise DataError(f"'segs' must be an integer label map, got dtype {arr.dtype}", p)
    max_label = int(arr.max()) if arr.size else 0
    if arr.size and arr.min() < 0:
        raise DataError(f"'segs' has negative labels (min {arr.min()})", p)
    if n_boxes is not None and max_label > n_boxes:
        raise DataError(f"'segs' has label {max_label} but there are only {n_boxes} boxes", p)
    p = _npz_name(p)
    with atomic_write(p, "wb") as handle:
        np.savez_compressed(handle, segs=arr.astype(_label_dtype(max_label)))
    return p


def write_case(
    path: str | Path,
    imgs: np.ndarray,
    *,
    boxes: np.ndarray | None = None,
    gts: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write an input/ground-truth file in the challenge layout, validated as :func:`read_case` reads it.

    ``spacing`` is stored as given (the challenge files hold ``(x, y, z)``); ``extra`` adds arrays.
    """
    p = Path(path)
    case = Cvpr24Case(
        name=case_name(p),
        imgs=np.asarray(imgs),
        boxes=None if boxes is None else np.asarray(boxes),
        gts=None if gts is None else np.asarray(gts),
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
        path=p,
    )
    _validate(case)
    arrays: dict[str, np.ndarray] = {"imgs": case.imgs}
    if case.boxes is not None:
        arrays["boxes"] = case.boxes
    if case.gts is not None:
        arrays["gts"] = case.gts
    if case.spacing is not None:
        arrays["spacing"] = np.asarray(case.spacing, dtype=np.float64)
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    p = _npz_name(p)
    with atomic_write(p, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return p


def _npz_name(path: Path) -> Path:
    """``path`` with the ``.npz`` that ``np.savez`` appends to a name without it."""
    return path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")
