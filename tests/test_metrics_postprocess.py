"""Largest-connected-component postprocessing and nnU-Net's rule for keeping it, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics.postprocess import (
    PostprocessingDecision,
    StepDecision,
    apply_postprocessing,
    class_dice,
    decide_postprocessing,
    largest_component,
    largest_component_per_class,
    largest_foreground_region,
)


def cube(labels: np.ndarray, corner: tuple[int, int, int], size: int, value: int) -> np.ndarray:
    z, y, x = corner
    labels[z : z + size, y : y + size, x : x + size] = value
    return labels


def test_largest_component_keeps_the_biggest_blob() -> None:
    mask = np.zeros((8, 8, 8), bool)
    cube(mask, (0, 0, 0), 2, True)  # 8 voxels
    mask[6, 6, 6] = True  # 1 voxel
    kept = largest_component(mask)
    assert kept.sum() == 8 and not kept[6, 6, 6] and kept[:2, :2, :2].all()
    assert not largest_component(np.zeros((4, 4), bool)).any()  # empty stays empty
    with pytest.raises(ValueError, match="2D or 3D"):
        largest_component(np.ones(5, bool))


def test_components_connect_through_corners() -> None:
    diagonal = np.zeros((3, 3, 3), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = diagonal[2, 2, 2] = True  # corner to corner: one component
    assert largest_component(diagonal).sum() == 3
    plane = np.eye(4, dtype=bool)  # 2D: 8-connectivity
    assert largest_component(plane).sum() == 4


def test_a_tie_keeps_the_first_component() -> None:
    mask = np.zeros((1, 5, 5), bool)
    mask[0, 0, 0] = mask[0, 4, 4] = True
    kept = largest_component(mask)
    assert kept[0, 0, 0] and not kept[0, 4, 4]


def test_largest_component_per_class_touches_only_the_classes_named() -> None:
    labels = np.zeros((6, 6, 6), np.uint8)
    cube(labels, (0, 0, 0), 2, 1)
    labels[5, 5, 5] = 1  # a stray voxel of class 1
    cube(labels, (0, 4, 0), 2, 2)
    labels[5, 0, 5] = 2  # a stray voxel of class 2
    out = largest_component_per_class(labels, [1])
    assert out[5, 5, 5] == 0 and out[5, 0, 5] == 2 and (out == 1).sum() == 8
    assert labels[5, 5, 5] == 1  # the input is left alone
    both = largest_component_per_class(labels, [1, 2])
    assert (both == 2).sum() == 8
    with pytest.raises(ValueError, match="foreground class"):
        largest_component_per_class(labels, [0])


def test_largest_foreground_region_joins_touching_classes() -> None:
    labels = np.zeros((6, 6, 6), np.uint8)
    cube(labels, (0, 0, 0), 2, 1)
    cube(labels, (0, 0, 2), 2, 2)  # touches class 1: one foreground region of 16 voxels
    labels[5, 5, 5] = 2  # a stray voxel of class 2, apart
    out = largest_foreground_region(labels)
    assert (out == 1).sum() == 8 and (out == 2).sum() == 8 and out[5, 5, 5] == 0


def test_class_dice_by_hand() -> None:
    gt = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 0, 0, 0], [0, 0, 0, 2]])
    # class 1: 2·1/(1 + 2) = 2/3; class 2: predicted, absent → 0; class 3: both empty → 1
    np.testing.assert_allclose(class_dice([pred], [gt], [1, 2, 3]), [[2 / 3, 0.0, 1.0]])


def test_lcc_is_kept_where_it_removes_a_spurious_blob() -> None:
    truth = cube(np.zeros((8, 8, 8), np.uint8), (1, 1, 1), 2, 1)  # 8 voxels of class 1
    pred = truth.copy()
    pred[6, 6, 6] = 1  # a spurious voxel: Dice 2·8/(9 + 8) = 16/17
    decision = decide_postprocessing([pred], [truth], num_classes=2)
    assert decision.largest_component_classes == (1,) and decision.per_class() == {1: True}
    (step,) = decision.steps  # binary: the class step alone
    assert step.step == "class 1" and step.keep
    assert type(step.keep) is bool and type(step.dice_after) is float  # plain types for the checkpoint
    assert step.dice_before == pytest.approx(16 / 17) and step.dice_after == pytest.approx(1.0)
    np.testing.assert_array_equal(apply_postprocessing(pred, decision), truth)


def test_lcc_is_not_kept_where_a_class_has_two_true_components() -> None:
    truth = cube(np.zeros((8, 8, 8), np.uint8), (0, 0, 0), 2, 2)  # 8 voxels
    truth[6:, 6:, 6] = 2  # and a second true component of 4 voxels
    decision = decide_postprocessing([truth.copy()], [truth], num_classes=3)
    class2 = decision.steps[-1]
    assert class2.step == "class 2" and not class2.keep
    assert class2.dice_before == pytest.approx(1.0) and class2.dice_after == pytest.approx(2 * 8 / (8 + 12))
    assert decision.per_class() == {1: False, 2: False} and not decision.changes_anything
    # the foreground step would also drop the second component: class 2 falls, so it is not kept
    assert decision.steps[0].step == "foreground" and not decision.steps[0].keep
    assert "class(es) [2]" in decision.steps[0].reason


def test_the_mean_over_cases_decides() -> None:
    helped = cube(np.zeros((8, 8, 8), np.uint8), (0, 0, 0), 2, 1)
    helped_pred = helped.copy()
    helped_pred[7, 7, 7] = 1  # Dice 16/17 → 1 (+0.059)
    hurt = cube(np.zeros((8, 8, 8), np.uint8), (0, 0, 0), 2, 1)
    hurt[5:, 5:, 5:] = 1  # two true components of 8 and 27 voxels: LCC keeps the 27
    decision = decide_postprocessing([helped_pred, hurt.copy()], [helped, hurt], num_classes=2)
    before, after = (16 / 17 + 1.0) / 2, (1.0 + 2 * 27 / (27 + 35)) / 2
    (step,) = decision.steps
    assert step.dice_before == pytest.approx(before) and step.dice_after == pytest.approx(after)
    assert not step.keep  # the mean falls: 0.971 → 0.935


def test_a_step_that_changes_nothing_is_not_kept() -> None:
    truth = cube(np.zeros((6, 6, 6), np.uint8), (1, 1, 1), 3, 1)
    decision = decide_postprocessing([truth.copy()], [truth])
    assert decision.steps[0].dice_before == decision.steps[0].dice_after == 1.0
    assert not decision.changes_anything and "does not rise" in decision.steps[0].reason


def test_the_foreground_step_comes_first_and_the_class_steps_build_on_it() -> None:
    truth = np.zeros((8, 8, 8), np.uint8)
    cube(truth, (0, 0, 0), 2, 1)
    cube(truth, (0, 0, 2), 2, 2)  # class 2 touches class 1
    pred = truth.copy()
    pred[7, 7, 7] = 1  # a stray blob of class 1, apart from the organ
    decision = decide_postprocessing([pred], [truth], num_classes=3)
    assert [s.step for s in decision.steps] == ["foreground", "class 1", "class 2"]
    assert decision.foreground_region and decision.steps[0].keep
    # class 1: 16/17 → 1, class 2: 1 → 1; mean (16/17 + 1)/2 → 1
    assert decision.steps[0].dice_before == pytest.approx((16 / 17 + 1) / 2)
    # after the foreground step the class steps change nothing: not kept
    assert decision.largest_component_classes == ()
    assert decision.steps[1].dice_before == pytest.approx(1.0)
    np.testing.assert_array_equal(apply_postprocessing(pred, decision), truth)


def test_binary_masks_and_booleans() -> None:
    truth = cube(np.zeros((6, 6, 6), bool), (0, 0, 0), 2, True)
    pred = truth.copy()
    pred[5, 5, 5] = True
    decision = decide_postprocessing([pred], [truth])
    out = apply_postprocessing(pred, decision)
    assert out.dtype == bool and np.array_equal(out, truth)
    nothing = PostprocessingDecision(2)
    assert apply_postprocessing(pred, nothing) is pred  # nothing to apply: the input itself
    assert (
        decide_postprocessing([], []).steps == ()
        and "no validation" in decide_postprocessing([], []).summary()
    )


def test_decision_round_trips_through_plain_types() -> None:
    decision = PostprocessingDecision(
        3, True, (2,), (StepDecision("class 2", True, 0.5, 0.75, "its mean Dice rises"),), n_cases=4
    )
    data = decision.to_dict()
    assert all(isinstance(v, (int, float, str, bool, list)) for v in data.values())
    assert PostprocessingDecision.from_dict(data) == decision
    assert decision.summary() == "class 2: largest component (Dice 0.5000 → 0.7500)"
    with pytest.raises(ValueError, match="unreadable"):
        PostprocessingDecision.from_dict({"num_classes": 3})


@pytest.mark.parametrize(
    ("pred", "gt", "classes", "match"),
    [
        ([np.zeros((2, 2))], [], 2, "1 predictions for 0"),
        ([np.zeros((2, 2))], [np.zeros((2, 3))], 2, "differs"),
        ([np.full((2, 2), 0.5)], [np.zeros((2, 2))], 2, "integers"),
        ([np.full((2, 2), 3)], [np.zeros((2, 2))], 3, r"0 … 2"),
        ([np.zeros((2, 2))], [np.zeros((2, 2))], 1, "≥ 2"),
    ],
)
def test_bad_inputs_are_clear_errors(pred: list, gt: list, classes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decide_postprocessing(pred, gt, classes)
