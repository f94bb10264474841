"""The built-in demo: phantom in the micro-US layout → train MicroSegNet-tiny with AG-BCE → evaluate.

This is the mission's core path (papers 000/001) at CPU size: the phantom's expert and non-expert
annotations drive the annotation-guided BCE with multi-scale deep supervision, and the test
patients are scored under both evaluation protocols (``volumetric`` and ``microsegnet``).
``model="unet"`` runs the same path with a plain U-Net and Dice+BCE instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from medseg.config import Config
from medseg.data.phantom import write_phantom_microus
from medseg.engine.evaluate import EvaluationResult
from medseg.engine.experiment import train_and_evaluate

DEMO_MODELS = ("microsegnet", "unet")


def demo_config(out_dir: str | Path, data_root: str | Path, model: str = "microsegnet") -> Config:
    """The demo recipe, reading the phantom through the ``microus`` source.

    ``microsegnet``: MicroSegNet-tiny (TransUNet hybrid + deep supervision at 1/2, 1/4, 1/8) with
    AG-BCE (W_hard 4, ks 4/3/2/1 per scale, the official code's defaults) and AdamW, since the
    paper's SGD recipe needs thousands of iterations that a CPU demo does not have.
    ``unet``: the defaults of :class:`~medseg.config.Config` (a small U-Net with Dice+BCE).
    """
    if model not in DEMO_MODELS:
        raise ValueError(f"demo model must be one of {DEMO_MODELS}, got '{model}'")
    cfg = Config(output_dir=str(out_dir))
    cfg.data.source = "microus"
    cfg.data.options = {"root": str(data_root), "subset": "train"}
    cfg.data.test_source = "microus"
    cfg.data.test_options = {"root": str(data_root), "subset": "test"}
    cfg.eval.protocols = ["volumetric", "microsegnet"]
    cfg.eval.microsegnet_pixel_mm = None  # the phantom's header spacing, not the real 0.033586 mm
    if model == "microsegnet":
        cfg.data.image_size = [128, 128]
        cfg.model.name = "microsegnet"
        cfg.model.options = {"variant": "tiny"}
        cfg.loss.name = "ag_bce_ds"
        cfg.loss.options = {"w_hard": 4.0, "ks_per_scale": [4, 3, 2, 1]}
        cfg.optim.lr = 2e-3
        cfg.train.batch_size = 8
        cfg.train.epochs = 15
    return cfg


def run_demo(
    out_dir: str | Path = "runs/demo",
    n_train: int = 8,
    n_test: int = 4,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
    model: str = "microsegnet",
) -> EvaluationResult:
    """Write the phantom, train, evaluate on the test patients, and write figures and tables."""
    console = console or Console()
    out = Path(out_dir)
    data_root = write_phantom_microus(out / "data", n_train=n_train, n_test=n_test, seed=seed)
    console.print(f"phantom written in the micro-US layout to {data_root}")
    cfg = demo_config(out, data_root, model)
    cfg.train.seed = seed
    cfg.train.progress = progress
    if epochs is not None:
        cfg.train.epochs = epochs
    experiment = train_and_evaluate(cfg, split="test", console=console, progress=progress)
    evaluation = experiment.evaluation
    console.print(
        results_table(
            evaluation,
            title=f"demo: {len(evaluation.per_patient)} test patients "
            f"(best epoch {experiment.train.best_epoch})",
        )
    )
    console.print(f"wrote {out}/metrics.csv, summary.json, curves.png, overlay.png, best.pt, last.pt")
    return evaluation


def results_table(evaluation: EvaluationResult, title: str = "per-patient results") -> Table:
    """Per-patient metrics, then mean and median rows.

    Columns under "volumetric" are 3D per patient at the header spacing; with the ``microsegnet``
    protocol, two more columns give the official MicroSegNet script's numbers.
    """
    frame = evaluation.per_patient
    official = "microsegnet_dice" in frame
    columns = {"dice": "Dice", "iou": "IoU", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)", "nsd": "NSD"}
    if official:
        columns.update(
            {
                "microsegnet_dice": "Dice (microsegnet protocol)",
                "microsegnet_hd95_mm": "HD95 mm (microsegnet protocol)",
            }
        )
    table = Table(title=title, caption="volumetric protocol unless marked" if official else None)
    table.add_column("patient")
    for label in columns.values():
        table.add_column(label, justify="right")

    def fmt(metric: str, value: float) -> str:
        return f"{value:.2f}" if metric.endswith("_mm") else f"{value:.4f}"

    for _, row in frame.iterrows():
        table.add_row(str(row["case"]), *(fmt(m, row[m]) for m in columns))
    for label, reducer in (("mean", np.mean), ("median", np.median)):
        table.add_row(f"[bold]{label}", *(fmt(m, float(reducer(frame[m].to_numpy(float)))) for m in columns))
    return table
