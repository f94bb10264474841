"""Preprocessing and augmentation built from MONAI dictionary transforms.

Every spatial transform is applied identically to the image and to all annotator masks
(keys ``mask_<annotator>``): images are interpolated linearly, masks by nearest neighbour, so
masks stay binary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    Compose,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityd,
)

from medseg.config import AugmentConfig

INTENSITY_MODES = ("zscore", "minmax", "none")


def mask_key(annotator: str) -> str:
    return f"mask_{annotator}"


def normalize_intensity(image: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Channel-wise z-score or min–max to [0, 1]; a constant channel maps to 0, never to NaN."""
    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got '{mode}'")
    image = np.asarray(image, dtype=np.float32)
    if mode == "none":
        return image
    axes = tuple(range(1, image.ndim))
    if mode == "zscore":
        mean = image.mean(axis=axes, keepdims=True)
        std = image.std(axis=axes, keepdims=True)
        return ((image - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    low = image.min(axis=axes, keepdims=True)
    span = image.max(axis=axes, keepdims=True) - low
    return ((image - low) / np.where(span > 0, span, 1.0)).astype(np.float32)


def preprocess_transform(
    annotators: Sequence[str], image_size: Sequence[int], intensity: str = "zscore"
) -> Compose:
    """Deterministic part: intensity normalisation, then resize to ``image_size``."""
    masks = [mask_key(a) for a in annotators]
    steps: list = []
    if intensity == "zscore":
        steps.append(NormalizeIntensityd(keys="image", channel_wise=True))
    elif intensity == "minmax":
        steps.append(ScaleIntensityd(keys="image", channel_wise=True))
    elif intensity != "none":
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got '{intensity}'")
    steps.append(Resized(keys="image", spatial_size=tuple(image_size), mode="bilinear", align_corners=False))
    if masks:
        steps.append(Resized(keys=masks, spatial_size=tuple(image_size), mode="nearest"))
    return Compose(steps)


def augment_transform(annotators: Sequence[str], spatial_dims: int, cfg: AugmentConfig) -> Compose:
    """Random rotation (±rotate_deg), isotropic-range scale (±scale), flips and intensity jitter."""
    masks = [mask_key(a) for a in annotators]
    keys = ["image", *masks]
    modes = ["bilinear"] + ["nearest"] * len(masks)
    steps: list = []
    if not cfg.enabled:
        return Compose(steps)
    rotate = math.radians(cfg.rotate_deg)
    rotate_range = (rotate,) if spatial_dims == 2 else (rotate, rotate, rotate)
    steps.append(
        RandAffined(
            keys=keys,
            prob=cfg.prob,
            rotate_range=rotate_range,
            scale_range=(cfg.scale,) * spatial_dims,
            mode=modes,
            padding_mode="zeros",
        )
    )
    if cfg.flip:
        steps.append(RandFlipd(keys=keys, prob=cfg.prob, spatial_axis=spatial_dims - 1))
    if cfg.intensity_scale > 0:
        steps.append(RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=cfg.prob))
    if cfg.intensity_shift > 0:
        steps.append(RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=cfg.prob))
    return Compose(steps)
