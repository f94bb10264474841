"""Trivial box-prompt baselines: what a box alone gives, without any model.

A box-prompted model (MedSAM, LiteMedSAM) is handed the tight box of the object. Two masks
follow from that box alone, and a model that does not beat them has learned nothing that the box
did not already give:

* :func:`filled_box_mask`: every pixel of the box;
* :func:`inscribed_ellipse_mask`: the axis-aligned ellipse inscribed in the box.

Box convention (MedSAM's and the CVPR24 challenge's, as in :mod:`medseg.data.prompts`):
``x0, y0, x1, y1`` in pixel indices, ``x`` the column and ``y`` the row, both ends inclusive. The
box covers the pixels whose centres lie in ``[x0, x1] × [y0, y1]``; its outline runs along the
pixel edges, from ``x0 - 0.5`` to ``x1 + 0.5``, and the inscribed ellipse touches that outline:
centre ``((x0 + x1) / 2, (y0 + y1) / 2)``, semi-axes ``(x1 - x0 + 1) / 2`` and
``(y1 - y0 + 1) / 2``, a pixel in when its centre is inside or on the ellipse.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["box_baselines", "filled_box_mask", "inscribed_ellipse_mask", "tight_box"]


def tight_box(mask: np.ndarray) -> np.ndarray:
    """The tight box ``(x0, y0, x1, y1)`` (int, inclusive) of a non-empty 2D mask's foreground."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no box")
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)


def _check(box: np.ndarray | Sequence[float], shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise ValueError(f"expected a finite box (x0, y0, x1, y1), got {box!r}")
    if b[2] < b[0] or b[3] < b[1]:
        raise ValueError(f"box {b.tolist()} has x1 < x0 or y1 < y0")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"expected a 2D shape (H, W), got {tuple(shape)}")
    return b, (int(shape[0]), int(shape[1]))


def filled_box_mask(box: np.ndarray | Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """``H×W`` bool mask of the pixels whose centres lie in the box (clipped to the image)."""
    (x0, y0, x1, y1), (height, width) = _check(box, shape)
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    return (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)


def inscribed_ellipse_mask(box: np.ndarray | Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """``H×W`` bool mask of the axis-aligned ellipse inscribed in the box's pixel-edge outline."""
    (x0, y0, x1, y1), (height, width) = _check(box, shape)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax, ay = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    ys = np.arange(height, dtype=np.float64)[:, None]
    xs = np.arange(width, dtype=np.float64)[None, :]
    return ((xs - cx) / ax) ** 2 + ((ys - cy) / ay) ** 2 <= 1.0


def box_baselines(mask: np.ndarray) -> dict[str, np.ndarray]:
    """``{"filled box", "inscribed ellipse"}`` masks from the tight box of a non-empty 2D ``mask``."""
    mask = np.asarray(mask)
    box = tight_box(mask)
    return {
        "filled box": filled_box_mask(box, mask.shape),
        "inscribed ellipse": inscribed_ellipse_mask(box, mask.shape),
    }
