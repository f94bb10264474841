"""Training end to end on a tiny phantom: checkpoints, history, exact resume, interruption."""

import time
from pathlib import Path

import pytest
import torch

from medseg.config import Config, load_config
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.train import steps_per_epoch, train
from medseg.errors import ConfigError

TINY = [
    "data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}",
    "data.image_size=[32, 32]",
    "model.options={features: [4, 8]}",
    "train.epochs=2",
    "train.batch_size=4",
    "train.progress=false",
    "train.tensorboard=false",
]


def tiny_config(out: Path, *extra: str) -> Config:
    cfg = load_config(None, [*TINY, *extra])
    cfg.output_dir = str(out)
    return cfg


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_train_writes_checkpoints_and_history(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", "train.tensorboard=true"))
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 3
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    assert len(result.history) == 2
    assert 0.0 <= result.best_dice <= 1.0
    state = load_checkpoint(result.last_checkpoint)
    assert state["epoch"] == 2 and state["annotators"][0] == "expert"


def test_extending_a_finished_run_continues_exactly(tmp_path: Path) -> None:
    # With a constant LR, 2 epochs then 1 more equals 3 epochs in one go (a poly/cosine schedule
    # depends on the total, which is why an interrupted run keeps its configured total).
    const = "optim.scheduler=constant"
    full = train(tiny_config(tmp_path / "full", "train.epochs=3", const))
    train(tiny_config(tmp_path / "part", "train.epochs=2", const))
    resumed = train(tiny_config(tmp_path / "part", "train.epochs=3", const), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key, value in _weights(full.last_checkpoint).items():
        torch.testing.assert_close(_weights(resumed.last_checkpoint)[key], value, rtol=0, atol=1e-6)


def test_run_killed_mid_epoch_loses_no_finished_epoch(tmp_path: Path) -> None:
    out = tmp_path / "killed"

    def kill(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(out, "train.epochs=3"), on_step=kill)
    state = load_checkpoint(out / "last.pt")  # intact, from the finished epoch 1
    assert state["epoch"] == 1
    resumed = train(tiny_config(out, "train.epochs=3"), resume=True)
    reference = train(tiny_config(tmp_path / "reference", "train.epochs=3"))
    for key, value in _weights(reference.last_checkpoint).items():
        torch.testing.assert_close(_weights(resumed.last_checkpoint)[key], value, rtol=0, atol=1e-6)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(tmp_path / "empty"), resume=True)


def test_deep_supervision_model_trains(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "ds", "model.options={features: [4, 8, 16], deep_supervision: true}", "train.epochs=1"
    )
    result = train(cfg)
    assert len(result.history) == 1


def test_steps_per_epoch() -> None:
    assert steps_per_epoch(10, 4) == 2
    assert steps_per_epoch(3, 4) == 1


# ----------------------------------------------------------------- budget, validation, selection


def test_a_step_budget_ends_mid_epoch_with_the_lr_at_its_end_value(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run",
        "train.epochs=10",
        "optim.scheduler=budget",
        "optim.scheduler_options={total_steps: 5, end_ratio: 0.0}",
    )
    taken: list[tuple[int, int]] = []
    result = train(cfg, on_step=lambda epoch, step: taken.append((epoch, step)))
    assert len(taken) == 5  # exactly the budget's steps
    steps = steps_per_epoch(3 * 4, 4)  # 3 training patients × 4 slices, batch 4
    assert taken[-1] == (4 // steps, 4 % steps)  # mid-epoch: the 5th step ends the run
    assert len(result.history) == 4 // steps + 1
    assert result.history[-1]["lr"] == 0.0
    assert result.history[-1]["val_dice"] == result.history[-1]["val_dice"]  # the end is validated


def test_a_time_budget_follows_max_time_minutes(tmp_path: Path) -> None:
    cfg = tiny_config(
        tmp_path / "run", "train.epochs=1000", "optim.scheduler=budget", "train.max_time_minutes=0.05"
    )
    result = train(cfg)
    assert 1 <= len(result.history) < 1000
    assert result.history[-1]["lr"] == 0.0  # annealed to the end exactly when the 3 s were spent


def test_a_time_budget_spent_while_validating_ends_at_the_end_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medseg.engine.train as train_module

    real_validate = train_module.validate

    def slow_validate(*args: object, **kwargs: object) -> tuple[float, float]:
        time.sleep(2.5)  # longer than the whole 1.8 s budget
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_module, "validate", slow_validate)
    cfg = tiny_config(
        tmp_path / "run", "train.epochs=1000", "optim.scheduler=budget", "train.max_time_minutes=0.03"
    )
    result = train(cfg)
    assert len(result.history) == 1  # no second epoch after the budget ran out in validation
    assert result.history[-1]["lr"] == 0.0


def test_val_every_skips_validation_but_always_validates_the_last_epoch(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path / "run", "train.epochs=5", "train.val_every=2"))
    validated = [row["epoch"] for row in result.history if row["val_dice"] == row["val_dice"]]
    assert validated == [2, 4, 5]
    text = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert text[0].split(",")[4] == "val_dice_ema" and ",nan," in text[1]


def test_checkpoint_selection_by_hand() -> None:
    from medseg.engine.train import CheckpointSelection

    ema = CheckpointSelection("ema", decay=0.5)
    picks = [ema.update(d) for d in (0.2, 0.9, 0.1, 0.6)]
    # ema: 0.2 → 0.55 → 0.325 → 0.4625: best at the 2nd, not the 4th (its raw 0.6 < 0.9 anyway)
    assert picks == [True, True, False, False]
    assert ema.ema == pytest.approx(0.4625)
    best = CheckpointSelection("best")
    assert [best.update(d) for d in (0.2, 0.9, 0.1, 0.95)] == [True, True, False, True]
    last = CheckpointSelection("last")
    assert all(last.update(d) for d in (0.5, 0.1))
    assert not last.update(float("nan"))
    replayed = CheckpointSelection(
        "ema", 0.5, [{"val_dice": 0.2}, {"val_dice": float("nan")}, {"val_dice": 0.9}]
    )
    assert replayed.ema == pytest.approx(0.55) and replayed.best == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="checkpoint_selection"):
        CheckpointSelection("median")
    with pytest.raises(ConfigError, match="ema_decay"):
        CheckpointSelection("ema", decay=1.0)


def test_auto_validation_keeps_validation_near_a_tenth_of_the_time() -> None:
    from medseg.engine.train import ValidationClock

    clock = ValidationClock("auto")
    assert clock.due(0, False, now=0.0)  # the first epoch is validated
    clock.record(0.0, 1.0)  # it took 1 s
    assert not clock.due(1, False, now=5.0)
    assert clock.due(2, False, now=10.0)  # 9 s of training since: 1 s of validation is 10 %
    assert clock.due(3, True, now=10.5)  # the last epoch always
    with pytest.raises(ConfigError, match="val_every"):
        ValidationClock(0)


def test_ema_selection_resumes_exactly(tmp_path: Path) -> None:
    extra = ("train.checkpoint_selection=ema", "train.epochs=3")
    full = train(tiny_config(tmp_path / "full", *extra))
    train(tiny_config(tmp_path / "part", "train.checkpoint_selection=ema", "train.epochs=2"))
    resumed = train(tiny_config(tmp_path / "part", *extra), resume=True)
    assert resumed.best_epoch == full.best_epoch
    assert [r["val_dice_ema"] for r in resumed.history] == pytest.approx(
        [r["val_dice_ema"] for r in full.history]
    )


def test_one_slow_validation_does_not_space_out_the_rest() -> None:
    from medseg.engine.train import ValidationClock

    clock = ValidationClock("auto")
    clock.record(0.0, 1.0)  # 1 s
    clock.record(20.0, 60.0)  # 40 s on a busy machine
    assert clock.due(5, False, now=69.0)  # 9 × the fastest (1 s) has passed
