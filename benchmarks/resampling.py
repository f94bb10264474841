"""Resampling (``medseg.data.resample``): time on a CT-sized volume, and class volumes kept.

Usage::

    .venv/bin/python benchmarks/resampling.py            # 512×512×300, 16 label sets per case
    .venv/bin/python benchmarks/resampling.py --scipy    # also scipy.ndimage.zoom, the 3D reference
    .venv/bin/python benchmarks/resampling.py --quick    # smoke: 40×64×64, 2 label sets

**Time.** A synthetic CT of ``--shape`` (D H W, default 300 512 512): a body-like ellipse of smooth
intensity inside a zero background, two organ-like label ellipsoids. Two cases: 1.0 × 0.7 × 0.7 mm
to 1 mm (every axis alike) and 2.5 × 0.7 × 0.7 mm to 1 mm (anisotropic: the slices go by nearest
neighbour). Timed once each (a 512×512×300 volume is slow to repeat): the cubic-spline and linear
image, the label map (per-label linear + argmax, and nearest), 3 class probabilities taken back to
the input's grid and argmaxed (what ``medseg predict`` does), and the non-zero box. ``--scipy``
adds ``scipy.ndimage.zoom`` (order 3 and 1) on the same volume, the plain 3D evaluation, for the
ratio. CPU timings on a shared machine are noisy: compare ratios within one run.

**Class volumes.** Three random ellipsoids (one per class, radii 10–20 % of a 60 mm cube, side by
side so that none overlaps), voxelised at the source spacing (voxel centres inside), resampled to
the target spacing by ``linear`` and by ``nearest``. The table gives the relative volume error of
each class against its exact volume 4/3 π abc and against the source voxels (absolute, mean and
max over classes and sets), and the source voxelisation's own error for scale. This measurement
picked ``linear`` as the label default.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from bench_results import publish
from scipy import ndimage

from medseg.data.resample import (
    nonzero_box,
    plan_resampling,
    resample_image,
    resample_labels,
    scores_to_labels,
)
from medseg.report.tables import markdown_table

TIME_CASES = (((1.0, 0.7, 0.7), (1.0, 1.0, 1.0)), ((2.5, 0.7, 0.7), (1.0, 1.0, 1.0)))
VOLUME_CASES = (
    ((3.0, 0.7, 0.7), (1.0, 1.0, 1.0)),
    ((1.0, 1.0, 1.0), (0.7, 0.7, 0.7)),
    ((0.7, 0.7, 0.7), (1.5, 1.5, 1.5)),
    ((1.0, 0.8, 0.8), (1.3, 1.3, 1.3)),
)


def ct_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A ``1×D×H×W`` float32 image (smooth body in a zero background) and a uint8 label map."""
    d, h, w = shape
    z, y, x = np.ogrid[:d, :h, :w]
    body = ((y - h / 2) / (0.42 * h)) ** 2 + ((x - w / 2) / (0.47 * w)) ** 2 <= 1
    image = np.where(body, 40.0 + 30.0 * np.sin(x / 23.0) * np.cos(y / 17.0) + 0.1 * z, 0.0).astype(
        np.float32
    )
    labels = np.zeros(shape, np.uint8)
    organ = (
        ((z - d / 2) / (0.3 * d)) ** 2 + ((y - 0.45 * h) / (0.2 * h)) ** 2 + ((x - 0.4 * w) / (0.15 * w)) ** 2
    )
    labels[organ <= 1] = 1
    lesion = (
        ((z - 0.4 * d) / (0.1 * d)) ** 2
        + ((y - 0.55 * h) / (0.06 * h)) ** 2
        + ((x - 0.6 * w) / (0.06 * w)) ** 2
    )
    labels[lesion <= 1] = 2
    return image[None], labels


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def timing_rows(shape: tuple[int, int, int], with_scipy: bool) -> list[dict[str, object]]:
    image, labels = ct_volume(shape)
    rows = []
    for spacing, target in TIME_CASES:
        grid = plan_resampling(shape, spacing, target)
        scores = np.random.default_rng(0).random((3, *grid.out_shape), dtype=np.float32)
        steps: dict[str, Callable[[], object]] = {
            "image, cubic spline": partial(resample_image, image, grid, order=3),
            "image, linear": partial(resample_image, image, grid, order=1),
            "labels, per-label linear + argmax": partial(resample_labels, labels, grid, "linear"),
            "labels, nearest": partial(resample_labels, labels, grid, "nearest"),
            "3 class probabilities back + argmax": partial(scores_to_labels, scores, grid.inverse()),
            "non-zero box": partial(nonzero_box, image),
        }
        if with_scipy:
            zoom = [m / n for m, n in zip(grid.out_shape, shape, strict=True)]
            for order in (3, 1):
                steps[f"scipy.ndimage.zoom, order {order} (reference)"] = partial(
                    ndimage.zoom, image[0], zoom, order=order, mode="reflect", grid_mode=True
                )
        for step, function in steps.items():
            seconds = timed(function)
            rows.append(
                {
                    "case": f"{_mm(spacing)} → {_mm(target)} mm",
                    "output": "×".join(str(n) for n in grid.out_shape),
                    "step": step,
                    "seconds": seconds,
                }
            )
            print(f"{rows[-1]['case']}: {step}: {seconds:.2f} s", flush=True)
    return rows


def _mm(spacing: tuple[float, ...]) -> str:
    return "×".join(f"{s:g}" for s in spacing)


def ellipsoid_labels(
    spacing: tuple[float, ...], extent_mm: float, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, ...], list[float]]:
    """Three ellipsoids (labels 1–3), each in its own third of the cube along the last axis so
    that none overlaps: their exact volumes are 4/3 π abc."""
    shape = tuple(int(round(extent_mm / s)) for s in spacing)
    axes = [(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    labels = np.zeros(shape, np.uint8)
    third = extent_mm / 3
    volumes = []
    for value in (1, 2, 3):
        radii = rng.uniform(0.1 * extent_mm, 0.2 * extent_mm, 3)
        radii[2] = min(radii[2], 0.45 * third)
        centre = rng.uniform(radii + 1, extent_mm - radii - 1)
        centre[2] = (value - 0.5) * third + rng.uniform(-0.04, 0.04) * third
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1
        labels[inside] = value
        volumes.append(4 / 3 * math.pi * float(np.prod(radii)))
    return labels, shape, volumes


def volume_rows(n_sets: int, extent_mm: float) -> list[dict[str, object]]:
    rows = []
    for spacing, target in VOLUME_CASES:
        errors: dict[str, dict[str, list[float]]] = {
            m: {"truth": [], "source": []} for m in ("linear", "nearest")
        }
        source_errors = []
        for seed in range(n_sets):
            labels, shape, volumes = ellipsoid_labels(spacing, extent_mm, np.random.default_rng(seed))
            grid = plan_resampling(shape, spacing, target)
            before = [(labels == value).sum() * math.prod(spacing) for value in (1, 2, 3)]
            source_errors += [100.0 * abs(b - v) / v for b, v in zip(before, volumes, strict=True)]
            for method, found in errors.items():
                resampled = resample_labels(labels, grid, method)
                for value, exact, voxels in zip((1, 2, 3), volumes, before, strict=True):
                    after = (resampled == value).sum() * math.prod(grid.out_spacing)
                    found["truth"].append(100.0 * abs(after - exact) / exact)
                    found["source"].append(100.0 * abs(after - voxels) / voxels)
        for method, found in errors.items():
            rows.append(
                {
                    "case": f"{_mm(spacing)} → {_mm(target)} mm",
                    "labels": method,
                    "vs exact volume: mean %": float(np.mean(found["truth"])),
                    "max %": float(np.max(found["truth"])),
                    "vs source voxels: mean %": float(np.mean(found["source"])),
                    "source voxels vs exact: mean %": float(np.mean(source_errors)),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[300, 512, 512], help="D H W of the timed volume"
    )
    parser.add_argument("--sets", type=int, default=16, help="random label sets per spacing case")
    parser.add_argument("--scipy", action="store_true", help="also time scipy.ndimage.zoom (minutes)")
    parser.add_argument("--quick", action="store_true", help="40×64×64 volume, 2 label sets, 30 mm cube")
    args = parser.parse_args()
    shape = (40, 64, 64) if args.quick else tuple(args.shape)
    n_sets, extent = (2, 30.0) if args.quick else (args.sets, 60.0)
    title = f"{torch.get_num_threads()} torch threads; volume {'×'.join(map(str, shape))} (D×H×W)"
    print(title, flush=True)
    timing = markdown_table(timing_rows(shape, args.scipy), floatfmt=".2f")
    volumes = markdown_table(volume_rows(n_sets, extent), floatfmt=".2f")
    text = (
        f"{title}\n\nTime (one run each):\n\n{timing}\n\n"
        f"Class volumes after resampling (absolute relative error):\n\n{volumes}"
    )
    print("\n" + text)
    publish("resampling", text, args.quick)


if __name__ == "__main__":
    main()
