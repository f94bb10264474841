"""The paired comparison of several run or evaluation folders (the first is the reference).

On the cases every folder shares, per metric and folder: :func:`~medseg.report.stats.paired_comparison`
of the values that are usable in both (:func:`~medseg.metrics.evaluation.unusable_reason`), the
paired per-case table of Dice and HD95, the cases some folder lacks, the config keys that differ,
and the cases with the largest |ΔDice| side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medseg.config import flatten_config
from medseg.errors import DataError
from medseg.metrics.evaluation import METRIC_NAMES, case_reason, unusable_reason
from medseg.report.figures import overlay_png
from medseg.report.formatting import (
    METRIC_LABELS,
    anchor,
    data_uri,
    fmt,
    json_value,
    metric_digits,
    show_value,
)
from medseg.report.results import ResultDir
from medseg.report.stats import paired_comparison


def paired_table(results: Sequence[ResultDir], tie_tolerance: float, seed: int) -> dict[str, Any]:
    """Statistics of every folder against ``results[0]`` on their shared cases, the paired per-case
    rows and columns, the cases not shared, and each shared case's notes; :class:`DataError` when
    the folders share no case."""
    reference = results[0]
    case_sets = {r.name: set(r.cases["case"]) for r in results}
    shared = sorted(set.intersection(*case_sets.values()))
    if not shared:
        raise DataError(
            "the folders share no case: compare runs evaluated on the same cases "
            f"({', '.join(str(r.path) for r in results)})"
        )
    every = sorted(set.union(*case_sets.values()))
    not_shared = [
        {
            "case": c,
            "in": ", ".join(n for n in case_sets if c in case_sets[n]),
            "missing from": ", ".join(n for n in case_sets if c not in case_sets[n]),
        }
        for c in every
        if c not in shared
    ]
    indexed = {r.name: r.cases.set_index("case").loc[shared] for r in results}
    records = {name: table.reset_index().to_dict("records") for name, table in indexed.items()}
    stats = []
    for other in results[1:]:
        for metric in METRIC_NAMES:
            if metric not in indexed[reference.name] or metric not in indexed[other.name]:
                continue
            usable = [
                ra["case"]
                for ra, rb in zip(records[reference.name], records[other.name], strict=True)
                if unusable_reason(ra, metric) is None and unusable_reason(rb, metric) is None
            ]
            if not usable:
                continue
            comparison = paired_comparison(
                indexed[reference.name].loc[usable, metric].to_numpy(dtype=float),
                indexed[other.name].loc[usable, metric].to_numpy(dtype=float),
                metric,
                tie_tolerance=tie_tolerance,
                seed=seed,
            )
            d = metric_digits(metric)
            stats.append(
                {
                    **comparison.to_dict(),
                    "a": reference.name,
                    "b": other.name,
                    "label": METRIC_LABELS[metric],
                    "means": f"{fmt(comparison.mean_a, d)} → {fmt(comparison.mean_b, d)}",
                    "delta": f"{comparison.mean_delta:+.{d}f}",
                    "ci": f"[{comparison.ci_low:+.{d}f}, {comparison.ci_high:+.{d}f}]",
                    "p": f"{comparison.wilcoxon_p:.3g}",
                    "wtl": f"{comparison.wins} / {comparison.ties} / {comparison.losses}",
                }
            )
    notes = {
        case: "; ".join(f"{r.name}: {n}" for r in results if (n := case_reason(records[r.name][i])))
        for i, case in enumerate(shared)
    }
    rows = []
    for case in shared:
        row: dict[str, Any] = {"case": case}
        for metric in ("dice", "hd95_mm"):
            if not all(metric in indexed[r.name] for r in results):
                continue
            base = float(indexed[reference.name].loc[case, metric])
            for i, r in enumerate(results):
                value = float(indexed[r.name].loc[case, metric])
                row[f"{metric}:{i}"] = json_value(value)
                if i:
                    row[f"d_{metric}:{i}"] = json_value(value - base)
        rows.append(row)
    columns = [{"key": "case", "label": "case", "type": "text"}]
    for metric in ("dice", "hd95_mm"):
        if f"{metric}:0" not in rows[0]:
            continue
        d = metric_digits(metric)
        for i, r in enumerate(results):
            columns.append(
                {
                    "key": f"{metric}:{i}",
                    "label": f"{METRIC_LABELS[metric]} {r.name}",
                    "type": "num",
                    "digits": d,
                }
            )
        for i, r in enumerate(results[1:], start=1):
            columns.append(
                {
                    "key": f"d_{metric}:{i}",
                    "label": f"Δ{METRIC_LABELS[metric]} {r.name}",
                    "type": "num",
                    "digits": d,
                    "signed": True,
                }
            )
    columns.append({"key": "_note", "label": "note", "type": "text"})
    return {
        "shared": shared,
        "not_shared": not_shared,
        "stats": stats,
        "rows": rows,
        "columns": columns,
        "notes": notes,
    }


def config_table(results: Sequence[ResultDir]) -> list[dict[str, Any]]:
    """The config keys whose values differ between the folders (``output_dir`` aside)."""
    flat = [flatten_config(r.config) if r.config else {} for r in results]
    keys = sorted(set().union(*flat))
    rows = []
    for key in keys:
        values = [show_value(f[key]) if key in f else "—" for f in flat]
        if len(set(values)) > 1 and key != "output_dir":
            rows.append({"key": key, "values": values})
    return rows


def compare_overlays(
    results: Sequence[ResultDir],
    shared: Sequence[str],
    n: int,
    size: int,
    classes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The ``n`` shared cases with the largest |ΔDice| against the reference, every folder's overlay
    side by side (empty unless every folder has case slices); ``classes`` (label values) colours
    a multi-class result's classes."""
    if n <= 0 or not all(r.slices for r in results):
        return []
    dice = [dict(zip(r.cases["case"], r.cases["dice"].astype(float), strict=True)) for r in results]
    gaps = []
    for case in shared:
        if not all(case in r.slices for r in results):
            continue
        deltas = [d[case] - dice[0][case] for d in dice[1:]]
        finite = [abs(d) for d in deltas if math.isfinite(d)]
        if finite:
            gaps.append((-max(finite), case))
    out = []
    for index, (gap, case) in enumerate(sorted(gaps)[:n]):
        panels = []
        views = [r.slices[case].shared_view() for r in results]
        if len({v.slice_index for v in views}) > 1:  # older files without a shared slice
            views = [r.slices[case] for r in results]
        for r, values, item in zip(results, dice, views, strict=True):
            value = values[case]
            where = f", slice {item.slice_index}" if item.slice_index >= 0 else ""
            panels.append(
                {
                    "run": r.name,
                    "src": data_uri(overlay_png(item, size, classes)),
                    "caption": f"{r.name}: Dice {fmt(value)}{where}",
                }
            )
        out.append(
            {"case": case, "anchor": anchor("cmp", index, case), "gap": f"{-gap:.4f}", "panels": panels}
        )
    return out
