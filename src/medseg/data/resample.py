"""Resampling to a target spacing and cropping to the non-zero region, and the way back.

Images (``C×D×H×W`` or ``C×H×W``) are resampled by a cubic B-spline (``order=3``, nnU-Net's
choice) or linearly (``order=1``); label maps never get a value they did not hold: ``nearest``
neighbour, or ``linear`` (the default): each label's indicator is interpolated linearly and every
voxel takes the label of the largest value (nnU-Net's ``resize_segmentation``, with an argmax
instead of its ordered overwrite). On random ellipsoids (``benchmarks/resampling.py``) the latter
keeps class volumes closer to the exact ones when the grid gets coarser or the slices thinner;
nearest neighbour does slightly better when every axis gets finer.

Grid convention: voxels are cells (``align_corners=False``). Along an axis of ``n`` voxels of
spacing ``s`` the new size is ``m = round(n · s / t)`` for a target spacing ``t``, the field of
view ``n · s`` is kept, and output voxel ``j`` samples input position ``(j + 0.5) · n / m − 0.5``;
the effective spacing is ``n · s / m`` (equal to ``t`` up to the rounding). An axis whose size does
not change is left alone, so resampling to the input's own spacing is the identity, exactly.

Every interpolation here is a product of one-dimensional ones, applied one axis after another
(shrinking axes first, so that later passes see fewer voxels). For B-splines that is exact, not an
approximation: the tensor-product spline's prefilter and its evaluation at grid points both
factor by axis. A cubic pass then reads 4 neighbours per voxel instead of the 64 of a 3D spline
evaluation (``scipy.ndimage.zoom``), which makes a 512×512×300 CT a matter of seconds. Linear
axes go through one ``torch.nn.functional.interpolate`` call (multi-threaded).

Anisotropy: where the input's (or the target's) largest spacing is ≥ ``anisotropy_threshold`` (3)
times its smallest, the coarse axis is the *out-of-plane* axis and is interpolated on its own
(nearest neighbour by default, as nnU-Net does), the in-plane axes as above: a spline across
slices 3 mm apart would invent structure between them. :func:`plan_resampling` says so in its
``reason``, for the plan to record.

Cropping: :func:`nonzero_box` is the bounding box of the voxels that are non-zero in any channel
(nnU-Net crops every case to it before planning and training). :func:`to_target_grid` crops and
resamples a :class:`~medseg.data.sample.Sample` and keeps a :class:`GridChange` in its ``meta``;
:func:`labels_to_input_grid`, :func:`values_to_input_grid` and :func:`scores_to_input_labels` take
a prediction on that grid back to the input's exact shape (outside the box: background / 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medseg.data.sample import Sample
from medseg.errors import DataError

#: largest / smallest spacing from which the coarse axis is resampled on its own (nnU-Net: 3)
ANISOTROPY_THRESHOLD = 3.0
IMAGE_ORDERS = (1, 3)
LABEL_METHODS = ("linear", "nearest")
#: interpolation of the out-of-plane axis of anisotropic data: 0 nearest (nnU-Net), 1 linear
OUT_OF_PLANE_ORDERS = (0, 1)
#: where a sample keeps its :class:`GridChange`
GRID_KEY = "grid_change"


# --------------------------------------------------------------------------- the grid change


@dataclass(frozen=True)
class Resampling:
    """One grid onto another: shapes and spacings per spatial axis (array order), the axis that
    anisotropy sets apart (``None``: all axes alike), and why."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_spacing: tuple[float, ...]
    out_spacing: tuple[float, ...]
    separate_axis: int | None = None
    reason: str = ""

    @property
    def is_identity(self) -> bool:
        return self.in_shape == self.out_shape

    def inverse(self) -> Resampling:
        """The way back onto the input grid (same treatment of the out-of-plane axis)."""
        return Resampling(
            self.out_shape, self.in_shape, self.out_spacing, self.in_spacing, self.separate_axis, self.reason
        )


def anisotropic_axis(
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    threshold: float = ANISOTROPY_THRESHOLD,
) -> tuple[int | None, str]:
    """The out-of-plane axis to resample on its own, and why (nnU-Net's ``get_do_separate_z``).

    The input's spacing decides first, then the target's: the axis whose spacing is ≥
    ``threshold`` × the finest, if exactly one axis is that coarse.
    """
    for name, values in (("input", spacing), ("target", target_spacing)):
        values = [float(v) for v in values]
        ratio = max(values) / min(values)
        if len(values) == 3 and ratio >= threshold:
            coarse = [i for i, v in enumerate(values) if v >= threshold * min(values)]
            if len(coarse) == 1:
                axis = coarse[0]
                return axis, (
                    f"anisotropic {name} spacing {_fmt(values)} mm (ratio {ratio:.1f} ≥ {threshold:g}): "
                    f"axis {axis} is out-of-plane and resampled on its own, the in-plane axes together"
                )
    return None, f"spacing ratio below {threshold:g}: every axis resampled alike"


def plan_resampling(
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    threshold: float = ANISOTROPY_THRESHOLD,
) -> Resampling:
    """How a grid of ``shape`` and ``spacing`` goes to ``target_spacing`` (module docstring).

    A 3D grid with a 2D target (a 2D plan of volumes) is resampled in-plane only: the first axis
    keeps its spacing.
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    target = tuple(float(t) for t in target_spacing)
    if len(spacing) != len(shape):
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for shape {shape}")
    in_plane_only = len(shape) == 3 and len(target) == 2
    if in_plane_only:
        target = (spacing[0], *target)
    if len(target) != len(shape):
        raise ValueError(
            f"target spacing {target_spacing} does not fit a {len(shape)}D grid of shape {shape}"
        )
    if any(not np.isfinite(t) or t <= 0 for t in target):
        raise ValueError(f"target spacing must be positive, got {tuple(target_spacing)}")
    out_shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target, strict=True))
    out_spacing = tuple(s if n == m else n * s / m for n, s, m in zip(shape, spacing, out_shape, strict=True))
    if in_plane_only:
        return Resampling(shape, out_shape, spacing, out_spacing, None, "2D target: in-plane resampling only")
    axis, reason = anisotropic_axis(spacing, target, threshold)
    return Resampling(shape, out_shape, spacing, out_spacing, axis, reason)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


# --------------------------------------------------------------------------- one axis at a time


def _source_positions(n: int, m: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Input positions sampled by output voxels ``start..stop`` of an ``n → m`` axis (cell centres)."""
    j = np.arange(start, m if stop is None else stop, dtype=np.float64)
    return (j + 0.5) * (n / m) - 0.5


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric extension (``-1 → 0``, ``n → n − 1``), SciPy's ``reflect`` mode."""
    period = np.mod(index, 2 * n)
    return np.where(period >= n, 2 * n - 1 - period, period)


def _taps(
    kind: str, n: int, m: int, start: int = 0, stop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Input indices and weights (``taps × outputs``) of an ``n → m`` pass of ``kind``.

    ``linear`` clamps at the edges (PyTorch's ``align_corners=False``), ``cubic`` B-spline taps
    (evaluated on prefiltered coefficients) reflect, ``nearest`` takes the cell that holds the
    position (PyTorch's ``nearest-exact``).
    """
    x = _source_positions(n, m, start, stop)
    if kind == "nearest":
        index = np.minimum(np.floor(x + 0.5), n - 1).astype(np.int64)
        return index[None], np.ones((1, len(x)))
    if kind == "linear":
        x = np.clip(x, 0.0, n - 1)
        low = np.floor(x).astype(np.int64)
        frac = x - low
        return np.stack([low, np.minimum(low + 1, n - 1)]), np.stack([1.0 - frac, frac])
    if kind == "cubic":
        low = np.floor(x).astype(np.int64)
        t = x - low
        weights = (
            np.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3]) / 6.0
        )
        index = np.stack([_reflect(low + k, n) for k in (-1, 0, 1, 2)])
        return index, weights
    raise ValueError(f"unknown interpolation '{kind}'")


def _pass(
    array: np.ndarray,
    axis: int,
    kind: str,
    n: int,
    m: int,
    start: int = 0,
    stop: int | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Resample one axis of ``array`` (its positions ``offset..`` of an ``n``-voxel axis) to output
    voxels ``start..stop`` of ``m``; the array must hold every input index those outputs read."""
    index, weights = _taps(kind, n, m, start, stop)
    index = index - offset
    # "clip" never triggers (the indices are in range) and spares NumPy a buffered copy
    if kind == "nearest":
        return np.take(array, index[0], axis=axis, mode="clip")
    view = [1] * array.ndim
    view[axis] = -1
    # NumPy gathers fast along any axis; PyTorch does the weighted sum in place, on every core
    out = np.take(array, index[0], axis=axis, mode="clip")
    total = torch.from_numpy(out)
    total.mul_(torch.from_numpy(weights[0].astype(array.dtype)).view(view))
    tap = np.empty_like(out)
    for k in range(1, index.shape[0]):
        np.take(array, index[k], axis=axis, out=tap, mode="clip")
        total.addcmul_(torch.from_numpy(tap), torch.from_numpy(weights[k].astype(array.dtype)).view(view))
    return out


#: the pole of the cubic B-spline prefilter (Unser 1999, "Splines: a perfect fit", Box 2)
_POLE = np.sqrt(3.0) - 2.0
#: terms of the causal initial sum: the pole's powers fall below 1e-10 of the first
_INIT_TERMS = 18
#: from this length on, SciPy filters the (contiguous) last axis line by line, faster than slices
_SCIPY_MIN_LENGTH = 16


def bspline_coefficients(array: np.ndarray, axis: int) -> np.ndarray:
    """Cubic B-spline coefficients along ``axis`` (mirror-symmetric edges, SciPy's ``reflect``):
    the interpolating spline's prefilter, one causal and one anticausal recursion (Unser 1999).

    Along any axis but the last the recursion runs over whole slices (contiguous, vectorised),
    several times faster than SciPy's line-by-line ``spline_filter1d``, which wins on the last
    axis. Returns a new float32 array.
    """
    n = array.shape[axis]
    if axis == array.ndim - 1 and n >= _SCIPY_MIN_LENGTH:
        return ndimage.spline_filter1d(array, 3, axis=axis, mode="reflect", output=np.float32)
    out = np.multiply(array, 6.0, dtype=np.float32)  # the filter's gain, (1 − z)(1 − 1/z)
    if n == 1:
        return out / 6.0
    z = _POLE
    lines = np.moveaxis(out, axis, 0)  # a view: lines[k] is the k-th slice across the axis
    # causal start: the infinite sum over the mirrored signal (period 2n), truncated where z^k ≈ 0
    powers = z ** np.arange(_INIT_TERMS)
    mirrored = _reflect(np.arange(_INIT_TERMS), n)
    lines[0] += z * np.tensordot(powers.astype(np.float32), lines[mirrored], axes=1)
    scratch = np.empty_like(lines[0])
    for k in range(1, n):
        np.multiply(lines[k - 1], z, out=scratch)
        lines[k] += scratch
    lines[n - 1] *= z / (z - 1.0)  # anticausal start for a mirrored signal
    for k in range(n - 2, -1, -1):
        np.subtract(lines[k + 1], lines[k], out=lines[k])
        lines[k] *= z
    return out


def _axis_order(grid: Resampling) -> list[int]:
    """Axes that change size, shrinking ones first (later passes then see fewer voxels)."""
    axes = [a for a, (n, m) in enumerate(zip(grid.in_shape, grid.out_shape, strict=True)) if n != m]
    return sorted(axes, key=lambda a: grid.out_shape[a] / grid.in_shape[a])


def _axis_kind(grid: Resampling, axis: int, in_plane: str, out_of_plane: str) -> str:
    return out_of_plane if axis == grid.separate_axis else in_plane


_ORDER_KIND = {0: "nearest", 1: "linear", 3: "cubic"}


def resample_image(
    image: np.ndarray, grid: Resampling, order: int = 3, out_of_plane_order: int = 0
) -> np.ndarray:
    """A ``C×spatial`` image on ``grid.out_shape``: cubic B-spline (``order=3``) or linear (``1``);
    the out-of-plane axis of anisotropic data by ``out_of_plane_order`` (0 nearest, 1 linear).

    Returns float32. Spline values may overshoot the input's range near edges, as any cubic does.
    """
    if order not in IMAGE_ORDERS:
        raise ValueError(f"image interpolation order must be one of {IMAGE_ORDERS}, got {order}")
    if out_of_plane_order not in OUT_OF_PLANE_ORDERS:
        raise ValueError(f"out_of_plane_order must be one of {OUT_OF_PLANE_ORDERS}, got {out_of_plane_order}")
    image = np.asarray(image)
    _check_shape(image.shape[1:], grid)
    if grid.is_identity:
        return image.astype(np.float32, copy=True)
    array = np.ascontiguousarray(image, dtype=np.float32)
    axes = _axis_order(grid)
    kinds = {a: _axis_kind(grid, a, _ORDER_KIND[order], _ORDER_KIND[out_of_plane_order]) for a in axes}
    linear = [a for a in axes if kinds[a] == "linear"]
    for axis in axes:
        if kinds[axis] == "linear":
            if axis == linear[0]:  # every linear axis in one (multi-threaded) PyTorch call
                array = _linear_axes(array, linear, grid)
            continue
        if kinds[axis] == "cubic":
            array = bspline_coefficients(array, axis + 1)
        array = _pass(array, axis + 1, kinds[axis], grid.in_shape[axis], grid.out_shape[axis])
    return array


_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _linear_axes(array: np.ndarray, axes: list[int], grid: Resampling) -> np.ndarray:
    """``C×spatial`` resampled linearly along the spatial ``axes`` to ``grid.out_shape`` (the other
    axes keep their size, which linear interpolation leaves exactly as they are)."""
    size = [grid.out_shape[a] if a in axes else n for a, n in enumerate(array.shape[1:])]
    if len(size) == 3 and size[0] == array.shape[1]:  # in-plane only: bilinear, slices as channels
        tensor = torch.from_numpy(array).reshape(1, -1, *array.shape[2:])
        out = F.interpolate(tensor, size=size[1:], mode="bilinear", align_corners=False)
        return out.reshape(array.shape[0], *size).numpy()
    tensor = torch.from_numpy(array)[None]
    mode = _LINEAR_MODES[tensor.ndim - 2]
    return F.interpolate(tensor, size=size, mode=mode, align_corners=False)[0].numpy()


def _check_shape(shape: Sequence[int], grid: Resampling) -> None:
    if tuple(shape) != grid.in_shape:
        raise ValueError(f"array of spatial shape {tuple(shape)} does not match the grid's {grid.in_shape}")


def resample_labels(labels: np.ndarray, grid: Resampling, method: str = "linear") -> np.ndarray:
    """A label map on ``grid.out_shape``, holding only values of ``labels`` (same dtype).

    ``nearest``: nearest neighbour. ``linear``: each label's indicator interpolated linearly (the
    out-of-plane axis of anisotropic data: nearest), the label of the largest value wins (ties: the
    most frequent label, then the smaller value). Only the bounding box of each label is
    interpolated; the most frequent label (background) is 1 − the sum of the others.
    """
    if method not in LABEL_METHODS:
        raise ValueError(f"label resampling must be one of {LABEL_METHODS}, got '{method}'")
    labels = np.asarray(labels)
    _check_shape(labels.shape, grid)
    if grid.is_identity:
        return labels.copy()
    if labels.dtype == bool:
        return resample_labels(labels.view(np.uint8), grid, method).astype(bool)
    if method == "nearest":
        return _nearest(labels, grid)
    axis = grid.separate_axis
    if axis is None or grid.in_shape[axis] == grid.out_shape[axis]:
        return _linear_labels(labels, grid)
    # nearest neighbour along the out-of-plane axis commutes with the voxel-wise argmax: take it on
    # the side with fewer slices, and interpolate in-plane there
    if grid.out_shape[axis] <= grid.in_shape[axis]:
        across = _partial(grid, grid.in_shape, [axis])
        return _linear_labels(_nearest(labels, across), _partial(grid, across.out_shape, None, axis))
    in_plane = _partial(grid, grid.in_shape, None, axis)
    return _nearest(_linear_labels(labels, in_plane), _partial(grid, in_plane.out_shape, [axis]))


def _partial(
    grid: Resampling, shape: tuple[int, ...], axes: list[int] | None, skip: int | None = None
) -> Resampling:
    """The step of ``grid`` from ``shape`` that changes only ``axes`` (``None``: all but ``skip``)."""
    changed = [a for a in range(len(shape)) if a != skip] if axes is None else axes
    out = tuple(grid.out_shape[a] if a in changed else n for a, n in enumerate(shape))
    spacing = tuple(grid.out_spacing[a] if a in changed else grid.in_spacing[a] for a in range(len(shape)))
    return Resampling(shape, out, grid.in_spacing, spacing, None, grid.reason)


def _linear_labels(labels: np.ndarray, grid: Resampling) -> np.ndarray:
    """Per-label linear interpolation along every axis that changes, then the argmax."""
    if grid.is_identity:
        return labels
    values, counts = _label_counts(labels)
    if len(values) == 1:
        return np.full(grid.out_shape, values[0], dtype=labels.dtype)
    implicit = values[int(np.argmax(counts))]  # the most frequent label: 1 − the sum of the others
    if labels.dtype.kind in "ui" and int(values[0]) >= 0 and int(values[-1]) < 2**16:
        # find_objects takes the values as they are: no relabelled copy of a large map
        found = ndimage.find_objects(labels)
        boxes = {int(v): found[int(v) - 1] for v in values if v != 0}
        if values[0] == 0 and implicit != 0:
            boxes[0] = _bounding_box(labels == 0)
        scores = _ScoreArgmax(grid.out_shape, labels.dtype, implicit)
        for value in values:
            if value != implicit:
                box = boxes[int(value)]
                scores.add(value, *_resample_box((labels[box] == value).astype(np.float32), box, grid))
        return scores.labels()
    ranks, compact = _compact_labels(labels, values, implicit)
    scores = _ScoreArgmax(grid.out_shape, compact.dtype, 0)
    for index, box in enumerate(ndimage.find_objects(compact), start=1):
        if box is not None:
            scores.add(index, *_resample_box((compact[box] == index).astype(np.float32), box, grid))
    return ranks[scores.labels()].astype(labels.dtype, copy=False)


def _label_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values a label map holds (ascending) and how often."""
    if labels.dtype in (np.uint8, np.int16, np.int32, np.int64) and labels.size and labels.min() >= 0:
        counts = torch.bincount(torch.from_numpy(np.ascontiguousarray(labels).ravel())).numpy()
        values = np.flatnonzero(counts)
        return values.astype(labels.dtype), counts[values]
    return np.unique(labels, return_counts=True)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _nearest(labels: np.ndarray, grid: Resampling) -> np.ndarray:
    array = labels
    for axis in _axis_order(grid):
        array = _pass(array, axis, "nearest", grid.in_shape[axis], grid.out_shape[axis])
    return array if array is not labels else labels.copy()


def _compact_labels(
    labels: np.ndarray, values: np.ndarray, implicit: np.generic
) -> tuple[np.ndarray, np.ndarray]:
    """For label values ``find_objects`` cannot index (negative, large): the values in the order
    of their new indices (``implicit`` first, index 0) and the map of those indices."""
    ranks = np.concatenate([[implicit], values[values != implicit]]).astype(labels.dtype)
    position = np.searchsorted(values, labels)
    order = np.empty(len(values), dtype=_index_dtype(len(values)))
    order[np.searchsorted(values, ranks)] = np.arange(len(values))
    return ranks, order[position]


def _index_dtype(count: int) -> type[np.integer]:
    return np.uint8 if count <= 256 else np.int32


def _resample_box(
    indicator: np.ndarray, box: tuple[slice, ...], grid: Resampling
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Linear resampling of a label's indicator in its bounding ``box``: the output region it
    reaches and the values there (zero elsewhere)."""
    ranges: list[tuple[int, int, int, int]] = []  # per axis: output start, stop; input start, stop
    for axis, part in enumerate(box):
        n, m = grid.in_shape[axis], grid.out_shape[axis]
        if n == m:
            ranges.append((part.start, part.stop, part.start, part.stop))
            continue
        index, _ = _taps("linear", n, m)
        reads = (index >= part.start) & (index < part.stop)
        outputs = np.flatnonzero(reads.any(axis=0))
        start, stop = int(outputs[0]), int(outputs[-1]) + 1
        needed = index[:, start:stop]
        in_start = min(part.start, int(needed.min()))
        ranges.append((start, stop, in_start, max(part.stop, int(needed.max()) + 1)))
    # widen the box to every input index the outputs read: zeros of the label outside its box
    wide = tuple(slice(r[2], r[3]) for r in ranges)
    pad = [(p.start - w.start, w.stop - p.stop) for p, w in zip(box, wide, strict=True)]
    array = np.pad(indicator, pad)
    for axis in _axis_order(grid):
        start, stop, in_start, _ = ranges[axis]
        array = _pass(array, axis, "linear", grid.in_shape[axis], grid.out_shape[axis], start, stop, in_start)
    return tuple(slice(r[0], r[1]) for r in ranges), array


class _ScoreArgmax:
    """A running argmax over labels whose scores arrive box by box; the ``implicit`` label scores
    1 − the sum of the others (linear interpolation keeps a partition of unity) and wins ties."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, implicit: Any) -> None:
        self.total = np.zeros(shape, dtype=np.float32)
        self.best = np.zeros(shape, dtype=np.float32)
        self.label = np.full(shape, implicit, dtype=dtype)
        self.implicit = implicit

    def add(self, value: Any, box: tuple[slice, ...], score: np.ndarray) -> None:
        self.total[box] += score
        best, label = self.best[box], self.label[box]
        np.copyto(label, value, where=score > best)
        np.maximum(best, score, out=best)

    def labels(self) -> np.ndarray:
        implicit = np.subtract(1.0, self.total, out=self.total)
        np.copyto(self.label, self.implicit, where=implicit >= self.best)
        return self.label


def scores_to_labels(scores: np.ndarray, grid: Resampling) -> np.ndarray:
    """Class indices (argmax over channels) of ``K×spatial`` probabilities or logits resampled to
    ``grid.out_shape``: each channel linearly (out-of-plane: nearest), one at a time."""
    scores = np.asarray(scores)
    _check_shape(scores.shape[1:], grid)
    if scores.shape[0] > 256:
        raise ValueError(f"at most 256 classes, got {scores.shape[0]} score channels")
    best = label = None
    for k in range(scores.shape[0]):
        channel = torch.from_numpy(resample_image(scores[k : k + 1], grid, order=1)[0])
        if best is None:
            best, label = channel, torch.zeros(channel.shape, dtype=torch.uint8)
        else:
            label.masked_fill_(channel > best, k)
            torch.maximum(best, channel, out=best)
    assert label is not None
    return label.numpy()


# --------------------------------------------------------------------------- cropping


def nonzero_box(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per spatial axis of the voxels non-zero in any channel of a ``C×spatial``
    image; the whole image when every voxel is zero."""
    nonzero = np.any(np.asarray(image) != 0, axis=0)
    box = []
    for axis in range(nonzero.ndim):
        others = tuple(a for a in range(nonzero.ndim) if a != axis)
        hit = np.flatnonzero(nonzero.any(axis=others) if others else nonzero)
        if hit.size == 0:
            return tuple((0, n) for n in nonzero.shape)
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def crop(array: np.ndarray, box: Sequence[tuple[int, int]]) -> np.ndarray:
    """The part of ``array`` inside ``box`` (the last ``len(box)`` axes are spatial)."""
    lead = (slice(None),) * (array.ndim - len(box))
    return array[lead + tuple(slice(a, b) for a, b in box)]


def paste(
    array: np.ndarray, box: Sequence[tuple[int, int]], shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """``array`` (the content of ``box``) put back into a full array of spatial ``shape``, ``fill``
    elsewhere; leading (channel) axes are kept."""
    lead = array.shape[: array.ndim - len(box)]
    expected = tuple(b - a for a, b in box)
    if tuple(array.shape[len(lead) :]) != expected:
        raise ValueError(
            f"array of spatial shape {array.shape[len(lead) :]} does not fill the box {expected}"
        )
    full = np.full((*lead, *shape), fill, dtype=array.dtype)
    full[(slice(None),) * len(lead) + tuple(slice(a, b) for a, b in box)] = array
    return full


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class GridChange:
    """How a sample went from its input grid to the training grid: the crop box (on the input
    grid) and the resampling of that box; :meth:`to_dict` is what ``meta["grid_change"]`` holds."""

    input_shape: tuple[int, ...]
    input_spacing: tuple[float, ...]
    box: tuple[tuple[int, int], ...]
    resampling: Resampling

    @property
    def shape(self) -> tuple[int, ...]:
        return self.resampling.out_shape

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.resampling.out_spacing

    def to_dict(self) -> dict[str, Any]:
        r = self.resampling
        return {
            "input_shape": list(self.input_shape),
            "input_spacing": list(self.input_spacing),
            "box": [list(b) for b in self.box],
            "shape": list(r.out_shape),
            "spacing": list(r.out_spacing),
            "separate_axis": r.separate_axis,
            "reason": r.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridChange:
        box = tuple((int(a), int(b)) for a, b in data["box"])
        cropped = tuple(b - a for a, b in box)
        spacing = tuple(float(s) for s in data["input_spacing"])
        resampling = Resampling(
            cropped,
            tuple(int(s) for s in data["shape"]),
            spacing,
            tuple(float(s) for s in data["spacing"]),
            data.get("separate_axis"),
            data.get("reason", ""),
        )
        return cls(tuple(int(s) for s in data["input_shape"]), spacing, box, resampling)


def to_target_grid(
    sample: Sample,
    target_spacing: Sequence[float] | None,
    crop_nonzero: bool = False,
    label_method: str = "linear",
    order: int = 3,
) -> Sample:
    """``sample`` cropped to its non-zero box (``crop_nonzero``) and resampled to
    ``target_spacing`` (``None``: its own): image by ``order``, masks by ``label_method``, label
    arrays of ``meta`` with the image's shape (``instance``) by nearest neighbour.

    The result's ``meta["grid_change"]`` (:class:`GridChange`) says how to go back; the rest of
    ``meta`` (affine, origin) still describes the input. A sample already changed is an error.
    """
    where = sample.source_path or sample.case_id
    if GRID_KEY in sample.meta:
        raise DataError("the sample is already cropped / resampled (meta['grid_change'] is set)", where)
    shape = sample.spatial_shape
    box = nonzero_box(sample.image) if crop_nonzero else tuple((0, n) for n in shape)
    target = tuple(sample.spacing) if target_spacing is None else tuple(float(t) for t in target_spacing)
    if len(target) not in (sample.ndim, 2) or (sample.ndim == 2 and len(target) != 2):
        raise DataError(
            f"target spacing {list(target)} has {len(target)} values for a {sample.ndim}D image", where
        )
    cropped_shape = tuple(b - a for a, b in box)
    resampling = plan_resampling(cropped_shape, sample.spacing, target)
    change = GridChange(shape, tuple(sample.spacing), box, resampling)
    meta = {}
    for key, value in sample.meta.items():
        if isinstance(value, np.ndarray) and value.shape == shape:
            value = _nearest(crop(value, box), resampling)
        meta[key] = value
    meta[GRID_KEY] = change.to_dict()
    return replace(
        sample,
        image=resample_image(crop(sample.image, box), resampling, order),
        masks={k: resample_labels(crop(m, box), resampling, label_method) for k, m in sample.masks.items()},
        spacing=resampling.out_spacing,
        meta=meta,
    )


def grid_change_of(sample: Sample) -> GridChange | None:
    """The :class:`GridChange` a sample went through (``None``: on its input grid)."""
    data = sample.meta.get(GRID_KEY)
    return None if data is None else GridChange.from_dict(data)


def labels_to_input_grid(labels: np.ndarray, change: GridChange, method: str = "linear") -> np.ndarray:
    """A label map on the training grid back on the input's shape (background 0 outside the box)."""
    back = resample_labels(labels, change.resampling.inverse(), method)
    return paste(back, change.box, change.input_shape, 0)


def values_to_input_grid(values: np.ndarray, change: GridChange, fill: float = 0.0) -> np.ndarray:
    """A real-valued map (``spatial`` or ``C×spatial``: probabilities, entropy) on the training
    grid back on the input's shape, linearly (``fill`` outside the box); float32."""
    values = np.asarray(values, dtype=np.float32)
    channels = values if values.ndim == len(change.shape) + 1 else values[None]
    back = resample_image(channels, change.resampling.inverse(), order=1)
    full = paste(back, change.box, change.input_shape, fill)
    return full if values.ndim == len(change.shape) + 1 else full[0]


def scores_to_input_labels(scores: np.ndarray, change: GridChange) -> np.ndarray:
    """Class indices on the input's shape from ``K×spatial`` probabilities or logits on the training
    grid: each channel resampled back linearly, then the argmax (class 0 outside the box)."""
    labels = scores_to_labels(scores, change.resampling.inverse())
    return paste(labels, change.box, change.input_shape, 0)
