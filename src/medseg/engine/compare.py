"""``medseg compare GRID.yaml``: a grid of runs (model × loss × optimizer × any config key) on one
data set, with one patient split and one seed, summarised as paper 004's tables (§6.7, §7.7) and plots.

A grid file::

    name: lgg_paper004
    output_dir: runs/compare_lgg_paper004
    extends: other_grid.yaml        # optional: start from another grid, then apply this file
    evaluate_on: val                # the split every run is scored on, per volume
    base: {data: ..., train: ...}   # a training config shared by every run (same schema as `medseg train`)
    set: [train.epochs=5]           # overrides applied to every run (after `base`)
    axes:                           # axis → variant → dotted overrides; runs are the product
      model:
        unet: {model.name: unet}
        unetpp: {model.name: unetpp}
      loss:
        dice: {loss.name: dice}
      optim:
        adam: {optim.name: adam, optim.lr: 1.0e-4}
    exclude:                        # drop the combinations that match every key given
      - {model: unetpp, optim: sgd}

A run is named after its variants (``unet-dice-adam``) and lives in ``OUTPUT/runs/NAME``. Runs
that finished (``result.json``) are skipped; a run that was interrupted resumes from its
``last.pt``. Variants may not change the split or the seed: every run sees the same patients.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from medseg.config import Config, apply_overrides, config_from_dict, parse_override
from medseg.data.loading import load_splits
from medseg.data.sample import assign_keys
from medseg.engine.experiment import evaluate_best, finished_training, train_and_evaluate
from medseg.errors import ConfigError
from medseg.io_utils import atomic_write, read_yaml_mapping, write_csv_atomic, write_text_atomic
from medseg.report import figures
from medseg.report.html import build_report
from medseg.report.tables import markdown_table

GRID_KEYS = {
    "name",
    "output_dir",
    "extends",
    "evaluate_on",
    "base",
    "set",
    "axes",
    "exclude",
    "convergence_tolerance",
    "overlay_cases",
    "description",
}
# Keys that would give runs different patients or initialisations: a grid holds them fixed.
FIXED_PREFIXES = (
    "data.split",
    "data.source",
    "data.options",
    "data.test_source",
    "data.test_options",
    "train.seed",
    "output_dir",
)


@dataclass
class GridRun:
    """One cell of the grid: its name, the variant chosen on every axis, and its full config."""

    name: str
    variants: dict[str, str]
    overrides: dict[str, Any]
    config: Config


@dataclass
class Grid:
    name: str
    output_dir: Path
    evaluate_on: str
    runs: list[GridRun]
    convergence_tolerance: float = 0.01
    overlay_cases: int = 4
    axes: list[str] = field(default_factory=list)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key == "axes" and isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(dict(value))}  # a child's axis replaces the parent's
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _deep_merge(out[key], value)  # `options` mappings are replaced, as in configs
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_grid_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The grid file as a dict, with ``extends`` resolved (relative to the file) and merged under it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    tree = read_yaml_mapping(path, "grid file")
    unknown = sorted(set(tree) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown grid key(s) {unknown}; valid keys: {sorted(GRID_KEYS)}")
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    merged = read_grid_file(path.parent / parent, (*_seen, path))
    # `set` lists accumulate (parent first); everything else in the child wins.
    child_set = tree.pop("set", None) or []
    merged = _deep_merge(merged, tree)
    merged["set"] = [*(merged.get("set") or []), *child_set]
    return merged


def _check_fixed(key: str, where: str) -> None:
    if any(key == p or key.startswith(p + ".") for p in FIXED_PREFIXES):
        raise ConfigError(
            f"{where} sets '{key}': every run of a grid uses the same data, patient split and seed; "
            "put it in 'base' or 'set' instead"
        )


def build_grid(tree: Mapping[str, Any], overrides: Sequence[str] = (), where: str = "grid") -> Grid:
    """Expand a grid description into its runs (validated configs); ``overrides`` apply to all runs."""
    axes = tree.get("axes") or {}
    if not isinstance(axes, Mapping) or not axes:
        raise ConfigError(f"{where}: 'axes' must map axis names to {{variant: overrides}}")
    for axis, variants in axes.items():
        if not isinstance(variants, Mapping) or not variants:
            raise ConfigError(f"{where}: axis '{axis}' needs at least one variant {{name: {{key: value}}}}")
        for variant, sets in variants.items():
            if not isinstance(sets, Mapping):
                raise ConfigError(f"{where}: variant '{axis}.{variant}' must map config keys to values")
            for key in sets:
                _check_fixed(str(key), f"{where}: variant '{axis}.{variant}'")
    evaluate_on = str(tree.get("evaluate_on", "val"))
    if evaluate_on not in ("val", "test"):
        raise ConfigError(f"{where}: evaluate_on must be 'val' or 'test', got '{evaluate_on}'")
    base_cfg = config_from_dict(_deep_merge(Config().to_dict(), tree.get("base") or {}))  # as load_config
    base_cfg = apply_overrides(base_cfg, [*(tree.get("set") or []), *overrides])
    exclude = tree.get("exclude") or []
    for rule in exclude:
        if not isinstance(rule, Mapping) or not set(rule) <= set(axes):
            raise ConfigError(
                f"{where}: exclude rule {rule!r} must map axis names {sorted(axes)} to variants"
            )
    output_dir = Path(tree.get("output_dir") or f"runs/compare_{tree.get('name', 'grid')}")
    runs = []
    axis_names = list(axes)
    for combo in itertools.product(*(list(axes[a]) for a in axis_names)):
        variants = dict(zip(axis_names, (str(c) for c in combo), strict=True))
        if any(all(variants[a] == str(v) for a, v in rule.items()) for rule in exclude):
            continue
        sets: dict[str, Any] = {}
        for axis, variant in variants.items():
            sets.update(axes[axis][variant])
        name = "-".join(variants.values())
        cfg = apply_overrides(base_cfg, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
        cfg.output_dir = str(output_dir / "runs" / name)
        runs.append(GridRun(name, variants, sets, cfg))
    if not runs:
        raise ConfigError(f"{where}: every combination is excluded; nothing to run")
    return Grid(
        name=str(tree.get("name", output_dir.name)),
        output_dir=output_dir,
        evaluate_on=evaluate_on,
        runs=runs,
        convergence_tolerance=float(tree.get("convergence_tolerance", 0.01)),
        overlay_cases=int(tree.get("overlay_cases", 4)),
        axes=axis_names,
    )


def load_grid(path: str | Path, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> Grid:
    """Read, expand and validate a grid file (``medseg compare GRID.yaml``)."""
    tree = read_grid_file(path)
    if output_dir is not None:
        tree["output_dir"] = str(output_dir)
    for override in overrides:
        parse_override(override)  # fail early on a malformed override
    return build_grid(tree, overrides, where=str(path))


def convergence_epoch(val_dice: Sequence[float], tolerance: float = 0.01) -> int:
    """First epoch (1-based) whose validation Dice is within ``tolerance`` (relative) of the best.

    Paper 004 reports an "approximate converge time" without defining it; medseg defines
    convergence as the first epoch with Dice ≥ (1 − tolerance) · max Dice (tolerance 1%).
    """
    values = np.asarray(val_dice, dtype=float)
    if values.size == 0 or not np.isfinite(values).any():
        raise ValueError("no finite validation Dice to find convergence in")
    best = np.nanmax(values)
    reached = np.flatnonzero(np.nan_to_num(values, nan=-np.inf) >= (1.0 - tolerance) * best)
    return int(reached[0]) + 1


def _loss_label(cfg: Config) -> str:
    return cfg.loss.name


def run_row(
    run: GridRun, history: Sequence[Mapping[str, float]], summary: Mapping[str, Any], tolerance: float
) -> dict[str, Any]:
    """One row of the paper-004 table (§6.7/§7.7) for a finished run."""
    cfg = run.config
    dice = [float(h["val_dice"]) for h in history]
    conv = convergence_epoch(dice, tolerance)
    elapsed = [float(h["elapsed_s"]) for h in history]
    per_volume = summary["per_patient"]
    hd95 = per_volume.get("hd95_mm", {})
    return {
        "run": run.name,
        **{f"axis_{a}": v for a, v in run.variants.items()},
        "model": cfg.model.name,
        "loss": _loss_label(cfg),
        "optimizer": cfg.optim.name,
        "lr": cfg.optim.lr,
        "max_epoch": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
        "epochs_run": len(history),
        "convergence_epoch": conv,
        "convergence_min": elapsed[conv - 1] / 60.0,
        "train_min": elapsed[-1] / 60.0,
        "min_per_epoch": elapsed[-1] / 60.0 / max(1, len(history)),
        "best_val_dice": float(np.nanmax(dice)),
        "best_epoch": int(np.nanargmax(dice)) + 1,
        "n_volumes": int(per_volume["n"]),
        "dice_mean": float(per_volume["dice"]["mean"]),
        "dice_median": float(per_volume["dice"]["median"]),
        "hd95_mm_median": float(hd95.get("median", math.nan)),
        "hd95_mm_mean": float(hd95.get("mean", math.nan)),
    }


TABLE_COLUMNS = {
    "run": "run",
    "loss": "loss",
    "optimizer": "optimizer",
    "lr": "lr",
    "max_epoch": "max epoch",
    "batch_size": "batch",
    "epochs_run": "epochs run",
    "convergence_epoch": "conv. epoch",
    "convergence_min": "conv. time (min)",
    "train_min": "train time (min)",
    "min_per_epoch": "min/epoch",
    "best_val_dice": "best val mean DSC",
    "dice_mean": "DSC mean (vol)",
    "dice_median": "DSC median (vol)",
    "hd95_mm_median": "HD95 median (mm)",
}
TABLE_FORMATS = {
    "lr": "g",
    "convergence_min": ".1f",
    "train_min": ".1f",
    "min_per_epoch": ".2f",
    "hd95_mm_median": ".2f",
}


def write_tables(rows: Sequence[Mapping[str, Any]], out: Path, title: str) -> tuple[Path, Path]:
    """``compare.csv`` (every column) and ``compare.md`` (the paper-004 columns, best first)."""
    frame = pd.DataFrame(list(rows))
    csv_path = out / "compare.csv"
    write_csv_atomic(csv_path, frame, index=False, float_format="%.6f")
    ordered = frame.sort_values("best_val_dice", ascending=False)
    md = markdown_table(ordered, TABLE_COLUMNS, floatfmt=TABLE_FORMATS)
    md_path = out / "compare.md"
    write_text_atomic(
        md_path,
        f"# {title}\n\n{md}\n\n"
        "best val mean DSC: the best per-epoch validation Dice (mean over validation volumes, at the "
        "network input size). DSC mean/median and HD95: the best checkpoint scored per volume at the "
        "original resolution. conv. epoch: first epoch within 1% (relative) of the best val DSC.\n",
    )
    return csv_path, md_path


def _save_run_predictions(path: Path, predictions: Mapping[str, np.ndarray], keys: Sequence[str]) -> None:
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(
            handle, **{k.replace("#", "__"): predictions[k] for k in keys if k in predictions}
        )


def _load_run_predictions(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k.replace("__", "#"): data[k] for k in data.files}


def run_grid(
    grid: Grid,
    console: Console | None = None,
    progress: bool = True,
    only: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Run (or resume) every run of ``grid``, then write its tables and figures; returns the table."""
    console = console or Console()
    out = grid.output_dir
    out.mkdir(parents=True, exist_ok=True)
    runs = grid.runs
    if only:
        unknown = sorted(set(only) - {r.name for r in runs})
        if unknown:
            raise ConfigError(f"unknown run(s) {unknown}; the grid has {[r.name for r in runs]}")
        runs = [r for r in runs if r.name in only]
    write_text_atomic(
        out / "grid.json",
        json.dumps(
            {
                "name": grid.name,
                "runs": [
                    {"name": r.name, "variants": r.variants, "overrides": r.overrides} for r in grid.runs
                ],
            },
            indent=2,
            default=str,
        ),
    )
    overlay_keys: list[str] | None = None
    for index, run in enumerate(runs, 1):
        run_dir = Path(run.config.output_dir)
        result_path = run_dir / "result.json"
        spec = {"variants": run.variants, "config": comparable_config(run.config)}
        if result_path.is_file():
            stored = json.loads(result_path.read_text())
            if not same_run_config(stored.get("config"), spec["config"]):
                raise ConfigError(
                    f"{run_dir}: this run was done with a different config than the grid now gives; "
                    "delete the run folder or choose another output_dir"
                )
            console.print(f"[dim]run {index}/{len(runs)} {run.name}: done, skipped[/]")
            continue
        run.config.train.progress = progress
        trained_marker = run_dir / "trained.json"
        console.rule(f"run {index}/{len(runs)}: {run.name}")
        if trained_marker.is_file():
            experiment = evaluate_best(finished_training(run_dir), grid.evaluate_on, console, progress)
        else:
            resume = (run_dir / "last.pt").is_file()
            if resume:
                console.print(f"resuming {run.name} from {run_dir / 'last.pt'}")
            experiment = train_and_evaluate(run.config, grid.evaluate_on, console, progress, resume=resume)
        write_text_atomic(trained_marker, json.dumps({"epochs": len(experiment.train.history)}))
        if overlay_keys is None:
            overlay_keys = _overlay_keys(experiment.predictions, grid.overlay_cases)
        _save_run_predictions(run_dir / "overlay_predictions.npz", experiment.predictions, overlay_keys)
        row = run_row(
            run, experiment.train.history, experiment.evaluation.summary, grid.convergence_tolerance
        )
        payload = {
            **spec,
            "row": row,
            "history": experiment.train.history,
            "per_volume_dice": experiment.evaluation.per_patient["dice"].tolist(),
        }
        write_text_atomic(result_path, json.dumps(payload, indent=2, default=str))
        console.print(
            f"{run.name}: best val DSC {row['best_val_dice']:.4f}, per-volume DSC mean "
            f"{row['dice_mean']:.4f} / median {row['dice_median']:.4f}"
        )
    return summarize_grid(grid, load_splits, figures, console)


def comparable_config(cfg: Config) -> dict[str, Any]:
    """The run's config as plain JSON data, without display-only keys (progress bars)."""
    tree = json.loads(json.dumps(cfg.to_dict(), default=str))
    tree["train"].pop("progress", None)
    return tree


def same_run_config(stored: Any, current: dict[str, Any]) -> bool:
    """Whether a finished run's stored config is ``current``; keys that a later medseg added are
    read at their defaults (the behaviour the run had), so an upgrade does not orphan a grid."""
    if not isinstance(stored, dict):
        return False
    try:
        return comparable_config(config_from_dict(stored)) == current
    except (ConfigError, TypeError, ValueError):
        return False


def _overlay_keys(predictions: Mapping[str, np.ndarray], n: int) -> list[str]:
    return sorted(predictions)[:n]


def summarize_grid(grid: Grid, load_splits: Any, figures: Any, console: Console) -> pd.DataFrame:
    """Tables and figures from every finished run of the grid (unfinished runs are listed as missing)."""
    out = grid.output_dir
    finished = []
    for run in grid.runs:
        path = Path(run.config.output_dir) / "result.json"
        if path.is_file():
            finished.append((run, json.loads(path.read_text())))
    missing = [r.name for r in grid.runs if r.name not in {f[0].name for f in finished}]
    if missing:
        console.print(f"[yellow]not finished yet: {', '.join(missing)}[/]")
    if not finished:
        raise ConfigError(f"{out}: no finished run to summarise")
    rows = [payload["row"] for _, payload in finished]
    csv_path, md_path = write_tables(rows, out, f"{grid.name}: {len(rows)} of {len(grid.runs)} runs")
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    histories = {run.name: payload["history"] for run, payload in finished}
    figures.save_loss_curves(histories, fig_dir / "loss_curves.png")
    figures.save_val_dice_curves(histories, fig_dir / "val_dice.png")
    figures.save_dice_distributions(
        {run.name: payload["per_volume_dice"] for run, payload in finished}, fig_dir / "dice_distribution.png"
    )
    predictions = {
        run.name: _load_run_predictions(Path(run.config.output_dir) / "overlay_predictions.npz")
        for run, _ in finished
    }
    keys = sorted(set.intersection(*(set(p) for p in predictions.values()))) if predictions else []
    if keys:
        splits = load_splits(finished[0][0].config.data)
        samples = splits.test if grid.evaluate_on == "test" else splits.val
        by_key = dict(zip(assign_keys(samples), samples, strict=True))
        figures.save_overlay_comparison(
            {k: by_key[k] for k in keys if k in by_key}, predictions, fig_dir / "overlays.png"
        )
    report = build_report(
        [Path(run.config.output_dir) for run, _ in finished],
        out / "report.html",
        command=f"medseg compare ({grid.name}): {len(finished)} runs",
        title=f"medseg compare: {grid.name}",
    )
    with md_path.open("a") as handle:
        handle.write(f"\nPaired per-case comparison and overlays: [{report.name}]({report.name})\n")
    console.print(f"table: {md_path}  ({csv_path.name}); figures: {fig_dir}; report: {report}")
    return pd.DataFrame(rows)
