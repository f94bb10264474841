"""``medseg report``: one self-contained HTML file from a run or evaluation folder (or several, compared).

The page opens on the result and ends with where it came from: the summary statistics (per class
first for a multi-class result, :mod:`medseg.report.classes`), one figure, the worst cases, then the
comparison (:mod:`medseg.report.paired`), the per-case (and per-class) tables, the other overlays,
the training curves, the calibration, and the provenance last. The page is built from small
per-section context builders (:func:`_render` merges them). Reading a folder is
:mod:`medseg.report.results`, every PNG is drawn by :mod:`medseg.report.figures`, and which values
count is :func:`medseg.metrics.evaluation.unusable_reason`.

Everything is embedded (PNG figures as base64, tables as JSON); nothing is fetched from the network.
The same inputs give a byte-identical file apart from the one ``Generated`` line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from medseg import __version__
from medseg.config import Config, flatten_config
from medseg.errors import DataError
from medseg.io_utils import write_text_atomic
from medseg.metrics.evaluation import METRIC_NAMES, case_reason, unusable_reason
from medseg.provenance import file_sha256, git_commit
from medseg.report.classes import class_legend, classes_section
from medseg.report.figures import (
    BOTH_RGB,
    GT_RGB,
    PRED_RGB,
    distribution_png,
    hex_color,
    overlay_png,
    reliability_png,
    training_png,
    uncertainty_png,
)
from medseg.report.formatting import (
    METRIC_LABELS,
    anchor,
    data_uri,
    fmt,
    json_records,
    metric_digits,
    script_json,
    show_value,
)
from medseg.report.measurements import measurements_section
from medseg.report.paired import compare_overlays, config_table, paired_table
from medseg.report.results import BEST_CHECKPOINT, ResultDir, load_result_dir
from medseg.report.slices import CASE_SLICES_FILE, CaseSliceFile
from medseg.report.stats import DEFAULT_TIE_TOLERANCE, describe

HD95_DEFINITIONS = {
    "pooled": "95th percentile of both directed surface-distance sets pooled together (medpy hd95)",
    "max": "maximum of the two directed 95th percentiles (MONAI compute_hausdorff_distance)",
}


def summarize_metrics(cases: pd.DataFrame) -> list[dict[str, Any]]:
    """Per metric: :func:`~medseg.report.stats.describe` of the usable values, and the excluded cases."""
    records = cases.to_dict("records")
    out = []
    for metric in METRIC_NAMES:
        if metric not in cases:
            continue
        usable, excluded = [], []
        for row in records:
            reason = unusable_reason(row, metric)
            if reason is None:
                usable.append(float(row[metric]))
            else:
                excluded.append((str(row["case"]), reason))
        out.append(
            {
                "metric": metric,
                "label": METRIC_LABELS[metric],
                "n_total": len(records),
                "excluded": sorted(excluded),
                **describe(usable),
            }
        )
    return out


def config_differences(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Keys where ``config`` differs from medseg's defaults: ``key``, ``value``, ``default``."""
    defaults = flatten_config(Config().to_dict())
    current = flatten_config(config)
    rows = []
    for key in sorted(current):
        if key not in defaults:
            rows.append({"key": key, "value": show_value(current[key]), "default": "(not a medseg key)"})
        elif current[key] != defaults[key]:
            rows.append({"key": key, "value": show_value(current[key]), "default": show_value(defaults[key])})
    return rows


def provenance_rows(result: ResultDir) -> dict[str, str]:
    stored = result.summary.get("provenance") or {}
    cfg = result.config or {}
    data = cfg.get("data") or {}
    split = data.get("split") or {}
    info = {"folder": str(result.path), "kind": result.kind, "case level": str(result.level or "case")}
    checkpoint = stored.get("checkpoint")
    sha = stored.get("checkpoint_sha256")
    if sha is None and (result.path / BEST_CHECKPOINT).is_file():
        checkpoint, sha = str(result.path / BEST_CHECKPOINT), file_sha256(result.path / BEST_CHECKPOINT)
    for key, label in (
        ("medseg_version", "medseg version (evaluation)"),
        ("git_commit", "git commit (evaluation)"),
        ("command", "command (evaluation)"),
    ):
        if stored.get(key):
            info[label] = str(stored[key])
    info["checkpoint"] = str(checkpoint or "—")
    info["checkpoint SHA-256"] = str(sha or "—")
    if data:
        options = json.dumps(data.get("options") or {}, sort_keys=True)
        info["data source"] = f"{data.get('source')} {options}"
        if data.get("test_source"):
            test_options = json.dumps(data.get("test_options") or {}, sort_keys=True)
            info["test source"] = f"{data.get('test_source')} {test_options}"
        info["patient split"] = ", ".join(f"{k}={split[k]}" for k in sorted(split) if split[k] is not None)
    info["evaluated split"] = str(stored.get("split", "—"))
    train = cfg.get("train") or {}
    info["seed"] = str(train.get("seed", "—"))
    info["device"] = str(stored.get("device") or train.get("device") or "—")
    info["HD95"] = str(result.summary.get("hd95_mode", (cfg.get("eval") or {}).get("hd95_mode", "—")))
    info["NSD tolerance (mm)"] = str(
        result.summary.get("nsd_tolerance_mm", (cfg.get("eval") or {}).get("nsd_tolerance_mm", "—"))
    )
    if "threshold" in result.summary:
        info["threshold"] = str(result.summary["threshold"])
    return info


def select_overlay_cases(
    cases: pd.DataFrame, n_worst: int = 20, n_median: int = 5, n_best: int = 5
) -> dict[str, str]:
    """Case → group (``worst``, ``median``, ``best``) of the cases to overlay, ranked by Dice.

    The ``n_worst`` lowest Dice, ``n_median`` around the median and the ``n_best`` highest; a case
    in two groups is kept once, in the first. Cases without a finite Dice are not ranked.
    """
    for name, n in (("n_worst", n_worst), ("n_median", n_median), ("n_best", n_best)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    ranked = cases[np.isfinite(cases["dice"].to_numpy(dtype=float))]
    ordered = ranked.sort_values(["dice", "case"], kind="mergesort")["case"].tolist()
    start = max(0, len(ordered) // 2 - n_median // 2)
    groups = {
        "worst": ordered[:n_worst],
        "median": ordered[start : start + n_median],
        "best": ordered[len(ordered) - n_best :] if n_best else [],
    }
    chosen: dict[str, str] = {}
    for group, names in groups.items():
        for name in names:
            chosen.setdefault(name, group)
    return chosen


def _overlays(
    result: ResultDir,
    cases: pd.DataFrame,
    chosen: Mapping[str, str],
    size: int,
    classes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    ranks = {c: i + 1 for i, c in enumerate(cases["case"])}
    by_case = cases.set_index("case")
    out = []
    for index, (case, group) in enumerate(chosen.items()):
        if case not in result.slices:
            continue
        item = result.slices[case]
        row = by_case.loc[case]
        hd95 = fmt(float(row["hd95_mm"]), 2) if "hd95_mm" in row else "—"
        caption = f"Dice {fmt(float(row['dice']))}, HD95 {hd95} mm, "
        caption += f"slice {item.slice_index}" if item.slice_index >= 0 else "2D"
        note = case_reason({"case": case, **row.to_dict()})
        caption += (f" — {note}" if note else "") + ("" if item.has_image else " — no image: masks only")
        out.append(
            {
                "case": case,
                "anchor": anchor("overlay", index, case),
                "src": data_uri(overlay_png(item, size, classes)),
                "group": group,
                "rank": ranks[case],
                "caption": caption,
            }
        )
    return out


def _summary_rows(result: ResultDir) -> list[dict[str, Any]]:
    rows = []
    for item in summarize_metrics(result.cases):
        d = metric_digits(item["metric"])
        rows.append(
            {
                **item,
                "mean_sd": f"{fmt(item['mean'], d)} ± {fmt(item['sd'], d)}",
                "median_iqr": f"{fmt(item['median'], d)} [{fmt(item['q1'], d)}, {fmt(item['q3'], d)}]",
                "p5_p95": f"{fmt(item['p5'], d)} / {fmt(item['p95'], d)}",
            }
        )
    return rows


def _excluded_cases(result: ResultDir) -> list[dict[str, str]]:
    out = []
    for row in result.cases.to_dict("records"):
        affected = [
            METRIC_LABELS[m] for m in METRIC_NAMES if m in row and unusable_reason(row, m) is not None
        ]
        if affected:
            out.append({"case": str(row["case"]), "reason": case_reason(row), "metrics": ", ".join(affected)})
    return sorted(out, key=lambda r: r["case"])


def _case_columns(cases: pd.DataFrame) -> list[dict[str, Any]]:
    columns = [{"key": "case", "label": "case", "type": "text"}]
    if "patient" in cases and (cases["patient"].astype(str) != cases["case"].astype(str)).any():
        columns.append({"key": "patient", "label": "patient", "type": "text"})
    for metric in ("dice", "iou", "hd95_mm", "assd_mm", "nsd", "sensitivity", "specificity", "hd_mm"):
        if metric in cases:
            columns.append(
                {
                    "key": metric,
                    "label": METRIC_LABELS[metric],
                    "type": "num",
                    "digits": metric_digits(metric),
                }
            )
    columns.append({"key": "_note", "label": "note", "type": "text"})
    return columns


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("medseg.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names = [p.name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


CALIBRATION_METRICS = (("ece", "ECE"), ("mce", "MCE"), ("ace", "ACE"), ("brier", "Brier"), ("nll", "NLL"))

CALIBRATION_COLUMNS = (
    ("pooled", "whole"),
    ("pooled", "region"),
    ("mean_of_cases", "whole"),
    ("mean_of_cases", "region"),
)


def calibration_tables(calibration: Mapping[str, Any]) -> dict[str, Any]:
    """``calibration.json`` as the report shows it: a metric × (pooled | mean of cases) × (whole |
    region) grid, then every other entry (ρ, AURC, definitions) as key–value rows."""
    grid = []
    used: set[str] = set()
    for key, label in CALIBRATION_METRICS:
        cells = []
        for level, region in CALIBRATION_COLUMNS:
            value = (calibration.get(level) or {}).get(f"{key}_{region}")
            cells.append("—" if value is None else f"{float(value):.4f}")
            if value is not None:
                used.add(f"{level}.{key}_{region}")
        if any(cell != "—" for cell in cells):
            grid.append({"metric": label, "cells": cells})
    others = [
        {"key": k, "value": show_value(v)}
        for k, v in sorted(flatten_config(calibration).items())
        if k not in used
    ]
    return {"grid": grid, "summary": others}


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path = "report.html",
    *,
    n_worst: int = 20,
    n_median: int = 5,
    n_best: int = 5,
    n_compare: int = 10,
    level: str | None = None,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    seed: int = 0,
    overlay_size: int = 224,
    command: str | None = None,
    timestamp: str | None = None,
    title: str | None = None,
) -> Path:
    """Write the HTML report of ``run_dirs[0]`` (compared with ``run_dirs[1:]``, if any) to ``out``.

    Overlays: the ``n_worst`` worst, ``n_median`` median and ``n_best`` best cases by Dice of the
    first folder, plus, when comparing, the ``n_compare`` cases with the largest |ΔDice| side by
    side. ``tie_tolerance`` is the |Δ| counted as a tie; ``seed`` seeds the bootstrap and the strip
    jitter. ``timestamp`` (default: now, UTC) is the only line that changes between builds.
    """
    if not run_dirs:
        raise DataError("no run or evaluation folder given to report on")
    paths = [Path(p) for p in run_dirs]
    names = _unique_names(paths)
    results = [load_result_dir(p, level, name) for p, name in zip(paths, names, strict=True)]
    if len({r.level for r in results}) > 1:
        levels = ", ".join(f"{r.path}: {r.level}" for r in results)
        raise DataError(f"the folders report different case levels ({levels}); pass level= to choose one")
    try:
        html = _render(
            results,
            n_worst=n_worst,
            n_median=n_median,
            n_best=n_best,
            n_compare=n_compare,
            tie_tolerance=tie_tolerance,
            seed=seed,
            overlay_size=overlay_size,
            command=command,
            timestamp=timestamp,
            title=title,
        )
    finally:
        for result in results:
            if isinstance(result.slices, CaseSliceFile):
                result.slices.close()
    return write_text_atomic(out, html)


def _render(
    results: Sequence[ResultDir],
    *,
    n_worst: int,
    n_median: int,
    n_best: int,
    n_compare: int,
    tie_tolerance: float,
    seed: int,
    overlay_size: int,
    command: str | None,
    timestamp: str | None,
    title: str | None,
) -> str:
    """The report's HTML text (see :func:`build_report`): the sections' contexts, merged."""
    main = results[0]
    classes = _class_values(main)
    cases = _cases_section(main, n_worst, n_median, n_best, overlay_size, classes)
    anchors = {o["case"]: o["anchor"] for o in cases["overlays"]}
    context = {
        **_header_section(results, command, timestamp, title),
        **_provenance_section(results),
        **_summary_section(results),
        **cases,
        **classes_section(main.per_class, anchors, seed),
        **_compare_section(results, n_compare, tie_tolerance, seed, overlay_size, classes),
        "distribution": _distribution_section(results, seed),
        "training": _training_section(results),
        "calibration": _calibration_section(results),
        "measurements": measurements_section(main.path),
        "gt_color": hex_color(GT_RGB),
        "pred_color": hex_color(PRED_RGB),
        "both_color": hex_color(BOTH_RGB),
    }
    return _environment().get_template("report.html.j2").render(**context)


def _class_values(result: ResultDir) -> list[int] | None:
    """The label values of a multi-class result's classes, in class order (None: binary)."""
    if result.per_class is None or result.per_class.empty:
        return None
    return [item["value"] for item in class_legend(result.per_class)]


def _header_section(
    results: Sequence[ResultDir], command: str | None, timestamp: str | None, title: str | None
) -> dict[str, Any]:
    """Title, time, and the report builder's own version, commit and command."""
    return {
        "title": title or f"medseg report: {' vs '.join(r.name for r in results)}",
        "generated": timestamp or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
        "commit": git_commit() or "unknown (not a git checkout)",
        "command": command or "medseg.report.html.build_report (Python API)",
        "names": [r.name for r in results],
    }


def _provenance_section(results: Sequence[ResultDir]) -> dict[str, Any]:
    """Per folder: where its numbers came from, and its config's differences from the defaults."""
    provenance = [provenance_rows(r) for r in results]
    return {
        "provenance": provenance,
        "provenance_keys": list(dict.fromkeys(k for item in provenance for k in item)),
        "config_diffs": [
            {"name": r.name, "rows": config_differences(r.config) if r.config else None} for r in results
        ],
    }


def _summary_section(results: Sequence[ResultDir]) -> dict[str, Any]:
    """The statistics of every folder's usable values, and the metric definitions of the first."""
    main = results[0]
    evaluation = (main.config or {}).get("eval") or {}
    hd95_mode = str(main.summary.get("hd95_mode", evaluation.get("hd95_mode", "pooled")))
    nsd_tol = main.summary.get("nsd_tolerance_mm", evaluation.get("nsd_tolerance_mm"))
    return {
        "summaries": [
            {"name": r.name, "n": len(r.cases), "rows": _summary_rows(r), "excluded": _excluded_cases(r)}
            for r in results
        ],
        "hd95_definition": HD95_DEFINITIONS.get(hd95_mode, hd95_mode),
        "hd95_mode": hd95_mode,
        "nsd_tolerance": "unknown" if nsd_tol is None else f"{float(nsd_tol):g}",
        "level": main.level or "case",
    }


def _cases_section(
    main: ResultDir,
    n_worst: int,
    n_median: int,
    n_best: int,
    overlay_size: int,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The per-case table (worst Dice first) of the first folder, and its overlays (``classes``:
    the label values that get a colour each)."""
    cases = main.cases.copy()
    order = cases.assign(_dice=cases["dice"].astype(float).fillna(np.inf)).sort_values(
        ["_dice", "case"], kind="mergesort"
    )
    cases = cases.loc[order.index].reset_index(drop=True)  # worst first by Dice
    chosen = select_overlay_cases(cases, n_worst, n_median, n_best) if main.slices else {}
    overlays = _overlays(main, cases, chosen, overlay_size, classes)
    anchors = {o["case"]: o["anchor"] for o in overlays}
    extra = {
        c: {"anchor": anchors.get(c, ""), "note": case_reason(r)}
        for c, r in zip(cases["case"], cases.to_dict("records"), strict=True)
    }
    return {
        "cases_json": script_json(json_records(cases)),
        "extra_json": script_json(extra),
        "columns_json": script_json(_case_columns(cases)),
        "n_cases": len(cases),
        "overlays": overlays,
        "has_slices": bool(main.slices),
        "slices_file": str(main.path / CASE_SLICES_FILE),
    }


def _compare_section(
    results: Sequence[ResultDir],
    n_compare: int,
    tie_tolerance: float,
    seed: int,
    overlay_size: int,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The paired comparison (:mod:`medseg.report.paired`); ``compare`` is None for one folder."""
    compare = None
    if len(results) > 1:
        paired = paired_table(results, tie_tolerance, seed)
        cmp_overlays = compare_overlays(results, paired["shared"], n_compare, overlay_size, classes)
        cmp_anchors = {o["case"]: o["anchor"] for o in cmp_overlays}
        paired_rows = sorted(
            paired["rows"],
            key=lambda r: (r.get("dice:0") if r.get("dice:0") is not None else math.inf, r["case"]),
        )
        compare = {
            **paired,
            "rows": paired_rows,
            "extra": {
                r["case"]: {"anchor": cmp_anchors.get(r["case"], ""), "note": paired["notes"][r["case"]]}
                for r in paired_rows
            },
            "overlays": cmp_overlays,
            "config_table": config_table(results),
            "names": [r.name for r in results],
        }
    return {
        "compare": compare,
        "compare_rows_json": script_json(compare["rows"]) if compare else "",
        "compare_extra_json": script_json(compare["extra"]) if compare else "",
        "compare_columns_json": script_json(compare["columns"]) if compare else "",
        "tie_tolerance": f"{tie_tolerance:g}",
        "seed": seed,
    }


def _distribution_section(results: Sequence[ResultDir], seed: int) -> str:
    """Box + strip plots of the metrics the first folder has, one box per folder."""
    metrics_present = [m for m in METRIC_NAMES if m in results[0].cases]
    return data_uri(distribution_png({r.name: r.cases for r in results}, metrics_present, seed))


def _training_section(results: Sequence[ResultDir]) -> str | None:
    """Training curves of the folders that have a ``history.csv`` (None when none has)."""
    histories = {r.name: r.history for r in results if r.history is not None and not r.history.empty}
    return data_uri(training_png(histories)) if histories else None


def _calibration_section(results: Sequence[ResultDir]) -> list[dict[str, Any]]:
    """Reliability diagram, uncertainty vs Dice and calibration tables of the folders that have them."""
    calibration = []
    for r in results:
        if r.reliability is None and r.calibration_cases is None and r.calibration is None:
            continue
        calibration.append(
            {
                "name": r.name,
                "reliability": None if r.reliability is None else data_uri(reliability_png(r.reliability)),
                "scatter": None
                if r.calibration_cases is None
                else data_uri(uncertainty_png(r.calibration_cases)),
                **calibration_tables(r.calibration or {}),
            }
        )
    return calibration
