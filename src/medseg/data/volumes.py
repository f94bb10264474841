"""A torch ``Dataset`` over whole 3D volumes: random patches for training, whole volumes to validate.

An item is ``{"image": C×D×H×W, "target": 1×D×H×W, "masks": {annotator: 1×D×H×W}, "spacing": (3,)
mm in (sz, sy, sx) order, "case_id": str, "annotator_present": {annotator: bool}, "patch_start":
(3,)}``, the keys of :class:`~medseg.data.dataset.SegmentationDataset` without the resize: a
volume keeps its own voxel grid and spacing. When every sample carries an instance label volume
in ``meta["instance"]`` (``D×H×W`` integers, 0 = background), the item also has ``"instance"``
(``1×D×H×W`` int64), cropped and augmented with the masks.

* **Intensity** is normalised per volume and channel (``zscore`` / ``minmax`` / ``none``, as in 2D),
  once, before any crop, so a patch and the whole volume at inference see the same values.
* **Patches** (``patch_size`` set): ``samples_per_volume`` patches per volume and epoch. With
  probability ``foreground_ratio`` a patch is centred on a random foreground voxel of the target
  mask (the voxel is always inside the patch, also where the patch is shifted to fit the volume),
  otherwise its position is uniform over every position that fits. A volume without foreground
  always gets a uniform patch. A volume smaller than the patch along an axis is zero-padded (after
  normalisation) at its end to the patch size. Draws come from ``numpy.random.default_rng([seed,
  index])``, with ``seed`` set by :meth:`VolumeDataset.set_epoch_seed`, so an epoch is the same
  whatever the order, the worker count or a resume.
* **Augmentation** (MONAI, :func:`~medseg.data.transforms.augment_transform`) runs on the patch.
  A volume whose z spacing exceeds ``anisotropy_ratio`` × its in-plane spacing is *anisotropic*:
  it is rotated in-plane only and never scaled along z, because interpolating across thick slices
  invents structure that was never imaged.
* **Whole volumes** (``patch_size=None``): one item per volume, as it is, for sliding-window
  validation with batch size 1.
* **Multi-class** (``num_classes`` = K ≥ 2): the masks are class indices 0..K−1 (``"target"`` holds
  them as floats, ``B×1×spatial`` after collation, the class-index target of the ``dice_ce``
  loss); patches are augmented by nearest neighbour like binary masks; a foreground patch draws
  its class uniformly among the classes present in the volume, then a voxel of it. A sample whose
  ``meta["num_classes"]`` is set (e.g. the ``folder`` source with ``labels``) needs the same
  ``num_classes``; its ``meta["class_values"]`` (class index → label value) is kept as
  :attr:`VolumeDataset.class_values`, and their common ``meta["label_names"]`` as
  :attr:`VolumeDataset.label_names`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from medseg.config import AugmentConfig
from medseg.data.classes import check_sample_classes, common_class_values, common_label_names
from medseg.data.dataset import all_annotators
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, augment_transform, is_anisotropic, mask_key, normalize_intensity
from medseg.errors import ConfigError, DataError

INSTANCE_KEY = "instance"


def pad_to_size(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Zero-pad the spatial axes (the last ``len(size)``) of ``array`` at their end up to ``size``."""
    spatial = array.shape[-len(size) :]
    extra = [max(0, int(s) - n) for s, n in zip(size, spatial, strict=True)]
    if not any(extra):
        return array
    pad = [(0, 0)] * (array.ndim - len(size)) + [(0, e) for e in extra]
    return np.pad(array, pad)


def sample_patch_start(
    shape: Sequence[int],
    patch_size: Sequence[int],
    foreground: np.ndarray | Sequence[np.ndarray],
    foreground_ratio: float,
    rng: np.random.Generator,
) -> tuple[int, ...]:
    """Start corner of a patch: centred on a foreground voxel with probability ``foreground_ratio``.

    ``foreground`` holds flat (C-order) indices of the foreground voxels of a volume of ``shape``
    (every axis ≥ the patch), or one such array per foreground class: then the class is drawn
    uniformly among the classes present, and the voxel within it, so a rare class is centred as
    often as a common one (nnU-Net samples classes alike). A centred patch is shifted to fit inside
    the volume, which keeps the chosen voxel inside it; otherwise the start is uniform over the
    positions that fit.
    """
    shape = tuple(int(s) for s in shape)
    patch = tuple(int(p) for p in patch_size)
    if any(p > s for p, s in zip(patch, shape, strict=True)):
        raise ValueError(f"patch {patch} does not fit the volume {shape}: pad the volume first")
    on_foreground = rng.random() < foreground_ratio  # drawn always, so the stream never shifts
    if not isinstance(foreground, np.ndarray):
        present = [f for f in foreground if f.size]
        foreground = present[int(rng.integers(len(present)))] if on_foreground and present else np.empty(0)
    if on_foreground and foreground.size:
        centre = np.unravel_index(int(foreground[rng.integers(foreground.size)]), shape)
        return tuple(
            int(min(max(c - p // 2, 0), s - p)) for c, p, s in zip(centre, patch, shape, strict=True)
        )
    return tuple(int(rng.integers(0, s - p + 1)) for p, s in zip(patch, shape, strict=True))


def _to_tensor(value: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    tensor = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(np.asarray(value))
    if dtype == torch.int64:
        tensor = torch.round(tensor.float()) if tensor.is_floating_point() else tensor
    return tensor.to(dtype).contiguous()


class VolumeDataset(Dataset):
    """3D volumes (``C×D×H×W``) as samples; patches with a foreground ratio, or whole volumes.

    Args:
        samples: 3D samples (2D ones are an error: they belong to ``SegmentationDataset``).
        in_channels: image channels the model expects.
        intensity: ``zscore``, ``minmax`` or ``none``, per volume and channel, or one window per
            channel (:func:`~medseg.data.transforms.window_intensity`, CT).
        patch_size: training patch ``D×H×W``; ``None`` yields whole volumes.
        foreground_ratio: probability in [0, 1] that a patch is centred on foreground.
        samples_per_volume: patches per volume and epoch (the dataset length is
            ``len(samples) × samples_per_volume``).
        augment: random augmentation of patches (``None`` or ``enabled: false``: none).
        anisotropy_ratio: z spacing above this multiple of the in-plane spacing → in-plane-only
            rotation and scaling for that volume.
        annotators: annotator order (the target first); found in the samples when ``None``.
        num_classes: ``None`` for binary masks, K ≥ 2 for class-index masks (``data.num_classes``).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        in_channels: int,
        intensity: Intensity = "zscore",
        patch_size: Sequence[int] | None = None,
        foreground_ratio: float = 0.5,
        samples_per_volume: int = 4,
        augment: AugmentConfig | None = None,
        anisotropy_ratio: float = 2.0,
        annotators: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or not 2 <= int(num_classes) <= 256):
            raise ConfigError(f"data.num_classes must be null or in [2, 256], got {num_classes!r}")
        if patch_size is not None:
            if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
                raise ConfigError(f"data.patch_size must be three positive sizes D×H×W, got {patch_size}")
            if not 0.0 <= foreground_ratio <= 1.0:
                raise ConfigError(f"data.foreground_ratio must be in [0, 1], got {foreground_ratio}")
            if samples_per_volume < 1:
                raise ConfigError(f"data.samples_per_volume must be ≥ 1, got {samples_per_volume}")
        for sample in samples:
            where = sample.source_path or sample.case_id
            if sample.ndim != 3:
                raise DataError(
                    f"a volume dataset needs C×D×H×W volumes, got image shape {sample.image.shape} "
                    "(2D data: set data.spatial_dims: 2)",
                    where,
                )
            sample.validate()  # masks must still match the image (a Sample can be edited after init)
            check_sample_classes(sample, num_classes)
            if sample.image.shape[0] != in_channels:
                raise DataError(
                    f"image has {sample.image.shape[0]} channel(s) but the model expects {in_channels} "
                    "(set data.in_channels)",
                    where,
                )
        self.annotators = list(annotators) if annotators is not None else all_annotators(samples)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.class_values = common_class_values(samples) if num_classes is not None else None
        self.label_names = common_label_names(samples) if num_classes is not None else None
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.foreground_ratio = float(foreground_ratio)
        self.samples_per_volume = int(samples_per_volume) if patch_size is not None else 1
        self.with_instances = bool(samples) and all(INSTANCE_KEY in s.meta for s in samples)
        label_keys = (INSTANCE_KEY,) if self.with_instances else ()
        self.anisotropic = [is_anisotropic(s.spacing, anisotropy_ratio) for s in samples]
        self._augment: dict[bool, Compose] = {}
        if augment is not None and augment.enabled:
            for flag in sorted(set(self.anisotropic)):
                self._augment[flag] = augment_transform(self.annotators, 3, augment, flag, label_keys)
        self._epoch_seed = 0
        self.volumes = [self._prepare(s, intensity) for s in samples]

    def _prepare(self, sample: Sample, intensity: Intensity) -> dict[str, Any]:
        where = sample.source_path or sample.case_id
        image = normalize_intensity(sample.image, intensity)
        present = {name: name in sample.masks for name in self.annotators}
        # A sample without an annotator gets the target's mask, as in the 2D dataset.
        masks = np.stack(
            [sample.masks[name] if present[name] else sample.target_mask for name in self.annotators]
        ).astype(np.uint8)
        instance = None
        if self.with_instances:
            instance = np.asarray(sample.meta[INSTANCE_KEY])
            if instance.shape != sample.spatial_shape:
                raise DataError(
                    f"instance labels have shape {instance.shape} but the image has spatial shape "
                    f"{sample.spatial_shape}",
                    where,
                )
            if not np.issubdtype(instance.dtype, np.integer):
                raise DataError(f"instance labels must be integers, got {instance.dtype}", where)
            instance = instance[None].astype(np.int64)
        if self.patch_size is not None:
            image, masks = pad_to_size(image, self.patch_size), pad_to_size(masks, self.patch_size)
            instance = None if instance is None else pad_to_size(instance, self.patch_size)
        return {
            "image": np.ascontiguousarray(image, dtype=np.float32),
            "masks": masks,
            "instance": instance,
            # per foreground class for a multi-class target (each class is centred alike)
            "foreground": np.flatnonzero(masks[0])
            if self.num_classes is None
            else [np.flatnonzero(masks[0] == c) for c in range(1, self.num_classes)],
            "spacing": torch.tensor(sample.spacing, dtype=torch.float32),
            "case_id": sample.case_id,
            "annotator_present": present,
        }

    def set_epoch_seed(self, seed: int) -> None:
        """Seed of the patch positions and augmentation of the next epoch (exact on resume)."""
        self._epoch_seed = int(seed)

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        volume_index = index // self.samples_per_volume
        volume = self.volumes[volume_index]
        rng = np.random.default_rng([self._epoch_seed, index])
        spatial = volume["image"].shape[1:]
        if self.patch_size is None:
            start, window = (0, 0, 0), (slice(None),) * 3
        else:
            start = sample_patch_start(
                spatial, self.patch_size, volume["foreground"], self.foreground_ratio, rng
            )
            window = tuple(slice(s, s + p) for s, p in zip(start, self.patch_size, strict=True))
        arrays: dict[str, Any] = {"image": volume["image"][(slice(None), *window)]}
        for i, name in enumerate(self.annotators):
            arrays[mask_key(name)] = volume["masks"][i : i + 1][(slice(None), *window)].astype(np.float32)
        if volume["instance"] is not None:
            arrays[INSTANCE_KEY] = volume["instance"][(slice(None), *window)]
        augment = self._augment.get(self.anisotropic[volume_index])
        if augment is not None:
            augment.set_random_state(seed=int(rng.integers(2**31)))
            # float32 holds instance ids exactly up to 2**24; nearest-neighbour keeps them integers
            arrays = augment({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})
        masks = {name: _to_tensor(arrays[mask_key(name)]) for name in self.annotators}
        item = {
            "image": _to_tensor(arrays["image"]),
            "target": masks[self.annotators[0]],
            "masks": masks,
            "spacing": volume["spacing"],
            "case_id": volume["case_id"],
            "annotator_present": volume["annotator_present"],
            "patch_start": torch.tensor(start, dtype=torch.int64),
        }
        if INSTANCE_KEY in arrays:
            item[INSTANCE_KEY] = _to_tensor(arrays[INSTANCE_KEY], torch.int64)
        return item
