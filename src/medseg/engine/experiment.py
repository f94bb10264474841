"""One experiment = train a config, reload its best checkpoint, evaluate it on val or test.

Benchmarks and ablations are loops over configs that call :func:`train_and_evaluate`; none of
them re-implements the steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from medseg.config import Config
from medseg.data.loading import load_splits
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.evaluate import (
    EvaluationResult,
    evaluate_model,
    provenance,
    save_overlays_for,
    write_evaluation,
)
from medseg.engine.inference import load_model, resolve_device, sliding_window_from_config
from medseg.engine.train import TrainResult, train
from medseg.errors import DataError
from medseg.report.figures import save_training_curves


@dataclass
class ExperimentResult:
    train: TrainResult
    evaluation: EvaluationResult
    train_time_s: float
    n_parameters: int
    predictions: dict[str, Any] = field(default_factory=dict)  # binary masks by sample key

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
    cfg: Config,
    split: str = "test",
    console: Console | None = None,
    progress: bool = False,
    resume: bool = False,
) -> ExperimentResult:
    """Train ``cfg`` into ``cfg.output_dir``, then score its best checkpoint on ``split``.

    ``resume=True`` continues an interrupted run from its ``last.pt``.

    Writes the training outputs plus ``metrics.csv``, ``summary.json``, ``curves.png`` and
    ``overlay.png`` in ``cfg.output_dir``.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got '{split}'")
    console = console or Console()
    start = time.perf_counter()
    result = train(cfg, resume=resume, console=console)
    train_time = time.perf_counter() - start
    return evaluate_best(result, split, console, progress, train_time)


def finished_training(output_dir: str | Path) -> TrainResult:
    """The :class:`TrainResult` of a run that has already trained, read from its ``last.pt``."""
    out = Path(output_dir)
    state = load_checkpoint(out / "last.pt")
    return TrainResult(
        output_dir=out,
        history=list(state["history"]),
        best_dice=float(state["best_dice"]),
        best_epoch=int(state["best_epoch"]),
    )


def evaluate_best(
    result: TrainResult,
    split: str = "test",
    console: Console | None = None,
    progress: bool = False,
    train_time_s: float | None = None,
) -> ExperimentResult:
    """Score a trained run's ``best.pt`` on ``split`` and write its metrics, curves and overlays."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got '{split}'")
    out = result.output_dir
    save_training_curves(result.history, out / "curves.png")
    model, stored = load_model(result.best_checkpoint, torch.device("cpu"))
    device = resolve_device(stored.train.device)
    model = model.to(device)
    splits = load_splits(stored.data)
    samples = splits.test if split == "test" else splits.val
    if not samples:
        raise DataError(f"the config defines no '{split}' data (set data.test_source)", out)
    evaluation, predictions = evaluate_model(
        model,
        samples,
        stored.data.image_size,
        stored.data.intensity,
        stored.eval,
        device,
        progress,
        window=sliding_window_from_config(stored),
        tta_flips=stored.inference.tta_flips,
        target_spacing=stored.data.target_spacing,
        crop_nonzero=stored.data.crop_nonzero,
    )
    evaluation.summary["provenance"] = provenance(result.best_checkpoint, split, device)
    write_evaluation(evaluation, out)
    save_overlays_for(samples, predictions, out / "overlay.png", stored.eval.n_overlays)
    n_parameters = sum(p.numel() for p in model.parameters())
    if train_time_s is None:  # cumulative over resumed sessions, from the history
        train_time_s = float(result.history[-1]["elapsed_s"]) if result.history else 0.0
    return ExperimentResult(result, evaluation, train_time_s, n_parameters, predictions)
