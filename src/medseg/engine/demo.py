"""The built-in demo: phantom in the micro-US layout → train a small U-Net → evaluate per patient."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from medseg.config import Config
from medseg.data.phantom import write_phantom_microus
from medseg.engine.evaluate import EvaluationResult
from medseg.engine.experiment import train_and_evaluate


def demo_config(out_dir: str | Path, data_root: str | Path) -> Config:
    """The demo recipe: the defaults, reading the phantom through the ``microus`` source."""
    cfg = Config(output_dir=str(out_dir))
    cfg.data.source = "microus"
    cfg.data.options = {"root": str(data_root), "subset": "train"}
    cfg.data.test_source = "microus"
    cfg.data.test_options = {"root": str(data_root), "subset": "test"}
    return cfg


def run_demo(
    out_dir: str | Path = "runs/demo",
    n_train: int = 8,
    n_test: int = 4,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    console: Console | None = None,
) -> EvaluationResult:
    """Write the phantom, train, evaluate on the test patients, and write figures and tables."""
    console = console or Console()
    out = Path(out_dir)
    data_root = write_phantom_microus(out / "data", n_train=n_train, n_test=n_test, seed=seed)
    console.print(f"phantom written in the micro-US layout to {data_root}")
    cfg = demo_config(out, data_root)
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
    """Per-patient Dice / HD95 / ASSD / NSD, then mean and median rows."""
    table = Table(title=title)
    for column in ("patient", "Dice", "IoU", "HD95 (mm)", "ASSD (mm)", "NSD"):
        table.add_column(column, justify="right" if column != "patient" else "left")
    frame = evaluation.per_patient
    for _, row in frame.iterrows():
        table.add_row(
            str(row["case"]),
            f"{row['dice']:.4f}",
            f"{row['iou']:.4f}",
            f"{row['hd95_mm']:.2f}",
            f"{row['assd_mm']:.2f}",
            f"{row['nsd']:.4f}",
        )
    stats = evaluation.summary["per_patient"]
    for label, key in (("mean", "mean"), ("median", "median")):
        table.add_row(
            f"[bold]{label}",
            *(
                f"{stats[m][key]:.4f}" if m in ("dice", "iou", "nsd") else f"{stats[m][key]:.2f}"
                for m in ("dice", "iou", "hd95_mm", "assd_mm", "nsd")
            ),
        )
    return table
