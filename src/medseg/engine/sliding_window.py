"""Sliding-window blending that streams the volume slab by slab along its first spatial axis.

The windows, their Gaussian importance map and the padding of a volume smaller than the window
follow MONAI's ``sliding_window_inference`` exactly (same window corners, same weights, same zero
padding split evenly before and after), so both give the same output up to float rounding. What
differs is where the output lives:

* windows run in corner order, first spatial axis slowest, ``sw_batch_size`` at a time through
  one forward pass (:class:`WindowBlender`);
* the weighted sums and the sum of weights accumulate in ring buffers only as deep as the windows
  in flight (one window, plus the rows one batch spans), not the whole volume;
* once no later window can reach a slab of rows, the slab is normalised (divided by its sum of
  weights) and handed to the caller (:meth:`WindowBlender.slabs`), who keeps what it needs: just a
  label map and a probability (:func:`medseg.engine.inference.predict_volume_classes`); or all
  the logits (``keep_all``: they accumulate in one full-size buffer instead of the ring,
  :func:`medseg.engine.inference.sliding_window_predict`).

A K-class label map of a ``D×H×W`` volume with window depth ``d`` therefore holds
``(K + 1)×(d + span)×H×W`` floats while it runs, and full logits ``K×D×H×W + (d + span)×H×W``,
where MONAI holds ``(K + 1)×D×H×W`` and the caller's softmax and argmax another ``K×D×H×W``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F
from torch import Tensor

BLEND_MODES = ("gaussian", "constant")
#: MONAI raises every weight of the importance map to at least this (a Gaussian's corners in 3D
#: are ~1e-11), so a voxel near a volume corner covered by one window is never divided by ~0.
MIN_WEIGHT = 1e-3
#: rows of the first spatial axis normalised and handed over at a time: the caller's work on a slab
#: (softmax, argmax) then needs little memory.
SLAB_ROWS = 8


def scan_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis of ``size`` voxels (already padded to ≥ ``roi``).

    Windows step by ``int(roi × (1 − overlap))`` (at least 1) until one reaches the end; the last
    start is pulled back to ``size − roi`` so that no window leaves the volume. A window as large as
    the axis gives the one start 0.
    """
    if size < roi:
        raise ValueError(f"an axis of {size} voxels is smaller than its window {roi}: pad it first")
    if roi == size:
        return [0]
    step = max(int(roi * (1 - overlap)), 1)
    count = next(d for d in range(math.ceil(size / step) + 1) if d * step + roi >= size) + 1
    return [min(d * step, size - roi) for d in range(count)]


def importance_map(
    roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The weight of each voxel of a window: 1 (``constant``) or a Gaussian centred on the window.

    Gaussian: the product over axes of ``exp(−x² / 2σ²)`` with ``x`` the distance from the window
    centre and ``σ = sigma_scale × window size``, every weight raised to at least
    ``max(min weight, 1e-3)`` (MONAI's ``compute_importance_map``).
    """
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}'. Available: {', '.join(BLEND_MODES)}")
    if mode == "constant":
        weights = torch.ones(tuple(roi), dtype=torch.float32)
    else:
        weights = torch.ones((), dtype=torch.float32)
        for size in roi:
            x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
            sigma = size * sigma_scale
            weights = weights.unsqueeze(-1) * torch.exp(x**2 / (-2 * sigma**2))
    floor = max(weights.min().item(), MIN_WEIGHT)
    return weights.clamp_(min=floor).to(dtype)


@dataclass(frozen=True)
class WindowGrid:
    """The windows that tile a volume: corners per axis, in the volume padded to the window."""

    shape: tuple[int, ...]  # the volume's spatial shape
    roi: tuple[int, ...]  # window size per axis
    pad: tuple[tuple[int, int], ...]  # zeros added before and after, per axis (volume < window)
    starts: tuple[tuple[int, ...], ...]  # window starts per axis, in padded coordinates

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(s + before + after for s, (before, after) in zip(self.shape, self.pad, strict=True))

    def corners(self) -> list[tuple[int, ...]]:
        """Every window's first voxel (padded coordinates), the first axis slowest."""
        return list(product(*self.starts))

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.starts)


def window_grid(shape: Sequence[int], roi: Sequence[int], overlap: float) -> WindowGrid:
    """The windows of ``roi`` over a volume of spatial ``shape`` with ``overlap`` (see :func:`scan_starts`).

    An axis smaller than its window is padded with zeros to the window, half before and half after
    (the odd voxel after), and has one window.
    """
    if len(shape) != len(roi):
        raise ValueError(f"a {len(roi)}D window for a {len(shape)}D volume")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    missing = [max(int(r) - int(s), 0) for s, r in zip(shape, roi, strict=True)]
    pad = tuple((m // 2, m - m // 2) for m in missing)
    padded = [s + a + b for s, (a, b) in zip(shape, pad, strict=True)]
    starts = tuple(tuple(scan_starts(p, r, overlap)) for p, r in zip(padded, roi, strict=True))
    return WindowGrid(tuple(int(s) for s in shape), tuple(int(r) for r in roi), pad, starts)


class WindowBlender:
    """Blend the windows of ``grid`` over ``volume`` (``1×C×spatial``) slab by slab.

    ``predict`` maps a ``B×C×roi`` batch of windows (on ``compute_device``) to ``B×K×roi``
    outputs; ``weights`` is the window's :func:`importance_map`. Windows run in corner order,
    ``sw_batch_size`` per call. Σ weight × prediction accumulates in a ring buffer of
    ``depth`` rows of the first spatial axis (one window, plus the rows a batch spans): a padded
    row ``r`` lives in buffer row ``r mod depth``, and a row is reused once it is finished. With
    ``keep_all`` the weighted sums instead fill a full ``K×spatial`` buffer (:meth:`output`). The
    weight sums need no accumulation per window: they are made per finished slab from the weights
    of one row of windows (:meth:`_weight_rows`). The buffers have the volume's float dtype
    (float32 for an integer volume) and live on ``stitch_device`` (default: the volume's device).
    """

    def __init__(
        self,
        predict: Callable[[Tensor], Tensor],
        volume: Tensor,
        grid: WindowGrid,
        weights: Tensor,
        sw_batch_size: int = 1,
        compute_device: torch.device | None = None,
        stitch_device: torch.device | None = None,
        keep_all: bool = False,
    ) -> None:
        if volume.ndim != len(grid.roi) + 2 or volume.shape[0] != 1:
            raise ValueError(
                f"volume must be 1×C×spatial with {len(grid.roi)} spatial axes, got {tuple(volume.shape)}"
            )
        if tuple(volume.shape[2:]) != grid.shape:
            raise ValueError(f"the grid is for a volume of {grid.shape}, got {tuple(volume.shape[2:])}")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be ≥ 1, got {sw_batch_size}")
        self.predict, self.grid, self.keep_all = predict, grid, keep_all
        self.compute_device = compute_device or volume.device
        self.stitch_device = stitch_device or volume.device
        self.dtype = volume.dtype if volume.is_floating_point() else torch.float32
        if any(before or after for before, after in grid.pad):
            flat = [n for before_after in reversed(grid.pad) for n in before_after]
            volume = F.pad(volume, flat)  # zeros, as MONAI (only when the volume is smaller than a window)
        self.volume = volume
        self.weights = weights.to(self.stitch_device, self.dtype)
        corners = grid.corners()
        self.batches = [corners[i : i + sw_batch_size] for i in range(0, len(corners), sw_batch_size)]
        rows = grid.padded_shape[0]
        self.depth = min(max(batch[-1][0] - batch[0][0] for batch in self.batches) + grid.roi[0], rows)
        self.total_depth = rows if keep_all else self.depth
        rest = grid.padded_shape[1:]
        # Σ weight over the windows of one row of window starts (all corners after the first axis),
        # per row of a window: the weight sum of any row is a few of these added (see _weight_rows)
        self.row_weights = torch.zeros((grid.roi[0], *rest), dtype=self.dtype, device=self.stitch_device)
        for corner in product(*grid.starts[1:]):
            self.row_weights[(slice(None), *_window(corner, grid.roi[1:]))] += self.weights
        self.weight_rows = torch.empty((1, SLAB_ROWS, *rest), dtype=self.dtype, device=self.stitch_device)
        self.totals: Tensor | None = None  # K×total_depth×rest, made when K is known

    def slabs(self, progress: bool = False) -> Iterator[tuple[int, Tensor]]:
        """Yield ``(start, slab)`` as rows finish: ``slab`` (``1×K×n×rest``) holds rows ``start …
        start + n − 1`` of the first spatial axis of the blended output, cropped to the volume.
        The slabs come in order and cover the volume once. A slab is a view into a buffer that is
        reused: use or copy it before asking for the next."""
        roi = self.grid.roi
        batches: Sequence[list[tuple[int, ...]]] = self.batches
        if progress:
            from tqdm import tqdm

            batches = tqdm(self.batches, desc="sliding window", unit="batch")
        base = 0  # the first unfinished row (padded coordinates)
        for batch in batches:
            if batch[0][0] > base:
                yield from self._finish(base, batch[0][0])
                base = batch[0][0]
            windows = [self.volume[(0, slice(None), *_window(corner, roi))] for corner in batch]
            predicted = self.predict(torch.stack(windows).to(self.compute_device))
            expected = (len(batch), *roi)
            if predicted.ndim != self.volume.ndim or (predicted.shape[0], *predicted.shape[2:]) != expected:
                raise ValueError(
                    f"the model gave shape {tuple(predicted.shape)} for {len(batch)} window(s) of {roi}: "
                    "sliding-window inference needs one output of the window's size per window"
                )
            predicted = predicted.to(self.stitch_device, self.dtype)
            if self.totals is None:
                shape = (predicted.shape[1], self.total_depth, *self.grid.padded_shape[1:])
                self.totals = torch.zeros(shape, dtype=self.dtype, device=self.stitch_device)
            for window, corner in zip(predicted, batch, strict=True):
                rest = _window(corner[1:], roi[1:])
                for rows, part in _ring(corner[0], roi[0], self.total_depth):
                    self.totals[(slice(None), rows, *rest)].addcmul_(window[:, part], self.weights[part])
        yield from self._finish(base, self.grid.padded_shape[0])

    def output(self) -> Tensor:
        """The full blended ``1×K×spatial`` output (``keep_all``, once :meth:`slabs` is exhausted):
        a view of the padded buffer, cropped to the volume."""
        if not self.keep_all or self.totals is None:
            raise RuntimeError("output() needs keep_all=True and a finished slabs() run")
        first, size = self.grid.pad[0][0], self.grid.shape[0]
        return self.totals[None, :, first : first + size][self._inside()]

    def _inside(self) -> tuple[slice, ...]:
        """Index of a ``1×K×rows×rest`` tensor that crops the padding of the axes after the first."""
        inside = [slice(a, a + s) for s, (a, _) in zip(self.grid.shape[1:], self.grid.pad[1:], strict=True)]
        return (slice(None), slice(None), slice(None), *inside)

    def _finish(self, start: int, stop: int) -> Iterator[tuple[int, Tensor]]:
        """Normalise rows ``start … stop − 1`` (padded) :data:`SLAB_ROWS` at a time, yield the part
        inside the volume, then free their buffer rows for the windows to come."""
        for low in range(start, stop, SLAB_ROWS):
            yield from self._finish_slab(low, min(low + SLAB_ROWS, stop))

    def _finish_slab(self, start: int, stop: int) -> Iterator[tuple[int, Tensor]]:
        assert self.totals is not None
        first, size = self.grid.pad[0][0], self.grid.shape[0]
        weight = self._weight_rows(start, stop)
        for rows, part in _ring(start, stop - start, self.depth):
            total_rows = slice(start + part.start, start + part.stop) if self.keep_all else rows
            total = self.totals[:, total_rows].div_(weight[:, part])
            low, high = max(start + part.start, first), min(start + part.stop, first + size)
            if low < high:
                offset = low - (start + part.start)
                yield low - first, total[None, :, offset : offset + high - low][self._inside()]
            if not self.keep_all:
                total.zero_()

    def _weight_rows(self, start: int, stop: int) -> Tensor:
        """``1×n×rest``: Σ weight over every window, rows ``start … stop − 1`` (padded).

        The windows are the product of the starts per axis, so the sum over the windows of a row
        ``z`` is the sum, over the first-axis starts ``s`` with ``s ≤ z < s + window``, of row
        ``z − s`` of :attr:`row_weights`: a few additions per row instead of one per window.
        """
        weight = self.weight_rows[:, : stop - start].zero_()
        depth = self.grid.roi[0]
        for s in self.grid.starts[0]:
            low, high = max(start, s), min(stop, s + depth)
            if low < high:
                weight[0, low - start : high - start] += self.row_weights[low - s : high - s]
        return weight


def _window(corner: Sequence[int], roi: Sequence[int]) -> list[slice]:
    """The slices of a window of size ``roi`` whose first voxel is ``corner``."""
    return [slice(c, c + r) for c, r in zip(corner, roi, strict=True)]


def _ring(start: int, length: int, depth: int) -> list[tuple[slice, slice]]:
    """Rows ``start … start + length − 1`` in a ring buffer of ``depth`` rows (``length`` ≤ ``depth``):
    ``(buffer rows, rows of the run)`` pairs, one, or two where the run wraps around."""
    position = start % depth
    if position + length <= depth:
        return [(slice(position, position + length), slice(0, length))]
    split = depth - position
    return [(slice(position, depth), slice(0, split)), (slice(0, length - split), slice(split, length))]
