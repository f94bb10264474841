"""Slow runs on the real data (``$MEDSEG_SHARED_DATA``; deselected by default: ``pytest -m slow``)."""

from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from medseg.config import load_config
from medseg.engine.evaluate import evaluate_checkpoint
from medseg.engine.train import train

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_lgg_short_training_and_evaluation(shared_dataset: Callable[..., Path], tmp_path: Path) -> None:
    root = shared_dataset("lgg_mri", "kaggle_3m")
    patients = sorted(p.name for p in root.iterdir() if p.is_dir())[:6]
    cfg = load_config(
        None,
        [
            "data.source=lgg",
            f"data.options={{root: '{root}'}}",
            "data.in_channels=3",
            "data.image_size=[64, 64]",
            f"data.split.val_cases={patients[:2]}",
            f"data.split.train_cases={patients[2:]}",
            "model.options={features: [8, 16, 32, 64]}",
            "loss.name=dice",
            "optim.name=adam",
            "optim.lr=0.001",
            "train.epochs=2",
            "train.progress=false",
            "train.tensorboard=false",
        ],
    )
    cfg.output_dir = str(tmp_path / "lgg")
    result = train(cfg, console=Console(quiet=True))
    evaluation = evaluate_checkpoint(result.best_checkpoint, tmp_path / "eval", split="val", progress=False)
    assert len(evaluation.per_patient) == 2
    assert evaluation.per_patient["hd95_mm"].notna().all()
