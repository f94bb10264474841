"""Figures for ``medseg compare`` (paper 004 §6–7): loss curves per run, validation DSC curves, the
per-volume DSC distribution with its mean (red) and median (green), and one overlay grid with the
same slices for every run (ground-truth edge green, prediction edge red).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medseg.report.figures import OverlayPanel, _draw  # noqa: E402

MEAN_COLOR = "red"
MEDIAN_COLOR = "green"


def _grid(n: int, columns: int, size: tuple[float, float]) -> tuple[plt.Figure, np.ndarray]:
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    width = max(size[0] * columns, 7.0)  # room for the figure title even with a single panel
    fig, axes = plt.subplots(rows, columns, figsize=(width, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _save(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # leave room for the suptitle
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def save_loss_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """One panel per run: training and validation loss against the epoch."""
    if not histories:
        raise ValueError("no run histories to plot")
    fig, axes = _grid(len(histories), 3, (4.2, 3.2))
    for ax, (name, history) in zip(axes, histories.items(), strict=False):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], "-", label="train loss")
        ax.plot(epochs, [h["val_loss"] for h in history], "--", label="validation loss")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training and validation loss per run", fontsize=11)
    return _save(fig, path)


def save_val_dice_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Validation DSC (mean over volumes) against the epoch, every run on one axis."""
    if not histories:
        raise ValueError("no run histories to plot")
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    for name, history in histories.items():
        ax.plot([h["epoch"] for h in history], [h["val_dice"] for h in history], "-o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation mean DSC (per volume)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Validation DSC")
    return _save(fig, path)


def save_dice_distributions(per_volume: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Histogram of per-volume DSC per run, mean as a red line and median as a green line."""
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
    fig.suptitle("Per-volume DSC distribution (mean red, median green)", fontsize=11)
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
    fig.suptitle("Same slices for every run: ground truth green, prediction red", fontsize=11)
    path = _save(fig, path, dpi=80)
    # runs × slices of photographic content: a 256-colour palette PNG is ~5× smaller, same look
    from PIL import Image

    with Image.open(path) as rendered:
        quantized = rendered.convert("RGB").quantize(colors=256)
    quantized.save(path, optimize=True)
    return path
