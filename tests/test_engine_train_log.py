"""medseg.engine.train_log: history.csv and the TensorBoard overlay."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from medseg.engine.train_log import HISTORY_FIELDS, log_overlay, overlay_rgb, write_history


def test_write_history_writes_every_field_in_order(tmp_path: Path) -> None:
    rows = [{k: float(i) for k in HISTORY_FIELDS} | {"epoch": i + 1} for i in range(2)]
    rows[0]["extra"] = 5.0  # only the history fields are written
    path = tmp_path / "history.csv"
    write_history(rows, path)
    with open(path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == list(HISTORY_FIELDS)
    assert [r["epoch"] for r in read] == ["1", "2"] and read[1]["val_dice"] == "1.0"
    assert not (tmp_path / "history.csv.tmp").exists()


def test_overlay_rgb_by_hand() -> None:
    # grey min–max → 0, 0.5, 1 (times 0.7); GT adds 0.3 green, prediction 0.3 red
    grey = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 1.0]]]])
    pred = torch.tensor([[[[0.0, 1.0, 1.0]]]])
    rgb = overlay_rgb(grey, target, pred)
    assert rgb.shape == (1, 3, 1, 3)
    torch.testing.assert_close(rgb[0, 0, 0], torch.tensor([0.0, 0.65, 1.0]), atol=1e-6, rtol=0)  # red
    torch.testing.assert_close(rgb[0, 1, 0], torch.tensor([0.3, 0.35, 1.0]), atol=1e-6, rtol=0)  # green
    torch.testing.assert_close(rgb[0, 2, 0], torch.tensor([0.0, 0.35, 0.7]), atol=1e-6, rtol=0)  # blue


class _Writer:
    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}

    def add_images(self, tag: str, images: torch.Tensor, step: int) -> None:
        self.images[tag] = images


class _ThreeClasses(torch.nn.Module):
    """Logits that call the left half class 1 and the right half class 2 (all foreground)."""

    num_classes = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        half = x.shape[-1] // 2
        logits[:, 1, ..., :half] = 5.0
        logits[:, 2, ..., half:] = 5.0
        return logits


def test_log_overlay_shows_a_multiclass_foreground() -> None:
    class Items:
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict:
            target = torch.zeros(1, 8, 8)
            target[0, :4] = 2.0  # class indices: the top half is class 2
            return {"image": torch.randn(1, 8, 8), "target": target}

    writer = _Writer()
    log_overlay(writer, _ThreeClasses(), Items(), torch.device("cpu"), 0)  # type: ignore[arg-type]
    rgb = writer.images["val/overlay_gt_green_pred_red"]
    assert rgb.shape == (2, 3, 8, 8)
    assert torch.all(rgb[:, 0] >= 0.3 - 1e-6)  # every pixel predicted foreground (red added)
    assert torch.all(rgb[:, 1, :4] >= 0.3 - 1e-6)  # the class-2 half of the truth in green
