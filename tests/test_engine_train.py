"""Training end to end on a tiny phantom: checkpoints, history, exact resume, interruption."""

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
