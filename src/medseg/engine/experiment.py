"""One experiment = train a config, reload its best checkpoint, evaluate it on val or test.

Benchmarks and ablations are loops over configs that call :func:`train_and_evaluate`; none of
them re-implements the steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from medseg.config import Config
from medseg.data.loading import load_splits
from medseg.engine.evaluate import EvaluationResult, evaluate_model, save_overlays_for, write_evaluation
from medseg.engine.predict import load_model, resolve_device
from medseg.engine.train import TrainResult, train
from medseg.errors import DataError
from medseg.report.figures import save_training_curves


@dataclass
class ExperimentResult:
    train: TrainResult
    evaluation: EvaluationResult
    train_time_s: float
    n_parameters: int

    def row(self) -> dict[str, Any]:
        """A flat summary row (per-patient means and medians) for benchmark tables."""
        patients = self.evaluation.summary["per_patient"]
        row: dict[str, Any] = {
            "epochs": len(self.train.history),
            "best_epoch": self.train.best_epoch,
            "train_min": self.train_time_s / 60,
            "params_M": self.n_parameters / 1e6,
            "n_patients": patients["n"],
        }
        for metric in ("dice", "hd95_mm", "assd_mm", "nsd"):
            row[f"{metric}_mean"] = patients[metric]["mean"]
            row[f"{metric}_median"] = patients[metric]["median"]
        official = self.evaluation.summary.get("protocol_microsegnet")
        if official is not None:
            row["microsegnet_dice_mean"] = official["dice"]["mean"]
            row["microsegnet_hd95_mm_mean"] = official["hd95_mm"]["mean"]
        return row


def train_and_evaluate(
    cfg: Config, split: str = "test", console: Console | None = None, progress: bool = False
) -> ExperimentResult:
    """Train ``cfg`` into ``cfg.output_dir``, then score its best checkpoint on ``split``.

    Writes the training outputs plus ``metrics.csv``, ``summary.json``, ``curves.png`` and
    ``overlay.png`` in ``cfg.output_dir``.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got '{split}'")
    console = console or Console()
    start = time.perf_counter()
    result = train(cfg, console=console)
    train_time = time.perf_counter() - start
    out = Path(cfg.output_dir)
    save_training_curves(result.history, out / "curves.png")
    device = resolve_device(cfg.train.device)
    model, stored = load_model(result.best_checkpoint, device)
    splits = load_splits(stored.data)
    samples = splits.test if split == "test" else splits.val
    if not samples:
        raise DataError(f"the config defines no '{split}' data (set data.test_source)", out)
    evaluation, predictions = evaluate_model(
        model, samples, stored.data.image_size, stored.data.intensity, stored.eval, device, progress
    )
    write_evaluation(evaluation, out)
    save_overlays_for(samples, predictions, out / "overlay.png", stored.eval.n_overlays)
    n_parameters = sum(p.numel() for p in model.parameters())
    return ExperimentResult(result, evaluation, train_time, n_parameters)
