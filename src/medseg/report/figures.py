"""Figures: training curves and contour overlays (ground truth green, prediction red).

Pixel spacing sets the aspect ratio, so anisotropic images are not distorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

GT_COLOR = "#00c000"
PRED_COLOR = "#ff2020"
HARD_RGBA = (1.0, 0.85, 0.0, 0.45)  # translucent yellow: where the annotators disagree


def save_training_curves(history: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Loss (train, validation) and validation Dice per epoch, side by side."""
    if not history:
        raise ValueError("no training history to plot")
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    dice = [h["val_dice"] for h in history]
    ax_dice.plot(epochs, dice, "o-", color="tab:green", label="validation Dice (per case)")
    best = int(np.nanargmax(dice))
    ax_dice.scatter(
        [epochs[best]],
        [dice[best]],
        s=120,
        facecolors="none",
        edgecolors="k",
        label=f"best {dice[best]:.3f} @ {epochs[best]}",
    )
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_title("Validation Dice")
    ax_dice.legend(loc="lower right")
    ax_dice.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class OverlayPanel:
    image: np.ndarray  # C×H×W or H×W
    gt: np.ndarray | None
    pred: np.ndarray | None
    spacing: Sequence[float] = (1.0, 1.0)
    title: str = ""
    hard: np.ndarray | None = None  # annotator disagreement (expert XOR non-expert), shaded


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
    for mask, color in ((panel.gt, GT_COLOR), (panel.pred, PRED_COLOR)):
        if mask is not None and np.any(mask) and not np.all(mask):
            ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors=[color], linewidths=1.4)
    ax.set_title(panel.title, fontsize=9)
    ax.axis("off")


def save_overlay_grid(
    panels: Sequence[OverlayPanel],
    path: str | Path,
    columns: int = 3,
    suptitle: str = "ground truth: green, prediction: red",
) -> Path:
    """A grid of overlays; each panel shows the image with GT (green) and prediction (red) contours."""
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_overlay(
    image: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    path: str | Path,
    spacing: Sequence[float] = (1.0, 1.0),
    title: str = "",
) -> Path:
    """One overlay; for a volume (``C×D×H×W`` image) the slice with the largest mask is shown."""
    image = np.asarray(image)
    if image.ndim == 4:
        reference = pred if pred is not None else gt
        z = int(np.argmax(reference.reshape(reference.shape[0], -1).sum(1))) if reference is not None else 0
        image = image[:, z]
        gt = None if gt is None else gt[z]
        pred = None if pred is None else pred[z]
        title = f"{title} (slice {z})"
    return save_overlay_grid([OverlayPanel(image, gt, pred, spacing, title)], path, columns=1)
