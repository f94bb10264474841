"""CVPR 2024 MedSAM-on-laptop npz files (medseg.data.cvpr24) and their scoring (medseg.metrics.cvpr24)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medseg.data.cvpr24 import list_cases, read_case, read_labels, read_segs, write_case, write_segs
from medseg.errors import DataError
from medseg.metrics.cvpr24 import CSV_COLUMNS, score_case, score_cases
from medseg.metrics.functional import nsd


def _square(shape: tuple[int, int], rows: slice, cols: slice, label: int = 1) -> np.ndarray:
    out = np.zeros(shape, dtype=np.uint8)
    out[rows, cols] = label
    return out


# --------------------------------------------------------------------------- files


def test_2d_case_round_trip(tmp_path: Path) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    gts = _square((6, 8), slice(1, 3), slice(2, 5))
    boxes = np.array([[2, 1, 4, 2]])
    path = write_case(tmp_path / "2D_demo.npz", imgs, boxes=boxes, gts=gts)
    case = read_case(path, require_boxes=True, require_gts=True)
    assert case.name == "2D_demo" and not case.is_3d
    assert case.spatial_shape == (6, 8) and case.n_boxes == 1 and case.spacing is None
    assert np.array_equal(case.imgs, imgs) and np.array_equal(case.gts, gts)
    assert np.array_equal(case.boxes, boxes)


def test_3d_case_round_trip(tmp_path: Path) -> None:
    imgs = np.zeros((4, 6, 5), dtype=np.uint8)
    gts = np.zeros((4, 6, 5), dtype=np.uint16)
    gts[1:3, 2:4, 1:3] = 1
    boxes = np.array([[1, 2, 1, 2, 3, 2]])  # x_min, y_min, z_min, x_max, y_max, z_max
    path = write_case(tmp_path / "3D_ct.npz", imgs, boxes=boxes, gts=gts, spacing=(0.8, 0.8, 2.5))
    case = read_case(path)
    assert case.is_3d and case.spatial_shape == (4, 6, 5) and case.spacing == (0.8, 0.8, 2.5)
    labels, spacing = read_labels(path)
    assert np.array_equal(labels, gts) and spacing == (0.8, 0.8, 2.5)
    # a 3D image without boxes or labels is recognised by its name... or by not being H×W×3
    write_case(tmp_path / "vol.npz", np.zeros((3, 5, 5), dtype=np.uint8))
    assert read_case(tmp_path / "vol.npz").is_3d


def test_missing_keys_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "2D_nobox.npz"
    np.savez(path, imgs=np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"2D_nobox\.npz.*missing key\(s\) \['boxes'\]"):
        read_case(path, require_boxes=True)
    with pytest.raises(DataError, match=r"2D_nobox\.npz.*'gts'"):
        read_labels(path)
    with pytest.raises(DataError, match=r"2D_nobox\.npz.*'segs'"):
        read_segs(path)
    np.savez(tmp_path / "noimg.npz", gts=np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match=r"noimg\.npz.*'imgs'"):
        read_case(tmp_path / "noimg.npz")
    with pytest.raises(DataError, match="does not exist"):
        read_case(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"junk\.npz"):
        read_case(tmp_path / "junk.npz")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"imgs": np.zeros((4, 4, 4)), "boxes": np.zeros((1, 4))}, "H×W×3"),
        ({"imgs": np.zeros((4, 4, 3)), "boxes": np.zeros((1, 5))}, "N×"),
        ({"imgs": np.zeros((4, 4, 3)), "gts": np.zeros((4, 5), dtype=np.uint8)}, "does not match"),
        ({"imgs": np.zeros((4, 4, 3)), "gts": np.zeros((4, 4))}, "integer label map"),
        ({"imgs": np.zeros((4, 4, 3)), "boxes": np.array([[3, 0, 1, 2]])}, "minimum above"),
        (
            {"imgs": np.zeros((2, 4, 4)), "boxes": np.zeros((1, 6)), "spacing": np.array([1.0, 0.0, 1.0])},
            "spacing",
        ),
        ({"imgs": np.zeros((4, 4))}, "imgs"),
    ],
)
def test_bad_shapes_are_data_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "case.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as err:
        read_case(path)
    assert "case.npz" in str(err.value)


def test_name_prefix_must_agree_with_the_arrays(tmp_path: Path) -> None:
    path = tmp_path / "3D_liar.npz"
    np.savez(path, imgs=np.zeros((4, 4, 3), dtype=np.uint8), boxes=np.zeros((1, 4)))
    with pytest.raises(DataError, match="name says 3D"):
        read_case(path)
    # without boxes or labels the name decides: a 3D volume may be 3 pixels wide
    write_case(tmp_path / "3D_thin.npz", np.zeros((4, 5, 3), dtype=np.uint8))
    thin = read_case(tmp_path / "3D_thin.npz")
    assert thin.is_3d and thin.spatial_shape == (4, 5, 3)


def test_segs_are_written_compactly_and_checked(tmp_path: Path) -> None:
    segs = _square((5, 5), slice(0, 2), slice(0, 2), label=3)
    path = write_segs(tmp_path / "out" / "2D_a.npz", segs.astype(np.int64), n_boxes=3)
    with np.load(path) as data:
        assert data.files == ["segs"] and data["segs"].dtype == np.uint8
    assert np.array_equal(read_segs(path, shape=(5, 5)), segs)
    with pytest.raises(DataError, match=r"differs from the ground truth's \(5, 6\)"):
        read_segs(path, shape=(5, 6))
    big = write_segs(tmp_path / "big.npz", np.full((2, 2), 300))
    assert read_segs(big).dtype == np.uint16
    with pytest.raises(DataError, match="only 2 boxes"):
        write_segs(tmp_path / "x.npz", segs, n_boxes=2)
    with pytest.raises(DataError, match="integer labels"):
        write_segs(tmp_path / "x.npz", np.full((2, 2), 0.5))


# --------------------------------------------------------------------------- scoring


def _shifted_squares() -> tuple[np.ndarray, np.ndarray]:
    """Label 1: a 4×4 square and the same square 3 columns to the right (one shared column).

    DSC = 2·4 / 32 = 0.25. Borders are the 12-pixel rings. From the predicted ring to the true
    one: column 5 (4 px) at 0, the top/bottom pixels of columns 6 and 7 at 1 and 2 (2 px each),
    column 8 (4 px) at 3: 8 of 12 within 2 px; the other direction is symmetric: NSD = 16/24.
    Label 2: a 3×3 square predicted exactly (DSC = NSD = 1).
    """
    gts = _square((12, 12), slice(2, 6), slice(2, 6))
    segs = _square((12, 12), slice(2, 6), slice(5, 9))
    gts[8:11, 1:4] = 2
    segs[8:11, 1:4] = 2
    return segs, gts


def test_2d_case_by_hand() -> None:
    segs, gts = _shifted_squares()
    one = score_case(np.where(segs == 1, 1, 0), np.where(gts == 1, 1, 0))
    assert one == {"dsc": pytest.approx(0.25), "nsd": pytest.approx(2 / 3), "n_labels": 1}
    both = score_case(segs, gts)
    assert both["n_labels"] == 2
    assert both["dsc"] == pytest.approx((0.25 + 1) / 2)
    assert both["nsd"] == pytest.approx((2 / 3 + 1) / 2)


def test_nsd_is_zero_when_the_case_dsc_is_at_most_0_2() -> None:
    # no overlap (4 columns apart): DSC 0, although the surfaces lie within 2 px in half the places
    gts = _square((8, 12), slice(2, 6), slice(2, 6))
    segs = _square((8, 12), slice(2, 6), slice(6, 10))
    assert nsd(segs, gts, (1.0, 1.0), 2.0) == pytest.approx(0.5)
    assert score_case(segs, gts) == {"dsc": 0.0, "nsd": 0.0, "n_labels": 1}
    # exactly 0.2: two 5-pixel rows sharing one pixel, 2·1/10
    gts = _square((3, 10), slice(1, 2), slice(0, 5))
    segs = _square((3, 10), slice(1, 2), slice(4, 9))
    assert nsd(segs, gts, (1.0, 1.0), 2.0) > 0
    assert score_case(segs, gts) == {"dsc": pytest.approx(0.2), "nsd": 0.0, "n_labels": 1}


def test_3d_tolerance_is_in_mm_and_the_spacing_order_is_a_choice() -> None:
    # a 2×2×2 block and the same block one slice further: DSC 0.5; the non-shared slices of
    # each lie one slice (s_z mm) from the other surface
    gts = np.zeros((5, 5, 5), dtype=np.uint8)
    segs = np.zeros((5, 5, 5), dtype=np.uint8)
    gts[1:3, 1:3, 1:3] = 1
    segs[2:4, 1:3, 1:3] = 1
    stored = (1.0, 1.0, 3.0)  # as MedSAM's files store it: (x, y, z)
    as_challenge = score_case(segs, gts, stored)  # used in array order: s_z = 1 mm
    assert as_challenge == {"dsc": pytest.approx(0.5), "nsd": pytest.approx(1.0), "n_labels": 1}
    physical = score_case(segs, gts, stored, spacing_order="xyz")  # s_z = 3 mm > 2 mm
    assert physical["nsd"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="spacing"):
        score_case(segs, gts)


def test_labels_come_from_the_ground_truth_and_empty_cases_are_flagged() -> None:
    segs, gts = _shifted_squares()
    extra = segs.copy()
    extra[0, 11] = 7  # a label only in the prediction is not scored
    assert score_case(extra, gts) == score_case(segs, gts)
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert score_case(empty, empty) == {"dsc": 1.0, "nsd": 1.0, "n_labels": 0}
    assert score_case(_square((4, 4), slice(0, 1), slice(0, 1)), empty) == {
        "dsc": 0.0,
        "nsd": 0.0,
        "n_labels": 0,
    }


def test_score_cases_writes_the_per_case_csv(tmp_path: Path) -> None:
    segs, gts = _shifted_squares()
    imgs2d = np.zeros((*gts.shape, 3), dtype=np.uint8)
    write_case(tmp_path / "gts" / "2D_b.npz", imgs2d, gts=gts)
    write_segs(tmp_path / "segs" / "2D_b.npz", segs)
    vol_gt = np.zeros((5, 5, 5), dtype=np.uint8)
    vol_gt[1:3, 1:3, 1:3] = 1
    write_case(
        tmp_path / "gts" / "3D_a.npz", np.zeros((5, 5, 5), dtype=np.uint8), gts=vol_gt, spacing=(1, 1, 3)
    )
    write_segs(tmp_path / "segs" / "3D_a.npz", vol_gt)
    write_segs(tmp_path / "segs" / "2D_unscored.npz", segs)
    table = score_cases(
        tmp_path / "segs", tmp_path / "gts", tmp_path / "out" / "scores.csv", {"3D_a.npz": 1.5}
    )
    assert tuple(table.columns) == CSV_COLUMNS
    assert table["case"].tolist() == ["2D_b", "3D_a"]
    assert table["dsc"].tolist() == pytest.approx([0.625, 1.0])
    assert table["nsd"].tolist() == pytest.approx([5 / 6, 1.0])
    assert table["n_labels"].tolist() == [2, 1]
    assert math.isnan(table["run_time_s"][0]) and table["run_time_s"][1] == 1.5
    written = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert written["case"].tolist() == ["2D_b", "3D_a"]
    assert written["dsc"].tolist() == pytest.approx([0.625, 1.0])
    assert [p.name for p in list_cases(tmp_path / "segs")] == ["2D_b.npz", "2D_unscored.npz", "3D_a.npz"]


def test_score_cases_errors_name_the_file(tmp_path: Path) -> None:
    vol_gt = np.zeros((4, 4, 4), dtype=np.uint8)
    vol_gt[1:3, 1:3, 1:3] = 1
    np.savez(tmp_path / "3D_nospacing.npz", gts=vol_gt)
    (tmp_path / "pred").mkdir()
    with pytest.raises(DataError, match=r"3D_nospacing\.npz.*no prediction"):
        score_cases(tmp_path / "pred", tmp_path, None)
    write_segs(tmp_path / "pred" / "3D_nospacing.npz", vol_gt)
    with pytest.raises(DataError, match=r"3D_nospacing\.npz.*spacing"):
        score_cases(tmp_path / "pred", tmp_path, None)
    write_segs(tmp_path / "pred" / "3D_nospacing.npz", vol_gt[:3])
    with pytest.raises(DataError, match="differs from the ground truth"):
        score_cases(tmp_path / "pred", tmp_path, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz"):
        score_cases(tmp_path / "pred", tmp_path / "empty", None)
