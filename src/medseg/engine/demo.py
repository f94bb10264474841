"""The built-in demo: phantom in the micro-US layout → train MicroSegNet-tiny with AG-BCE → evaluate.

This is the mission's core path (papers 000/001) at CPU size: the phantom's expert and non-expert
annotations drive the annotation-guided BCE with multi-scale deep supervision, and the test
patients are scored under both evaluation protocols (``volumetric`` and ``microsegnet``).
``model="unet"`` runs the same path with a plain U-Net and Dice+BCE instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from medseg.config import Config, apply_overrides
from medseg.data.phantom import write_phantom_microus
from medseg.engine.evaluate import EvaluationResult
from medseg.engine.experiment import train_and_evaluate
from medseg.report.html import build_report

DEMO_MODELS = ("microsegnet", "unet")


def phantom_recipe(
    data_root: str | Path,
    image_size: int = 128,
    paper_sgd: bool = False,
    overrides: Sequence[str] = (),
) -> Config:
    """MicroSegNet-tiny with AG-BCE on the phantom written in the micro-US layout at ``data_root``.

    Deep supervision at 1/2, 1/4, 1/8 with the official kernel sizes 4/3/2/1 and W_hard 4; both
    evaluation protocols (HD95 of the ``microsegnet`` protocol in the phantom's own pixel size).
    The optimiser is AdamW 2e-3 by default: paper 000's SGD 0.01 (``paper_sgd=True``) is tuned for
    thousands of iterations per epoch, which a CPU run on the phantom does not have.
    ``overrides`` are ``key=value`` strings applied last (as ``--set``).
    """
    cfg = Config()
    cfg.data.source = "microus"
    cfg.data.options = {"root": str(data_root), "subset": "train"}
    cfg.data.test_source = "microus"
    cfg.data.test_options = {"root": str(data_root), "subset": "test"}
    cfg.data.image_size = [image_size, image_size]
    cfg.eval.protocols = ["volumetric", "microsegnet"]
    cfg.eval.microsegnet_pixel_mm = None  # the phantom's header spacing, not the real 0.033586 mm
    cfg.model.name = "microsegnet"
    cfg.model.options = {"variant": "tiny"}
    cfg.loss.name = "ag_bce_ds"
    cfg.loss.options = {"w_hard": 4.0, "ks_per_scale": [4, 3, 2, 1]}
    if paper_sgd:
        cfg.optim.name, cfg.optim.lr, cfg.optim.options = "sgd", 0.01, {"momentum": 0.9}
    else:
        cfg.optim.name, cfg.optim.lr = "adamw", 2e-3
    cfg.optim.scheduler = "poly"
    cfg.train.batch_size = 8
    cfg.train.epochs = 15
    cfg.train.progress = False
    cfg.train.tensorboard = False
    return apply_overrides(cfg, list(overrides))


def demo_config(out_dir: str | Path, data_root: str | Path, model: str = "microsegnet") -> Config:
    """The demo recipe, reading the phantom through the ``microus`` source.

    ``microsegnet``: :func:`phantom_recipe` (MicroSegNet-tiny, AG-BCE, deep supervision).
    ``unet``: the same data and protocols with a small U-Net and Dice+BCE.
    """
    if model not in DEMO_MODELS:
        raise ValueError(f"demo model must be one of {DEMO_MODELS}, got '{model}'")
    if model == "microsegnet":
        cfg = phantom_recipe(data_root)
    else:  # the same data and protocols with a small U-Net, Dice+BCE (medseg's Config defaults)
        cfg = phantom_recipe(
            data_root,
            image_size=96,
            overrides=[
                "model.name=unet",
                "model.options={features: [16, 32, 64, 128]}",
                "loss.name=dice_bce",
                "loss.options={}",
                "optim.lr=0.003",
                "train.batch_size=16",
                "train.epochs=20",
            ],
        )
    cfg.train.tensorboard = True
    cfg.output_dir = str(out_dir)
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
    report = build_report([out], out / "report.html", command="medseg demo")
    console.print(f"wrote {out}/metrics.csv, summary.json, curves.png, overlay.png, best.pt, last.pt")
    console.print(f"open {report} in a browser: the whole result on one offline page")
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
        columns.update({"microsegnet_dice": "official Dice", "microsegnet_hd95_mm": "official HD95 (mm)"})
    table = Table(
        title=title, caption="volumetric protocol; official = the microsegnet protocol" if official else None
    )
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
