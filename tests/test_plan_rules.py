"""The multi-class, mirroring, validation and timing rules of the planner, each alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import medseg.models as models
from medseg.data.fingerprint import ClassStats, Fingerprint, IntensityStats
from medseg.plan import Budget, make_plan, mirror_flips, plan_to_config
from medseg.plan.rules import (
    MIN_VALIDATION_CASES,
    SGD_MIN_STEPS,
    Classes,
    classes_rule,
    foreground_share_rule,
    loss_rule,
    mirror_axes_rule,
    optimizer_rule,
    validation_cases_rule,
)
from medseg.plan.timing import StepTimer

GIB = 2**30


def _hippocampus_like(**overrides: object) -> Fingerprint:
    """Two classes lying apart along the first two axes (anterior / posterior), isotropic 1 mm."""
    base = Fingerprint(
        n_cases=40,
        n_samples=40,
        spatial_dims=3,
        n_channels=1,
        num_classes=3,
        modality="mr",
        spacing_median=(1.0, 1.0, 1.0),
        spacing_p10=(1.0, 1.0, 1.0),
        anisotropy=1.0,
        shape_median=(36.0, 50.0, 35.0),
        shape_min=(30, 40, 30),
        shape_max=(44, 56, 42),
        intensity_foreground=(IntensityStats(100.0, 20.0, 50.0, 160.0, 0.0, 200.0),),
        intensity_image=(IntensityStats(60.0, 40.0, 0.0, 180.0, 0.0, 255.0),),
        classes=(
            ClassStats(1, 0.028, 1.0, 1.0, 1700.0, 1700.0, (0.33, 0.70, 0.46)),
            ClassStats(2, 0.025, 1.0, 1.0, 1500.0, 1500.0, (0.54, 0.34, 0.40)),
        ),
        empty_slice_share=0.3,
        n_voxels_total=40 * 36 * 50 * 35,
        label_names=("background", "Anterior", "Posterior"),
        class_values=(0, 1, 2),
    )
    return replace(base, **overrides)


def test_classes_come_from_the_data_set() -> None:
    decision = classes_rule(_hippocampus_like())
    assert decision.value == Classes(3, ["background", "Anterior", "Posterior"], [0, 1, 2])
    assert decision.value.out_channels == 3
    assert "1=Anterior" in decision.reason and "softmax over 3" in decision.reason
    binary = classes_rule(_hippocampus_like(num_classes=None, label_names=None, class_values=None))
    assert binary.value.num_classes is None and binary.value.out_channels == 1


def test_loss_is_dice_ce_for_classes_and_dice_bce_for_binary() -> None:
    multi = loss_rule(Classes(3, None, None)).value
    assert multi == {"name": "dice_ce", "options": {"batch_dice": True, "include_background": False}}
    assert loss_rule(Classes(None, None, None)).value["name"] == "dice_bce"


def test_mirroring_skips_the_axes_that_tell_classes_apart() -> None:
    decision = mirror_axes_rule(_hippocampus_like(), 3)
    # centroids differ by 0.21 along axis 0 and 0.36 along axis 1, 0.06 along axis 2
    assert decision.value == [2]
    assert "axis 0: 0.21" in decision.reason and "axis 1: 0.36" in decision.reason
    # a 2D plan of the same volumes keeps its in-plane axes (1, 2 → 0, 1)
    assert mirror_axes_rule(_hippocampus_like(), 2).value == [1]
    # one class: every axis
    one = _hippocampus_like(num_classes=None, classes=_hippocampus_like().classes[:1])
    assert mirror_axes_rule(one, 3).value is None
    # classes at the same place: every axis
    same = replace(_hippocampus_like().classes[1], centroid_relative=(0.35, 0.66, 0.44))
    assert (
        mirror_axes_rule(_hippocampus_like(classes=(_hippocampus_like().classes[0], same)), 3).value is None
    )


def test_mirror_flips_are_every_combination_of_the_axes() -> None:
    assert mirror_flips(None) is True
    assert mirror_flips([2]) == [[2]]
    assert mirror_flips([0, 2]) == [[0], [2], [0, 2]]


def test_foreground_share_samples_each_class() -> None:
    decision = foreground_share_rule(_hippocampus_like())
    assert decision.value == pytest.approx(1 / 3) and "rare classes" in decision.reason


def test_validation_fits_its_share_of_the_budget() -> None:
    budget = Budget(memory_bytes=GIB, minutes=10)  # 540 s of training: 10.8 s per pass
    assert validation_cases_rule(40, 0.1, budget).value is None  # 4 s: all
    subset = validation_cases_rule(400, 0.5, budget)
    assert subset.value == 21 and "21 of the 400" in subset.reason
    assert validation_cases_rule(400, 100.0, budget).value == MIN_VALIDATION_CASES
    assert validation_cases_rule(None, 1.0, budget).value is None


def test_multiclass_plan_and_config(tmp_path: Path) -> None:
    budget = Budget(memory_bytes=8 * GIB, minutes=15, device="cpu", step_seconds=0.5)
    plan = make_plan(_hippocampus_like(), budget, n_validation_cases=40)
    assert plan.spatial_dims == 3 and plan.num_classes == 3
    assert plan.label_names == ["background", "Anterior", "Posterior"] and plan.class_values == [0, 1, 2]
    assert plan.loss["name"] == "dice_ce" and plan.mirror_axes == [2]
    assert plan.patch_size == [40, 56, 40] and plan.model["options"]["out_channels"] == 3
    assert {"classes", "loss", "mirror_axes", "validation_cases"} <= set(plan.reasons)
    plan.data = {"source": "msd", "options": {"root": "x"}}
    cfg = plan_to_config(plan, tmp_path)
    assert cfg.data.num_classes == 3 and cfg.data.label_names == plan.label_names
    assert cfg.loss.name == "dice_ce" and cfg.loss.options["include_background"] is False
    assert cfg.augment.flip_axes == [2] and cfg.inference.tta_flips == [[2]]
    model = models.build_from_config(cfg)
    assert model.num_classes == 3


def test_the_step_timer_times_real_steps_and_caches_them() -> None:
    timer = StepTimer("cpu", steps=1, warmup=0)
    candidate = {
        "model": {
            "in_channels": 1,
            "out_channels": 3,
            "spatial_dims": 3,
            "features": [4, 8],
            "blocks": [0, 1],
            "deep_supervision": True,
        },
        "patch": [8, 8, 8],
        "batch": 2,
    }
    seconds = timer(candidate)
    assert seconds > 0 and timer(candidate) == seconds and len(timer.measured) == 1


def test_a_slow_candidate_is_timed_on_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[float] = []  # a fake clock on which every step takes 5 s (two reads per step)

    def clock() -> float:
        reads.append(5.0 * len(reads))
        return reads[-1]

    monkeypatch.setattr("medseg.plan.timing.time.perf_counter", clock)
    candidate = {
        "model": {
            "in_channels": 1,
            "out_channels": 1,
            "spatial_dims": 2,
            "features": [4, 8],
            "blocks": [0, 1],
            "deep_supervision": False,
        },
        "patch": [8, 8],
        "batch": 2,
    }
    assert StepTimer("cpu", steps=3, warmup=1, slow_step_seconds=2.0)(candidate) == 5.0
    assert len(reads) == 2 * 2  # the warm-up step, then one timed step
    reads.clear()
    assert StepTimer("cpu", steps=3, warmup=1, slow_step_seconds=10.0)(candidate) == 5.0
    assert len(reads) == 2 * 4  # the warm-up step, then all three timed steps


def test_a_timed_plan_uses_the_timer_for_every_candidate() -> None:
    calls: list[dict] = []

    def timer(candidate: dict) -> float:
        calls.append(candidate)
        return 0.01 * candidate["batch"]

    budget = Budget(memory_bytes=8 * GIB, minutes=15, device="cpu", step_timer=timer)
    plan = make_plan(_hippocampus_like(), budget)
    assert calls and plan.step_seconds == pytest.approx(0.01 * plan.batch_size)
    assert "timed" in plan.reasons["total_steps"]


def test_a_slow_timer_narrows_3d_before_falling_back_to_2d() -> None:
    def slow(candidate: dict) -> float:  # a 16-wide 3D network buys 270 steps, an 8-wide 1080
        width = candidate["model"]["features"][0]
        return (3.0 if width == 16 else 0.75) if candidate["model"]["spatial_dims"] == 3 else 0.01

    plan = make_plan(_hippocampus_like(), Budget(memory_bytes=8 * GIB, minutes=15, step_timer=slow))
    assert plan.spatial_dims == 3 and plan.model["options"]["features"][0] == 8
    assert "narrowed to 8" in plan.reasons["model"]

    def hopeless(candidate: dict) -> float:
        return 20.0 if candidate["model"]["spatial_dims"] == 3 else 0.01

    plan_2d = make_plan(_hippocampus_like(), Budget(memory_bytes=8 * GIB, minutes=15, step_timer=hopeless))
    assert plan_2d.spatial_dims == 2 and "narrowest 3D network" in plan_2d.reasons["spatial_dims"]


def test_optimizer_is_adamw_for_short_budgets_and_sgd_for_long_ones() -> None:
    short = optimizer_rule(1500)
    assert short.value == {"name": "adamw", "lr": 3e-3, "weight_decay": 3e-5}
    assert "1500 steps < 10000" in short.reason
    long = optimizer_rule(SGD_MIN_STEPS)
    assert long.value["name"] == "sgd" and long.value["momentum"] == 0.99 and long.value["nesterov"]
