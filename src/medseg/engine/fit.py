"""One command for a new data set: fingerprint → plan → train in a time budget → validate → report.

``medseg fit --source NAME --root PATH --minutes N --out DIR`` (:func:`fit`):

1. loads the source and splits it by patient (``data.split``: holdout 20 %, seed 0, unless given);
2. fingerprints the *training* cases (:func:`~medseg.data.fingerprint.compute_fingerprint`) and
   plans for the machine (:func:`plan_for`: device, its memory, the minutes) → ``DIR/plan.yaml``;
3. trains the plan (:func:`~medseg.plan.plan_to_config` → ``DIR/config.yaml``); the lr anneals to its
   end value when the minutes are spent, and ``DIR/best.pt`` is the epoch with the best moving
   average of the validation Dice; keeping the largest connected component (per class) is decided
   on the validation cases and stored in ``best.pt`` (:mod:`medseg.engine.choose_postprocessing`);
4. scores ``best.pt`` on the validation cases (``DIR/metrics.csv``, ``summary.json``) and writes
   ``DIR/report.html``.

``medseg predict DIR/best.pt`` then segments new cases. :func:`plan_source` is steps 1–2 alone
(``medseg plan``).
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from medseg.config import DataConfig, SplitConfig, save_config
from medseg.data.fingerprint import Fingerprint, compute_fingerprint
from medseg.data.loading import load_splits
from medseg.engine.choose_postprocessing import choose_postprocessing
from medseg.engine.evaluate import EvaluationResult, evaluate_checkpoint
from medseg.engine.inference import resolve_device
from medseg.engine.train import TrainResult, train
from medseg.errors import ConfigError
from medseg.plan import Budget, Plan, make_plan, plan_to_config, write_plan
from medseg.report.figures import save_training_curves


@dataclass
class FitResult:
    """What ``medseg fit`` leaves in its folder."""

    output_dir: Path
    plan: Plan
    train: TrainResult
    evaluation: EvaluationResult
    train_minutes: float

    @property
    def best_checkpoint(self) -> Path:
        return self.output_dir / "best.pt"

    @property
    def report(self) -> Path:
        return self.output_dir / "report.html"


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, else the machine's available RAM (``/proc/meminfo``)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2


def data_config(
    source: str, options: dict[str, Any], val_fraction: float = 0.2, split_seed: int = 0
) -> DataConfig:
    """The data section of a fit: ``source`` with ``options``, a seeded patient-level holdout."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return DataConfig(
        source=source,
        options=dict(options),
        split=SplitConfig(method="holdout", val_fraction=val_fraction, seed=split_seed),
    )


def plan_for(
    fingerprint: Fingerprint,
    minutes: float,
    device: torch.device,
    memory_bytes: int | None = None,
    data: DataConfig | None = None,
) -> Plan:
    """The plan of ``fingerprint`` for ``minutes`` on ``device`` (its free memory unless given)."""
    budget = Budget(
        memory_bytes=memory_bytes or available_memory_bytes(device),
        minutes=minutes,
        device="cuda" if device.type == "cuda" else "cpu",
    )
    plan = make_plan(fingerprint, budget)
    if data is not None:
        plan.data = {
            "source": data.source,
            "options": dict(data.options),
            "split": {
                "method": data.split.method,
                "val_fraction": data.split.val_fraction,
                "seed": data.split.seed,
            },
        }
    return plan


def plan_source(
    data: DataConfig,
    minutes: float,
    device: str = "auto",
    memory_bytes: int | None = None,
    out: str | Path | None = None,
    console: Console | None = None,
    modality: str | None = None,
) -> Plan:
    """Load ``data``, fingerprint its training cases and plan for ``minutes`` (written to ``out``).

    ``modality`` (``ct``, ``mr``, ``us``, ...) overrides what the source reports (DICOM, nnU-Net and
    Decathlon files name it; image folders do not): ``ct`` plans a fixed intensity window.
    """
    console = console or Console()
    torch_device = resolve_device(device)
    start = time.perf_counter()
    splits = load_splits(data)
    fingerprint = compute_fingerprint(splits.train, modality=modality)
    plan = plan_for(fingerprint, minutes, torch_device, memory_bytes, data)
    console.print(
        f"[bold]medseg plan[/]: {fingerprint.n_cases} training cases fingerprinted in "
        f"{time.perf_counter() - start:.0f} s → {plan.spatial_dims}D, patch "
        f"{'×'.join(map(str, plan.patch_size))}, batch {plan.batch_size}, "
        f"widths {plan.model['options']['features']}, ~{plan.total_steps} steps in {minutes:g} min "
        f"on {torch_device.type}"
    )
    if out is not None:
        write_plan(plan, out)
        console.print(f"wrote {out}")
    return plan


def fit(
    source: str,
    options: dict[str, Any],
    minutes: float,
    out: str | Path,
    device: str = "auto",
    seed: int = 0,
    val_fraction: float = 0.2,
    memory_bytes: int | None = None,
    progress: bool = True,
    console: Console | None = None,
    config_overrides: list[str] | None = None,
    modality: str | None = None,
) -> FitResult:
    """Plan, train for ``minutes``, validate and report into ``out`` (see the module docstring).

    ``config_overrides`` (``key=value``, as ``medseg train --set``) edit the planned config;
    ``modality`` as in :func:`plan_source`.
    """
    from medseg.config import apply_overrides
    from medseg.report.html import build_report

    if minutes <= 0:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = data_config(source, options, val_fraction, seed)
    plan = plan_source(data, minutes, device, memory_bytes, out / "plan.yaml", console, modality)
    cfg = plan_to_config(plan, out, minutes=minutes, device=device, seed=seed)
    if config_overrides:
        cfg = apply_overrides(cfg, config_overrides)
    cfg.train.progress = progress
    save_config(cfg, out / "config.yaml")
    start = time.perf_counter()
    result = train(cfg, console=console)
    train_minutes = (time.perf_counter() - start) / 60
    save_training_curves(result.history, out / "curves.png")
    console.print(
        f"trained {len(result.history)} epochs in {train_minutes:.1f} min; best.pt = epoch "
        f"{result.best_epoch} (validation Dice {result.best_dice:.4f}, "
        f"selected by {cfg.train.checkpoint_selection})"
    )
    postprocessing = choose_postprocessing(out / "best.pt", device=device, progress=progress)  # into best.pt
    console.print(f"postprocessing (validation Dice): {postprocessing.summary()}")
    evaluation = evaluate_checkpoint(out / "best.pt", out, split="val", device=device, progress=progress)
    command = "medseg fit " + shlex.join(
        [
            "--source",
            source,
            *[f"-o{k}={v}" for k, v in options.items()],
            *(["--modality", modality] if modality else []),
            "--minutes",
            f"{minutes:g}",
            "--out",
            str(out),
        ]
    )
    build_report([out], out / "report.html", command=command)
    patients = evaluation.summary["per_patient"]
    console.print(
        f"validation ({patients['n']} patients): Dice mean {patients['dice']['mean']:.4f}, "
        f"median {patients['dice']['median']:.4f}; wrote {out / 'report.html'}; "
        f"predict with: medseg predict {out / 'best.pt'} INPUT"
    )
    return FitResult(out, plan, result, evaluation, train_minutes)
