"""medseg.engine.budget_checks: budgets and data sizes checked before work, in the user's units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.config import load_config
from medseg.data.fingerprint import compute_fingerprint
from medseg.data.sample import Sample
from medseg.engine.budget_checks import (
    MIN_TRAINABLE_SIDE,
    check_memory_bytes,
    check_minutes,
    check_plan_affordable,
    check_trainable_shape,
    memory_error,
    with_minutes,
)
from medseg.errors import ConfigError, DataError
from medseg.plan import Budget, make_plan


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, True, "5"])
def test_check_minutes_refuses(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^--minutes .*: expected a positive, finite number of minutes"):
        check_minutes(bad)  # type: ignore[arg-type]


def test_check_minutes_and_memory_accept() -> None:
    assert check_minutes(2) == 2.0 and check_minutes(0.5) == 0.5
    assert check_memory_bytes(None) is None and check_memory_bytes(2**30) == 2**30
    with pytest.raises(ConfigError, match=r"--memory-gb 0: expected a positive number of GiB"):
        check_memory_bytes(0)


def test_memory_error_names_the_option_or_the_free_memory() -> None:
    base = ConfigError("the memory budget (0.00 GiB) does not fit batch 2")
    assert str(memory_error(base, 2**20, "cpu")).startswith("--memory-gb 0.000977: the memory budget")
    assert str(memory_error(base, None, "cuda")).startswith(
        "the free memory of the cuda (--memory-gb not given)"
    )


def _samples(shape: tuple[int, ...]) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(3):
        mask = np.zeros(shape, np.uint8)
        mask.flat[0] = 1
        out.append(
            Sample(
                image=rng.normal(size=(1, *shape)).astype(np.float32),
                masks={"expert": mask},
                target="expert",
                spacing=(1.0,) * len(shape),
                case_id=f"c{i}",
            )
        )
    return out


def test_check_trainable_shape() -> None:
    with pytest.raises(DataError, match=r"root: the images are 1×2×2 voxels \(median\): too small"):
        check_trainable_shape(compute_fingerprint(_samples((1, 2, 2))), "root")
    side = MIN_TRAINABLE_SIDE
    check_trainable_shape(compute_fingerprint(_samples((1, side, side))), "root")


def test_check_plan_affordable_names_the_least_minutes() -> None:
    fingerprint = compute_fingerprint(_samples((4, 32, 32)))
    plan = make_plan(fingerprint, Budget(memory_bytes=2**30, minutes=10, step_seconds=3.0))
    check_plan_affordable(plan, 10)
    # 0.01 min = 0.6 s, 0.54 s of it for training: a 3 s step does not fit; 3 / (60 × 0.9) = 0.0556
    with pytest.raises(
        ConfigError, match=r"--minutes 0\.01: the budget leaves 0\.54 s .* give at least --minutes 0\.056"
    ):
        check_plan_affordable(plan, 0.01)


def test_with_minutes_sets_the_time_budget() -> None:
    cfg = with_minutes(load_config(None, ["train.epochs=50"]), 0.5)
    assert cfg.train.max_time_minutes == 0.5 and cfg.train.epochs == 50
    budget = with_minutes(load_config(None, ["optim.scheduler=budget"]), 2)
    assert budget.optim.scheduler_options["budget_seconds"] == 120.0
    with pytest.raises(ConfigError, match="--minutes inf"):
        with_minutes(load_config(None, []), math.inf)
