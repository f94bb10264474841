"""Every figure of medseg, in one palette (Okabe & Ito 2008, colour-blind safe).

* Report PNGs (bytes, embedded in ``report.html``): :func:`overlay_png`, :func:`distribution_png`,
  :func:`training_png`, :func:`reliability_png`, :func:`uncertainty_png`.
* Files: :func:`save_training_curves` (``curves.png`` of a run), :func:`save_overlay_grid` /
  :func:`save_overlay` (``overlays.png``), and the ``medseg compare`` grid figures
  (:func:`save_loss_curves`, :func:`save_val_dice_curves`, :func:`save_dice_distributions`,
  :func:`save_overlay_comparison`).

Training curves are one plotter (:func:`training_figure`) shown in several views. Contours: ground
truth sky blue, prediction vermillion, both on one pixel yellow; annotator disagreement is shaded
reddish purple. Multi-class overlays give each class its own colour (:func:`class_rgb`: the
Okabe–Ito colours, then matplotlib's tab20): the prediction filled, the ground truth outlined.
Pixel spacing sets the aspect ratio, so anisotropic images are not distorted.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import binary_erosion  # noqa: E402

from medseg.io_utils import atomic_write  # noqa: E402
from medseg.metrics.evaluation import usable_values  # noqa: E402
from medseg.report.formatting import METRIC_LABELS  # noqa: E402
from medseg.report.results import uncertainty_column  # noqa: E402
from medseg.report.slices import CaseSlice  # noqa: E402

# Okabe & Ito (2008): ground truth sky blue, prediction vermillion, both contours on one pixel yellow.
GT_RGB = (0x56, 0xB4, 0xE9)
PRED_RGB = (0xD5, 0x5E, 0x00)
BOTH_RGB = (0xF0, 0xE4, 0x42)
HARD_RGB = (0xCC, 0x79, 0xA7)  # reddish purple, shaded where the annotators disagree
RUN_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
OVERLAY_LEGEND = "ground truth: blue, prediction: vermillion"
HARD_LEGEND = "annotators disagree: purple"


# One colour per foreground class, in class order: the seven Okabe–Ito colours that show on a
# grey image (black left out), then tab20.
CLASS_RGB = (
    (0xE6, 0x9F, 0x00),  # orange
    (0x56, 0xB4, 0xE9),  # sky blue
    (0x00, 0x9E, 0x73),  # bluish green
    (0xF0, 0xE4, 0x42),  # yellow
    (0x00, 0x72, 0xB2),  # blue
    (0xD5, 0x5E, 0x00),  # vermillion
    (0xCC, 0x79, 0xA7),  # reddish purple
)
CLASS_FILL_ALPHA = 0.45  # opacity of the predicted class over the image
CLASS_LEGEND = "prediction: filled, ground truth: outline, one colour per class"


def class_legend(names: Sequence[str]) -> str:
    """The legend of a multi-class overlay figure: each class name with its colour's name."""
    words = ("orange", "sky blue", "green", "yellow", "blue", "vermillion", "purple")
    shown = [
        f"{name}: {words[i] if i < len(words) else f'tab20 #{i - len(words)}'}"
        for i, name in enumerate(names)
    ]
    return ", ".join(shown) + "; ground truth solid, prediction dashed"


def class_rgb(position: int) -> tuple[int, int, int]:
    """The colour of the foreground class at ``position`` (0 = the first foreground class)."""
    if position < 0:
        raise ValueError(f"class position must be >= 0, got {position}")
    if position < len(CLASS_RGB):
        return CLASS_RGB[position]
    r, g, b = plt.get_cmap("tab20")((position - len(CLASS_RGB)) % 20)[:3]
    return (round(r * 255), round(g * 255), round(b * 255))


def hex_color(rgb: Sequence[int]) -> str:
    """``(r, g, b)`` in 0..255 → ``#RRGGBB``."""
    return "#" + "".join(f"{v:02X}" for v in rgb)


GT_COLOR = hex_color(GT_RGB)
PRED_COLOR = hex_color(PRED_RGB)
HARD_RGBA = (*(v / 255 for v in HARD_RGB), 0.45)
MEAN_COLOR = PRED_COLOR
MEDIAN_COLOR = RUN_COLORS[2]  # bluish green


def figure_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    """``fig`` as palette PNG bytes without a version stamp (closes the figure)."""
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


def _resized_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label map resized to PIL ``shape`` (w, h) by nearest neighbour, values kept."""
    return np.asarray(
        Image.fromarray(np.asarray(labels, dtype=np.int32)).resize(shape, Image.Resampling.NEAREST)
    )


def overlay_png(item: CaseSlice, size: int = 224, classes: Sequence[int] | None = None) -> bytes:
    """The slice with ground-truth and prediction contours; pixel spacing sets the aspect ratio.

    The longer physical side is ``size`` pixels. Colours: :data:`GT_RGB`, :data:`PRED_RGB`, and
    :data:`BOTH_RGB` where the two contours meet. The PNG has a 256-colour palette. ``classes``
    (the label values of a multi-class result, in class order) colours each class instead
    (:func:`class_overlay`).
    """
    height_mm = item.gt.shape[0] * item.spacing[0]
    width_mm = item.gt.shape[1] * item.spacing[1]
    scale = size / max(height_mm, width_mm)
    shape = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))  # PIL: (w, h)
    image = Image.fromarray(np.asarray(item.image, dtype=np.uint8)).resize(shape, Image.Resampling.BILINEAR)
    if classes is not None:
        gt_labels, pred_labels = _resized_labels(item.gt, shape), _resized_labels(item.pred, shape)
        return class_overlay(np.asarray(image), gt_labels, pred_labels, classes)
    gt = _resized_labels(item.gt, shape) > 0
    pred = _resized_labels(item.pred, shape) > 0
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


def class_overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> bytes:
    """A multi-class overlay as palette PNG bytes: each predicted class filled in its colour
    (:func:`class_rgb`, opacity :data:`CLASS_FILL_ALPHA`), each ground-truth class outlined in it.
    ``image`` is uint8 H×W (grey) or H×W×3; ``gt`` / ``pred`` hold label values; a value outside
    ``classes`` is drawn in the colour after the last class."""
    rgb = np.asarray(image, dtype=np.float64)
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3].copy()
    colours = {int(v): np.asarray(class_rgb(i), dtype=np.float64) for i, v in enumerate(classes)}
    unknown = np.asarray(class_rgb(len(classes)), dtype=np.float64)
    for value in sorted(set(np.unique(pred).tolist()) - {0}):
        region = pred == value
        colour = colours.get(int(value), unknown)
        rgb[region] = (1 - CLASS_FILL_ALPHA) * rgb[region] + CLASS_FILL_ALPHA * colour
    for value in sorted(set(np.unique(gt).tolist()) - {0}):
        rgb[_boundary(gt == value)] = colours.get(int(value), unknown)
    composed = Image.fromarray(np.round(rgb).astype(np.uint8))
    quantized = composed.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    quantized.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def distribution_png(
    runs: Mapping[str, pd.DataFrame],
    metrics: Sequence[str],
    seed: int = 0,
    colors: Sequence[str] | None = None,
) -> bytes:
    """Box + strip plot of the usable values of each metric, one box per run (or class); mean ◆,
    median —. Points take ``colors`` (one per box; default :data:`RUN_COLORS`)."""
    colors = list(colors) if colors is not None else list(RUN_COLORS)
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
            values.append(usable_values(records, metric))
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
            color = colors[i % len(colors)]
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
    return figure_png(fig)


# panel → (title, history columns); the first column is drawn solid, the second dashed
TRAINING_PANELS = {
    "loss": ("loss", ("train_loss", "val_loss")),
    "val_dice": ("validation Dice", ("val_dice",)),
    "lr": ("learning rate", ("lr",)),
    "epoch_time": ("epoch time (s)", ("epoch_time_s",)),
}


def training_figure(
    histories: Mapping[str, pd.DataFrame | Sequence[Mapping[str, Any]]],
    panels: Sequence[str] = tuple(TRAINING_PANELS),
    mark_best: bool = False,
) -> plt.Figure:
    """Training curves of every run (one colour per run) in the chosen ``panels`` side by side.

    A history is ``history.csv`` as a frame, or its rows. ``mark_best`` circles the best validation
    Dice. The learning rate goes on a log axis when it spans more than a factor 20.
    """
    if not histories:
        raise ValueError("no training history to plot")
    unknown = [p for p in panels if p not in TRAINING_PANELS]
    if unknown:
        raise ValueError(f"unknown training panel(s) {unknown}; choose from {list(TRAINING_PANELS)}")
    frames = {
        name: h if isinstance(h, pd.DataFrame) else pd.DataFrame(list(h)) for name, h in histories.items()
    }
    if any(frame.empty for frame in frames.values()):
        raise ValueError("no training history to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.75 * len(panels), 3.3), squeeze=False)
    axes = axes.ravel()
    for i, (name, history) in enumerate(frames.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for ax, panel in zip(axes, panels, strict=True):
            columns = TRAINING_PANELS[panel][1]
            for column, style in zip(columns, ("-", "--"), strict=False):
                if column in history:
                    label = name if len(columns) == 1 else f"{name} {column.split('_')[0]}"
                    ax.plot(
                        history["epoch"], history[column], style, color=color, marker="o", ms=3, label=label
                    )
            if mark_best and panel == "val_dice" and "val_dice" in history:
                best = int(np.nanargmax(history["val_dice"].to_numpy(dtype=float)))
                epoch, dice = history["epoch"].iloc[best], float(history["val_dice"].iloc[best])
                ax.scatter(
                    [epoch],
                    [dice],
                    s=120,
                    facecolors="none",
                    edgecolors="k",
                    label=f"best {dice:.3f} @ {epoch}",
                )
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_title(TRAINING_PANELS[panel][0], fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if panel == "val_dice":
            ax.set_ylim(0, 1)
        if ax.lines:
            ax.legend(fontsize=7)
    if "lr" in panels:
        lr = np.concatenate([h["lr"].to_numpy(dtype=float) for h in frames.values() if "lr" in h] or [[]])
        if lr.size and np.all(lr > 0) and lr.max() / lr.min() > 20:
            axes[list(panels).index("lr")].set_yscale("log")
    fig.subplots_adjust(left=0.05 * 4 / len(panels), right=0.99, bottom=0.16, top=0.9, wspace=0.28)
    return fig


def training_png(histories: Mapping[str, pd.DataFrame]) -> bytes:
    """Loss (train solid, validation dashed), validation Dice, learning rate and epoch time."""
    return figure_png(training_figure(histories))


def save_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``curves.png`` of one run: loss (train, validation) and validation Dice with its best epoch."""
    return _save(training_figure({"run": history}, ("loss", "val_dice"), mark_best=True), path)


def save_loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Training (solid) and validation (dashed) loss of every run against the epoch."""
    return _save(training_figure(histories, ("loss",)), path)


def save_val_dice_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Validation Dice (mean over volumes) of every run against the epoch."""
    return _save(training_figure(histories, ("val_dice",)), path)


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
    return figure_png(fig)


def uncertainty_png(cases: pd.DataFrame) -> bytes:
    """Uncertainty (mean entropy in the predicted region) against Dice, one point per case."""
    column = uncertainty_column(cases, "calibration_cases.csv")
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.scatter(cases[column], cases["dice"], s=14, color="#0072B2", alpha=0.7)
    ax.set_xlabel(column.replace("_", " "))
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("uncertainty vs Dice", fontsize=10)
    fig.tight_layout()
    return figure_png(fig)


# --- overlays and figures written to files ---------------------------------------------------------


@dataclass
class OverlayPanel:
    image: np.ndarray  # C×H×W or H×W
    gt: np.ndarray | None
    pred: np.ndarray | None
    spacing: Sequence[float] = (1.0, 1.0)
    title: str = ""
    hard: np.ndarray | None = None  # annotator disagreement (expert XOR non-expert), shaded
    # multi-class: the label values of the classes, in class order (gt / pred are label maps);
    # each class gets its colour, ground truth solid, prediction dashed
    classes: Sequence[int] | None = None


def _display_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
    low, high = np.percentile(image, (1, 99))
    return np.clip((image - low) / (high - low + 1e-8), 0, 1)


def _draw(ax: plt.Axes, panel: OverlayPanel) -> None:
    shown = _display_image(panel.image)
    sy, sx = panel.spacing[-2], panel.spacing[-1]
    ax.imshow(shown, cmap="gray", aspect=sy / sx, interpolation="nearest")
    if panel.hard is not None and np.any(panel.hard):
        shade = np.zeros((*np.asarray(panel.hard).shape, 4))
        shade[np.asarray(panel.hard, dtype=bool)] = HARD_RGBA
        ax.imshow(shade, aspect=sy / sx, interpolation="nearest")
    if panel.classes is None:
        contours = [(panel.gt, GT_COLOR, "solid"), (panel.pred, PRED_COLOR, "solid")]
    else:
        contours = [
            (None if labels is None else np.asarray(labels) == value, hex_color(class_rgb(i)), style)
            for i, value in enumerate(panel.classes)
            for labels, style in ((panel.gt, "solid"), (panel.pred, "dashed"))
        ]
    for mask, color, style in contours:
        if mask is not None and np.any(mask) and not np.all(mask):
            ax.contour(
                np.asarray(mask, dtype=float), levels=[0.5], colors=[color], linewidths=1.4, linestyles=style
            )
    ax.set_title(panel.title, fontsize=9)
    ax.axis("off")


def save_overlay_grid(
    panels: Sequence[OverlayPanel],
    path: str | Path,
    columns: int = 3,
    suptitle: str = OVERLAY_LEGEND,
) -> Path:
    """A grid of overlays; each panel shows the image with ground-truth and prediction contours."""
    if not panels:
        raise ValueError("no overlay panels to draw")
    columns = min(columns, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        _draw(ax, panel)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=_image_format(path), dpi=110)
    plt.close(fig)
    return path


def save_overlay(
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    path: str | Path,
    spacing: Sequence[float] = (1.0, 1.0),
    title: str = "",
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One overlay; for a volume (``C×D×H×W`` image) the slice with the largest mask is shown.

    ``classes`` (label values) draws a label map's classes each in its colour, named in the legend
    by ``class_names`` (default ``label <value>``)."""
    image = np.asarray(image)
    if image.ndim == 4:
        reference = pred if pred is not None else gt
        z = (
            int(np.argmax((reference > 0).reshape(reference.shape[0], -1).sum(1)))
            if reference is not None
            else 0
        )
        image = image[:, z]
        gt = None if gt is None else gt[z]
        pred = None if pred is None else pred[z]
        title = f"{title} (slice {z})"
    panel = OverlayPanel(image, gt, pred, spacing, title, classes=classes)
    legend = OVERLAY_LEGEND
    if classes is not None:
        legend = class_legend(class_names or [f"label {v}" for v in classes])
    return save_overlay_grid([panel], path, columns=1, suptitle=legend)


def _grid(n: int, columns: int, size: tuple[float, float]) -> tuple[plt.Figure, np.ndarray]:
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    width = max(size[0] * columns, 7.0)  # room for the figure title even with a single panel
    fig, axes = plt.subplots(rows, columns, figsize=(width, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _image_format(path: Path) -> str:
    """matplotlib's format name for a figure file (by its extension; PNG without one)."""
    return path.suffix.lstrip(".").lower() or "png"


def _save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # leave room for the suptitle
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=_image_format(path), dpi=dpi)
    plt.close(fig)
    return path


def save_dice_distributions(per_volume: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Histogram of per-volume DSC per run, the mean as a vermillion line, the median as a green one."""
    if not per_volume:
        raise ValueError("no per-volume Dice values to plot")
    fig, axes = _grid(len(per_volume), 3, (4.2, 3.2))
    bins = np.linspace(0.0, 1.0, 21)
    for ax, (name, values) in zip(axes, per_volume.items(), strict=False):
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins, color="0.6", edgecolor="0.3")
        if values.size:
            mean, median = float(values.mean()), float(np.median(values))
            ax.axvline(mean, color=MEAN_COLOR, lw=2, label=f"mean {mean:.3f}")
            ax.axvline(median, color=MEDIAN_COLOR, lw=2, ls="--", label=f"median {median:.3f}")
            ax.legend(fontsize=8, loc="upper right" if mean < 0.5 else "upper left")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} (n={values.size})", fontsize=10)
        ax.set_xlabel("DSC per volume")
        ax.set_ylabel("volumes")
        ax.set_xlim(0, 1)
    fig.suptitle("Per-volume DSC distribution (mean vermillion, median green)", fontsize=11)
    return _save(fig, path)


def _slice_panel(sample: Any, pred: np.ndarray, title: str, z: int | None) -> OverlayPanel:
    gt = sample.target_mask
    if sample.ndim == 3:
        assert z is not None
        return OverlayPanel(sample.image[:, z], gt[z], pred[z], sample.spacing[1:], title)
    return OverlayPanel(sample.image, gt, pred, sample.spacing, title)


def save_overlay_comparison(
    samples: Mapping[str, Any], predictions: Mapping[str, Mapping[str, np.ndarray]], path: str | Path
) -> Path:
    """Rows are runs, columns are the same slices (largest ground-truth area of each volume).

    ``samples`` maps a prediction key (:attr:`medseg.data.sample.Sample.key`) to its
    sample; ``predictions[run][key]`` is that sample's binary mask, at the sample's own size.
    """
    if not samples or not predictions:
        raise ValueError("no samples or predictions for the overlay comparison")
    runs = list(predictions)
    fig, axes = plt.subplots(
        len(runs), len(samples), figsize=(2.6 * len(samples), 2.7 * len(runs)), squeeze=False
    )
    for col, (key, sample) in enumerate(samples.items()):
        z = None
        if sample.ndim == 3:
            gt = sample.target_mask
            z = int(np.argmax(gt.reshape(gt.shape[0], -1).sum(1)))
        for row, run in enumerate(runs):
            ax = axes[row, col]
            pred = predictions[run].get(key)
            if pred is None:
                ax.axis("off")
                continue
            title = f"{key}" + (f" z={z}" if z is not None else "") if row == 0 else ""
            _draw(ax, _slice_panel(sample, pred, title, z))
            if col == 0:
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_ylabel(run, fontsize=9)
    fig.suptitle(f"Same slices for every run: {OVERLAY_LEGEND}", fontsize=11)
    path = _save(fig, path, dpi=80)
    # runs × slices of photographic content: a 256-colour palette PNG is ~5× smaller, same look
    with Image.open(path) as rendered:
        quantized = rendered.convert("RGB").quantize(colors=256)
    with atomic_write(path, "wb") as handle:
        quantized.save(handle, format="PNG", optimize=True)
    return path
