"""Tests of medseg.metrics.functional: hand-computed cases, empty-mask policy, and agreement with
medpy (float64, to 1e-6 mm) and MONAI (float32 outputs, to 1e-6 mm or float32 resolution)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medseg.metrics import (
    assd,
    compute_segmentation_metrics,
    dice,
    hausdorff_distance,
    image_diagonal_mm,
    iou,
    nsd,
    sensitivity,
    specificity,
    surface_distances,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")
monai_metrics = pytest.importorskip("monai.metrics")

KEYS = {
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "hd_mm",
    "hd95_mm",
    "assd_mm",
    "nsd",
    "empty_gt",
    "empty_pred",
}


# ----------------------------------------------------------------------------- helpers


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, frac: float) -> np.ndarray:
    """Smoothed random field thresholded at its (1 - frac) quantile."""
    f = gaussian_filter(rng.standard_normal(shape), sigma)
    return f > np.quantile(f, 1.0 - frac)


def _pairs_2d() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(6):
        gt = _blob(rng, (48, 56), 4.0, 0.25)
        pred = _blob(rng, (48, 56), 4.0, 0.25) if i % 2 else gt ^ (rng.random(gt.shape) < 0.03)
        out.append((pred, gt, (0.7, 1.3) if i % 3 else (1.0, 1.0)))
    # masks touching the image border (and filling a whole edge)
    gt = np.zeros((32, 40), bool)
    gt[:10, :] = True
    pred = np.zeros((32, 40), bool)
    pred[:13, 5:] = True
    pred[31, 39] = True
    out.append((pred, gt, (0.5, 2.0)))
    return out


def _pairs_3d() -> list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
    rng = np.random.default_rng(2)
    out = []
    for _ in range(3):
        gt = _blob(rng, (12, 28, 30), 2.5, 0.3)
        pred = _blob(rng, (12, 28, 30), 2.5, 0.3)
        out.append((pred, gt, (3.0, 0.5, 0.5)))
    gt = np.zeros((8, 20, 20), bool)
    gt[:, 3:15, 0:12] = True  # touches first/last slice and the x=0 border
    pred = np.zeros((8, 20, 20), bool)
    pred[1:, 5:20, 2:14] = True
    out.append((pred, gt, (2.5, 0.8, 0.6)))
    return out


ALL_PAIRS = _pairs_2d() + _pairs_3d()


def _medpy_sds(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    return medpy_binary.__dict__["__surface_distances"](a, b, spacing, 1)


def _onehot(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(m)[None, None].float()


def _monai_hd(
    pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], percentile: float | None
) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = monai_metrics.compute_hausdorff_distance(
            _onehot(pred),
            _onehot(gt),
            include_background=True,
            percentile=percentile,
            directed=False,
            spacing=spacing,
        )
    return float(v[0, 0])


def _monai_nsd(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], tol: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = monai_metrics.compute_surface_dice(
            _onehot(pred), _onehot(gt), [tol], include_background=True, spacing=spacing, use_subvoxels=False
        )
    return float(v[0, 0])


def _close_f32(ours: float, monai: float) -> bool:
    """MONAI returns float32: equal to 1e-6 mm, or to float32 resolution for values above ~8 mm."""
    return abs(ours - monai) <= max(1e-6, 4 * np.finfo(np.float32).eps * abs(ours))


# ----------------------------------------------------------------------------- hand-computed


def test_overlap_metrics_by_hand() -> None:
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:4] = True  # 6 voxels
    pred = np.zeros((4, 5), bool)
    pred[1:3, 2:5] = True  # 6 voxels, 4 overlap
    # tp=4, fp=2, fn=2, tn=20-8=12
    assert dice(pred, gt) == pytest.approx(8 / 12)
    assert iou(pred, gt) == pytest.approx(4 / 8)
    assert sensitivity(pred, gt) == pytest.approx(4 / 6)
    assert specificity(pred, gt) == pytest.approx(12 / 14)
    assert dice(pred.astype(np.uint8) * 3, gt.astype(np.uint8)) == pytest.approx(8 / 12)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_offset_squares_anisotropic(k: int) -> None:
    """Two 6x6 squares offset by k columns, spacing (2.0, 0.5): every distance is along x."""
    sy, sx = 2.0, 0.5
    gt = np.zeros((20, 30), bool)
    gt[5:11, 5:11] = True
    pred = np.zeros_like(gt)
    pred[5:11, 5 + k : 11 + k] = True
    d_pg, d_gp = surface_distances(pred, gt, (sy, sx))
    assert d_pg.shape == d_gp.shape == (20,)  # a 6x6 square has 20 border pixels
    # the farthest border pixels of pred are k columns from gt's right edge (its column 10)
    assert d_pg.max() == pytest.approx(k * sx)
    assert hausdorff_distance(pred, gt, (sy, sx)) == pytest.approx(k * sx)
    assert hausdorff_distance(pred, gt, (sy, sx), percentile=95, mode="max") <= k * sx + 1e-12
    # symmetric configuration: both directed sets are mirror images
    assert np.allclose(np.sort(d_pg), np.sort(d_gp))
    assert assd(pred, gt, (sy, sx)) == pytest.approx(d_pg.mean())


def test_offset_squares_exact_distance_set() -> None:
    """Squares offset by 1 column at spacing (2.0, 0.5): every distance equals a brute-force minimum
    over the border pixels (border = pixels with a background 4-neighbour)."""
    gt = np.zeros((10, 12), bool)
    gt[2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[2:6, 3:7] = True
    sp = np.array([2.0, 0.5])

    def border(m: np.ndarray) -> np.ndarray:
        return np.argwhere(m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)))

    bp, bg = border(pred) * sp, border(gt) * sp
    brute = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1)).min(1)
    d_pg, _ = surface_distances(pred, gt, tuple(sp))
    assert np.allclose(d_pg, brute, atol=1e-12)


def test_single_voxel_masks() -> None:
    gt = np.zeros((5, 6, 7), bool)
    pred = np.zeros_like(gt)
    gt[1, 2, 3] = True
    pred[3, 4, 3] = True
    sp = (3.0, 0.5, 0.5)
    expected = math.hypot(2 * 3.0, 2 * 0.5)
    m = compute_segmentation_metrics(pred, gt, sp)
    assert m["hd_mm"] == pytest.approx(expected)
    assert m["hd95_mm"] == pytest.approx(expected)
    assert m["assd_mm"] == pytest.approx(expected)
    assert m["nsd"] == 0.0
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["sensitivity"] == 0.0
    assert m["specificity"] == pytest.approx((gt.size - 2) / (gt.size - 1))
    assert nsd(pred, gt, sp, tolerance_mm=expected) == 1.0
    # identical single voxels: all distances 0
    m = compute_segmentation_metrics(gt, gt, sp)
    assert m["dice"] == 1.0 and m["hd_mm"] == 0.0 and m["hd95_mm"] == 0.0 and m["nsd"] == 1.0


def test_pooled_vs_max_differ_and_are_ordered() -> None:
    """A small far-away false positive: pooled and max percentile definitions give different values."""
    gt = np.zeros((40, 40), bool)
    gt[5:25, 5:25] = True
    pred = gt.copy()
    pred[34:37, 34:37] = True
    pooled = hausdorff_distance(pred, gt, (1.0, 1.0), percentile=95, mode="pooled")
    mx = hausdorff_distance(pred, gt, (1.0, 1.0), percentile=95, mode="max")
    assert mx >= pooled
    assert mx != pytest.approx(pooled)
    d_pg, d_gp = surface_distances(pred, gt, (1.0, 1.0))
    assert pooled == pytest.approx(np.percentile(np.concatenate([d_pg, d_gp]), 95))
    assert mx == pytest.approx(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("case", range(len(ALL_PAIRS)))
def test_surface_distances_match_medpy(case: int) -> None:
    pred, gt, sp = ALL_PAIRS[case]
    d_pg, d_gp = surface_distances(pred, gt, sp)
    # same voxels, same (C) order as medpy's dt[result_border]
    np.testing.assert_allclose(d_pg, _medpy_sds(pred, gt, sp), rtol=0, atol=1e-9)
    np.testing.assert_allclose(d_gp, _medpy_sds(gt, pred, sp), rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", range(len(ALL_PAIRS)))
def test_surface_distances_match_monai(case: int) -> None:
    from monai.metrics.utils import get_mask_edges, get_surface_distance

    pred, gt, sp = ALL_PAIRS[case]
    e_p, e_g = get_mask_edges(pred, gt, crop=True)
    ref_pg = np.asarray(get_surface_distance(e_p, e_g, distance_metric="euclidean", spacing=sp), np.float64)
    ref_gp = np.asarray(get_surface_distance(e_g, e_p, distance_metric="euclidean", spacing=sp), np.float64)
    d_pg, d_gp = surface_distances(pred, gt, sp)
    assert d_pg.shape == ref_pg.shape and d_gp.shape == ref_gp.shape
    tol = 1e-6 + 4 * np.finfo(np.float32).eps * max(d_pg.max(), d_gp.max())  # MONAI returns float32
    np.testing.assert_allclose(d_pg, ref_pg, rtol=0, atol=tol)
    np.testing.assert_allclose(d_gp, ref_gp, rtol=0, atol=tol)


@pytest.mark.parametrize("case", range(len(ALL_PAIRS)))
def test_metrics_match_medpy(case: int) -> None:
    pred, gt, sp = ALL_PAIRS[case]
    m = compute_segmentation_metrics(pred, gt, sp, hd95_mode="pooled")
    assert m["hd95_mm"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=sp), abs=1e-6)
    assert m["hd_mm"] == pytest.approx(medpy_binary.hd(pred, gt, voxelspacing=sp), abs=1e-6)
    assert m["assd_mm"] == pytest.approx(medpy_binary.assd(pred, gt, voxelspacing=sp), abs=1e-6)
    assert m["dice"] == pytest.approx(medpy_binary.dc(pred, gt), abs=1e-12)
    assert m["iou"] == pytest.approx(medpy_binary.jc(pred, gt), abs=1e-12)
    assert m["sensitivity"] == pytest.approx(medpy_binary.sensitivity(pred, gt), abs=1e-12)
    assert m["specificity"] == pytest.approx(medpy_binary.specificity(pred, gt), abs=1e-12)
    assert hausdorff_distance(pred, gt, sp, percentile=95) == m["hd95_mm"]
    assert assd(pred, gt, sp) == m["assd_mm"]


@pytest.mark.parametrize("case", range(len(ALL_PAIRS)))
def test_metrics_match_monai(case: int) -> None:
    pred, gt, sp = ALL_PAIRS[case]
    tol = 2 * min(sp)
    m = compute_segmentation_metrics(pred, gt, sp, hd95_mode="max", nsd_tolerance_mm=tol)
    assert _close_f32(m["hd95_mm"], _monai_hd(pred, gt, sp, 95))
    assert _close_f32(m["hd_mm"], _monai_hd(pred, gt, sp, None))
    assert m["nsd"] == pytest.approx(_monai_nsd(pred, gt, sp, tol), abs=1e-6)
    assert hausdorff_distance(pred, gt, sp, percentile=95, mode="max") == m["hd95_mm"]
    assert hausdorff_distance(pred, gt, sp, mode="max") == m["hd_mm"]
    assert nsd(pred, gt, sp, tolerance_mm=tol) == m["nsd"]
    for t in (0.0, 1.0, 3.0):
        assert nsd(pred, gt, sp, tolerance_mm=t) == pytest.approx(_monai_nsd(pred, gt, sp, t), abs=1e-6)


def test_uint8_and_bool_inputs_agree() -> None:
    pred, gt, sp = ALL_PAIRS[0]
    a = compute_segmentation_metrics(pred, gt, sp)
    b = compute_segmentation_metrics(pred.astype(np.uint8), gt.astype(np.uint8), sp)
    assert a == b


# ----------------------------------------------------------------------------- empty-mask policy


def test_both_empty() -> None:
    z = np.zeros((6, 7), np.uint8)
    m = compute_segmentation_metrics(z, z, (1.0, 2.0))
    assert set(m) == KEYS
    assert m == {
        "dice": 1.0,
        "iou": 1.0,
        "sensitivity": 1.0,
        "specificity": 1.0,
        "hd_mm": 0.0,
        "hd95_mm": 0.0,
        "assd_mm": 0.0,
        "nsd": 1.0,
        "empty_gt": True,
        "empty_pred": True,
    }
    d_pg, d_gp = surface_distances(z, z, (1.0, 2.0))
    assert d_pg.size == 0 and d_gp.size == 0
    assert hausdorff_distance(z, z, (1.0, 2.0), percentile=95) == 0.0
    assert assd(z, z, (1.0, 2.0)) == 0.0 and nsd(z, z, (1.0, 2.0)) == 1.0


@pytest.mark.parametrize("empty", ["pred", "gt"])
def test_one_empty(empty: str) -> None:
    shape, sp = (4, 6, 8), (3.0, 0.5, 0.5)
    full = np.zeros(shape, bool)
    full[1:3, 2:4, 2:6] = True
    z = np.zeros(shape, bool)
    pred, gt = (z, full) if empty == "pred" else (full, z)
    diag = math.sqrt((4 * 3.0) ** 2 + (6 * 0.5) ** 2 + (8 * 0.5) ** 2)
    assert image_diagonal_mm(shape, sp) == pytest.approx(diag)
    m = compute_segmentation_metrics(pred, gt, sp)
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["nsd"] == 0.0
    assert m["hd_mm"] == m["hd95_mm"] == m["assd_mm"] == pytest.approx(diag)
    assert m["empty_gt"] is (empty == "gt") and m["empty_pred"] is (empty == "pred")
    assert m["sensitivity"] == (1.0 if empty == "gt" else 0.0)
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())
    assert hausdorff_distance(pred, gt, sp, percentile=95, mode="max") == pytest.approx(diag)
    assert assd(pred, gt, sp) == pytest.approx(diag) and nsd(pred, gt, sp) == 0.0
    d_pg, d_gp = surface_distances(pred, gt, sp)
    nonempty = d_pg if empty == "gt" else d_gp
    assert nonempty.size > 0 and np.all(np.isinf(nonempty))
    assert (d_gp if empty == "gt" else d_pg).size == 0


def test_specificity_without_negatives() -> None:
    ones = np.ones((3, 3), bool)
    assert specificity(ones, ones) == 1.0
    assert specificity(np.zeros_like(ones), ones) == 1.0
    assert sensitivity(ones, np.zeros_like(ones)) == 1.0


# ----------------------------------------------------------------------------- errors


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        dice(np.zeros((4, 5)), np.zeros((4, 6)))
    with pytest.raises(ValueError, match="same shape"):
        compute_segmentation_metrics(np.zeros((2, 4, 5)), np.zeros((4, 5)), (1.0, 1.0))


@pytest.mark.parametrize("spacing", [(1.0,), (1.0, 1.0, 1.0), (1.0, 0.0), (1.0, -2.0), (1.0, float("nan"))])
def test_bad_spacing(spacing: tuple[float, ...]) -> None:
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="spacing"):
        compute_segmentation_metrics(m, m, spacing)
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(m, m, spacing)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_bad_ndim(shape: tuple[int, ...]) -> None:
    m = np.ones(shape, bool)
    with pytest.raises(ValueError, match="2D"):
        iou(m, m)


def test_bad_mode_percentile_tolerance() -> None:
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="mode"):
        hausdorff_distance(m, m, (1.0, 1.0), percentile=95, mode="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(m, m, (1.0, 1.0), percentile=101)
    with pytest.raises(ValueError, match="tolerance"):
        nsd(m, m, (1.0, 1.0), tolerance_mm=-1.0)
    with pytest.raises(ValueError, match="mode"):
        compute_segmentation_metrics(m, m, (1.0, 1.0), hd95_mode="x")  # type: ignore[arg-type]


def test_assd_modes() -> None:
    """pooled = mean of the concatenated sets (medpy 0.5); mean = mean of the two directed means."""
    pred, gt, sp = ALL_PAIRS[2]
    d_pg, d_gp = surface_distances(pred, gt, sp)
    assert d_pg.size != d_gp.size
    assert assd(pred, gt, sp) == pytest.approx(np.concatenate([d_pg, d_gp]).mean())
    assert assd(pred, gt, sp, mode="mean") == pytest.approx((d_pg.mean() + d_gp.mean()) / 2)
    with pytest.raises(ValueError, match="mode"):
        assd(pred, gt, sp, mode="median")  # type: ignore[arg-type]


def test_nsd_tolerance_tie_on_lattice() -> None:
    """A distance of exactly 2 x 0.7 mm is within a 1.4 mm tolerance despite float rounding."""
    gt = np.zeros((12, 12), bool)
    gt[5, 5] = True
    pred = np.zeros_like(gt)
    pred[7, 5] = True
    assert nsd(pred, gt, (0.7, 1.0), tolerance_mm=1.4) == 1.0
    assert nsd(pred, gt, (0.7, 1.0), tolerance_mm=1.39) == 0.0


# ----------------------------------------------------------------------------- threads, random cases


@pytest.mark.parametrize("workers", [2, -1])
def test_workers_give_identical_results(workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-threaded KD-tree queries return bit-identical distances and metrics."""
    from medseg.metrics import functional

    monkeypatch.setattr(functional, "_MIN_QUERIES_FOR_THREADS", 1)  # thread even the small test cases
    for pred, gt, sp in ALL_PAIRS:
        ref = surface_distances(pred, gt, sp)
        got = surface_distances(pred, gt, sp, workers=workers)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
        assert compute_segmentation_metrics(pred, gt, sp, workers=workers) == compute_segmentation_metrics(
            pred, gt, sp
        )


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "2"])
def test_bad_workers(workers: object) -> None:
    m = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match="workers"):
        surface_distances(m, m, (1.0, 1.0), workers=workers)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        compute_segmentation_metrics(m, m, (1.0, 1.0), workers=workers)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(8))
def test_random_anisotropic_cases_match_medpy(seed: int) -> None:
    """Random 2D/3D anisotropic masks, incl. masks touching the image border, tiny masks (1-3 voxels)
    and a surface entirely on the other one: every directed distance equals medpy's to 1e-9 mm."""
    rng = np.random.default_rng(100 + seed)
    ndim = 2 + seed % 2
    shape = tuple(int(s) for s in rng.integers(5, 18, ndim))
    sp = tuple(float(s) for s in rng.uniform(0.3, 3.5, ndim))
    cases = []
    gt = _blob(rng, shape, 1.5, 0.35)
    gt[(0,) * ndim] = True  # touches the border
    cases.append((_blob(rng, shape, 1.5, 0.3) | (rng.random(shape) < 0.02), gt))
    tiny = np.zeros(shape, bool)
    tiny[tuple(int(rng.integers(0, s)) for s in shape)] = True
    tiny[tuple(s - 1 for s in shape)] = True  # far corner
    cases.append((tiny, gt))
    cases.append((gt, tiny))
    full = np.ones(shape, bool)  # every voxel on the image border is surface
    cases.append((full, gt))
    cases.append((gt, gt))  # identical: all zero
    for pred, g in cases:
        d_pg, d_gp = surface_distances(pred, g, sp)
        np.testing.assert_allclose(d_pg, _medpy_sds(pred, g, sp), rtol=0, atol=1e-9)
        np.testing.assert_allclose(d_gp, _medpy_sds(g, pred, sp), rtol=0, atol=1e-9)
