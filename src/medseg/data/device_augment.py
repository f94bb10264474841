"""Batch augmentation on the device with tensor operations (2D and 3D).

Per-sample CPU transforms (MONAI dictionaries in DataLoader workers) cost more than the model
step on a fast device; here a whole ``B×C×spatial`` batch is augmented where it already lives:

* **flips** along each spatial axis (exact index reversals, image and masks alike);
* **affine**: rotation and isotropic scale through ``affine_grid`` / ``grid_sample``, bilinear for
  the image, nearest for masks (labels stay labels), zero padding. ``anisotropic`` volumes rotate
  in-plane only and are not scaled along z (interpolating across thick slices invents structure);
* **intensity** (image only): scale ``1 ± s``, shift ``± t``, gamma on the per-sample min–max range
  (as nnU-Net, which keeps the range), additive Gaussian noise of a per-sample std.

Every random number comes from ``generator`` (a CPU ``torch.Generator``; the noise field is drawn
on the device from a seed taken from it), so a batch is augmented the same on any device for the
same seed, noise aside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.errors import ConfigError

MaskInput = Tensor | Mapping[str, Tensor] | None


@dataclass(frozen=True)
class SpatialParams:
    """One batch's spatial draws: ``flips`` (B × spatial_dims bool), ``affine`` (B bool) and ``theta``
    (B × n × (n + 1), output → input coordinates in ``affine_grid``'s x, y[, z] order)."""

    flips: Tensor
    affine: Tensor
    theta: Tensor


def _rotation_2d(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rotation_3d(angles: Tensor) -> Tensor:
    """R = Rz · Ry · Rx for B×3 angles about the (x, y, z) axes of ``affine_grid``'s coordinates."""
    b = angles.shape[0]
    rotations = []
    for axis in range(3):
        r = torch.eye(3).repeat(b, 1, 1)
        i, j = [k for k in range(3) if k != axis]
        r[:, i : j + 1 : j - i, i : j + 1 : j - i] = _rotation_2d(angles[:, axis])
        rotations.append(r)
    return rotations[2] @ rotations[1] @ rotations[0]


@dataclass
class DeviceAugment:
    """Random flips, affine, intensity scale/shift, gamma and noise for a batch on any device.

    Probabilities are per sample (flips: per sample and axis). ``rotate_deg`` bounds each rotation
    angle; ``scale_range`` the zoom factor (> 1 zooms in); ``anisotropic`` (3D) rotates about z
    only and keeps the z scale at 1.
    """

    spatial_dims: int = 2
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] | None = None
    affine_prob: float = 0.2
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.25)
    anisotropic: bool = False
    intensity_scale_prob: float = 0.15
    intensity_scale: float = 0.1
    intensity_shift_prob: float = 0.15
    intensity_shift: float = 0.1
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.1
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        probs = (
            "flip_prob",
            "affine_prob",
            "intensity_scale_prob",
            "intensity_shift_prob",
            "gamma_prob",
            "noise_prob",
        )
        for name in probs:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        axes = tuple(range(self.spatial_dims)) if self.flip_axes is None else tuple(self.flip_axes)
        if any(a not in range(self.spatial_dims) for a in axes):
            raise ConfigError(f"flip_axes must be spatial axes in [0, {self.spatial_dims}), got {axes}")
        self.flip_axes = axes
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"scale_range must be 0 < low ≤ high, got {self.scale_range}")
        if not 0 < self.gamma_range[0] <= self.gamma_range[1]:
            raise ConfigError(f"gamma_range must be 0 < low ≤ high, got {self.gamma_range}")

    # ------------------------------------------------------------------ spatial

    def draw_spatial(self, batch: int, generator: torch.Generator | None = None) -> SpatialParams:
        """The spatial parameters of a batch of ``batch`` samples (drawn on the CPU)."""
        n = self.spatial_dims
        flips = torch.zeros(batch, n, dtype=torch.bool)
        draws = torch.rand(batch, n, generator=generator) < self.flip_prob
        for axis in self.flip_axes or ():
            flips[:, axis] = draws[:, axis]
        affine = torch.rand(batch, generator=generator) < self.affine_prob
        limit = math.radians(self.rotate_deg)
        angles = (torch.rand(batch, 3 if n == 3 else 1, generator=generator) * 2 - 1) * limit
        low, high = (math.log(s) for s in self.scale_range)
        scale = torch.exp(low + (high - low) * torch.rand(batch, generator=generator))
        if n == 2:
            linear = _rotation_2d(angles[:, 0]) / scale.view(-1, 1, 1)
        else:
            if self.anisotropic:
                angles[:, :2] = 0.0  # rotate about z only: the (x, y) plane of the slices
            zoom = torch.stack([scale, scale, torch.ones_like(scale) if self.anisotropic else scale], -1)
            linear = _rotation_3d(angles) / zoom.unsqueeze(1)
        theta = torch.cat([linear, torch.zeros(batch, n, 1)], dim=-1)
        return SpatialParams(flips, affine, theta)

    def apply_spatial(self, x: Tensor, params: SpatialParams, mode: str = "bilinear") -> Tensor:
        """Flip, then warp the samples drawn for the affine; ``mode`` ``bilinear`` or ``nearest``."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"DeviceAugment(spatial_dims={self.spatial_dims}) expects B×C×spatial tensors, "
                f"got {tuple(x.shape)}"
            )
        flips = params.flips.to(x.device)
        for axis in range(self.spatial_dims):
            if bool(params.flips[:, axis].any()):
                keep_shape = (-1,) + (1,) * (x.ndim - 1)
                x = torch.where(flips[:, axis].view(keep_shape), x.flip(2 + axis), x)
        selected = torch.nonzero(params.affine).flatten()
        if selected.numel():
            index = selected.to(x.device)
            part = x.index_select(0, index).float()
            theta = params.theta.index_select(0, selected).to(x.device, torch.float32)
            grid = F.affine_grid(theta, list(part.shape), align_corners=False)
            warped = F.grid_sample(part, grid, mode=mode, padding_mode="zeros", align_corners=False)
            x = x.index_copy(0, index, warped.to(x.dtype))
        return x

    # ------------------------------------------------------------------ intensity

    def _per_sample(self, x: Tensor, values: Tensor, apply: Tensor, neutral: float) -> Tensor:
        return (
            torch.where(apply, values, torch.full_like(values, neutral))
            .to(x.device)
            .view((-1,) + (1,) * (x.ndim - 1))
        )

    def apply_intensity(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scale, shift, gamma and noise on the image (masks are untouched)."""
        b = image.shape[0]
        rand = torch.rand(b, 8, generator=generator)
        x = image.float()
        if self.intensity_scale_prob > 0:
            factor = 1 + (rand[:, 1] * 2 - 1) * self.intensity_scale
            x = x * self._per_sample(x, factor, rand[:, 0] < self.intensity_scale_prob, 1.0)
        if self.intensity_shift_prob > 0:
            shift = (rand[:, 3] * 2 - 1) * self.intensity_shift
            x = x + self._per_sample(x, shift, rand[:, 2] < self.intensity_shift_prob, 0.0)
        if self.gamma_prob > 0 and bool((rand[:, 4] < self.gamma_prob).any()):
            low, high = (math.log(g) for g in self.gamma_range)
            gamma = self._per_sample(
                x, torch.exp(low + (high - low) * rand[:, 5]), rand[:, 4] < self.gamma_prob, 1.0
            )
            dims = tuple(range(2, x.ndim))
            lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
            span = (hi - lo).clamp_min(1e-8)
            x = torch.where(gamma != 1.0, ((x - lo) / span).clamp(0, 1) ** gamma * span + lo, x)
        if self.noise_prob > 0 and bool((rand[:, 6] < self.noise_prob).any()):
            std = self._per_sample(x, rand[:, 7] * self.noise_std, rand[:, 6] < self.noise_prob, 0.0)
            seed = int(torch.randint(2**62, (1,), generator=generator))
            device_generator = torch.Generator(device=x.device).manual_seed(seed)
            x = x + std * torch.randn(x.shape, generator=device_generator, device=x.device)
        return x.to(image.dtype)

    # ------------------------------------------------------------------ both

    def __call__(
        self, image: Tensor, masks: MaskInput = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | dict[str, Tensor] | None]:
        """Augment ``image`` (B×C×spatial) and ``masks`` (a B×1×spatial tensor or a dict of them) alike.

        Returns ``(image, masks)`` with the input shapes, dtypes and devices.
        """
        params = self.draw_spatial(image.shape[0], generator)
        out_image = self.apply_intensity(self.apply_spatial(image, params, "bilinear"), generator)
        if masks is None:
            return out_image, None
        if isinstance(masks, Tensor):
            return out_image, self._mask(masks, image, params)
        return out_image, {name: self._mask(m, image, params) for name, m in masks.items()}

    def _mask(self, mask: Tensor, image: Tensor, params: SpatialParams) -> Tensor:
        if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:]:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)} "
                "(batch and spatial sizes must agree)"
            )
        return self.apply_spatial(mask, params, "nearest")
