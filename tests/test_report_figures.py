from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.report.figures import OverlayPanel, save_overlay, save_overlay_grid, save_training_curves


def test_training_curves(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_dice": 0.5 + e / 10} for e in (1, 2, 3)
    ]
    path = save_training_curves(history, tmp_path / "curves.png")
    assert Image.open(path).size[0] > 500
    with pytest.raises(ValueError):
        save_training_curves([], tmp_path / "x.png")


def test_overlay_has_green_and_red_contours(tmp_path: Path) -> None:
    image = np.random.rand(1, 40, 40)
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.zeros_like(gt)
    pred[14:34, 12:32] = 1
    path = save_overlay_grid([OverlayPanel(image, gt, pred, (0.5, 0.5), "case")], tmp_path / "o.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    green = (rgb[..., 1] > 150) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)
    assert green.sum() > 50 and red.sum() > 50


def test_volume_overlay_picks_a_slice(tmp_path: Path) -> None:
    gt = np.zeros((3, 20, 20), np.uint8)
    gt[2, 5:15, 5:15] = 1
    path = save_overlay(np.random.rand(1, 3, 20, 20), gt, gt, tmp_path / "v.png", spacing=(0.5, 1.0))
    assert path.is_file()
    with pytest.raises(ValueError):
        save_overlay_grid([], tmp_path / "none.png")


def test_hard_region_is_shaded_yellow(tmp_path: Path) -> None:
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 1
    hard = np.zeros_like(gt)
    hard[8:14, 8:32] = 1
    panel = OverlayPanel(np.zeros((1, 40, 40)), gt, gt, (1.0, 1.0), "hard", hard)
    rgb = np.asarray(Image.open(save_overlay_grid([panel], tmp_path / "h.png")).convert("RGB")).astype(int)
    yellow = (rgb[..., 0] > 90) & (rgb[..., 1] > 80) & (rgb[..., 2] < 40)
    assert yellow.sum() > 100
