"""Speed and agreement of HD95 + NSD: medseg vs MONAI vs medpy on the same inputs.

Usage::

    .venv/bin/python benchmarks/metrics_speed.py            # 100 2D pairs of 256^2, 5 3D pairs of 64x256x256
    .venv/bin/python benchmarks/metrics_speed.py --quick    # tiny run (smoke test)
    .venv/bin/python benchmarks/metrics_speed.py --workers 4  # threads for the multi-thread row

Inputs: perturbed ellipses/ellipsoids (radius modulated by a smooth random field), pred = gt with a
shifted centre, different radii and a different perturbation field, and sometimes a small spurious
blob. 3D: spacing (3.0, 0.5, 0.5) mm, ~400k foreground voxels. 2D: spacing (0.8, 0.8) mm.

Timed per pair (single thread each, except the one medseg row marked with its thread count):
* medseg: ``compute_segmentation_metrics`` (all metrics incl. HD95 and NSD, distances computed once),
  ``workers=1``; plus one row with ``workers=--workers`` (threads for the KD-tree queries).
* MONAI:  ``compute_hausdorff_distance(percentile=95)`` + ``compute_surface_dice`` (one-hot tensors,
  ``torch.set_num_threads(1)``).
* medpy:  ``hd95`` only (medpy has no NSD).
Agreement: max |Δ| of HD95 vs the matching reference (pooled vs medpy hd95, max vs MONAI) and of NSD
vs MONAI.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from bench_results import publish
from scipy.ndimage import zoom

from medseg.metrics import compute_segmentation_metrics

SPACING_2D = (0.8, 0.8)
SPACING_3D = (3.0, 0.5, 0.5)
NSD_TOL_MM = 1.0


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: coarse noise upsampled with cubic splines."""
    small = rng.uniform(-1.0, 1.0, size=tuple(max(2, min(coarse, s)) for s in shape))
    f = zoom(small, [s / c for s, c in zip(shape, small.shape, strict=True)], order=3)
    return f[tuple(slice(0, s) for s in shape)]


def _blob(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    centre_mm: np.ndarray,
    radii_mm: np.ndarray,
    amp: float,
) -> np.ndarray:
    """Ellipsoid (in mm) whose normalised radius is modulated by a smooth random field."""
    grids = np.meshgrid(
        *[np.arange(s, dtype=np.float32) * sp for s, sp in zip(shape, spacing, strict=True)],
        indexing="ij",
        sparse=True,
    )
    rho2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm, strict=True))
    return rho2 < (1.0 + amp * _smooth_field(rng, shape, 6)) ** 2


def make_pair(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """One realistic (pred, gt) pair: gt blob, pred = perturbed gt (+ occasionally a false positive)."""
    extent = np.asarray(shape) * np.asarray(spacing)
    if len(shape) == 3:
        # ~400k voxels of 0.75 mm^3 at 64x256x256 (3.0, 0.5, 0.5): volume ~300 cm^3
        radii = extent * np.array([0.267, 0.294, 0.294]) * rng.uniform(0.95, 1.05, 3)
    else:
        radii = extent * rng.uniform(0.12, 0.3, 2)
    centre = extent / 2 + rng.uniform(-0.1, 0.1, len(shape)) * extent
    gt = _blob(rng, shape, spacing, centre, radii, 0.15)
    shift = rng.normal(0.0, 1.5, len(shape)) * np.asarray(spacing)
    pred = _blob(rng, shape, spacing, centre + shift, radii * rng.uniform(0.95, 1.05, len(shape)), 0.15)
    if rng.random() < 0.5:  # a small spurious blob far away
        c2 = rng.uniform(0.1, 0.9, len(shape)) * extent
        pred |= _blob(rng, shape, spacing, c2, np.maximum(extent * 0.03, 2 * np.asarray(spacing)), 0.1)
    return pred, gt


def _monai_hd95_nsd(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    yp = torch.from_numpy(pred)[None, None].float()
    yt = torch.from_numpy(gt)[None, None].float()
    hd95 = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95, spacing=spacing)
    nsd = compute_surface_dice(yp, yt, [NSD_TOL_MM], include_background=True, spacing=spacing)
    return float(hd95[0, 0]), float(nsd[0, 0])


def _medpy_hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> float:
    from medpy.metric.binary import hd95

    return float(hd95(pred, gt, voxelspacing=spacing))


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(
    pairs: list[tuple[np.ndarray, np.ndarray]], spacing: tuple[float, ...], skip_medpy: bool, workers: int
) -> dict[str, float]:
    """Seconds per pair of each method and max |Δ| against the references."""
    t = {"pooled": 0.0, "max": 0.0, "threads": 0.0, "monai": 0.0, "medpy": 0.0}
    d = {"pooled_vs_medpy": 0.0, "max_vs_monai": 0.0, "nsd_pooled": 0.0, "nsd_max": 0.0, "threads_diff": 0.0}
    for pred, gt in pairs:
        dt, m_pool = _timed(
            lambda p=pred, g=gt: compute_segmentation_metrics(
                p, g, spacing, hd95_mode="pooled", nsd_tolerance_mm=NSD_TOL_MM
            )
        )
        t["pooled"] += dt
        dt, m_max = _timed(
            lambda p=pred, g=gt: compute_segmentation_metrics(
                p, g, spacing, hd95_mode="max", nsd_tolerance_mm=NSD_TOL_MM
            )
        )
        t["max"] += dt
        dt, m_thr = _timed(
            lambda p=pred, g=gt: compute_segmentation_metrics(
                p, g, spacing, hd95_mode="pooled", nsd_tolerance_mm=NSD_TOL_MM, workers=workers
            )
        )
        t["threads"] += dt
        # multi-threaded queries must give exactly the single-thread values
        d["threads_diff"] = max(d["threads_diff"], max(abs(m_thr[k] - m_pool[k]) for k in ("hd95_mm", "nsd")))
        dt, (hd_monai, nsd_monai) = _timed(lambda p=pred, g=gt: _monai_hd95_nsd(p, g, spacing))
        t["monai"] += dt
        d["max_vs_monai"] = max(d["max_vs_monai"], abs(m_max["hd95_mm"] - hd_monai))
        d["nsd_pooled"] = max(d["nsd_pooled"], abs(m_pool["nsd"] - nsd_monai))
        d["nsd_max"] = max(d["nsd_max"], abs(m_max["nsd"] - nsd_monai))
        if not skip_medpy:
            dt, hd_medpy = _timed(lambda p=pred, g=gt: _medpy_hd95(p, g, spacing))
            t["medpy"] += dt
            d["pooled_vs_medpy"] = max(d["pooled_vs_medpy"], abs(m_pool["hd95_mm"] - hd_medpy))
    n = len(pairs)
    return {**{k: v / n for k, v in t.items()}, **d}


def main() -> None:
    """Parse arguments, build the inputs, time, print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n2d", type=int, default=100, help="number of 2D pairs (256x256)")
    ap.add_argument("--n3d", type=int, default=5, help="number of 3D pairs (64x256x256)")
    ap.add_argument("--quick", action="store_true", help="tiny run: 5 2D pairs, 1 small 3D pair")
    ap.add_argument("--no-medpy", action="store_true", help="skip medpy (slow in 3D)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="threads for the multi-thread medseg row")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    shape3 = (64, 256, 256)
    if args.quick:
        args.n2d, args.n3d, shape3 = 5, 1, (24, 96, 96)
    rng = np.random.default_rng(args.seed)
    pairs2 = [make_pair(rng, (256, 256), SPACING_2D) for _ in range(args.n2d)]
    pairs3 = [make_pair(rng, shape3, SPACING_3D) for _ in range(args.n3d)]
    fg3 = np.mean([g.sum() for _, g in pairs3]) if pairs3 else 0.0

    # warm-up (imports, first-call overheads) outside the timings
    run(pairs2[:1], SPACING_2D, args.no_medpy, args.workers)
    r2 = run(pairs2, SPACING_2D, args.no_medpy, args.workers)
    r3 = run(pairs3, SPACING_3D, args.no_medpy, args.workers)

    lines = [
        f"{args.n2d} 2D pairs 256x256 @ {SPACING_2D} mm; {args.n3d} 3D pairs {'x'.join(map(str, shape3))} "
        f"@ {SPACING_3D} mm, mean gt foreground {fg3:.0f} voxels; NSD tolerance {NSD_TOL_MM} mm",
        "",
        "| method | 2D ms/pair | 3D s/pair | speed-up vs MONAI (2D / 3D) "
        "| max abs Δ HD95 (mm) | max abs Δ NSD |",
        "|---|---|---|---|---|---|",
    ]

    def row(name: str, key: str, dhd: str, dnsd: str) -> None:
        su = f"{r2['monai'] / r2[key]:.1f}× / {r3['monai'] / r3[key]:.1f}×"
        lines.append(f"| {name} | {1e3 * r2[key]:.2f} | {r3[key]:.3f} | {su} | {dhd} | {dnsd} |")

    row(
        "medseg, hd95_mode=pooled (all metrics), 1 thread",
        "pooled",
        f"{max(r2['pooled_vs_medpy'], r3['pooled_vs_medpy']):.2e} vs medpy" if not args.no_medpy else "n/a",
        f"{max(r2['nsd_pooled'], r3['nsd_pooled']):.2e}",
    )
    row(
        "medseg, hd95_mode=max (all metrics), 1 thread",
        "max",
        f"{max(r2['max_vs_monai'], r3['max_vs_monai']):.2e} vs MONAI",
        f"{max(r2['nsd_max'], r3['nsd_max']):.2e}",
    )
    dthr = f"{max(r2['threads_diff'], r3['threads_diff']):.1e}"
    row(
        f"medseg, hd95_mode=pooled (all metrics), workers={args.workers} ({args.workers} threads)",
        "threads",
        f"{dthr} vs 1 thread",
        f"{dthr} vs 1 thread",
    )
    row("MONAI hausdorff(95) + surface_dice, 1 thread", "monai", "reference (max)", "reference")
    if not args.no_medpy:
        row("medpy hd95 (no NSD), 1 thread", "medpy", "reference (pooled)", "n/a")
    text = "\n".join(lines)
    print("\n" + text)
    publish("metrics_speed", text, args.quick)


if __name__ == "__main__":
    main()
