"""Preprocessing and augmentation built from MONAI dictionary transforms.

Every spatial transform is applied identically to the image and to all annotator masks
(keys ``mask_<annotator>``): images are interpolated linearly, masks by nearest neighbour, so
masks stay binary.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityd,
)
from torch import Tensor

from medseg.config import AugmentConfig, check_intensity_windows
from medseg.errors import ConfigError

INTENSITY_MODES = ("zscore", "minmax", "none")

#: ``data.intensity``: a mode of :data:`INTENSITY_MODES` (per image), or one fixed window per
#: channel, ``{"clip": [low, high], "mean": m, "std": s}`` (CT: the same mapping for every scan)
Intensity = str | Sequence[Mapping[str, Any]]


def mask_key(annotator: str) -> str:
    return f"mask_{annotator}"


def window_intensity(image: np.ndarray, windows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Clip each channel to its window, then z-score it with the data set's mean and std (nnU-Net's CT
    scheme: Hounsfield units are quantitative, so every scan gets the same mapping)."""
    image = np.asarray(image, dtype=np.float32)
    if len(windows) != image.shape[0]:
        raise ValueError(f"{len(windows)} intensity windows for an image with {image.shape[0]} channels")
    out = np.empty_like(image)
    for c, window in enumerate(windows):
        low, high = (float(v) for v in window["clip"])
        out[c] = (np.clip(image[c], low, high) - float(window["mean"])) / float(window["std"])
    return out


class WindowIntensityd(MapTransform):
    """:func:`window_intensity` as a MONAI dictionary transform."""

    def __init__(self, keys: str | Sequence[str], windows: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(keys)
        check_intensity_windows(windows)
        self.windows = [dict(w) for w in windows]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = window_intensity(np.asarray(out[key]), self.windows)
        return out


def normalize_intensity(image: np.ndarray, mode: Intensity = "zscore") -> np.ndarray:
    """Channel-wise z-score or min–max to [0, 1] (a constant channel maps to 0, never to NaN), or a
    fixed window per channel (:func:`window_intensity`)."""
    if not isinstance(mode, str):
        check_intensity_windows(mode)
        return window_intensity(image, mode)
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
    annotators: Sequence[str], image_size: Sequence[int], intensity: Intensity = "zscore"
) -> Compose:
    """Deterministic part: intensity normalisation, then resize to ``image_size``."""
    masks = [mask_key(a) for a in annotators]
    steps: list = []
    if not isinstance(intensity, str):
        steps.append(WindowIntensityd(keys="image", windows=intensity))
    elif intensity == "zscore":
        steps.append(NormalizeIntensityd(keys="image", channel_wise=True))
    elif intensity == "minmax":
        steps.append(ScaleIntensityd(keys="image", channel_wise=True))
    elif intensity != "none":
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got '{intensity}'")
    steps.append(Resized(keys="image", spatial_size=tuple(image_size), mode="bilinear", align_corners=False))
    if masks:
        steps.append(Resized(keys=masks, spatial_size=tuple(image_size), mode="nearest"))
    return Compose(steps)


def preprocess_images(
    images: Sequence[np.ndarray], image_size: Sequence[int], intensity: Intensity = "zscore"
) -> Tensor:
    """2D images (each C×H×W) as one float32 model batch N×C×h×w: :func:`preprocess_transform` each."""
    preprocess = preprocess_transform([], image_size, intensity)
    return torch.stack(
        [torch.as_tensor(np.asarray(preprocess({"image": image})["image"])) for image in images]
    ).float()


def augment_transform(
    annotators: Sequence[str],
    spatial_dims: int,
    cfg: AugmentConfig,
    anisotropic: bool = False,
    label_keys: Sequence[str] = (),
) -> Compose:
    """Random rotation (±rotate_deg), isotropic-range scale (±scale), flips and intensity jitter.

    In 3D (``D×H×W``) the rotation is about all three axes and the scale along all three, unless
    ``anisotropic``: then it rotates in-plane only (about the z axis; MONAI's first rotation angle
    turns the ``H×W`` plane) and scales only ``H`` and ``W``. A volume whose slices are much
    thicker than its pixels would otherwise be interpolated across slices it never resolved. The
    flip mirrors the last (``x``) axis, as in 2D, or each of ``cfg.flip_axes`` independently.
    ``label_keys`` (e.g. an instance label volume)
    move with the masks, by nearest neighbour.
    """
    masks = [mask_key(a) for a in annotators]
    labels = [*masks, *label_keys]
    keys = ["image", *labels]
    modes = ["bilinear"] + ["nearest"] * len(labels)
    steps: list = []
    if not cfg.enabled:
        return Compose(steps)
    rotate = math.radians(cfg.rotate_deg)
    if spatial_dims == 2:
        rotate_range: tuple[float, ...] = (rotate,)
        scale_range: tuple[float, ...] = (cfg.scale,) * 2
    elif anisotropic:
        rotate_range, scale_range = (rotate, 0.0, 0.0), (0.0, cfg.scale, cfg.scale)
    else:
        rotate_range, scale_range = (rotate,) * 3, (cfg.scale,) * 3
    steps.append(
        RandAffined(
            keys=keys,
            prob=cfg.prob,
            rotate_range=rotate_range,
            scale_range=scale_range,
            mode=modes,
            padding_mode="zeros",
        )
    )
    if cfg.flip:
        axes = [spatial_dims - 1] if cfg.flip_axes is None else [int(a) for a in cfg.flip_axes]
        if any(not 0 <= a < spatial_dims for a in axes):
            raise ConfigError(f"augment.flip_axes must be spatial axes 0..{spatial_dims - 1}, got {axes}")
        # one independent mirror per axis (nnU-Net): every combination occurs
        steps.extend(RandFlipd(keys=keys, prob=cfg.prob, spatial_axis=axis) for axis in axes)
    if cfg.intensity_scale > 0:
        steps.append(RandScaleIntensityd(keys="image", factors=cfg.intensity_scale, prob=cfg.prob))
    if cfg.intensity_shift > 0:
        steps.append(RandShiftIntensityd(keys="image", offsets=cfg.intensity_shift, prob=cfg.prob))
    return Compose(steps)


def is_anisotropic(spacing: Sequence[float], ratio: float = 2.0) -> bool:
    """True when the first (z) spacing exceeds ``ratio`` times the finest in-plane spacing."""
    if len(spacing) != 3:
        return False
    return float(spacing[0]) > ratio * min(float(spacing[1]), float(spacing[2]))
