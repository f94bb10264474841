"""Every figure: the report PNGs, the training curves (one plotter), overlays and grid figures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medseg.report.figures import (
    CLASS_RGB,
    GT_RGB,
    HARD_RGB,
    PRED_RGB,
    TRAINING_PANELS,
    OverlayPanel,
    class_legend,
    class_overlay,
    class_rgb,
    distribution_png,
    hex_color,
    overlay_png,
    reliability_png,
    save_dice_distributions,
    save_loss_curves,
    save_overlay,
    save_overlay_grid,
    save_training_curves,
    save_val_dice_curves,
    training_figure,
    training_png,
    uncertainty_png,
)
from medseg.report.slices import CaseSlice, case_slice


def _disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.uint8)


def _near(rgb: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    return (np.abs(rgb - np.asarray(colour)) <= tolerance).all(axis=-1)


def test_training_curves(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.5 + e / 10} for e in (1, 2, 3)
    ]
    path = save_training_curves(history, tmp_path / "curves.png")
    assert Image.open(path).size[0] > 500
    with pytest.raises(ValueError):
        save_training_curves([], tmp_path / "x.png")


def test_one_training_plotter_behind_every_curve_figure(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "val_dice": 0.4, "lr": 1e-2}]
    rows.append({"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_dice": 0.6, "lr": 1e-4})
    figure = training_figure({"a": rows, "b": pd.DataFrame(rows)}, ("loss", "val_dice", "lr"), mark_best=True)
    loss, dice, lr = figure.axes
    assert len(loss.lines) == 4 and len(dice.lines) == 2  # train + validation loss of two runs
    assert dice.get_ylim() == (0.0, 1.0) and lr.get_yscale() == "log"  # lr spans a factor 100
    assert [c.get_offsets().tolist() for c in dice.collections] == [[[2.0, 0.6]], [[2.0, 0.6]]]
    assert set(TRAINING_PANELS) == {"loss", "val_dice", "lr", "epoch_time"}
    with pytest.raises(ValueError, match="unknown training panel"):
        training_figure({"a": rows}, ("accuracy",))
    with pytest.raises(ValueError, match="no training history"):
        training_figure({})
    for save in (save_loss_curves, save_val_dice_curves):
        assert Image.open(save({"a": rows, "b": rows}, tmp_path / f"{save.__name__}.png")).size[0] > 300


def test_dice_distributions_figure(tmp_path: Path) -> None:
    path = save_dice_distributions({"a": [0.5, 0.7, float("nan")], "b": []}, tmp_path / "d.png")
    assert path.is_file()
    with pytest.raises(ValueError, match="no per-volume"):
        save_dice_distributions({}, tmp_path / "none.png")


def test_overlay_grid_draws_both_contours_in_the_palette(tmp_path: Path) -> None:
    image = np.random.rand(1, 40, 40)
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[14:34, 12:32] = 1
    path = save_overlay_grid([OverlayPanel(image, gt, pred, (0.5, 0.5), "case")], tmp_path / "o.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert _near(rgb, GT_RGB).sum() > 50 and _near(rgb, PRED_RGB).sum() > 50
    assert hex_color(GT_RGB) == "#56B4E9"


def test_volume_overlay_picks_a_slice(tmp_path: Path) -> None:
    gt = np.zeros((3, 20, 20), np.uint8)
    gt[2, 5:15, 5:15] = 1
    path = save_overlay(np.random.rand(1, 3, 20, 20), gt, gt, tmp_path / "v.png", spacing=(0.5, 1.0))
    assert path.is_file()
    with pytest.raises(ValueError):
        save_overlay_grid([], tmp_path / "none.png")


def test_hard_region_is_shaded(tmp_path: Path) -> None:
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 1
    hard = np.zeros_like(gt)
    hard[8:14, 8:32] = 1
    panel = OverlayPanel(np.zeros((1, 40, 40)), gt, gt, (1.0, 1.0), "hard", hard)
    rgb = np.asarray(Image.open(save_overlay_grid([panel], tmp_path / "h.png")).convert("RGB")).astype(int)
    shaded = np.asarray(HARD_RGB) * 0.45  # on a black image
    assert _near(rgb, tuple(int(v) for v in shaded), 25).sum() > 100


def test_overlay_png_keeps_the_physical_aspect_and_draws_both_contours() -> None:
    gt = _disk((20, 40), (10, 15), 6)
    pred = _disk((20, 40), (10, 22), 6)
    item = CaseSlice(np.full((20, 40), 90, np.uint8), gt, pred, (1.0, 0.25))  # 20 mm × 10 mm
    with Image.open(io.BytesIO(overlay_png(item, size=100))) as image:
        assert image.size == (50, 100)  # (width, height): the taller physical side is 100 px
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in rgb}
    assert (0x56, 0xB4, 0xE9) in colours and (0xD5, 0x5E, 0x00) in colours
    # an RGB image (three channels, e.g. LGG's pre-contrast, FLAIR, post-contrast) keeps exact contours
    channels = np.random.default_rng(0).normal(size=(3, 20, 40))
    colour = case_slice(channels, gt, pred, (1.0, 0.25))
    assert colour.image.shape == (20, 40, 3)
    with Image.open(io.BytesIO(overlay_png(colour, size=100))) as image:
        assert image.mode == "P"
        rgb = {tuple(int(v) for v in c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}
    assert {(0x56, 0xB4, 0xE9), (0xD5, 0x5E, 0x00)} <= rgb and len(rgb) > 50


def test_figure_helpers_return_png_bytes() -> None:
    table = pd.DataFrame({"case": ["a", "b"], "dice": [0.4, 0.8], "hd95_mm": [3.0, 1.0]})
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "val_loss": [1.1, 0.6],
            "val_dice": [0.3, 0.6],
            "lr": [1e-3, 1e-5],
            "epoch_time_s": [1.0, 1.1],
        }
    )
    reliability = pd.DataFrame(
        {
            "region": ["whole", "whole"],
            "bin": [0, 1],
            "lower": [0.5, 0.75],
            "upper": [0.75, 1.0],
            "count": [10, 90],
            "mean_confidence": [0.6, 0.9],
            "accuracy": [0.55, 0.92],
        }
    )
    calib = pd.DataFrame({"case": ["a", "b"], "dice": [0.4, 0.8], "mean_entropy_region": [0.3, 0.1]})
    for png in (
        distribution_png({"run": table}, ["dice", "hd95_mm"]),
        training_png({"run": history}),
        reliability_png(reliability),
        uncertainty_png(calib),
    ):
        assert png.startswith(b"\x89PNG") and b"Software" not in png


def test_class_colours_are_okabe_ito_then_tab20() -> None:
    assert [class_rgb(i) for i in range(7)] == list(CLASS_RGB)
    assert class_rgb(7) not in CLASS_RGB and class_rgb(7) == class_rgb(27)  # tab20 cycles
    assert len({class_rgb(i) for i in range(27)}) == 27
    with pytest.raises(ValueError, match=">= 0"):
        class_rgb(-1)
    assert class_legend(["anterior", "posterior"]).startswith("anterior: orange, posterior: sky blue")


def test_class_overlay_fills_the_prediction_and_outlines_the_ground_truth() -> None:
    gt = np.zeros((40, 40), np.uint8)
    gt[5:20, 5:20], gt[22:38, 22:38] = 3, 5
    pred = np.zeros_like(gt)
    pred[22:38, 22:38] = 5  # class 3 missed: its outline alone
    image = np.full((40, 40), 100, np.uint8)
    with Image.open(io.BytesIO(class_overlay(image, gt, pred, [3, 5]))) as png:
        assert png.mode == "P"
        rgb = np.asarray(png.convert("RGB")).astype(int)
    orange, sky = CLASS_RGB[0], CLASS_RGB[1]
    assert _near(rgb[5], orange, 2)[5:20].all()  # the outline of class 3, in its own colour
    assert not _near(rgb[12, 8:16], orange).any()  # no fill where nothing was predicted
    blended = np.round(0.55 * 100 + 0.45 * np.asarray(sky))
    assert (np.abs(rgb[30, 26:34] - blended) <= 3).all()  # class 5 filled at 45 % over the image
    assert _near(rgb[22], sky, 2)[22:38].all()  # and outlined in the same colour
    # through overlay_png: the label values of a case slice, resized by nearest neighbour
    item = CaseSlice(image, gt, pred, (1.0, 1.0))
    with Image.open(io.BytesIO(overlay_png(item, size=80, classes=[3, 5]))) as png:
        assert png.size == (80, 80)


def test_multi_class_overlay_figure(tmp_path: Path) -> None:
    gt = np.zeros((30, 30), np.uint8)
    gt[3:12, 3:12], gt[15:27, 15:27] = 1, 2
    path = save_overlay(
        np.zeros((1, 30, 30)), gt, gt, tmp_path / "o.png", classes=[1, 2], class_names=["a", "b"]
    )
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB")).astype(int)
    assert _near(rgb, CLASS_RGB[0], 30).any() and _near(rgb, CLASS_RGB[1], 30).any()
