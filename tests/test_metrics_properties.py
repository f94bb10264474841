"""Property-based tests (hypothesis) of the segmentation metrics, on the 2D and 3D paths.

Dice and IoU are symmetric and in [0, 1]; HD95 ≤ HD; translating both masks changes nothing;
scaling the spacing scales every distance; NSD grows with its tolerance; and every value agrees
with medpy on random masks (medpy: float64, the papers' reference).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medseg.metrics.functional import compute_segmentation_metrics, nsd

medpy_binary = pytest.importorskip("medpy.metric.binary")

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISTANCES = ("hd_mm", "hd95_mm", "assd_mm")


@st.composite
def mask_pairs(draw: st.DrawFn, ndim: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Two non-empty random masks of one shape (2D: up to 12², 3D: up to 6×8×8), and a spacing."""
    sides = (3, 12) if ndim == 2 else (2, 8)
    shape = tuple(draw(st.integers(*sides)) for _ in range(ndim))
    masks = [draw(arrays(np.bool_, shape, elements=st.booleans())) for _ in range(2)]
    for m in masks:  # non-empty: distances are defined (the empty policy has its own tests)
        m[tuple(draw(st.integers(0, s - 1)) for s in shape)] = True
    spacing = tuple(draw(st.sampled_from([0.25, 0.5, 1.0, 1.5, 3.0])) for _ in range(ndim))
    return masks[0], masks[1], spacing


def _metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], **kw: object) -> dict:
    return compute_segmentation_metrics(pred, gt, spacing, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("ndim", [2, 3])
def test_overlap_symmetric_and_bounded(ndim: int) -> None:
    @SETTINGS
    @given(mask_pairs(ndim))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]]) -> None:
        a, b, spacing = pair
        ab, ba = _metrics(a, b, spacing), _metrics(b, a, spacing)
        for key in ("dice", "iou"):
            assert 0.0 <= ab[key] <= 1.0
            assert ab[key] == pytest.approx(ba[key], abs=1e-12)
        assert ab["iou"] <= ab["dice"] + 1e-12  # IoU = D / (2 − D) ≤ D
        for key in DISTANCES:  # pooled distances are symmetric too
            assert ab[key] == pytest.approx(ba[key], abs=1e-9)

    check()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("mode", ["pooled", "max"])
def test_hd95_at_most_hd(ndim: int, mode: str) -> None:
    @SETTINGS
    @given(mask_pairs(ndim))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]]) -> None:
        m = _metrics(*pair, hd95_mode=mode)
        assert 0.0 <= m["hd95_mm"] <= m["hd_mm"] + 1e-9
        assert m["assd_mm"] <= m["hd_mm"] + 1e-9

    check()


@pytest.mark.parametrize("ndim", [2, 3])
def test_translating_both_masks_changes_nothing(ndim: int) -> None:
    @SETTINGS
    @given(mask_pairs(ndim), st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]], offset: list[int]) -> None:
        a, b, spacing = pair
        canvas = tuple(s + 3 for s in a.shape)

        def placed(m: np.ndarray, at: list[int]) -> np.ndarray:
            out = np.zeros(canvas, bool)
            out[tuple(slice(o, o + s) for o, s in zip(at, m.shape, strict=True))] = m
            return out

        here = _metrics(placed(a, [0] * ndim), placed(b, [0] * ndim), spacing)
        there = _metrics(placed(a, offset), placed(b, offset), spacing)
        for key in ("dice", "iou", "sensitivity", *DISTANCES, "nsd"):
            assert there[key] == pytest.approx(here[key], abs=1e-9)

    check()


@pytest.mark.parametrize("ndim", [2, 3])
def test_scaling_the_spacing_scales_the_distances(ndim: int) -> None:
    @SETTINGS
    @given(mask_pairs(ndim), st.sampled_from([0.5, 2.0, 3.0]))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]], factor: float) -> None:
        a, b, spacing = pair
        base = _metrics(a, b, spacing)
        scaled = _metrics(a, b, tuple(s * factor for s in spacing), nsd_tolerance_mm=1.0 * factor)
        for key in DISTANCES:
            assert scaled[key] == pytest.approx(base[key] * factor, rel=1e-9, abs=1e-9)
        assert scaled["dice"] == base["dice"]
        assert scaled["nsd"] == pytest.approx(base["nsd"], abs=1e-12)  # tolerance scaled alike

    check()


@pytest.mark.parametrize("ndim", [2, 3])
def test_nsd_is_monotonic_in_the_tolerance(ndim: int) -> None:
    @SETTINGS
    @given(mask_pairs(ndim), st.lists(st.floats(0.0, 6.0), min_size=2, max_size=4))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]], tolerances: list[float]) -> None:
        a, b, spacing = pair
        values = [nsd(a, b, spacing, tolerance_mm=t) for t in sorted(tolerances)]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert all(x <= y + 1e-12 for x, y in zip(values, values[1:], strict=False))

    check()


@pytest.mark.parametrize("ndim", [2, 3])
def test_agrees_with_medpy_on_random_masks(ndim: int) -> None:
    @SETTINGS
    @given(mask_pairs(ndim))
    def check(pair: tuple[np.ndarray, np.ndarray, tuple[float, ...]]) -> None:
        a, b, spacing = pair
        m = _metrics(a, b, spacing, hd95_mode="pooled")
        assert m["dice"] == pytest.approx(medpy_binary.dc(a, b), abs=1e-12)
        assert m["iou"] == pytest.approx(medpy_binary.jc(a, b), abs=1e-12)
        assert m["hd_mm"] == pytest.approx(medpy_binary.hd(a, b, voxelspacing=spacing), abs=1e-6)
        assert m["hd95_mm"] == pytest.approx(medpy_binary.hd95(a, b, voxelspacing=spacing), abs=1e-6)
        assert m["assd_mm"] == pytest.approx(medpy_binary.assd(a, b, voxelspacing=spacing), abs=1e-6)

    check()
