"""Summaries of a data source for ``medseg data inspect``: per-case rows plus a data-set summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from rich.table import Table

from medseg.data.sample import Sample
from medseg.data.sources.base import Source
from medseg.errors import DataError


@dataclass
class CaseRow:
    """What one case looks like.

    Attributes:
        case_id: the case id.
        n_samples: samples the case loads as (1 for a volume, images per subject for 2D sources).
        n_slices: 2D slices in total (sum of D over 3D samples, or the number of 2D samples).
        spatial_size: spatial shape of the first sample (``(H, W)`` or ``(D, H, W)``).
        sizes_vary: whether the case's samples have different shapes.
        spacing: spacing of the first sample (mm, array-axis order).
        spacing_assumed: whether the spacing is an assumption of the source (not from the files).
        coverage_pct: % of voxels that are foreground in the target mask (all samples together).
        annotators: annotator names present.
        agreement: ``"a vs b"`` → Dice between those annotators' masks (all samples together).
    """

    case_id: str
    n_samples: int
    n_slices: int
    spatial_size: tuple[int, ...]
    sizes_vary: bool
    spacing: tuple[float, ...]
    spacing_assumed: bool
    coverage_pct: float
    annotators: tuple[str, ...]
    agreement: dict[str, float] = field(default_factory=dict)


@dataclass
class InspectReport:
    """Per-case rows and a data-set summary (``summary`` keys are documented in :func:`inspect_source`)."""

    source: str
    rows: list[CaseRow]
    summary: dict[str, Any]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom


def _case_row(case_id: str, samples: list[Sample]) -> CaseRow:
    first = samples[0]
    names = tuple(sorted({k for s in samples for k in s.masks}, key=lambda k: (k != first.target, k)))
    fg = tot = 0
    for s in samples:
        if s.target in s.masks:
            fg += int(s.target_mask.sum())
            tot += s.target_mask.size
    agreement: dict[str, float] = {}
    for a, b in combinations(names, 2):
        both = [s for s in samples if a in s.masks and b in s.masks]
        if both:
            inter = sum(int((s.masks[a].astype(bool) & s.masks[b].astype(bool)).sum()) for s in both)
            size = sum(int(s.masks[a].sum()) + int(s.masks[b].sum()) for s in both)
            agreement[f"{a} vs {b}"] = 1.0 if size == 0 else 2.0 * inter / size
    return CaseRow(
        case_id=case_id,
        n_samples=len(samples),
        n_slices=sum(s.image.shape[1] if s.ndim == 3 else 1 for s in samples),
        spatial_size=first.spatial_shape,
        sizes_vary=len({s.spatial_shape for s in samples}) > 1,
        spacing=first.spacing,
        spacing_assumed=bool(first.meta.get("spacing_assumed", False)),
        coverage_pct=100.0 * fg / tot if tot else float("nan"),
        annotators=names,
        agreement=agreement,
    )


def inspect_source(source: Source, name: str | None = None, max_cases: int | None = None) -> InspectReport:
    """Load every case (or the first ``max_cases``) of ``source`` and summarize it.

    ``summary`` keys: ``n_cases`` (in the source), ``n_inspected``, ``n_samples``, ``n_slices``,
    ``ndim``, ``min_size`` / ``max_size`` (per spatial axis), ``min_spacing`` / ``max_spacing``,
    ``spacing_assumed`` (any case), ``mean_coverage_pct``, ``empty_target_cases`` (ids whose
    target mask is empty), ``annotators`` (all names), ``mean_agreement`` (pair → mean Dice over
    the cases that have both).

    Raises :class:`~medseg.errors.DataError` when the source has no cases or a case is bad.
    """
    ids = source.case_ids()
    if not ids:
        raise DataError(f"no cases found for source '{name or type(source).__name__}'", source.root)
    chosen = ids if max_cases is None else ids[:max_cases]
    rows = [_case_row(cid, source.load_case(cid)) for cid in chosen]
    same_nd = len({len(r.spatial_size) for r in rows}) == 1
    sizes = np.array([r.spatial_size for r in rows]) if same_nd else None
    spacings = np.array([r.spacing for r in rows]) if len({len(r.spacing) for r in rows}) == 1 else None
    pairs: dict[str, list[float]] = {}
    for r in rows:
        for k, v in r.agreement.items():
            pairs.setdefault(k, []).append(v)
    cov = [r.coverage_pct for r in rows if np.isfinite(r.coverage_pct)]
    summary: dict[str, Any] = {
        "n_cases": len(ids),
        "n_inspected": len(rows),
        "n_samples": sum(r.n_samples for r in rows),
        "n_slices": sum(r.n_slices for r in rows),
        "ndim": sorted({len(r.spatial_size) for r in rows}),
        "min_size": tuple(int(v) for v in sizes.min(0)) if sizes is not None else None,
        "max_size": tuple(int(v) for v in sizes.max(0)) if sizes is not None else None,
        "min_spacing": tuple(float(v) for v in spacings.min(0)) if spacings is not None else None,
        "max_spacing": tuple(float(v) for v in spacings.max(0)) if spacings is not None else None,
        "spacing_assumed": any(r.spacing_assumed for r in rows),
        "mean_coverage_pct": float(np.mean(cov)) if cov else float("nan"),
        "empty_target_cases": [r.case_id for r in rows if r.coverage_pct == 0],
        "annotators": sorted({a for r in rows for a in r.annotators}),
        "mean_agreement": {k: float(np.mean(v)) for k, v in pairs.items()},
    }
    return InspectReport(source=name or type(source).__name__, rows=rows, summary=summary)


def _fmt_tuple(t: tuple[Any, ...] | None, fmt: str = "{}") -> str:
    return "-" if t is None else "×".join(fmt.format(v) for v in t)


def render_inspect(report: InspectReport) -> Table:
    """A rich table: one row per case, the data-set summary in the caption."""
    s = report.summary
    table = Table(title=f"data source: {report.source} ({s['n_inspected']}/{s['n_cases']} cases)")
    for col, just in [
        ("case", "left"),
        ("samples", "right"),
        ("slices", "right"),
        ("size", "right"),
        ("spacing (mm)", "right"),
        ("fg %", "right"),
        ("annotators", "left"),
        ("agreement (Dice)", "left"),
    ]:
        table.add_column(col, justify=just, no_wrap=col == "case")  # type: ignore[arg-type]
    for r in report.rows:
        table.add_row(
            r.case_id,
            str(r.n_samples),
            str(r.n_slices),
            _fmt_tuple(r.spatial_size) + (" (varies)" if r.sizes_vary else ""),
            _fmt_tuple(r.spacing, "{:.3g}") + (" assumed" if r.spacing_assumed else ""),
            f"{r.coverage_pct:.2f}",
            ", ".join(r.annotators) or "-",
            "; ".join(f"{k}: {v:.3f}" for k, v in r.agreement.items()) or "-",
        )
    agree = "; ".join(f"{k}: {v:.3f}" for k, v in s["mean_agreement"].items()) or "-"
    table.caption = (
        f"{s['n_samples']} samples, {s['n_slices']} slices; size {_fmt_tuple(s['min_size'])} .. "
        f"{_fmt_tuple(s['max_size'])}; spacing {_fmt_tuple(s['min_spacing'], '{:.3g}')} .. "
        f"{_fmt_tuple(s['max_spacing'], '{:.3g}')} mm{' (assumed)' if s['spacing_assumed'] else ''}; "
        f"mean fg {s['mean_coverage_pct']:.2f} %; empty targets: {len(s['empty_target_cases'])}; "
        f"mean agreement: {agree}"
    )
    return table
