"""``medseg report``: one self-contained HTML file from a run or evaluation folder (or several, compared).

Inputs read from each folder (``metrics.csv`` is required, the rest is used when present):
``metrics.csv`` + ``summary.json`` (``medseg evaluate`` / a training run), ``case_slices.npz``
(overlays), ``config.yaml``, ``history.csv`` (training curves), ``best.pt`` (SHA-256),
``reliability.csv`` / ``calibration_cases.csv`` / ``calibration.json`` (calibration).

Everything is embedded (PNG figures as base64, tables as JSON); nothing is fetched from the network.
The same inputs give a byte-identical file apart from the one ``Generated`` line.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import binary_erosion  # noqa: E402

from medseg.config import Config, flatten_config  # noqa: E402
from medseg.errors import DataError  # noqa: E402
from medseg.provenance import git_commit  # noqa: E402
from medseg.report.slices import CASE_SLICES_FILE, CaseSlice, CaseSliceFile  # noqa: E402
from medseg.report.stats import DEFAULT_TIE_TOLERANCE, describe, paired_comparison  # noqa: E402

METRICS = ("dice", "iou", "sensitivity", "specificity", "hd_mm", "hd95_mm", "assd_mm", "nsd")
METRIC_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "hd_mm": "HD (mm)",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
    "nsd": "NSD",
}
# Metrics that need both surfaces: with an empty mask their value is set by policy, not measured.
SURFACE_METRICS = frozenset({"hd_mm", "hd95_mm", "assd_mm", "nsd"})
# Okabe & Ito (2008) colour-blind-safe palette: ground truth sky blue, prediction vermillion,
# both contours on the same pixel yellow.
GT_RGB = (0x56, 0xB4, 0xE9)
PRED_RGB = (0xD5, 0x5E, 0x00)
BOTH_RGB = (0xF0, 0xE4, 0x42)
RUN_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
HD95_DEFINITIONS = {
    "pooled": "95th percentile of both directed surface-distance sets pooled together (medpy hd95)",
    "max": "maximum of the two directed 95th percentiles (MONAI compute_hausdorff_distance)",
}


@dataclass
class ResultDir:
    """One run or evaluation folder, read for the report."""

    path: Path
    name: str
    kind: str  # "run" (has history.csv) or "evaluation"
    level: str | None  # the metrics.csv level used as "case" (None: a table without levels)
    cases: pd.DataFrame  # the metrics.csv rows of that level, columns as in the file
    summary: dict[str, Any]
    config: dict[str, Any] | None = None
    history: pd.DataFrame | None = None
    slices: Mapping[str, CaseSlice] = field(default_factory=dict)  # a CaseSliceFile when present
    reliability: pd.DataFrame | None = None
    calibration_cases: pd.DataFrame | None = None
    calibration: dict[str, Any] | None = None


def report_level(table: pd.DataFrame) -> str | None:
    """The level a report counts as cases: volumes (``patient``) when slices exist, else ``image``."""
    if "level" not in table:
        return None
    levels = set(table["level"].astype(str))
    if "slice" in levels and "patient" in levels:
        return "patient"
    for level in ("image", "patient", "case"):
        if level in levels:
            return level
    return sorted(levels)[0]


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable CSV ({type(exc).__name__}: {exc})", path) from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; has {list(frame.columns)}", path)
    return frame


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON: {exc}", path) from exc
    if not isinstance(value, dict):
        raise DataError("expected a JSON object", path)
    return value


def load_result_dir(path: str | Path, level: str | None = None, name: str | None = None) -> ResultDir:
    """Read a run or evaluation folder; ``level`` overrides :func:`report_level`."""
    path = Path(path)
    if not path.is_dir():
        raise DataError("report input folder not found", path)
    metrics_path = path / "metrics.csv"
    if not metrics_path.is_file():
        raise DataError("no metrics.csv: not a medseg run or evaluation folder", path)
    table = _read_csv(metrics_path, ("case", "dice"))
    chosen = level or report_level(table)
    if chosen is not None:
        if "level" not in table:
            raise DataError(f"no 'level' column to select level '{chosen}'", metrics_path)
        table = table[table["level"].astype(str) == chosen].reset_index(drop=True)
    if table.empty:
        raise DataError(f"no rows of level '{chosen}'", metrics_path)
    if table["case"].astype(str).duplicated().any():
        dupes = sorted(table["case"].astype(str)[table["case"].astype(str).duplicated()].unique())[:5]
        raise DataError(f"case names repeat within level '{chosen}': {dupes}", metrics_path)
    table["case"] = table["case"].astype(str)
    summary = _read_json(path / "summary.json") if (path / "summary.json").is_file() else {}
    config = None
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"invalid YAML: {exc}", path / "config.yaml") from exc
    history = None
    if (path / "history.csv").is_file():
        history = _read_csv(path / "history.csv", ("epoch",))
    slices = CaseSliceFile(path / CASE_SLICES_FILE) if (path / CASE_SLICES_FILE).is_file() else {}
    reliability = calibration_cases = calibration = None
    if (path / "reliability.csv").is_file():
        reliability = _read_csv(
            path / "reliability.csv", ("region", "bin", "count", "mean_confidence", "accuracy")
        )
    if (path / "calibration_cases.csv").is_file():
        calibration_cases = _read_csv(path / "calibration_cases.csv", ("case", "dice"))
        _uncertainty_column(calibration_cases, path / "calibration_cases.csv")
    if (path / "calibration.json").is_file():
        calibration = _read_json(path / "calibration.json")
    return ResultDir(
        path=path,
        name=name or path.name,
        kind="run" if history is not None else "evaluation",
        level=chosen,
        cases=table,
        summary=summary,
        config=config,
        history=history,
        slices=slices,
        reliability=reliability,
        calibration_cases=calibration_cases,
        calibration=calibration,
    )


# --- usable values and summaries -----------------------------------------------------------------


def _flag(row: Mapping[str, Any], name: str) -> bool:
    value = row.get(name, False)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return (
        bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False
    )


def unusable_reason(row: Mapping[str, Any], metric: str) -> str | None:
    """Why ``row`` has no usable value of ``metric`` (``None``: usable).

    A missing prediction, or a value that only the empty-mask policy sets: both masks empty
    (every metric but specificity), an empty ground truth (sensitivity and the surface metrics),
    an empty prediction (the surface metrics). Dice 0 for one empty mask is a real value and kept.
    """
    if _flag(row, "missing_pred"):
        return "missing prediction"
    value = row.get(metric)
    if value is None or not math.isfinite(float(value)):
        return "no value"
    empty_gt, empty_pred = _flag(row, "empty_gt"), _flag(row, "empty_pred")
    if metric == "specificity":
        return None
    if empty_gt and empty_pred:
        return "both empty"
    if empty_gt and (metric in SURFACE_METRICS or metric == "sensitivity"):
        return "empty GT"
    if empty_pred and metric in SURFACE_METRICS:
        return "empty prediction"
    return None


def case_reason(row: Mapping[str, Any]) -> str:
    """The case-level note shown in the tables: the most specific reason any metric is unusable."""
    reasons = {unusable_reason(row, m) for m in METRICS if m in row}
    for reason in ("missing prediction", "both empty", "empty GT", "empty prediction", "no value"):
        if reason in reasons:
            return reason
    return ""


def summarize_metrics(cases: pd.DataFrame) -> list[dict[str, Any]]:
    """Per metric: :func:`~medseg.report.stats.describe` of the usable values, and the excluded cases."""
    records = cases.to_dict("records")
    out = []
    for metric in METRICS:
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


# --- provenance -----------------------------------------------------------------------------------


def config_differences(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Keys where ``config`` differs from medseg's defaults: ``key``, ``value``, ``default``."""
    defaults = flatten_config(Config().to_dict())
    current = flatten_config(config)
    rows = []
    for key in sorted(current):
        if key not in defaults:
            rows.append({"key": key, "value": _show(current[key]), "default": "(not a medseg key)"})
        elif current[key] != defaults[key]:
            rows.append({"key": key, "value": _show(current[key]), "default": _show(defaults[key])})
    return rows


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _provenance(result: ResultDir) -> dict[str, str]:
    stored = result.summary.get("provenance") or {}
    cfg = result.config or {}
    data = cfg.get("data") or {}
    split = data.get("split") or {}
    info = {"folder": str(result.path), "kind": result.kind, "case level": str(result.level or "case")}
    checkpoint = stored.get("checkpoint")
    sha = stored.get("checkpoint_sha256")
    if sha is None and (result.path / "best.pt").is_file():
        from medseg.engine.checkpoint import file_sha256  # imports torch: only when there is a checkpoint

        checkpoint, sha = str(result.path / "best.pt"), file_sha256(result.path / "best.pt")
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


# --- figures --------------------------------------------------------------------------------------


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{v:02X}" for v in rgb)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})  # no version stamp
    plt.close(fig)
    # plots have few colours: a palette PNG is several times smaller and looks the same
    with Image.open(io.BytesIO(buffer.getvalue())) as rendered:
        quantized = rendered.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=0)
    out = io.BytesIO()
    quantized.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _boundary(mask: np.ndarray) -> np.ndarray:
    mask = mask.astype(bool)
    return mask & ~binary_erosion(mask, iterations=2, border_value=0)


def overlay_png(item: CaseSlice, size: int = 224) -> bytes:
    """The slice with ground-truth and prediction contours; pixel spacing sets the aspect ratio.

    The longer physical side is ``size`` pixels. Colours: :data:`GT_RGB`, :data:`PRED_RGB`, and
    :data:`BOTH_RGB` where the two contours meet. The PNG has a 256-colour palette.
    """
    height_mm = item.gt.shape[0] * item.spacing[0]
    width_mm = item.gt.shape[1] * item.spacing[1]
    scale = size / max(height_mm, width_mm)
    shape = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))  # PIL: (w, h)
    image = Image.fromarray(np.asarray(item.image, dtype=np.uint8)).resize(shape, Image.Resampling.BILINEAR)
    gt = np.asarray(Image.fromarray(item.gt * 255).resize(shape, Image.Resampling.NEAREST)) > 0
    pred = np.asarray(Image.fromarray(item.pred * 255).resize(shape, Image.Resampling.NEAREST)) > 0
    gt_edge, pred_edge = _boundary(gt), _boundary(pred)
    pixels = np.asarray(image)
    # a palette PNG: 252 image colours (a gray ramp, or the RGB image's median-cut palette) and the
    # three contour colours, which so stay exact
    if pixels.ndim == 2:
        index = (pixels.astype(np.uint16) * 251 // 255).astype(np.uint8)
        palette = [v for g in range(252) for v in (g * 255 // 251,) * 3]
    else:
        reduced = Image.fromarray(np.ascontiguousarray(pixels[..., :3])).quantize(
            colors=252, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        index = np.asarray(reduced).copy()
        palette = (reduced.getpalette() or [])[: 252 * 3]
        palette += [0] * (252 * 3 - len(palette))
    index[gt_edge] = 252
    index[pred_edge] = 253
    index[gt_edge & pred_edge] = 254
    out_image = Image.fromarray(index, mode="P")
    out_image.putpalette([*palette, *GT_RGB, *PRED_RGB, *BOTH_RGB, 0, 0, 0])
    buffer = io.BytesIO()
    out_image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def distribution_png(runs: Mapping[str, pd.DataFrame], metrics: Sequence[str], seed: int = 0) -> bytes:
    """Box + strip plot of the usable values of each metric, one box per run; mean ◆, median —."""
    columns = min(4, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.0 * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax in axes.ravel()[len(metrics) :]:
        ax.axis("off")
    names = list(runs)
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        values = []
        for name in names:
            frame = runs[name]
            records = frame.to_dict("records") if metric in frame else []
            values.append(
                np.asarray([float(r[metric]) for r in records if unusable_reason(r, metric) is None])
            )
        positions = np.arange(1, len(names) + 1)
        shown = [v if v.size else np.asarray([np.nan]) for v in values]
        ax.boxplot(
            shown,
            positions=positions,
            widths=0.55,
            showfliers=False,
            medianprops={"color": "#000000", "linewidth": 2},
        )
        for i, v in enumerate(values):
            if not v.size:
                continue
            jitter = rng.uniform(-0.18, 0.18, size=v.size)
            color = RUN_COLORS[i % len(RUN_COLORS)]
            ax.scatter(positions[i] + jitter, v, s=7, alpha=0.5, color=color, linewidths=0)
            ax.scatter([positions[i]], [v.mean()], marker="D", s=36, color="white", edgecolors="k", zorder=3)
        if not any(v.size for v in values):
            ax.text(0.5, 0.5, "no usable value", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xticks(positions)
        ax.set_xticklabels([n if len(n) <= 14 else n[:13] + "…" for n in names], fontsize=8, rotation=15)
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("usable values per case: box = IQR, line = median, ◆ = mean", fontsize=9)
    # fixed margins: tight_layout measures every tick label and doubles the build time
    fig.subplots_adjust(
        left=0.05, right=0.99, bottom=0.1, top=1 - 0.7 / fig.get_figheight(), wspace=0.3, hspace=0.45
    )
    return _figure_png(fig)


def training_png(histories: Mapping[str, pd.DataFrame]) -> bytes:
    """Loss (train solid, validation dashed), validation Dice, learning rate and epoch time."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
    panels = [
        ("loss", ("train_loss", "val_loss")),
        ("validation Dice", ("val_dice",)),
        ("learning rate", ("lr",)),
        ("epoch time (s)", ("epoch_time_s",)),
    ]
    for i, (name, history) in enumerate(histories.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for ax, (_, columns) in zip(axes, panels, strict=True):
            for column, style in zip(columns, ("-", "--"), strict=False):
                if column in history:
                    label = name if len(columns) == 1 else f"{name} {column.split('_')[0]}"
                    ax.plot(
                        history["epoch"], history[column], style, color=color, marker="o", ms=3, label=label
                    )
    for ax, (title, _) in zip(axes, panels, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    lr = np.concatenate([h["lr"].to_numpy(dtype=float) for h in histories.values() if "lr" in h] or [[]])
    if lr.size and np.all(lr > 0) and lr.max() / lr.min() > 20:
        axes[2].set_yscale("log")
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.16, top=0.9, wspace=0.28)
    return _figure_png(fig)


def reliability_png(reliability: pd.DataFrame) -> bytes:
    """Reliability diagram per region: accuracy against mean confidence per bin, and bin counts."""
    regions = sorted(reliability["region"].astype(str).unique(), key=lambda r: (r != "whole", r))
    fig, axes = plt.subplots(1, len(regions), figsize=(4.2 * len(regions), 3.8), squeeze=False)
    for ax, region in zip(axes.ravel(), regions, strict=True):
        rows = reliability[reliability["region"].astype(str) == region].sort_values("bin")
        rows = rows[rows["count"] > 0]
        ax.plot([0, 1], [0, 1], ":", color="0.4", label="perfect calibration")
        ax.plot(rows["mean_confidence"], rows["accuracy"], "o-", color="#0072B2", label="observed")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"reliability: {region}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
        counts = ax.twinx()
        widths = (rows["upper"] - rows["lower"]) if {"upper", "lower"} <= set(rows) else 0.05
        centers = (
            (rows["upper"] + rows["lower"]) / 2
            if {"upper", "lower"} <= set(rows)
            else rows["mean_confidence"]
        )
        counts.bar(centers, rows["count"], width=widths, alpha=0.2, color="#E69F00")
        counts.set_yscale("log")
        counts.set_ylabel("pixels per bin", fontsize=8)
    fig.tight_layout()
    return _figure_png(fig)


def _uncertainty_column(cases: pd.DataFrame, where: Path | str) -> str:
    if "mean_entropy_region" in cases:
        return "mean_entropy_region"
    others = sorted(c for c in cases.columns if str(c).startswith("mean_entropy"))
    if not others:
        raise DataError("no uncertainty column (mean_entropy_region)", where)
    return others[0]


def uncertainty_png(cases: pd.DataFrame) -> bytes:
    """Uncertainty (mean entropy in the predicted region) against Dice, one point per case."""
    column = _uncertainty_column(cases, "calibration_cases.csv")
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.scatter(cases[column], cases["dice"], s=14, color="#0072B2", alpha=0.7)
    ax.set_xlabel(column.replace("_", " "))
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("uncertainty vs Dice", fontsize=10)
    fig.tight_layout()
    return _figure_png(fig)


# --- overlays and tables ----------------------------------------------------------------------------


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
    result: ResultDir, cases: pd.DataFrame, chosen: Mapping[str, str], size: int
) -> list[dict[str, Any]]:
    ranks = {c: i + 1 for i, c in enumerate(cases["case"])}
    by_case = cases.set_index("case")
    out = []
    for index, (case, group) in enumerate(chosen.items()):
        if case not in result.slices:
            continue
        item = result.slices[case]
        row = by_case.loc[case]
        hd95 = _fmt(float(row["hd95_mm"]), 2) if "hd95_mm" in row else "—"
        caption = f"Dice {_fmt(float(row['dice']))}, HD95 {hd95} mm, "
        caption += f"slice {item.slice_index}" if item.slice_index >= 0 else "2D"
        note = case_reason({"case": case, **row.to_dict()})
        caption += (f" — {note}" if note else "") + ("" if item.has_image else " — no image: masks only")
        out.append(
            {
                "case": case,
                "anchor": _anchor("overlay", index, case),
                "src": _data_uri(overlay_png(item, size)),
                "group": group,
                "rank": ranks[case],
                "caption": caption,
            }
        )
    return out


def _anchor(prefix: str, index: int, case: str) -> str:
    return f"{prefix}-{index}-" + re.sub(r"[^A-Za-z0-9_-]+", "_", case)[:40]


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _script_json(value: Any) -> str:
    """JSON safe inside ``<script>``: no ``</`` and no NaN."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _metric_digits(metric: str) -> int:
    return 2 if metric.endswith("_mm") else 4


def _summary_rows(result: ResultDir) -> list[dict[str, Any]]:
    rows = []
    for item in summarize_metrics(result.cases):
        d = _metric_digits(item["metric"])
        rows.append(
            {
                **item,
                "mean_sd": f"{_fmt(item['mean'], d)} ± {_fmt(item['sd'], d)}",
                "median_iqr": f"{_fmt(item['median'], d)} [{_fmt(item['q1'], d)}, {_fmt(item['q3'], d)}]",
                "p5_p95": f"{_fmt(item['p5'], d)} / {_fmt(item['p95'], d)}",
            }
        )
    return rows


def _excluded_cases(result: ResultDir) -> list[dict[str, str]]:
    out = []
    for row in result.cases.to_dict("records"):
        affected = [METRIC_LABELS[m] for m in METRICS if m in row and unusable_reason(row, m) is not None]
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
                    "digits": _metric_digits(metric),
                }
            )
    columns.append({"key": "_note", "label": "note", "type": "text"})
    return columns


# --- comparison ---------------------------------------------------------------------------------------


def _paired(results: Sequence[ResultDir], tie_tolerance: float, seed: int) -> dict[str, Any]:
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
        for metric in METRICS:
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
            d = _metric_digits(metric)
            stats.append(
                {
                    **comparison.to_dict(),
                    "a": reference.name,
                    "b": other.name,
                    "label": METRIC_LABELS[metric],
                    "means": f"{_fmt(comparison.mean_a, d)} → {_fmt(comparison.mean_b, d)}",
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
                row[f"{metric}:{i}"] = _json_value(value)
                if i:
                    row[f"d_{metric}:{i}"] = _json_value(value - base)
        rows.append(row)
    columns = [{"key": "case", "label": "case", "type": "text"}]
    for metric in ("dice", "hd95_mm"):
        if f"{metric}:0" not in rows[0]:
            continue
        d = _metric_digits(metric)
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


def _config_table(results: Sequence[ResultDir]) -> list[dict[str, Any]]:
    flat = [flatten_config(r.config) if r.config else {} for r in results]
    keys = sorted(set().union(*flat))
    rows = []
    for key in keys:
        values = [_show(f[key]) if key in f else "—" for f in flat]
        if len(set(values)) > 1 and key != "output_dir":
            rows.append({"key": key, "values": values})
    return rows


def _compare_overlays(
    results: Sequence[ResultDir], shared: Sequence[str], n: int, size: int
) -> list[dict[str, Any]]:
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
                    "src": _data_uri(overlay_png(item, size)),
                    "caption": f"{r.name}: Dice {_fmt(value)}{where}",
                }
            )
        out.append(
            {"case": case, "anchor": _anchor("cmp", index, case), "gap": f"{-gap:.4f}", "panels": panels}
        )
    return out


# --- the report ---------------------------------------------------------------------------------------


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
        {"key": k, "value": _show(v)} for k, v in sorted(flatten_config(calibration).items()) if k not in used
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


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
    """The report's HTML text (see :func:`build_report`)."""
    main = results[0]
    cases = main.cases.copy()
    order = cases.assign(_dice=cases["dice"].astype(float).fillna(np.inf)).sort_values(
        ["_dice", "case"], kind="mergesort"
    )
    cases = cases.loc[order.index].reset_index(drop=True)  # worst first by Dice

    chosen = select_overlay_cases(cases, n_worst, n_median, n_best) if main.slices else {}
    overlays = _overlays(main, cases, chosen, overlay_size)
    anchors = {o["case"]: o["anchor"] for o in overlays}
    extra = {
        c: {"anchor": anchors.get(c, ""), "note": case_reason(r)}
        for c, r in zip(cases["case"], cases.to_dict("records"), strict=True)
    }

    compare = None
    if len(results) > 1:
        paired = _paired(results, tie_tolerance, seed)
        cmp_overlays = _compare_overlays(results, paired["shared"], n_compare, overlay_size)
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
            "config_table": _config_table(results),
            "names": [r.name for r in results],
        }

    histories = {r.name: r.history for r in results if r.history is not None and not r.history.empty}
    metrics_present = [m for m in METRICS if m in main.cases]
    hd95_mode = str(
        main.summary.get("hd95_mode", ((main.config or {}).get("eval") or {}).get("hd95_mode", "pooled"))
    )
    nsd_tol = main.summary.get(
        "nsd_tolerance_mm", ((main.config or {}).get("eval") or {}).get("nsd_tolerance_mm")
    )
    calibration = []
    for r in results:
        if r.reliability is None and r.calibration_cases is None and r.calibration is None:
            continue
        calibration.append(
            {
                "name": r.name,
                "reliability": None if r.reliability is None else _data_uri(reliability_png(r.reliability)),
                "scatter": None
                if r.calibration_cases is None
                else _data_uri(uncertainty_png(r.calibration_cases)),
                **calibration_tables(r.calibration or {}),
            }
        )
    from medseg import __version__

    provenance = [_provenance(r) for r in results]
    context = {
        "title": title or f"medseg report: {' vs '.join(r.name for r in results)}",
        "generated": timestamp or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
        "commit": git_commit() or "unknown (not a git checkout)",
        "command": command or "medseg.report.html.build_report (Python API)",
        "names": [r.name for r in results],
        "provenance": provenance,
        "provenance_keys": list(dict.fromkeys(k for item in provenance for k in item)),
        "config_diffs": [
            {"name": r.name, "rows": config_differences(r.config) if r.config else None} for r in results
        ],
        "summaries": [
            {"name": r.name, "n": len(r.cases), "rows": _summary_rows(r), "excluded": _excluded_cases(r)}
            for r in results
        ],
        "hd95_definition": HD95_DEFINITIONS.get(hd95_mode, hd95_mode),
        "hd95_mode": hd95_mode,
        "nsd_tolerance": "unknown" if nsd_tol is None else f"{float(nsd_tol):g}",
        "level": main.level or "case",
        "cases_json": _script_json(_records(cases)),
        "extra_json": _script_json(extra),
        "columns_json": _script_json(_case_columns(cases)),
        "n_cases": len(cases),
        "compare": compare,
        "compare_rows_json": _script_json(compare["rows"]) if compare else "",
        "compare_extra_json": _script_json(compare["extra"]) if compare else "",
        "compare_columns_json": _script_json(compare["columns"]) if compare else "",
        "tie_tolerance": f"{tie_tolerance:g}",
        "seed": seed,
        "distribution": _data_uri(
            distribution_png({r.name: r.cases for r in results}, metrics_present, seed)
        ),
        "overlays": overlays,
        "has_slices": bool(main.slices),
        "slices_file": str(main.path / CASE_SLICES_FILE),
        "training": _data_uri(training_png(histories)) if histories else None,
        "calibration": calibration,
        "gt_color": _hex(GT_RGB),
        "pred_color": _hex(PRED_RGB),
        "both_color": _hex(BOTH_RGB),
    }
    return _environment().get_template("report.html.j2").render(**context)
