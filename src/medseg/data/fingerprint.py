"""Dataset fingerprint: the statistics a plan is made from (after nnU-Net's dataset fingerprint).

Isensee et al. (Nature Methods 2021, Sec. "Dataset fingerprint") extract, before any training,
the spacings, shapes, foreground intensity statistics and class sizes of a data set, and derive
every preprocessing and network choice from them. :func:`compute_fingerprint` does the same from a
list of :class:`~medseg.data.sample.Sample`:

* **spacing**: median and 10th percentile per axis, and the anisotropy (largest over smallest
  median spacing);
* **shape**: median, minimum and maximum per spatial axis;
* **intensity** per channel, over foreground voxels (the target mask, as nnU-Net: CT clipping
  uses these) and over whole images: mean, std, 0.5 and 99.5 percentiles, min, max. Each sample
  contributes at most ``max_voxels_per_sample`` voxels (a seeded random subset beyond that);
* **classes**: per foreground class, the share of voxels, the share of cases containing it, its
  connected objects (count per case, median size in voxels and in mm² / mm³), and where it lies:
  the mean over cases of its centroid as a fraction of each axis (0 = first voxel, 1 = last);
  with the data set's label names and label values when the source gives them;
* **empty slices**: the share of 2D slices (of volumes along D, or 2D images) with no foreground.

Cases are samples grouped by ``case_id`` (a volume, or the slices of one patient).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.sample import Sample
from medseg.errors import DataError

MAX_VOXELS_PER_SAMPLE = 100_000


@dataclass(frozen=True)
class IntensityStats:
    """Summary of one channel's intensities (population std, percentiles by linear interpolation)."""

    mean: float
    std: float
    percentile_00_5: float
    percentile_99_5: float
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityStats | None:
        """Statistics of ``values``; None for an empty array (no foreground at all)."""
        if values.size == 0:
            return None
        v = values.astype(np.float64)
        low, high = np.percentile(v, [0.5, 99.5])
        return cls(float(v.mean()), float(v.std()), float(low), float(high), float(v.min()), float(v.max()))


@dataclass(frozen=True)
class ClassStats:
    """One foreground class (label value ``label``)."""

    label: int
    foreground_fraction: float
    case_share: float
    objects_per_case: float
    object_size_voxels_median: float
    object_size_physical_median: float
    # mean over the cases containing it of the class centroid / the axis length, per spatial axis
    centroid_relative: tuple[float, ...] = ()


@dataclass(frozen=True)
class Fingerprint:
    """The data set's statistics; :meth:`to_dict` gives plain Python types (for YAML / JSON)."""

    n_cases: int
    n_samples: int
    spatial_dims: int
    n_channels: int
    num_classes: int | None
    modality: str | None
    spacing_median: tuple[float, ...]
    spacing_p10: tuple[float, ...]
    anisotropy: float
    shape_median: tuple[float, ...]
    shape_min: tuple[int, ...]
    shape_max: tuple[int, ...]
    intensity_foreground: tuple[IntensityStats | None, ...]
    intensity_image: tuple[IntensityStats, ...]
    classes: tuple[ClassStats, ...]
    empty_slice_share: float
    n_voxels_total: int
    # names of classes 0..K-1 (background first) and the label value of each class index, when
    # the source gives them (dataset.json, the folder source's labels)
    label_names: tuple[str, ...] | None = None
    class_values: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, floats, ints, None); nested stats become dicts."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_dict` (e.g. a fingerprint read back from YAML)."""
        fields = dict(data)
        for key in ("spacing_median", "spacing_p10", "shape_median"):
            fields[key] = tuple(float(v) for v in fields[key])
        for key in ("shape_min", "shape_max"):
            fields[key] = tuple(int(v) for v in fields[key])
        fields["intensity_foreground"] = tuple(
            None if v is None else IntensityStats(**v) for v in fields["intensity_foreground"]
        )
        fields["intensity_image"] = tuple(IntensityStats(**v) for v in fields["intensity_image"])
        fields["classes"] = tuple(
            ClassStats(**{**v, "centroid_relative": tuple(v.get("centroid_relative", ()))})
            for v in fields["classes"]
        )
        for key in ("label_names", "class_values"):
            if fields.get(key) is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


def _foreground_labels(samples: Sequence[Sample]) -> tuple[int | None, list[int]]:
    num_classes = samples[0].meta.get("num_classes")
    if any(s.meta.get("num_classes") != num_classes for s in samples):
        raise DataError("samples disagree on meta['num_classes']; fingerprint one task at a time")
    return num_classes, [1] if num_classes is None else list(range(1, int(num_classes)))


#: Channel names (dataset.json of nnU-Net and the Decathlon) → modality. MR sequences count as MR.
CHANNEL_MODALITIES = {
    "ct": "ct",
    **dict.fromkeys(
        ("mr", "mri", "t1", "t1w", "t1gd", "t1c", "t2", "t2w", "flair", "adc", "dwi", "pd", "hbv", "swi"),
        "mr",
    ),
    **dict.fromkeys(("us", "ultrasound"), "us"),
    **dict.fromkeys(("pet", "pt"), "pet"),
}


def channel_modality(names: Sequence[str]) -> str | None:
    """The modality of channels named ``names`` (``ct``, ``mr``, ``us``, ``pet``), or None when
    a name is unknown or the channels mix modalities."""
    found = {CHANNEL_MODALITIES.get(str(n).strip().lower()) for n in names}
    return found.pop() if len(found) == 1 and None not in found else None


def _sample_modality(sample: Sample) -> str | None:
    """``meta["modality"]`` (DICOM), else the modality the channel names give (nnU-Net's and the
    Decathlon's dataset.json name them: "CT", "MRI", "T2", "FLAIR"; nnU-Net normalises "CT"
    channels as CT)."""
    if "modality" in sample.meta:
        return str(sample.meta["modality"]).lower()
    names = sample.meta.get("channel_names")
    return channel_modality(names) if names else None


def _modality(samples: Sequence[Sample], modality: str | None) -> str | None:
    if modality is not None:
        return modality.lower()
    found = {m for m in (_sample_modality(s) for s in samples) if m is not None}
    if len(found) > 1:
        raise DataError(f"samples have several modalities {sorted(found)}; pass modality= explicitly")
    return found.pop() if found else None


def _subset(values: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return values if values.size <= limit else rng.choice(values, size=limit, replace=False)


def compute_fingerprint(
    samples: Sequence[Sample],
    modality: str | None = None,
    max_voxels_per_sample: int = MAX_VOXELS_PER_SAMPLE,
    seed: int = 0,
) -> Fingerprint:
    """The :class:`Fingerprint` of ``samples`` (all 2D or all 3D, with the same channel count).

    ``modality`` (``ct``, ``mr``, ``us``, ...) overrides ``meta["modality"]`` of the samples.
    Samples without masks count as background only.
    """
    if not samples:
        raise DataError("cannot fingerprint an empty data set")
    dims = {s.ndim for s in samples}
    channels = {s.image.shape[0] for s in samples}
    if len(dims) > 1 or len(channels) > 1:
        raise DataError(
            f"samples mix spatial dims {sorted(dims)} or channel counts {sorted(channels)}",
            samples[0].source_path or samples[0].case_id,
        )
    spatial_dims, n_channels = dims.pop(), channels.pop()
    num_classes, labels = _foreground_labels(samples)
    rng = np.random.default_rng(seed)

    spacings = np.array([s.spacing for s in samples], dtype=np.float64)
    shapes = np.array([s.spatial_shape for s in samples], dtype=np.int64)
    spacing_median = np.median(spacings, axis=0)

    fg_values: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    all_values: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    class_voxels = dict.fromkeys(labels, 0)
    objects: dict[int, list[int]] = {c: [] for c in labels}
    objects_physical: dict[int, list[float]] = {c: [] for c in labels}
    cases_with: dict[int, set[str]] = defaultdict(set)
    centroids: dict[int, list[np.ndarray]] = {c: [] for c in labels}
    empty_slices = n_slices = total_voxels = 0
    for sample in samples:
        mask = sample.target_mask if sample.masks else np.zeros(sample.spatial_shape, np.uint8)
        foreground = mask != 0
        total_voxels += mask.size
        voxel_volume = math.prod(sample.spacing)
        for c in range(n_channels):
            channel = sample.image[c]
            all_values[c].append(_subset(channel.ravel(), max_voxels_per_sample, rng))
            fg_values[c].append(_subset(channel[foreground], max_voxels_per_sample, rng))
        for label in labels:
            region = mask == label
            count = int(region.sum())
            class_voxels[label] += count
            if count:
                cases_with[label].add(sample.case_id)
                extent = np.maximum(np.asarray(region.shape, np.float64) - 1, 1)
                centroids[label].append(np.asarray(ndimage.center_of_mass(region)) / extent)
                components, n = ndimage.label(region)
                sizes = np.bincount(components.ravel())[1:]
                objects[label].extend(int(v) for v in sizes)
                objects_physical[label].extend(float(v) * voxel_volume for v in sizes)
        per_slice = (
            foreground.reshape(foreground.shape[0], -1).any(axis=1)
            if spatial_dims == 3
            else [foreground.any()]
        )
        n_slices += len(per_slice)
        empty_slices += int(np.sum(~np.asarray(per_slice)))

    n_cases = len({s.case_id for s in samples})
    classes = tuple(
        ClassStats(
            label=label,
            foreground_fraction=class_voxels[label] / total_voxels,
            case_share=len(cases_with[label]) / n_cases,
            objects_per_case=len(objects[label]) / n_cases,
            object_size_voxels_median=float(np.median(objects[label])) if objects[label] else 0.0,
            object_size_physical_median=float(np.median(objects_physical[label])) if objects[label] else 0.0,
            centroid_relative=tuple(float(v) for v in np.mean(centroids[label], axis=0))
            if centroids[label]
            else (),
        )
        for label in labels
    )
    return Fingerprint(
        n_cases=n_cases,
        n_samples=len(samples),
        spatial_dims=spatial_dims,
        n_channels=n_channels,
        num_classes=None if num_classes is None else int(num_classes),
        modality=_modality(samples, modality),
        spacing_median=tuple(float(v) for v in spacing_median),
        spacing_p10=tuple(float(v) for v in np.percentile(spacings, 10, axis=0)),
        anisotropy=float(spacing_median.max() / spacing_median.min()),
        shape_median=tuple(float(v) for v in np.median(shapes, axis=0)),
        shape_min=tuple(int(v) for v in shapes.min(axis=0)),
        shape_max=tuple(int(v) for v in shapes.max(axis=0)),
        intensity_foreground=tuple(IntensityStats.of(np.concatenate(v)) for v in fg_values),
        intensity_image=tuple(IntensityStats.of(np.concatenate(v)) for v in all_values),  # type: ignore[misc]
        classes=classes,
        empty_slice_share=empty_slices / n_slices,
        n_voxels_total=int(total_voxels),
        label_names=_common_meta(samples, "label_names", str),
        class_values=_common_meta(samples, "class_values", int),
    )


def _common_meta(samples: Sequence[Sample], key: str, kind: type) -> tuple[Any, ...] | None:
    """``meta[key]`` (a sequence) shared by every sample that has it; None if none has it."""
    found = {tuple(kind(v) for v in s.meta[key]) for s in samples if s.meta.get(key) is not None}
    if len(found) > 1:
        raise DataError(f"samples disagree on meta[{key!r}]: {sorted(found)}; fingerprint one task at a time")
    return found.pop() if found else None
