"""Box baselines (medseg.metrics.box_baselines): masks checked pixel by pixel on small boxes by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.metrics import dice
from medseg.metrics.box_baselines import box_baselines, filled_box_mask, inscribed_ellipse_mask, tight_box


def test_tight_box_is_inclusive_x_then_y() -> None:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:9] = 1  # rows 2..4, columns 3..8
    mask[4, 8] = 0  # a hole at a corner does not move the box
    assert tight_box(mask).tolist() == [3, 2, 8, 4]
    with pytest.raises(ValueError, match="empty"):
        tight_box(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2D"):
        tight_box(np.ones((2, 2, 2)))


def test_filled_box_covers_the_box_pixels_and_is_clipped() -> None:
    expected = np.zeros((5, 6), dtype=bool)
    expected[1:4, 2:5] = True  # rows 1..3, columns 2..4
    assert np.array_equal(filled_box_mask([2, 1, 4, 3], (5, 6)), expected)
    # pixel centres in [x0, x1] × [y0, y1]: a fractional box keeps the centres it contains
    assert np.array_equal(filled_box_mask([1.5, 0.6, 4.2, 3.0], (5, 6)), expected)
    clipped = filled_box_mask([-3, -2, 10, 1], (4, 4))
    assert clipped[:2].all() and not clipped[2:].any()


def test_inscribed_ellipse_small_boxes_by_hand() -> None:
    # 1×1 box: the pixel itself
    one = inscribed_ellipse_mask([2, 1, 2, 1], (3, 4))
    assert one.sum() == 1 and one[1, 2]
    # 5×5 box: centre (2, 2), semi-axes 2.5; only the 4 corners (dx² + dy² = 8 > 6.25) are out
    five = inscribed_ellipse_mask([0, 0, 4, 4], (5, 5))
    expected = np.ones((5, 5), dtype=bool)
    expected[[0, 0, 4, 4], [0, 4, 0, 4]] = False
    assert np.array_equal(five, expected)
    # 6×4 box (x 1..6, y 0..3): centre (3.5, 1.5), semi-axes 3 and 2.
    # (1, 0): (2.5/3)² + (1.5/2)² = 0.694 + 0.5625 > 1 → out; (2, 0): 0.25 + 0.5625 ≤ 1 → in;
    # (1, 1): 0.694 + 0.0625 ≤ 1 → in. So the four corners of the box are out, nothing else.
    wide = inscribed_ellipse_mask([1, 0, 6, 3], (4, 8))
    expected = np.zeros((4, 8), dtype=bool)
    expected[0:4, 1:7] = True
    expected[[0, 0, 3, 3], [1, 6, 1, 6]] = False
    assert np.array_equal(wide, expected)


def test_inscribed_ellipse_touches_its_box_and_has_the_ellipse_area() -> None:
    for box in ([10, 20, 109, 79], [3, 5, 40, 9], [0, 0, 63, 63]):
        mask = inscribed_ellipse_mask(box, (128, 128))
        assert tight_box(mask).tolist() == box
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        assert mask.sum() == pytest.approx(math.pi * w * h / 4, rel=0.03)
    # a large box: Dice(filled box, its inscribed ellipse) → 2(π/4)/(1 + π/4)
    box = [0, 0, 399, 299]
    d = dice(filled_box_mask(box, (300, 400)), inscribed_ellipse_mask(box, (300, 400)))
    assert d == pytest.approx(2 * (math.pi / 4) / (1 + math.pi / 4), abs=2e-3)


def test_box_baselines_of_an_ellipse_mask_recover_it() -> None:
    gt = inscribed_ellipse_mask([5, 8, 44, 27], (40, 50))
    baselines = box_baselines(gt)
    assert set(baselines) == {"filled box", "inscribed ellipse"}
    assert np.array_equal(baselines["inscribed ellipse"], gt)
    assert np.array_equal(baselines["filled box"], filled_box_mask([5, 8, 44, 27], (40, 50)))


def test_bad_boxes_are_errors() -> None:
    with pytest.raises(ValueError, match="x1 < x0"):
        filled_box_mask([5, 0, 2, 3], (8, 8))
    with pytest.raises(ValueError, match="finite box"):
        inscribed_ellipse_mask([0, 0, np.nan, 3], (8, 8))
    with pytest.raises(ValueError, match="finite box"):
        filled_box_mask([0, 0, 3], (8, 8))
    with pytest.raises(ValueError, match="2D shape"):
        filled_box_mask([0, 0, 1, 1], (8,))
