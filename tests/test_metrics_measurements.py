"""Measurements against analytic answers: a sphere's volume, an ellipse's circumference, hand-made
diameters and component counts; and the measurement tables of `evaluate`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medseg.config import EvalConfig
from medseg.metrics.measurements import (
    area_mm2,
    component_count,
    fit_ellipse_mm,
    head_circumference_mm,
    labels_of,
    longest_diameter_mm,
    mask_measurements,
    measurement_rows,
    ramanujan_perimeter,
    slice_diameter_mm,
    summarize_measurements,
    volume_ml,
)


def _sphere(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    shape = [int(2 * radius_mm / s) + 6 for s in spacing]
    grids = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    return sum(g**2 for g in grids) <= radius_mm**2


def test_sphere_volume_at_anisotropic_spacing() -> None:
    radius, spacing = 20.0, (2.5, 0.6, 0.8)
    sphere = _sphere(radius, spacing)
    exact = 4 / 3 * math.pi * radius**3 / 1000  # 33.51 mL
    # voxelisation error: at most the voxels the surface passes through, surface area × half the
    # largest voxel extent
    bound = 4 * math.pi * radius**2 * (max(spacing) / 2) / 1000
    assert abs(volume_ml(sphere, spacing) - exact) < bound
    assert volume_ml(sphere, spacing) == pytest.approx(exact, rel=0.01)
    assert volume_ml(np.ones((2, 3, 4)), (1.0, 2.0, 5.0)) == pytest.approx(0.24)  # 24 voxels × 10 mm³
    with pytest.raises(ValueError, match="needs a 3D mask"):
        volume_ml(np.ones((2, 2)), (1.0, 1.0))
    # the diameter of the sphere's largest slice: 2r, within the in-plane voxel size
    diameter, z = longest_diameter_mm(sphere, spacing)
    assert diameter == pytest.approx(2 * radius, abs=2 * max(spacing[1:]))
    assert abs(z - (sphere.shape[0] - 1) / 2) <= 1


def test_diameter_and_area_by_hand() -> None:
    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:6] = True  # 3 rows × 4 columns
    # pixel corners: 3 × 2 mm by 4 × 1 mm → diagonal √(6² + 4²)
    assert slice_diameter_mm(mask, (2.0, 1.0)) == pytest.approx(math.hypot(6.0, 4.0))
    assert area_mm2(mask, (2.0, 1.0)) == pytest.approx(24.0)
    line = np.zeros((5, 5), bool)
    line[2, :] = True  # one row of 5 pixels (collinear corners, no hull)
    assert slice_diameter_mm(line, (1.0, 0.5)) == pytest.approx(math.hypot(1.0, 2.5))
    assert slice_diameter_mm(np.zeros((3, 3)), (1.0, 1.0)) == 0.0
    volume = np.zeros((3, 6, 8), bool)
    volume[0, 1:3, 1:3] = True
    volume[2] = mask
    assert longest_diameter_mm(volume, (5.0, 2.0, 1.0)) == (pytest.approx(math.hypot(6.0, 4.0)), 2)
    assert longest_diameter_mm(np.zeros((2, 3, 3)), (1.0, 1.0, 1.0)) == (0.0, None)


def test_component_count_full_connectivity() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component (8-connected)
    mask[4:6, 4:6] = True
    assert component_count(mask) == 2
    volume = np.zeros((3, 3, 3), bool)
    volume[0, 0, 0] = volume[1, 1, 1] = volume[2, 2, 2] = True  # corner neighbours (26-connected)
    assert component_count(volume) == 1
    assert component_count(np.zeros((3, 3))) == 0


def test_ellipse_circumference_on_a_rasterised_ellipse() -> None:
    # Ramanujan's approximation, by hand: a circle (a = b) gives 2πa exactly
    assert ramanujan_perimeter(10.0, 10.0) == pytest.approx(2 * math.pi * 10.0)
    # a = 3, b = 1: π(12 − √(10 · 6)) = π · 4.254033 = 13.3644 (exact elliptic integral 13.3649)
    assert ramanujan_perimeter(3.0, 1.0) == pytest.approx(13.3644, abs=1e-4)
    a, b, spacing = 60.0, 40.0, (0.2, 0.2)
    yy, xx = np.mgrid[0:500, 0:700]
    angle = math.radians(25)
    x, y = (xx - 350.3) * spacing[1], (yy - 250.6) * spacing[0]
    u, v = x * math.cos(angle) + y * math.sin(angle), -x * math.sin(angle) + y * math.cos(angle)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1
    expected = ramanujan_perimeter(a, b)  # 317.3 mm
    assert head_circumference_mm(mask, spacing) == pytest.approx(expected, abs=0.5)  # < 1 pixel
    fit = fit_ellipse_mm(mask, spacing)
    assert fit is not None
    assert sorted(fit[2:4]) == pytest.approx([b, a], abs=0.2)
    assert (fit[0], fit[1]) == pytest.approx((250.6 * 0.2, 350.3 * 0.2), abs=0.1)
    assert math.isnan(head_circumference_mm(np.zeros((5, 5)), spacing))
    # a region touching the border still has a closed contour
    assert head_circumference_mm(np.ones((20, 20)), (1.0, 1.0)) > 0


def test_measurement_rows_and_summary() -> None:
    gt = np.zeros((4, 10, 10), np.uint8)
    gt[1:3, 2:6, 2:6] = 1
    gt[1, 8, 8] = 2
    pred = gt.copy()
    pred[3, 2:6, 2:6] = 1
    assert labels_of(pred, gt) == [1, 2] and labels_of(np.zeros(3)) == [1]
    rows = measurement_rows("case", pred, (2.0, 1.0, 1.0), gt)
    one = rows[0]
    assert one["volume_ml_gt"] == pytest.approx(32 * 2 / 1000)
    assert one["volume_ml_error"] == pytest.approx(16 * 2 / 1000)
    assert one["components_pred"] == 1 and one["diameter_mm_error"] == 0
    assert rows[1]["label"] == 2 and rows[1]["volume_ml_error"] == 0
    assert mask_measurements(gt[1] == 1, (1.0, 1.0)) == {
        "area_mm2": 16.0,
        "diameter_mm": pytest.approx(math.hypot(4, 4)),
        "components": 1.0,
    }
    summary = summarize_measurements(pd.DataFrame(rows + measurement_rows("b", gt, (2.0, 1.0, 1.0), gt)))
    assert summary["label_1"]["volume_ml_error"]["mean"] == pytest.approx(0.016)
    assert summary["label_1"]["volume_ml_error"]["std"] == pytest.approx(np.std([0.032, 0.0], ddof=1))
    assert summary["label_1"]["abs_volume_ml_error"]["median"] == pytest.approx(0.016)
    assert summarize_measurements(pd.DataFrame()) == {}
    # HC18: a reference circumference adds the challenge's absolute difference
    yy, xx = np.mgrid[0:100, 0:120]
    head = (((xx - 60) / 40) ** 2 + ((yy - 50) / 30) ** 2 <= 1).astype(np.uint8)
    (row,) = measurement_rows("hc", head, (0.5, 0.5), head, reference_hc_mm=110.0)
    assert row["hc_mm_pred"] == pytest.approx(ramanujan_perimeter(20, 15), abs=0.5)
    assert row["hc_abs_diff_mm"] == pytest.approx(abs(row["hc_mm_pred"] - 110.0))
    assert row["hc_gt_abs_diff_mm"] == row["hc_abs_diff_mm"]
    summary = summarize_measurements(pd.DataFrame([row, {**row, "hc_abs_diff_mm": float("nan")}]))
    assert (
        summary["label_1"]["hc_abs_diff_mm"]["n"] == 1
        and summary["label_1"]["hc_abs_diff_mm"]["n_missing"] == 1
    )
    with pytest.raises(ValueError, match="does not fit a 2D mask"):
        mask_measurements(head, (1.0,))


def test_evaluate_files_writes_measurements(tmp_path: Path) -> None:
    from medseg.data.io import write_volume
    from medseg.engine.evaluate import evaluate_files, write_evaluation

    gt = np.zeros((5, 8, 8), np.uint8)
    gt[1:4, 2:6, 2:6] = 1
    pred = gt.copy()
    pred[4, 2:6, 2:6] = 1
    write_volume(tmp_path / "gt" / "a.nii.gz", gt, spacing=(3.0, 0.5, 0.5))
    write_volume(tmp_path / "pred" / "a.nii.gz", pred, spacing=(3.0, 0.5, 0.5))
    result = evaluate_files(tmp_path / "pred", tmp_path / "gt", EvalConfig())
    write_evaluation(result, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "measurements.csv")
    voxel_ml = 3.0 * 0.25 / 1000
    assert table.loc[0, "volume_ml_gt"] == pytest.approx(48 * voxel_ml)
    assert table.loc[0, "volume_ml_error"] == pytest.approx(16 * voxel_ml)
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["measurements"]["label_1"]["volume_ml_error"]["mean"] == pytest.approx(16 * voxel_ml)
