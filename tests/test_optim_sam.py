"""The SAM optimizer: perturbation, exact restore, BN freezing, skipping, schedulers, resume, DDP."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import medseg.optim as optim
from medseg.errors import ConfigError
from medseg.losses.umedsam import UMedSAMLoss
from medseg.optim.sam import SAM, disable_running_stats, param_groups_with_loss, sam_training_step


def _toy(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(32, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    return model, x, y


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_registry_builds_sam_around_a_registered_base() -> None:
    model, _, _ = _toy()
    opt = optim.build("sam", model.parameters(), base="adamw", lr=5e-5, rho=0.05)
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.AdamW)
    assert opt.param_groups is opt.base_optimizer.param_groups
    group = opt.param_groups[0]
    assert (group["lr"], group["rho"], group["adaptive"]) == (5e-5, 0.05, False)
    sgd = optim.build("sam", model.parameters(), base="sgd", lr=0.1, momentum=0.5, adaptive=True, rho=1.0)
    assert isinstance(sgd.base_optimizer, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    assert SAM(model.parameters(), torch.optim.SGD, lr=0.1).defaults["rho"] == 0.05
    with pytest.raises(ConfigError):
        optim.build("sam", model.parameters(), base="sam")
    with pytest.raises(ConfigError):
        optim.build("sam", model.parameters(), rho=-0.1)


def test_perturbation_norm_equals_rho() -> None:
    model, x, y = _toy()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    _mse(model, x, y).backward()
    before = _flat(model)
    opt.first_step()
    e_w = _flat(model) - before
    assert torch.linalg.vector_norm(e_w).item() == pytest.approx(0.05, rel=1e-5)
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(e_w, 0.05 * grads / grads.norm(), rtol=1e-4, atol=1e-7)


def test_adaptive_perturbation_by_hand() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    v = nn.Parameter(torch.tensor([-0.5], dtype=torch.float64))
    opt = SAM([w, v], torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1)
    w.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    v.grad = torch.tensor([2.0], dtype=torch.float64)
    # ‖|w|⊙g‖ = ‖(3, 8, 1)‖ = √74;  e_w = ρ·w²⊙g / √74
    norm = math.sqrt(74.0)
    assert opt.grad_norm().item() == pytest.approx(norm)
    opt.first_step()
    torch.testing.assert_close(
        w.detach(), torch.tensor([1 + 0.5 * 3 / norm, 2 + 0.5 * 16 / norm], dtype=torch.float64)
    )
    torch.testing.assert_close(v.detach(), torch.tensor([-0.5 + 0.5 * 0.5 / norm], dtype=torch.float64))


def test_weights_are_restored_exactly_before_the_base_step() -> None:
    model, x, y = _toy()
    opt = SAM(model.parameters(), "adamw", lr=1e-3)
    seen: list[torch.Tensor] = []
    base_step = opt.base_optimizer.step

    def spy() -> None:
        seen.append(_flat(model))
        base_step()

    _mse(model, x, y).backward()
    original = _flat(model)
    opt.first_step(zero_grad=True)
    assert not torch.equal(_flat(model), original)
    _mse(model, x, y).backward()
    opt.second_step(zero_grad=True, base_step=spy)
    assert len(seen) == 1 and torch.equal(seen[0], original)
    assert not torch.equal(_flat(model), original)  # and then the base optimizer stepped
    assert all(p.grad is None for p in model.parameters())


def test_step_with_closure_runs_both_passes() -> None:
    model, x, y = _toy()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.05)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        loss = _mse(model, x, y)
        loss.backward()
        return loss

    first = _mse(model, x, y).item()
    assert opt.step(closure).item() == pytest.approx(first)
    assert len(calls) == 2 and _mse(model, x, y).item() < first


def test_sam_decreases_a_toy_regression_loss() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="sgd", lr=0.05, rho=0.05)
    start = _mse(model, x, y).item()
    for _ in range(60):
        sam_training_step(model, opt, lambda: _mse(model, x, y))
    assert _mse(model, x, y).item() < 0.2 * start


def test_adaptive_sam_also_decreases_the_loss() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="adam", lr=1e-2, rho=0.5, adaptive=True)
    start = _mse(model, x, y).item()
    for _ in range(60):
        sam_training_step(model, opt, lambda: _mse(model, x, y))
    assert _mse(model, x, y).item() < 0.2 * start


def test_batchnorm_running_stats_frozen_in_the_second_pass() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1))
    bn = model[1]
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = optim.build("sam", model.parameters(), base="sgd", lr=0.1, rho=0.5)
    initial = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    snapshots = []

    def compute_loss() -> torch.Tensor:
        snapshots.append((bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()))
        return _mse(model, x, y)

    sam_training_step(model, opt, compute_loss)
    assert len(snapshots) == 2
    after_pass1 = snapshots[1]
    assert not torch.equal(after_pass1[0], initial[0])  # pass 1 updated the statistics
    assert int(after_pass1[2]) == int(initial[2]) + 1
    for now, then in zip((bn.running_mean, bn.running_var, bn.num_batches_tracked), after_pass1, strict=True):
        assert torch.equal(now, then)  # pass 2 did not
    assert bn.track_running_stats  # restored


def test_disable_running_stats_restores_on_error() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(RuntimeError), disable_running_stats(model):
        assert not model[0].track_running_stats
        raise RuntimeError("boom")
    assert model[0].track_running_stats and not model[1].track_running_stats


def test_step_is_skipped_on_an_inf_gradient() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="adamw", lr=1e-2)
    before = _flat(model)
    loss = sam_training_step(model, opt, lambda: _mse(model, x, y) * float("inf"))
    assert not torch.isfinite(loss)
    assert opt.skipped
    assert torch.equal(_flat(model), before)
    assert len(opt.base_optimizer.state) == 0  # AdamW never stepped
    # first_step alone: no perturbation, and second_step does not step the base optimizer
    for p in model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    opt.first_step()
    assert opt.skipped and torch.equal(_flat(model), before)
    opt.second_step()
    assert torch.equal(_flat(model), before) and len(opt.base_optimizer.state) == 0
    # the next finite step goes through again
    sam_training_step(model, opt, lambda: _mse(model, x, y))
    assert not opt.skipped and not torch.equal(_flat(model), before)


def test_grad_scaler_keeps_its_inf_check() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="adamw", lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    before = _flat(model)
    sam_training_step(model, opt, lambda: _mse(model, x, y), scaler=scaler)
    assert not opt.skipped and not torch.equal(_flat(model), before)
    assert scaler.get_scale() == 2.0**8
    before = _flat(model)
    sam_training_step(model, opt, lambda: _mse(model, x, y) * float("inf"), scaler=scaler)
    assert opt.skipped and torch.equal(_flat(model), before)
    assert scaler.get_scale() == 2.0**7  # the scaler saw the inf and backed off


def test_grad_clip_applies_to_the_second_pass_gradient() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="sgd", lr=0.1)
    norms = []
    base_step = opt.base_optimizer.step

    def spy() -> None:
        norms.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm().item())
        base_step()

    opt.base_optimizer.step = spy  # type: ignore[method-assign]
    sam_training_step(model, opt, lambda: 100 * _mse(model, x, y), grad_clip=0.5)
    assert norms and norms[0] == pytest.approx(0.5, rel=1e-4)


def test_schedulers_attach_to_the_base_optimizer() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="sgd", lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5**k)
        sam_training_step(model, opt, lambda: _mse(model, x, y))
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    # built on the base optimizer, a scheduler changes what the wrapper reports too
    other = optim.build("sam", model.parameters(), base="sgd", lr=0.1)
    base_sched = optim.build_scheduler("poly", other.base_optimizer, total_steps=10, power=1.0)
    sam_training_step(model, other, lambda: _mse(model, x, y))
    base_sched.step()
    assert other.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9)


def test_state_dict_round_trip_resumes_identically() -> None:
    model, x, y = _toy()
    opt = optim.build("sam", model.parameters(), base="adamw", lr=1e-2, rho=0.1, adaptive=True)
    for _ in range(3):
        sam_training_step(model, opt, lambda: _mse(model, x, y))
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as a checkpoint would: a copy, not the live tensors
    buffer.seek(0)
    saved_opt = torch.load(buffer, map_location="cpu", weights_only=True)
    assert "state" in saved_opt and saved_opt["param_groups"][0]["rho"] == 0.1

    clone, _, _ = _toy(seed=1)
    clone.load_state_dict(saved_model)
    resumed = optim.build("sam", clone.parameters(), base="adamw", lr=1.0)
    resumed.load_state_dict(saved_opt)
    assert resumed.param_groups is resumed.base_optimizer.param_groups
    assert resumed.param_groups[0]["lr"] == 1e-2 and resumed.param_groups[0]["adaptive"]
    sam_training_step(model, opt, lambda: _mse(model, x, y))
    sam_training_step(clone, resumed, lambda: _mse(clone, x, y))
    assert torch.equal(_flat(model), _flat(clone))


def test_param_groups_with_loss_put_sigma_in_a_no_decay_group() -> None:
    model, x, y = _toy()
    loss = UMedSAMLoss()
    groups = param_groups_with_loss(model, loss, weight_decay=0.05, loss_lr=1e-3)
    assert [len(g["params"]) for g in groups] == [4, 1]
    assert groups[0]["weight_decay"] == 0.05
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == 1e-3
    assert groups[1]["params"][0] is loss.sigma
    opt = optim.build("sam", groups, base="adamw", lr=5e-5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [5e-5, 1e-3]
    # a sigma without gradient must not move: no weight decay pulls it to 0
    loss.sigma.grad = torch.zeros_like(loss.sigma)
    opt.base_optimizer.step()
    assert torch.equal(loss.sigma.detach(), torch.ones(4))
    no_params = param_groups_with_loss(model, nn.MSELoss(), weight_decay=0.0)
    assert len(no_params) == 1
    with pytest.raises(ConfigError):
        param_groups_with_loss(model, model, weight_decay=0.0)


def test_first_pass_runs_inside_no_sync_under_ddp(tmp_path: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, x, y = _toy()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = optim.build("sam", ddp.parameters(), base="sgd", lr=0.1)
        inside = {"now": False}
        original = ddp.no_sync

        @contextlib.contextmanager
        def spy() -> Iterator[None]:
            with original():
                inside["now"] = True
                try:
                    yield
                finally:
                    inside["now"] = False

        ddp.no_sync = spy  # type: ignore[method-assign]
        seen = []

        def compute_loss() -> torch.Tensor:
            seen.append(inside["now"])
            return _mse(ddp, x, y)

        before = _flat(model)
        sam_training_step(ddp, opt, compute_loss)
        assert seen == [True, False]
        assert not torch.equal(_flat(model), before)
    finally:
        dist.destroy_process_group()


def test_sam_training_step_needs_a_sam_optimizer() -> None:
    model, x, y = _toy()
    with pytest.raises(TypeError, match="SAM"):
        sam_training_step(model, torch.optim.SGD(model.parameters(), lr=0.1), lambda: _mse(model, x, y))
