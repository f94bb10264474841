"""The report's measurement section: agreement of measured (predicted-mask) with reference values.

For each measurement in ``measurements.csv`` (:mod:`medseg.metrics.measurements`) that has a
reference (HC18: the CSV's head circumference; otherwise the same measure of the ground-truth mask)
the section gives a table (bias, SD of the differences, 95% limits of agreement, mean absolute
difference) and a Bland–Altman plot (Bland & Altman 1986, Lancet 1(8476): the difference against
the mean of the two, with the bias and the limits bias ± 1.96 SD). Self-contained: one function,
:func:`measurements_section`, returns the HTML of the section (or ``None`` when the folder has no
measurements), for any report template to place.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from medseg.errors import DataError

MEASUREMENTS_FILE = "measurements.csv"

#: (title, unit, measured column, reference column), in the order the section shows them
PAIRS: tuple[tuple[str, str, str, str], ...] = (
    ("head circumference vs the reference HC", "mm", "hc_mm_pred", "hc_mm_reference"),
    ("head circumference of the ground-truth mask vs the reference HC", "mm", "hc_mm_gt", "hc_mm_reference"),
    ("volume vs ground truth", "mL", "volume_ml_pred", "volume_ml_gt"),
    ("area vs ground truth", "mm²", "area_mm2_pred", "area_mm2_gt"),
    ("longest in-plane diameter vs ground truth", "mm", "diameter_mm_pred", "diameter_mm_gt"),
)


def bland_altman_stats(measured: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Bias (mean of measured − reference), SD of the differences (n − 1), the 95% limits of
    agreement bias ± 1.96 SD, and the mean absolute difference, over the finite pairs."""
    m, r = np.asarray(measured, dtype=float), np.asarray(reference, dtype=float)
    keep = np.isfinite(m) & np.isfinite(r)
    diff = m[keep] - r[keep]
    if diff.size == 0:
        raise ValueError("no finite measured/reference pairs")
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    return {
        "n": int(diff.size),
        "bias": bias,
        "sd": sd,
        "lower": bias - 1.96 * sd,
        "upper": bias + 1.96 * sd,
        "mean_abs_diff": float(np.abs(diff).mean()),
    }


def bland_altman_png(measured: Sequence[float], reference: Sequence[float], title: str, unit: str) -> bytes:
    """A Bland–Altman plot as PNG bytes: difference (measured − reference) against their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, r = np.asarray(measured, dtype=float), np.asarray(reference, dtype=float)
    keep = np.isfinite(m) & np.isfinite(r)
    stats = bland_altman_stats(m, r)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.scatter((m[keep] + r[keep]) / 2, m[keep] - r[keep], s=12, alpha=0.7, color="#1f77b4")
    for value, style, text in (
        (stats["bias"], "-", f"bias {stats['bias']:.3g}"),
        (stats["upper"], "--", f"+1.96 SD {stats['upper']:.3g}"),
        (stats["lower"], "--", f"−1.96 SD {stats['lower']:.3g}"),
    ):
        ax.axhline(value, linestyle=style, color="#d62728", linewidth=1)
        ax.annotate(
            text, (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7
        )
    ax.set_xlabel(f"mean of measured and reference ({unit})")
    ax.set_ylabel(f"measured − reference ({unit})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _cell(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def measurements_section(folder: str | Path) -> Markup | None:
    """The HTML of the measurement section for a run or evaluation folder, or ``None`` without a
    ``measurements.csv``."""
    path = Path(folder) / MEASUREMENTS_FILE
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse CSV ({e})", path) from e
    rows, plots = [], []
    for label, group in table.groupby("label", sort=True) if "label" in table else []:
        for title, unit, measured, reference in PAIRS:
            if measured not in group or reference not in group:
                continue
            pairs = group[[measured, reference]].to_numpy(dtype=float)
            if not np.isfinite(pairs).all(axis=1).any():
                continue
            stats = bland_altman_stats(pairs[:, 0], pairs[:, 1])
            name = f"label {int(label)}: {title}"
            rows.append((name, unit, stats))
            if measured != "hc_mm_gt":  # the floor is a table row; its plot adds little
                png = bland_altman_png(pairs[:, 0], pairs[:, 1], name, unit)
                plots.append((name, "data:image/png;base64," + base64.b64encode(png).decode("ascii")))
    if not rows:
        return None
    parts: list[str] = [
        '<h2 id="measurements">Measurements</h2>',
        f"<p>From <code>{html.escape(str(path))}</code>: measured (predicted mask) against reference; "
        "differences are measured − reference, limits of agreement bias ± 1.96 SD "
        "(Bland &amp; Altman 1986).</p>",
        '<table><tr><th>measurement</th><th>unit</th><th class="num">n</th><th class="num">bias</th>'
        '<th class="num">SD</th><th class="num">limits of agreement</th>'
        '<th class="num">mean |difference|</th></tr>',
    ]
    for name, unit, s in rows:
        parts.append(
            f'<tr><td>{html.escape(name)}</td><td>{html.escape(unit)}</td><td class="num">{s["n"]}</td>'
            f'<td class="num">{_cell(s["bias"])}</td><td class="num">{_cell(s["sd"])}</td>'
            f'<td class="num">{_cell(s["lower"])} … {_cell(s["upper"])}</td>'
            f'<td class="num">{_cell(s["mean_abs_diff"])}</td></tr>'
        )
    parts.append("</table>")
    parts.append('<div class="grid">')
    for name, uri in plots:
        parts.append(f'<img class="plot" src="{uri}" alt="Bland–Altman plot: {html.escape(name)}">')
    parts.append("</div>")
    return Markup("\n".join(parts))


def measurement_summary_rows(folder: str | Path) -> list[dict[str, Any]]:
    """The section's table as records (for tests and other renderers)."""
    table = pd.read_csv(Path(folder) / MEASUREMENTS_FILE)
    out = []
    for label, group in table.groupby("label", sort=True):
        for title, unit, measured, reference in PAIRS:
            if measured in group and reference in group:
                stats = bland_altman_stats(group[measured], group[reference])
                out.append({"label": int(label), "measurement": title, "unit": unit, **stats})
    return out
