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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from medseg.config import DataConfig, SplitConfig, save_config
from medseg.data.fingerprint import Fingerprint, compute_fingerprint
from medseg.data.loading import DataSplits, load_splits
from medseg.engine.budget_checks import (
    check_memory_bytes,
    check_minutes,
    check_plan_affordable,
    check_trainable_shape,
    memory_error,
)
from medseg.engine.choose_postprocessing import choose_postprocessing
from medseg.engine.dims_trial import TRIAL_SHARE, choose_by_trial, run_dims_trial, trial_applies
from medseg.engine.evaluate import EvaluationResult, evaluate_checkpoint
from medseg.engine.inference import resolve_device
from medseg.engine.train import TrainResult, train
from medseg.errors import ConfigError
from medseg.output_dirs import prepare_output_dir
from medseg.plan import Budget, Plan, make_plan, plan_to_config, write_plan
from medseg.plan.timing import StepTimer
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
    n_validation_cases: int | None = None,
    timed: bool = True,
    spatial_dims: int | None = None,
) -> Plan:
    """The plan of ``fingerprint`` for ``minutes`` on ``device`` (its free memory unless given).

    ``timed``: the step time of each candidate network comes from a few real steps on ``device``
    (:class:`~medseg.plan.timing.StepTimer`), else from a FLOP estimate. ``spatial_dims`` forces 2D
    or 3D.
    """
    check_minutes(minutes)
    budget = Budget(
        memory_bytes=available_memory_bytes(device)
        if memory_bytes is None
        else check_memory_bytes(memory_bytes),
        minutes=minutes,
        device="cuda" if device.type == "cuda" else "cpu",
        step_timer=StepTimer(device) if timed else None,
    )
    try:
        plan = make_plan(
            fingerprint, budget, spatial_dims=spatial_dims, n_validation_cases=n_validation_cases
        )
    except ConfigError as exc:
        if "memory budget" not in str(exc):
            raise
        raise memory_error(exc, memory_bytes, budget.device) from exc
    check_plan_affordable(plan, minutes)
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


def fingerprint_source(data: DataConfig, modality: str | None = None) -> tuple[DataSplits, Fingerprint]:
    """Load ``data``, split it, and fingerprint its training cases (``modality`` overrides the
    source's: DICOM, nnU-Net and Decathlon files name it; image folders do not)."""
    splits = load_splits(data)
    return splits, compute_fingerprint(splits.train, modality=modality)


def _announce(
    plan: Plan, fingerprint: Fingerprint, seconds: float, minutes: float, device: str, console: Console
) -> None:
    console.print(
        f"[bold]medseg plan[/]: {fingerprint.n_cases} training cases planned in {seconds:.0f} s → "
        f"{plan.spatial_dims}D, patch {'×'.join(map(str, plan.patch_size))}, batch {plan.batch_size}, "
        f"widths {plan.model['options']['features']}, ~{plan.total_steps} steps in {minutes:g} min "
        f"on {device}"
    )


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
    check_minutes(minutes)
    check_memory_bytes(memory_bytes)
    splits, fingerprint = fingerprint_source(data, modality)
    check_trainable_shape(fingerprint, str(data.options.get("root") or data.source))
    plan = plan_for(fingerprint, minutes, torch_device, memory_bytes, data, len(splits.val_cases))
    _announce(plan, fingerprint, time.perf_counter() - start, minutes, torch_device.type, console)
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
    overwrite: bool = False,
    command: str | None = None,
) -> FitResult:
    """Plan, train for ``minutes``, validate and report into ``out`` (see the module docstring).

    ``config_overrides`` (``key=value``, as ``medseg train --set``) edit the planned config;
    ``modality`` as in :func:`plan_source`. An existing non-empty ``out`` is an error unless
    ``overwrite``, which replaces it as a whole (:func:`~medseg.output_dirs.prepare_output_dir`).
    ``command`` is the command line the report quotes, as the user typed it (``medseg fit`` passes
    its own; default: this Python call).
    """
    from medseg.config import apply_overrides
    from medseg.report.html import build_report

    check_minutes(minutes)
    console = console or Console()
    data = data_config(source, options, val_fraction, seed)
    out = prepare_output_dir(out, "--out", overwrite, "medseg fit")
    plan, minutes_left = _plan_with_trial(
        data, minutes, device, memory_bytes, modality, out, seed, console, config_overrides or []
    )
    write_plan(plan, out / "plan.yaml")
    cfg = plan_to_config(plan, out, minutes=minutes_left, device=device, seed=seed)
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
    call = f"medseg.engine.fit.fit({source!r}, {options!r}, minutes={minutes:g}, out={str(out)!r})"
    build_report([out], out / "report.html", command=command or call)
    cases = evaluation.summary["per_case"]
    patients = evaluation.summary.get("per_patient", cases)
    # a data set without subject ids (the Decathlon's) has one "patient" per case: call them cases
    unit = "patients" if patients["n"] < cases["n"] else "cases"
    console.print(
        f"validation ({patients['n']} {unit}): Dice mean {patients['dice']['mean']:.4f}, "
        f"median {patients['dice']['median']:.4f}; wrote {out / 'report.html'}; "
        f"predict with: medseg predict {out / 'best.pt'} INPUT"
    )
    return FitResult(out, plan, result, evaluation, train_minutes)


def _plan_with_trial(
    data: DataConfig,
    minutes: float,
    device: str,
    memory_bytes: int | None,
    modality: str | None,
    out: Path,
    seed: int,
    console: Console,
    overrides: list[str],
) -> tuple[Plan, float]:
    """The rule's plan, or the winner of a 2D/3D trial when the budget allows one
    (:mod:`medseg.engine.dims_trial`); and the minutes left to train it."""
    torch_device = resolve_device(device)
    start = time.perf_counter()
    check_memory_bytes(memory_bytes)
    splits, fingerprint = fingerprint_source(data, modality)
    check_trainable_shape(fingerprint, str(data.options.get("root") or data.source))
    n_val = len(splits.val_cases)
    plan = plan_for(fingerprint, minutes, torch_device, memory_bytes, data, n_val)
    _announce(plan, fingerprint, time.perf_counter() - start, minutes, torch_device.type, console)
    skip = trial_applies(fingerprint, minutes)
    if skip is not None:
        plan.reasons["dims_trial"] = skip
        return plan, minutes
    trial_minutes = TRIAL_SHARE * minutes
    other = plan_for(
        fingerprint, minutes, torch_device, memory_bytes, data, n_val, spatial_dims=5 - plan.spatial_dims
    )
    scores = run_dims_trial([plan, other], trial_minutes, out, device, seed, console, overrides)
    chosen = choose_by_trial(plan, other, scores)
    chosen.reasons["dims_trial"] = (
        f"both trained {trial_minutes:.2g} min ({TRIAL_SHARE:.0%} of the budget each) on the same split"
    )
    return chosen, minutes - 2 * trial_minutes
