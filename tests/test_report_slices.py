"""Case slices (``case_slices.npz``): the slice each case shows, and the file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.report.slices import case_slice, read_case_slices, shared_slice_index, write_case_slices


def test_case_slice_picks_the_slice_with_most_error_and_round_trips(tmp_path: Path) -> None:
    gt = np.zeros((4, 8, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 2:6, 2:6] = 1  # slice 1: largest GT, no error
    pred[1, 2:6, 2:6] = 1
    gt[2, 3:5, 3:5] = 1  # slice 2: 4 missed pixels
    pred[3, 0:3, 0:3] = 1  # slice 3: 9 false positives: the most error
    image = np.random.default_rng(0).normal(size=(1, 4, 8, 8))
    item = case_slice(image, gt, pred, (3.0, 0.5, 0.7))
    assert item.slice_index == 3 and item.spacing == (0.5, 0.7) and item.pred.sum() == 9
    assert item.image.dtype == np.uint8 and item.image.shape == (8, 8) and item.has_image
    # no error: the largest ground truth; nothing at all: the middle slice
    assert case_slice(None, gt, gt, (1, 1, 1)).slice_index == 1
    assert case_slice(None, np.zeros_like(gt), np.zeros_like(gt), (1, 1, 1)).slice_index == 2
    flat = case_slice(None, gt[1], pred[1], (1.0, 2.0))
    assert flat.slice_index == -1 and not flat.has_image and flat.image.max() == 0
    path = write_case_slices({"vol#1": item, "b/2": flat}, tmp_path / "case_slices.npz")
    back = read_case_slices(path)
    assert sorted(back) == ["b/2", "vol#1"]
    assert np.array_equal(back["vol#1"].pred, item.pred) and back["vol#1"].slice_index == 3
    assert back["b/2"].spacing == (1.0, 2.0) and not back["b/2"].has_image
    with pytest.raises(ValueError, match="spacing"):
        case_slice(None, gt, pred, (1.0, 1.0))
    np.savez(tmp_path / "bad.npz", x=np.zeros(1))
    with pytest.raises(DataError, match="bad.npz"):
        read_case_slices(tmp_path / "bad.npz")


def test_volumes_keep_a_shared_slice_that_depends_on_the_ground_truth_alone(tmp_path: Path) -> None:
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[1, 2:6, 2:6] = 1  # the largest ground truth: the shared slice of every run
    gt[2, 3:5, 3:5] = 1
    run_a, run_b = gt.copy(), gt.copy()
    run_a[3, 0:3, 0:3] = 1  # run a errs most on slice 3, run b on slice 2
    run_b[2] = 0
    a, b = case_slice(None, gt, run_a, (1, 1, 1)), case_slice(None, gt, run_b, (1, 1, 1))
    assert (a.slice_index, b.slice_index) == (3, 2)
    assert a.shared_view().slice_index == b.shared_view().slice_index == shared_slice_index(gt) == 1
    assert np.array_equal(a.shared.gt, gt[1]) and np.array_equal(b.shared.pred, run_b[1])
    assert shared_slice_index(np.zeros_like(gt)) == 2  # no ground truth: the middle slice
    flat = case_slice(None, gt[1], gt[1], (1.0, 1.0))
    assert flat.shared is None and flat.shared_view() is flat
    back = read_case_slices(write_case_slices({"v": a, "f": flat}, tmp_path / "s.npz"))
    assert back["v"].shared.slice_index == 1 and np.array_equal(back["v"].shared.pred, run_a[1])
    assert back["f"].shared is None
    # an older file without the shared arrays still reads
    with np.load(tmp_path / "s.npz") as data:
        old = {k: data[k] for k in data.files if not k.startswith("shared")}
    np.savez(tmp_path / "old.npz", **old)
    assert read_case_slices(tmp_path / "old.npz")["v"].shared is None


def test_label_maps_keep_their_values_and_the_slice_where_labels_differ(tmp_path: Path) -> None:
    gt = np.zeros((3, 6, 6), np.uint8)
    gt[:, 1:5, 1:5] = 3
    pred = gt.copy()
    pred[2, 1:5, 1:3] = 5  # slice 2: same foreground, another label: the error is there
    item = case_slice(None, gt, pred, (2.0, 1.0, 1.0))
    assert item.slice_index == 2 and set(np.unique(item.pred).tolist()) == {0, 3, 5}
    wide = case_slice(None, gt[0].astype(np.int32) * 100, gt[0], (1.0, 1.0))  # label 300
    assert wide.gt.dtype == np.uint16 and wide.gt.max() == 300
    back = read_case_slices(write_case_slices({"v": item, "w": wide}, tmp_path / "s.npz"))
    assert np.array_equal(back["v"].pred, item.pred) and back["w"].gt.max() == 300
    with pytest.raises(ValueError, match="label values"):
        case_slice(None, -gt[0].astype(np.int16), gt[0], (1.0, 1.0))
