"""Training validation (medseg.engine.validation): per-case Dice from summed slice counts, the class
mean of a multi-class volume, val_cases.csv, and the batch helpers."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medseg.engine.validation import (
    _volume_class_dice,
    batch_to_device,
    main_output,
    validate,
    write_case_dice,
)
from medseg.losses import build as build_loss


class _ImageIsTheLogit(nn.Module):
    """A 'model' whose logits are its input: the test writes the prediction into the image."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image


class _MeanSquare(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        return ((logits > 0).float() - target).pow(2).mean()


def _slice(case_id: str, pred: list[list[int]], gt: list[list[int]]) -> dict[str, Any]:
    logits = torch.tensor(pred, dtype=torch.float32)[None] * 2 - 1  # 1 → +1, 0 → −1
    target = torch.tensor(gt, dtype=torch.float32)[None]
    return {"image": logits, "target": target, "masks": {"expert": target}, "case_id": case_id}


def test_validate_sums_the_overlap_of_a_case_over_its_slices() -> None:
    dataset = [
        _slice("a", [[1, 1], [0, 0]], [[1, 0], [1, 0]]),  # |P∩G| 1, |P|+|G| 4
        _slice("a", [[0, 0], [0, 0]], [[0, 1], [0, 1]]),  # 0, 2
        _slice("b", [[0, 0], [0, 0]], [[0, 0], [0, 0]]),  # both empty: Dice 1
    ]
    for batch_size in (1, 2, 3):
        case_dice: dict[str, float] = {}
        loss, dice = validate(
            _ImageIsTheLogit(), dataset, _MeanSquare(), torch.device("cpu"), batch_size, None, case_dice
        )
        assert case_dice == {
            "a": pytest.approx(2 * 1 / 6),
            "b": 1.0,
        }  # a: 2·1 / (4 + 2), not a mean of slices
        assert dice == pytest.approx((1 / 3 + 1) / 2)
        assert loss == pytest.approx((2 / 4 + 2 / 4 + 0) / 3)  # mean over the slices
    nan_loss, nan_dice = validate(_ImageIsTheLogit(), [], _MeanSquare(), torch.device("cpu"), 2)
    assert nan_loss != nan_loss and nan_dice != nan_dice


class _ClassesAsLogits(nn.Module):
    """Logits of K = 3 classes whose argmax is the class map written into the image."""

    num_classes = 3

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(image[:, 0].long(), 3).movedim(-1, 1).float()


def test_validate_2d_multi_class_sums_each_class_over_the_slices_of_a_case() -> None:
    def item(case_id: str, pred: list[list[int]], gt: list[list[int]]) -> dict[str, Any]:
        target = torch.tensor(gt, dtype=torch.float32)[None]
        image = torch.tensor(pred, dtype=torch.float32)[None]
        return {"image": image, "target": target, "masks": {"expert": target}, "case_id": case_id}

    dataset = [
        item("a", [[1, 1], [2, 0]], [[1, 0], [2, 2]]),  # class 1: ∩ 1, 3; class 2: ∩ 1, 3
        item("a", [[0, 0], [0, 0]], [[0, 0], [0, 1]]),  # class 1: 0, 1; class 2: nothing
        item("b", [[2, 2], [0, 0]], [[2, 2], [0, 0]]),  # class 1 absent from both: 1; class 2: 1
    ]
    case_dice: dict[str, float] = {}
    _, dice = validate(_ClassesAsLogits(), dataset, build_loss("ce"), torch.device("cpu"), 2, None, case_dice)
    # a: class 1 2·1/(3 + 1) = 0.5, class 2 2·1/3; their mean
    assert case_dice == {"a": pytest.approx((0.5 + 2 / 3) / 2), "b": 1.0}
    assert dice == pytest.approx(((0.5 + 2 / 3) / 2 + 1.0) / 2)


def test_volume_class_dice_is_the_mean_over_foreground_classes() -> None:
    target = torch.tensor([[0, 1, 1, 2]], dtype=torch.float32)[None]  # B×1×4
    pred = torch.tensor([0, 1, 2, 0])  # class 1: 1 of 2 found and nothing extra; class 2 missed
    logits = torch.nn.functional.one_hot(pred, 3).T[None].float()  # B×3×4
    # class 1: 2·1 / (1 + 2) = 2/3; class 2: 2·0 / (1 + 1) = 0
    assert _volume_class_dice(logits, target, 3) == [pytest.approx(1 / 3)]
    empty = torch.zeros(1, 1, 4)
    assert _volume_class_dice(
        torch.nn.functional.one_hot(torch.zeros(4).long(), 3).T[None].float(), empty, 3
    ) == [1.0]


def test_write_case_dice_sorts_by_case(tmp_path: Path) -> None:
    path = tmp_path / "val_cases.csv"
    write_case_dice({"b": 0.5, "a": 1 / 3, "c": 1.0}, 4, path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ["a", "b", "c"] and rows[0]["epoch"] == "4"
    assert float(rows[0]["dice"]) == 1 / 3  # full precision (repr)
    assert not list(tmp_path.glob("*.tmp"))


def test_batch_to_device_keeps_ids() -> None:
    batch = {
        "image": torch.ones(1, 1, 2, 2),
        "target": torch.zeros(1, 1, 2, 2),
        "masks": {"expert": torch.zeros(1, 1, 2, 2)},
        "case_id": ["a"],
    }
    moved = batch_to_device(batch, torch.device("cpu"))
    assert moved["case_id"] == ["a"] and set(moved["masks"]) == {"expert"}
    assert moved["image"].device.type == "cpu"
    wide = batch_to_device(batch, torch.device("cpu"), torch.float64)
    assert wide["image"].dtype == wide["masks"]["expert"].dtype == torch.float64


def test_main_output_of_deep_supervision() -> None:
    full, half = torch.ones(1), torch.zeros(1)
    assert main_output([full, half]) is full and main_output(full) is full
