"""``case_slices.npz``: one 2D slice per evaluated case (image, ground truth, prediction), so that the
HTML report can draw overlays without the data set.

For a volume the slice with the most error (the largest ``|GT xor prediction|``) is kept; ties go to
the lowest index. Without error it is the slice with the largest ground truth, then the largest
prediction, then the middle slice. A volume also keeps its *shared* slice, the one with the largest
ground truth (else the middle one): it depends on the ground truth alone, so every run scored on the
case stores the same slice, and the report's side-by-side comparison shows like with like.

File layout (``numpy.savez_compressed``): ``cases`` (the case names, in the order of the other
arrays), ``slice_index`` (int, −1 for a 2D case), ``has_image`` (bool: False when only masks were
available, e.g. ``medseg evaluate --pred/--gt``), and per case i ``image_i`` (uint8, H×W or H×W×3,
1st–99th percentile window), ``gt_i`` / ``pred_i`` (the label values: uint8 {0, 1} for a binary
mask, a multi-class case's label values, uint16 when one exceeds 255) and ``spacing_i`` (mm, (sy, sx)).
Volumes add ``shared_index`` (int per case, −1 for 2D) and ``shared_image_i`` / ``shared_gt_i`` /
``shared_pred_i``; files without them (older evaluations) still read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.io_utils import atomic_write

CASE_SLICES_FILE = "case_slices.npz"


@dataclass
class CaseSlice:
    """The 2D slice of one case shown in the report."""

    image: np.ndarray  # uint8 H×W (or H×W×3)
    gt: np.ndarray  # label values: uint8 {0, 1} for binary masks (module docstring)
    pred: np.ndarray
    spacing: tuple[float, float]
    slice_index: int = -1  # −1: a 2D case
    has_image: bool = True
    shared: CaseSlice | None = None  # volumes: the largest-ground-truth slice (module docstring)

    def shared_view(self) -> CaseSlice:
        """The slice every run of this case stores alike (the case itself in 2D)."""
        return self.shared if self.shared is not None else self


def most_error_slice(gt: np.ndarray, pred: np.ndarray) -> int:
    """Index along axis 0 of the slice with the largest ``|gt xor pred|`` (label maps: the voxels
    whose labels differ; see module docstring)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"most_error_slice needs two D×H×W masks of one shape: {gt.shape}, {pred.shape}")
    error = gt.astype(np.int64) != pred.astype(np.int64)
    for mask in (error, gt > 0, pred > 0):
        per_slice = mask.reshape(mask.shape[0], -1).sum(1)
        if per_slice.max(initial=0) > 0:
            return int(np.argmax(per_slice))
    return gt.shape[0] // 2


def shared_slice_index(gt: np.ndarray) -> int:
    """Index along axis 0 of the slice with the largest ground truth (ties: lowest), else the middle."""
    gt = np.asarray(gt) > 0
    if gt.ndim != 3:
        raise ValueError(f"shared_slice_index needs a D×H×W mask, got shape {gt.shape}")
    per_slice = gt.reshape(gt.shape[0], -1).sum(1)
    return int(np.argmax(per_slice)) if per_slice.max(initial=0) > 0 else gt.shape[0] // 2


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """A C×H×W or H×W image as uint8 for display: channel 0 (or RGB when C = 3), 1st–99th percentile."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image (H×W, C×H×W), got shape {image.shape}")
    low, high = np.percentile(image, (1, 99))
    scaled = np.clip((image - low) / (high - low + 1e-8), 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


def case_slice(
    image: np.ndarray | None, gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]
) -> CaseSlice:
    """The report slice of one case.

    ``gt`` / ``pred`` are H×W or D×H×W masks (bool or {0, 1}) or label maps (label values ≥ 0,
    kept so that the report can colour each class); ``image`` is C×H×W / C×D×H×W (or H×W /
    D×H×W), or ``None`` when no image exists (a black background is stored). ``spacing`` is in the
    masks' axis order.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {gt.ndim}D mask")
    if gt.ndim == 3:
        chosen = _slice_at(image, gt, pred, spacing, most_error_slice(gt, pred))
        chosen.shared = _slice_at(image, gt, pred, spacing, shared_slice_index(gt))
        return chosen
    if gt.ndim != 2:
        raise ValueError(f"masks must be H×W or D×H×W, got shape {gt.shape}")
    return _slice_at(image, gt, pred, spacing, -1)


def _slice_at(
    image: np.ndarray | None, gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], z: int
) -> CaseSlice:
    if z >= 0:
        gt, pred = gt[z], pred[z]
        if image is not None:
            image = np.asarray(image)
            image = image[:, z] if image.ndim == 4 else image[z]
    if image is None:
        shown = np.zeros(gt.shape, dtype=np.uint8)
    else:
        shown = image_to_uint8(image)
        if shown.shape[:2] != gt.shape:
            raise ValueError(f"image {shown.shape[:2]} and masks {gt.shape} differ in shape")
    return CaseSlice(
        image=shown,
        gt=label_values(gt),
        pred=label_values(pred),
        spacing=(float(spacing[-2]), float(spacing[-1])),
        slice_index=z,
        has_image=image is not None,
    )


def label_values(mask: np.ndarray) -> np.ndarray:
    """A mask or label map as stored: uint8 (bool → {0, 1}), uint16 when a label exceeds 255."""
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.size and (mask.min() < 0 or mask.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"label values must lie in [0, 65535], got [{mask.min()}, {mask.max()}]")
    return mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16)


def write_case_slices(slices: Mapping[str, CaseSlice], path: str | Path) -> Path:
    """Write ``slices`` (case name → slice) to ``path`` in the layout of the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(slices)
    arrays: dict[str, np.ndarray] = {
        "cases": np.asarray(names, dtype=str),
        "slice_index": np.asarray([slices[n].slice_index for n in names], dtype=np.int64),
        "has_image": np.asarray([slices[n].has_image for n in names], dtype=bool),
    }
    for i, name in enumerate(names):
        item = slices[name]
        arrays[f"image_{i}"] = np.asarray(item.image, dtype=np.uint8)
        arrays[f"gt_{i}"] = label_values(item.gt)
        arrays[f"pred_{i}"] = label_values(item.pred)
        arrays[f"spacing_{i}"] = np.asarray(item.spacing, dtype=np.float64)
        if item.shared is not None:
            arrays[f"shared_image_{i}"] = np.asarray(item.shared.image, dtype=np.uint8)
            arrays[f"shared_gt_{i}"] = label_values(item.shared.gt)
            arrays[f"shared_pred_{i}"] = label_values(item.shared.pred)
    arrays["shared_index"] = np.asarray(
        [-1 if slices[n].shared is None else slices[n].shared.slice_index for n in names], dtype=np.int64
    )
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


class CaseSliceFile(Mapping[str, CaseSlice]):
    """A ``case_slices.npz`` read lazily: the case names at once, a case's arrays when indexed.

    A report shows a few dozen of possibly thousands of cases, so only those are decompressed; the
    file stays open between reads (reading the zip directory of thousands of arrays is the slow
    part) until :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError("case slices file not found", self.path)
        with np.load(self.path, allow_pickle=False) as data:
            missing = {"cases", "slice_index", "has_image"} - set(data.files)
            if missing:
                raise DataError(f"not a case_slices file: no {sorted(missing)} arrays", self.path)
            names = [str(n) for n in data["cases"]]
            self._slice_index = [int(v) for v in data["slice_index"]]
            self._has_image = [bool(v) for v in data["has_image"]]
            shared = data["shared_index"] if "shared_index" in data.files else [-1] * len(names)
            self._shared_index = [int(v) for v in shared]
        if not len(names) == len(self._slice_index) == len(self._has_image) == len(self._shared_index):
            raise DataError("cases, slice_index, has_image and shared_index differ in length", self.path)
        self._index = {name: i for i, name in enumerate(names)}
        self._data: Any = None

    def close(self) -> None:
        """Close the file if a case was read; reading again reopens it."""
        if self._data is not None:
            self._data.close()
            self._data = None

    def __getitem__(self, name: str) -> CaseSlice:
        i = self._index[name]
        keys = [f"image_{i}", f"gt_{i}", f"pred_{i}", f"spacing_{i}"]
        if self._data is None:
            self._data = np.load(self.path, allow_pickle=False)
        absent = [k for k in keys if k not in self._data.files]
        if absent:
            raise DataError(f"case '{name}' has no {absent} arrays", self.path)
        image, gt, pred, spacing = (self._data[k] for k in keys)
        spacing_yx = (float(spacing[0]), float(spacing[1]))
        item = CaseSlice(image, gt, pred, spacing_yx, self._slice_index[i], self._has_image[i])
        if self._shared_index[i] >= 0:
            shared = [f"shared_image_{i}", f"shared_gt_{i}", f"shared_pred_{i}"]
            absent = [k for k in shared if k not in self._data.files]
            if absent:
                raise DataError(f"case '{name}' has no {absent} arrays", self.path)
            image, gt, pred = (self._data[k] for k in shared)
            item.shared = CaseSlice(image, gt, pred, spacing_yx, self._shared_index[i], self._has_image[i])
        return item

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index


def read_case_slices(path: str | Path) -> dict[str, CaseSlice]:
    """Every case of a ``case_slices.npz``; a file without the expected arrays is a :class:`DataError`."""
    slices = CaseSliceFile(path)
    try:
        return {name: slices[name] for name in slices}
    finally:
        slices.close()
