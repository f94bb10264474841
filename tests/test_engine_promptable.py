"""Box-prompted inference: 2D label maps, 3D propagation from the middle slice, embedding reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medseg.models as models
from medseg.engine.promptable import segment_2d, segment_3d, segment_3d_boxes
from medseg.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


class BrightInBox(models.SegmentationModel):
    """A deterministic promptable stand-in: the bright pixels (> 0.5 after min-max) inside the box."""

    promptable = True

    def __init__(self, img_size: int = 32) -> None:
        super().__init__()
        self.img_size = img_size
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.encoded = 0
        self.boxes: list[list[float]] = []

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        self.encoded += 1
        return image[:, :1]

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.boxes.extend(boxes.tolist())
        grid = torch.arange(self.img_size, dtype=torch.float32)
        yy, xx = grid[:, None], grid[None, :]
        x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
        inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        logits = torch.where(inside[:, None], (embedding - 0.5) * 20, torch.tensor(-10.0))
        return logits, torch.zeros(len(boxes), 1)


def test_segment_2d_labels_box_i_as_i() -> None:
    image = np.zeros((32, 32), dtype=np.float32)
    image[4:10, 5:12] = 1
    image[20:28, 18:30] = 1
    labels = segment_2d(BrightInBox(32), image, [[3, 3, 14, 12], [16, 18, 31, 31]])
    expected = np.zeros((32, 32), dtype=np.uint8)
    expected[4:10, 5:12] = 1
    expected[20:28, 18:30] = 2
    np.testing.assert_array_equal(labels, expected)
    overlapping = segment_2d(BrightInBox(32), image, [[0, 0, 31, 31], [16, 18, 31, 31]])
    assert set(np.unique(overlapping)) == {0, 1, 2}  # the later box wins where both cover
    assert segment_2d(BrightInBox(32), image, np.zeros((0, 4))).max() == 0


def test_segment_2d_returns_original_size_through_the_letterbox() -> None:
    image = np.zeros((48, 80), dtype=np.float32)  # wide: resized to 19×32, padded at the bottom
    image[10:30, 20:60] = 1
    model = BrightInBox(32)
    labels = segment_2d(model, np.stack([image] * 3), [[15, 5, 65, 35]])  # C×H×W input
    assert labels.shape == (48, 80) and model.encoded == 1
    truth = image > 0
    dice = 2 * np.sum((labels == 1) & truth) / (np.sum(labels == 1) + truth.sum())
    assert dice > 0.9
    x0, y0, x1, y1 = model.boxes[0]
    assert (x0, x1) == pytest.approx((15 * 0.4, 65 * 0.4))  # 80 → 32
    assert (y0, y1) == pytest.approx((5 * 19 / 48, 35 * 19 / 48))  # 48 → round(19.2) = 19


def tube_volume() -> np.ndarray:
    """An object on slices 3..7 that drifts right, and a second one on slice 9 only."""
    volume = np.zeros((11, 32, 32), dtype=np.float32)
    for z in range(3, 8):
        volume[z, 10:18, 6 + z : 14 + z] = 1
    volume[9, 10:18, 12:20] = 1
    return volume


def test_segment_3d_propagates_and_stops_on_empty() -> None:
    volume = tube_volume()
    model = BrightInBox(32)
    mask = segment_3d(model, volume, [5, 5, 1, 30, 25, 10], margin=2)  # middle slice 5
    assert mask.shape == volume.shape and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask[3:8], volume[3:8])  # followed the drift (1 px per slice)
    assert mask[:3].sum() == 0 and mask[8:].sum() == 0  # slice 9's object is beyond an empty slice
    assert model.encoded == 7  # slices 5, 6, 7, 8 (empty: stop), 4, 3, 2 (empty: stop)
    # slice 6 was prompted with slice 5's predicted box (x 11..18, y 10..17) widened by the margin
    assert model.boxes[1] == pytest.approx([11 - 2, 10 - 2, 18 + 2, 17 + 2])
    default = BrightInBox(32)
    segment_3d(default, volume, [5, 5, 1, 30, 25, 10])
    assert default.boxes[1] == pytest.approx([11 - 0.375, 10 - 0.375, 18 + 0.375, 17 + 0.375])  # 3 px at 256


def test_segment_3d_can_continue_past_empty_slices() -> None:
    volume = tube_volume()
    model = BrightInBox(32)
    mask = segment_3d(model, volume, [5, 5, 1, 30, 25, 10], stop_on_empty=False, margin=8)
    assert model.encoded == 10  # every slice of 1..10
    assert mask[9].sum() > 0  # reached from slice 7's box through the empty slice 8


def test_segment_3d_empty_middle_slice_and_errors() -> None:
    volume = tube_volume()
    model = BrightInBox(32)
    assert segment_3d(model, volume, [20, 20, 3, 30, 30, 7]).sum() == 0  # nothing bright in that box
    assert model.encoded == 1
    with pytest.raises(DataError, match="depth 11"):
        segment_3d(model, volume, [5, 5, 1, 30, 25, 11])
    with pytest.raises(DataError, match="D×H×W"):
        segment_3d(model, volume[0], [5, 5, 1, 30, 25, 2])
    with pytest.raises(ConfigError, match="not a promptable model"):
        segment_3d(nn.Conv2d(1, 1, 1), volume, [5, 5, 1, 30, 25, 10])


def test_segment_3d_boxes_reuses_slice_embeddings() -> None:
    volume = tube_volume()
    model = BrightInBox(32)
    labels = segment_3d_boxes(model, volume, [[5, 5, 1, 30, 25, 8], [10, 8, 8, 22, 20, 10]])
    assert labels.shape == volume.shape
    assert set(np.unique(labels[3:8])) == {0, 1} and set(np.unique(labels[9])) == {0, 2}
    assert model.encoded == 9  # slices 2..8 for box 1; box 2 reuses slice 8 and adds 9 and 10


def test_tiny_litemedsam_runs_in_2d_and_3d() -> None:
    torch.manual_seed(0)
    model = models.build("litemedsam", variant="tiny", img_size=64)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(50, 70)).astype(np.float32)
    labels = segment_2d(model, image, [[5, 5, 40, 30], [30, 10, 69, 49]])
    assert labels.shape == (50, 70) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert not model.training
    volume = rng.normal(size=(4, 50, 70)).astype(np.float32)
    mask = segment_3d(model, volume, [5, 5, 0, 40, 30, 3])
    assert mask.shape == (4, 50, 70) and set(np.unique(mask)) <= {0, 1}
