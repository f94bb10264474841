"""Optimizers and schedulers: registry, options, lr values computed by hand, step semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import medseg.optim as optim
from medseg.errors import ConfigError


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return optim.build("sgd", params=nn.Linear(2, 1).parameters(), lr=lr)


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    """The lr used at iterations 0..steps−1, stepping as the engine does (optimizer, then scheduler)."""
    used = []
    for _ in range(steps):
        used.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return used


def test_registries() -> None:
    assert {"adam", "adamw", "sgd"} <= set(optim.available())
    assert optim.available_schedulers() == ["budget", "constant", "cosine", "plateau", "poly"]
    assert set(optim.describe()) == set(optim.available())
    assert set(optim.describe_schedulers()) == set(optim.available_schedulers())
    with pytest.raises(KeyError, match="Available: adam, adamw"):
        optim.build("lamb", params=nn.Linear(2, 1).parameters())
    with pytest.raises(KeyError, match="Available: budget, constant, cosine, plateau, poly"):
        optim.build_scheduler("step", _optimizer(), total_steps=10)


def test_optimizer_options() -> None:
    params = list(nn.Linear(2, 1).parameters())
    sgd = optim.build("sgd", params=params, lr=0.01, nesterov=True, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)
    adamw = optim.build("adamw", params=params, lr=1e-3, weight_decay=1e-4)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-4
    adam = optim.build("adam", params=params, betas=(0.8, 0.9))
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.8, 0.9)


def test_optimizer_reduces_a_loss() -> None:
    model = nn.Linear(1, 1)
    opt = optim.build("adamw", params=model.parameters(), lr=0.1, weight_decay=0.0)
    x = torch.tensor([[1.0], [2.0]])
    first = None
    for _ in range(20):
        loss = ((model(x) - 2 * x) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"weight_decay": -1.0}, {"momentum": 0.0, "nesterov": True}])
def test_bad_optimizer_options(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        optim.build("sgd", params=nn.Linear(2, 1).parameters(), **kwargs)


def test_poly_by_hand() -> None:
    scheduler = optim.build_scheduler("poly", _optimizer(0.1), total_steps=10)
    lrs = _lrs(scheduler, 11)
    # Iteration k uses 0.1 · (1 − k/10)^0.9: k=0 → 0.1, k=3 → 0.1 · 0.7^0.9, k=10 → 0.
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[3] == pytest.approx(0.1 * 0.7**0.9)
    assert lrs[10] == pytest.approx(0.0)
    assert optim.poly_factor(15, 10) == 0.0  # clamped after the end
    squared = optim.build_scheduler("poly", _optimizer(1.0), total_steps=4, power=2.0)
    assert _lrs(squared, 3) == pytest.approx([1.0, 0.5625, 0.25])


def test_cosine_half_way_and_end() -> None:
    scheduler = optim.build_scheduler("cosine", _optimizer(0.1), total_steps=10)
    lrs = _lrs(scheduler, 11)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.05)  # cos(π/2) = 0 → half the lr
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)
    floor = optim.build_scheduler("cosine", _optimizer(1.0), total_steps=10, min_lr_ratio=0.1)
    assert _lrs(floor, 11)[10] == pytest.approx(0.1)


def test_cosine_with_warmup() -> None:
    scheduler = optim.build_scheduler("cosine", _optimizer(1.0), total_steps=10, warmup_steps=2)
    lrs = _lrs(scheduler, 11)
    # Warmup (k+1)/2: 0.5, 1.0; then cosine over the remaining 8 steps, half-way at k = 2 + 4.
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[6] == pytest.approx(0.5)
    assert lrs[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)


def test_constant_and_poly_warmup() -> None:
    constant = optim.build_scheduler("constant", _optimizer(0.2), total_steps=10, warmup_steps=4)
    assert _lrs(constant, 6) == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    poly = optim.build_scheduler("poly", _optimizer(1.0), total_steps=10, warmup_steps=2, power=1.0)
    # After warmup, poly decays over the remaining 8 steps: k=3 → 1 − 1/8.
    assert _lrs(poly, 4) == pytest.approx([0.5, 1.0, 1.0, 0.875])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("poly", {"total_steps": 0}),
        ("poly", {"total_steps": 10, "power": 0.0}),
        ("cosine", {"total_steps": 10, "warmup_steps": 10}),
        ("cosine", {"total_steps": 10, "min_lr_ratio": 2.0}),
        ("constant", {"total_steps": 10, "warmup_steps": -1}),
    ],
)
def test_bad_scheduler_options(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        optim.build_scheduler(name, _optimizer(), **kwargs)


def test_plateau_halves_lr_after_patience_and_is_stepped_per_epoch() -> None:
    from medseg.optim.schedulers import is_epoch_scheduler

    scheduler = optim.build_scheduler("plateau", _optimizer(0.1), total_steps=10, factor=0.5, patience=1)
    assert is_epoch_scheduler(scheduler)
    assert not is_epoch_scheduler(optim.build_scheduler("poly", _optimizer(0.1), total_steps=10))
    lrs = []
    for dice in (0.5, 0.6, 0.6, 0.6, 0.6):  # improves once, then stalls
        scheduler.step(dice)
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
    # patience 1: the 2nd non-improving epoch (4th call) halves the lr; the counter then restarts.
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    with pytest.raises(ConfigError, match="factor"):
        optim.build_scheduler("plateau", _optimizer(0.1), total_steps=10, factor=1.5)
