"""Budget schedule: ends exactly at the budget (fake clock or steps), warm-up shape, monotone decay."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import medseg.optim as optim
from medseg.errors import ConfigError
from medseg.optim.schedulers import BudgetSchedule, budget_factor


class FakeClock:
    """A clock the test moves by hand (no timing in unit tests)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return optim.build("sgd", params=nn.Linear(2, 1).parameters(), lr=lr, momentum=0.99, nesterov=True)


def _lr(scheduler: BudgetSchedule) -> float:
    return scheduler.optimizer.param_groups[0]["lr"]


def test_budget_factor_values_by_hand() -> None:
    assert budget_factor(0.0) == 1.0
    assert budget_factor(0.5, "poly", power=1.0) == 0.5
    assert budget_factor(0.5, "poly", power=0.9) == pytest.approx(0.5**0.9)
    assert budget_factor(0.5, "cosine") == pytest.approx(0.5)
    assert budget_factor(1.0, "cosine", end_ratio=0.1) == 0.1
    # Warm-up over the first 10 %: linear from 0; then the decay restarts from 1 at progress 0.1.
    assert budget_factor(0.05, warmup_fraction=0.1) == pytest.approx(0.5)
    assert budget_factor(0.1, warmup_fraction=0.1) == 1.0
    assert budget_factor(0.55, "poly", warmup_fraction=0.1, power=1.0) == pytest.approx(0.5)
    assert budget_factor(2.0, end_ratio=0.2) == 0.2  # past the budget it stays at the end value


@pytest.mark.parametrize("shape", ["poly", "cosine"])
def test_time_budget_reaches_the_end_value_exactly_when_the_budget_ends(shape: str) -> None:
    clock = FakeClock()
    opt = _optimizer(0.01)
    scheduler = BudgetSchedule(opt, budget_seconds=60.0, shape=shape, end_ratio=0.01, clock=clock)
    assert _lr(scheduler) == 0.01 and not scheduler.finished
    clock.now += 30.0
    opt.step()
    scheduler.step()
    assert scheduler.progress == 0.5
    assert _lr(scheduler) == pytest.approx(0.01 * budget_factor(0.5, shape, end_ratio=0.01))
    clock.now += 29.999
    scheduler.step()
    assert not scheduler.finished and _lr(scheduler) > 0.01 * 0.01
    clock.now += 0.001
    scheduler.step()
    assert scheduler.finished and scheduler.progress == 1.0
    assert _lr(scheduler) == 0.01 * 0.01  # exactly, not approximately
    clock.now += 100.0
    scheduler.step()
    assert _lr(scheduler) == 0.01 * 0.01


def test_step_budget_reaches_the_end_value_after_total_steps() -> None:
    opt = _optimizer(0.1)
    scheduler = optim.build_scheduler("budget", opt, total_steps=10, shape="poly", power=1.0)
    used = []
    while not scheduler.finished:
        used.append(_lr(scheduler))
        opt.step()
        scheduler.step()
    assert len(used) == 10
    assert used == pytest.approx([0.1 * (1 - k / 10) for k in range(10)])
    assert _lr(scheduler) == 0.0


def test_registry_build_with_a_time_budget_ignores_the_step_count() -> None:
    scheduler = optim.build_scheduler("budget", _optimizer(), total_steps=5, budget_seconds=60.0)
    assert isinstance(scheduler, BudgetSchedule)
    assert (scheduler.total_steps, scheduler.budget_seconds) == (None, 60.0)


def test_warmup_then_monotone_decay() -> None:
    clock = FakeClock()
    opt = _optimizer(1.0)
    scheduler = BudgetSchedule(opt, budget_seconds=100.0, warmup_fraction=0.2, shape="cosine", clock=clock)
    lrs = []
    for _ in range(100):
        clock.now += 1.0
        opt.step()
        scheduler.step()
        lrs.append(_lr(scheduler))
    warmup, decay = lrs[:20], lrs[19:]
    assert warmup == pytest.approx([(k + 1) / 20 for k in range(20)])  # linear up to the peak
    assert max(lrs) == 1.0 == lrs[19]
    assert all(b <= a for a, b in zip(decay, decay[1:], strict=False))
    assert lrs[-1] == 0.0


def test_explicit_progress_and_resume_keeps_the_curve() -> None:
    clock = FakeClock()
    opt = _optimizer(1.0)
    scheduler = BudgetSchedule(opt, budget_seconds=10.0, power=1.0, clock=clock)
    opt.step()
    scheduler.step(progress=0.25)
    assert _lr(scheduler) == pytest.approx(0.75)
    clock.now += 4.0
    scheduler.step()
    state = scheduler.state_dict()
    assert state["elapsed_seconds"] == 4.0 and "clock" not in state
    torch.save(state, io.BytesIO())  # serialisable (no clock function inside)

    later = FakeClock()
    later.now = 5000.0
    resumed_opt = _optimizer(1.0)
    resumed = BudgetSchedule(resumed_opt, budget_seconds=10.0, power=1.0, clock=later)
    resumed.load_state_dict(state)
    resumed_opt.step()
    later.now += 1.0  # 4 s before the checkpoint + 1 s after the resume
    resumed.step()
    assert resumed.progress == pytest.approx(0.5) and _lr(resumed) == pytest.approx(0.5)


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        BudgetSchedule(_optimizer(), total_steps=10, budget_seconds=5.0)
    with pytest.raises(ConfigError, match="exactly one of"):
        BudgetSchedule(_optimizer())
    with pytest.raises(ConfigError, match="unknown schedule shape 'step'"):
        BudgetSchedule(_optimizer(), total_steps=10, shape="step")
    with pytest.raises(ConfigError, match="warmup_fraction"):
        BudgetSchedule(_optimizer(), total_steps=10, warmup_fraction=1.0)
    with pytest.raises(ConfigError, match="budget_seconds must be positive"):
        BudgetSchedule(_optimizer(), budget_seconds=0.0)
    with pytest.raises(ConfigError, match="end_ratio"):
        BudgetSchedule(_optimizer(), total_steps=3, end_ratio=1.5)
    assert not math.isnan(budget_factor(0.3, "cosine", 0.1))
