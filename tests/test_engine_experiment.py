from pathlib import Path

import pytest
from rich.console import Console

from medseg.config import load_config
from medseg.engine.experiment import train_and_evaluate
from medseg.errors import DataError


def test_train_and_evaluate_on_validation(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}",
            "data.image_size=[32, 32]",
            "model.options={features: [4, 8]}",
            "train.epochs=1",
            "train.progress=false",
            "train.tensorboard=false",
            "eval.protocols=[volumetric, microsegnet]",
        ],
    )
    cfg.output_dir = str(tmp_path / "exp")
    result = train_and_evaluate(cfg, split="val", console=Console(quiet=True))
    row = result.row()
    assert row["n_patients"] == 1 and row["epochs"] == 1
    assert 0 <= row["dice_mean"] <= 1 and "microsegnet_dice_mean" in row
    assert (tmp_path / "exp" / "overlay.png").is_file()
    with pytest.raises(ValueError, match="split"):
        train_and_evaluate(cfg, split="train")
    with pytest.raises(DataError, match="no .test. data"):
        train_and_evaluate(cfg, split="test", console=Console(quiet=True))
