"""The mask-reading policy (medseg.data.mask_policy), on small files written by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.data.mask_policy import (
    binary_mask,
    check_label_values,
    class_index_map,
    format_values,
    label_values,
    read_binary_mask,
    read_label_map,
    refuse_lossy,
)
from medseg.data.sources._common import read_mask_2d
from medseg.errors import DataError


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def _nii(path: Path, zyx: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(zyx).T, np.eye(4)), str(path))
    return path


def test_format_values_shows_a_few_distinct_values() -> None:
    assert format_values(np.array([1, 0, 0.3, 1])) == "{0, 0.3, 1}"
    assert format_values(np.array([np.nan, 1.0])) == "{1, nan}"
    assert format_values(np.arange(20)).endswith(", … (20 distinct values)}")


def test_refuse_lossy_names_jpeg_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"m\.JPG: JPEG is refused for masks: its lossy compression"):
        refuse_lossy(tmp_path / "m.JPG")
    refuse_lossy(tmp_path / "m.png")  # no error


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0.0, np.nan]), r"1 NaN/inf values"),
        (np.array([0.0, np.inf, -np.inf]), r"2 NaN/inf values"),
        (np.array([0.0, 0.3, 1.0]), r"non-integer values \{0, 0\.3, 1\}"),
        (np.array([0, -1, 1]), r"negative values \{-1, 0, 1\}"),
        (np.array(["a", "b"]), r"non-numeric data type"),
    ],
)
def test_check_label_values_refuses(values: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=r"x\.nii: mask .*" + message):
        check_label_values(values, "x.nii")


def test_check_label_values_accepts_integers_bools_and_integral_floats() -> None:
    assert check_label_values(np.array([0.0, 2.0]), "x").dtype == np.int64
    assert check_label_values(np.array([True, False]), "x").tolist() == [1, 0]
    assert check_label_values(np.array([0, 255], np.uint8), "x").dtype == np.uint8


def test_binary_mask_policy() -> None:
    labels = np.array([0, 255, 255, 0])
    assert binary_mask(labels, "x").tolist() == [0, 1, 1, 0]
    assert binary_mask(np.array([0, 3, 0]), "x").tolist() == [0, 1, 0]  # {0, k}
    multi = np.array([0, 1, 7, 7])
    with pytest.raises(DataError, match=r"x: mask holds several labels \{0, 1, 7\}, not a binary mask; pick"):
        binary_mask(multi, "x", hint="pick")
    assert binary_mask(multi, "x", label=7).tolist() == [0, 0, 1, 1]
    assert binary_mask(multi, "x", multi_label="union").tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="multi_label"):
        binary_mask(multi, "x", multi_label="first")


def test_label_values() -> None:
    assert label_values(np.array([[0, 9], [1, 9]])) == [1, 9]
    assert label_values(np.zeros(3)) == []


def test_rgb_mask_is_any_colour_channel_alpha_ignored(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[1, 1, 1] = 255  # green
    rgba[2, 2, 2] = 90  # blue
    rgba[..., 3] = 255  # alpha everywhere: not foreground
    labels, _, _ = read_label_map(_png(tmp_path / "m.png", rgba))
    expected = np.zeros((4, 5), np.uint8)
    expected[1, 1] = expected[2, 2] = 1
    assert np.array_equal(labels, expected)


def test_anti_aliased_colour_mask_is_refused(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 1, 0], rgb[1, 2, 0] = 255, 128
    with pytest.raises(DataError, match=r"m\.png: colour mask channel 0 holds values \{0, 128, 255\}"):
        read_label_map(_png(tmp_path / "m.png", rgb))


def test_palette_mask_by_colour_brightness(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    image.putpalette([252, 254, 252, 4, 2, 4] + [0] * 762)  # index 0 is white here
    image.save(tmp_path / "p.png")
    assert read_mask_2d(tmp_path / "p.png").tolist() == [[1, 0], [0, 1]]
    many = Image.fromarray(np.array([[0, 1], [2, 0]], np.uint8), mode="P")
    many.putpalette(list(range(9)) + [0] * 759)
    many.save(tmp_path / "q.png")
    with pytest.raises(DataError, match=r"q\.png: palette mask uses 3 colours"):
        read_mask_2d(tmp_path / "q.png")


def test_read_binary_mask_from_nifti_and_png(tmp_path: Path) -> None:
    zyx = np.zeros((2, 3, 4), np.int16)
    zyx[1, 1, 1:3] = 4
    mask, spacing, meta = read_binary_mask(_nii(tmp_path / "m.nii.gz", zyx))
    assert mask.dtype == np.uint8 and mask.sum() == 2 and spacing == (1.0, 1.0, 1.0)
    assert meta["format"] == "nifti"
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    assert read_mask_2d(_png(tmp_path / "g.png", grey)).tolist() == [[0, 1], [1, 0]]
    grey[0, 0] = 1
    with pytest.raises(DataError, match=r"g2\.png: mask holds several labels \{0, 1, 255\}"):
        read_mask_2d(_png(tmp_path / "g2.png", grey))


@pytest.mark.realdata
def test_real_mask_files_pass_the_policy(shared_dataset: Callable[..., Path]) -> None:
    """One mask of every real 2D data set reads as a non-empty {0, 1} mask."""
    files = [
        next(shared_dataset("lgg_mri", "kaggle_3m").glob("*/*_1[0-9]_mask.tif")),
        next(shared_dataset("hc18_us", "training_set").glob("*_Annotation.png")),
        next(shared_dataset("busi_us", "masks").iterdir()),
        next(shared_dataset("drive_retina", "DRIVE", "test", "2nd_manual").iterdir()),
        next(shared_dataset("drive_retina", "DRIVE", "training", "1st_manual").iterdir()),
        next(shared_dataset("em_isbi2012", "label").iterdir()),
    ]
    for path in files:
        mask = read_mask_2d(path)
        assert set(np.unique(mask)) <= {0, 1}, path


def test_class_index_map() -> None:
    labels = np.array([[0, 1, 7], [8, 9, 7]])
    classes = class_index_map(labels, "m.nrrd", [0, 7, 8], others="background")
    assert classes.dtype == np.uint8 and classes.tolist() == [[0, 0, 1], [2, 0, 1]]
    with pytest.raises(
        DataError, match=r"m\.nrrd: label values \[1, 9\] are not in dataset\.json labels \[0, 7, 8\]"
    ):
        class_index_map(labels, "m.nrrd", [0, 7, 8], where="dataset.json labels")
    assert class_index_map(np.array([0.0, 2.0, 1.0]), "f.nii", [0, 1, 2]).tolist() == [
        0,
        2,
        1,
    ]  # integral floats
    with pytest.raises(DataError, match=r"f\.nii: mask holds non-integer values \{0, 1\.5\}"):
        class_index_map(np.array([0.0, 1.5]), "f.nii", [0, 1])
    with pytest.raises(ValueError, match="others must be"):
        class_index_map(labels, "m.nrrd", [0, 7], others="drop")
