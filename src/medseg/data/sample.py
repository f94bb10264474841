"""The data model: one :class:`Sample` is an image with every annotator's mask, spacing and ids.

Axis conventions (used everywhere in medseg):

* image: ``C×H×W`` (2D) or ``C×D×H×W`` (3D), float32;
* each mask: ``H×W`` or ``D×H×W``, uint8 in {0, 1}; or, when ``meta["num_classes"]`` = K is set
  (multi-class sources such as ``folder`` with ``labels``), class indices in {0, …, K−1},
  0 = background;
* spacing: millimetres per spatial axis in the same order as the array axes
  (``(sy, sx)`` in 2D, ``(sz, sy, sx)`` in 3D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError


@dataclass
class Sample:
    """One image (a 2D slice or a 3D volume) with its annotations.

    Attributes:
        image: ``C×H×W`` or ``C×D×H×W`` float32 array.
        masks: annotator name → binary mask with the image's spatial shape (``expert``,
            ``non_expert``, ``annotator_2``, ...), or a class-index map when
            ``meta["num_classes"]`` is set. May be empty for unlabeled inputs.
        target: the annotator whose mask is the training target (a key of ``masks``).
        spacing: mm per spatial axis, same order as the spatial axes.
        case_id: patient / volume id. Splits are made on this id.
        slice_index: index along D when this sample is one slice of a volume, else ``None``.
        source_path: the file the image came from (for error messages).
        meta: anything else a source wants to keep (affine, FOV mask, class label, ...).
        key: the sample's name within its set, unique there (:func:`assign_keys`): predictions,
            per-image metric rows and overlays are keyed by it. ``""`` until keys are assigned.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    target: str
    spacing: tuple[float, ...]
    case_id: str
    slice_index: int | None = None
    source_path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.validate()
        # bool / integer / float {0,1} masks (or class indices < 256) are stored as uint8 (validate
        # checked the values)
        self.masks = {k: m if m.dtype == np.uint8 else m.astype(np.uint8) for k, m in self.masks.items()}

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.image.ndim - 1

    @property
    def target_mask(self) -> np.ndarray:
        return self.masks[self.target]

    def validate(self) -> None:
        """Raise :class:`DataError` (naming ``source_path``) on any inconsistency."""
        where = self.source_path or self.case_id
        if self.image.ndim not in (3, 4):
            raise DataError(f"image must be C×H×W or C×D×H×W, got shape {self.image.shape}", where)
        if self.image.size == 0:
            raise DataError("image is empty (zero voxels)", where)
        if not np.isfinite(self.image).all():
            bad = int((~np.isfinite(self.image)).sum())
            raise DataError(f"image contains {bad} NaN/inf values", where)
        if len(self.spacing) != self.ndim:
            raise DataError(
                f"spacing {self.spacing} has {len(self.spacing)} values for {self.ndim} spatial axes",
                where,
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise DataError(f"spacing must be positive and finite, got {self.spacing}", where)
        num_classes = self.meta.get("num_classes")
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, (int, np.integer))
            or not 2 <= num_classes <= 256
        ):
            raise DataError(f"meta['num_classes'] must be an integer in [2, 256], got {num_classes!r}", where)
        for name, mask in self.masks.items():
            mask = np.asarray(mask)
            if num_classes is None:
                if mask.size and np.any((mask != 0) & (mask != 1)):
                    raise DataError(
                        f"mask '{name}' must be binary {{0, 1}} (values {np.unique(mask)[:6].tolist()}...); "
                        "binarize label maps first",
                        where,
                    )
            elif mask.size and (
                np.any((mask < 0) | (mask >= num_classes))
                or (mask.dtype.kind == "f" and np.any(mask != np.round(mask)))
            ):
                raise DataError(
                    f"mask '{name}' must hold class indices 0..{int(num_classes) - 1} "
                    f"(meta['num_classes'] = {num_classes}), got values {np.unique(mask)[:6].tolist()}...",
                    where,
                )
            if mask.shape != self.spatial_shape:
                raise DataError(
                    f"mask '{name}' has shape {mask.shape} but the image has spatial shape "
                    f"{self.spatial_shape}",
                    where,
                )
        if self.masks and self.target not in self.masks:
            raise DataError(f"target annotator '{self.target}' not among masks {sorted(self.masks)}", where)

    def slices(self) -> list[Sample]:
        """Split a 3D sample into 2D samples along D (spacing keeps (sy, sx))."""
        if self.ndim != 3:
            raise ValueError("slices() needs a 3D sample")
        out = []
        for z in range(self.image.shape[1]):
            out.append(
                Sample(
                    image=self.image[:, z],
                    masks={k: m[z] for k, m in self.masks.items()},
                    target=self.target,
                    spacing=self.spacing[1:],
                    case_id=self.case_id,
                    slice_index=z,
                    source_path=self.source_path,
                    meta={**self.meta, "slice_thickness": self.spacing[0]},
                )
            )
        return out

    def with_image(self, image: np.ndarray) -> Sample:
        return replace(self, image=image)


def sample_key(sample: Sample, several_images: bool = False, position: int = 0) -> str:
    """``case#slice`` for a slice of a volume; ``case/image`` for one of ``several_images`` whole
    images of a case (HC18 subjects; ``image`` = ``meta["image_name"]``, the file name, or else
    ``position``, the sample's place in its set); otherwise the case id."""
    if sample.slice_index is not None:
        return f"{sample.case_id}#{sample.slice_index}"
    if several_images:
        name = sample.meta.get("image_name") or Path(sample.source_path).name or str(position)
        return f"{sample.case_id}/{name}"
    return sample.case_id


def assign_keys(samples: Sequence[Sample]) -> list[str]:
    """Set :attr:`Sample.key` of every sample of a set (:func:`sample_key`), so that no prediction
    of the set overwrites another; returns the keys in order. The same set always gets the same keys."""
    images_per_case: dict[str, int] = {}
    for sample in samples:
        if sample.slice_index is None:
            images_per_case[sample.case_id] = images_per_case.get(sample.case_id, 0) + 1
    for position, sample in enumerate(samples):
        several = sample.slice_index is None and images_per_case[sample.case_id] > 1
        sample.key = sample_key(sample, several, position)
    return [sample.key for sample in samples]


def binarize(mask: np.ndarray) -> np.ndarray:
    """Any label image → uint8 {0,1} (non-zero is foreground)."""
    return (np.asarray(mask) != 0).astype(np.uint8)


def stack_slices(slices: Sequence[Sample], slice_thickness: float | None = None) -> Sample:
    """Reassemble 2D slices of one case into a 3D sample, ordered by ``slice_index``.

    The through-plane spacing is ``slice_thickness`` or the ``slice_thickness`` each slice kept in
    ``meta`` (set by :meth:`Sample.slices` and by the slice-based sources); 1.0 mm is never
    assumed silently: without either, this raises.
    """
    if not slices:
        raise ValueError("stack_slices needs at least one slice")
    case_ids = {s.case_id for s in slices}
    if len(case_ids) != 1:
        raise ValueError(f"slices come from several cases: {sorted(case_ids)}")
    if any(s.slice_index is None for s in slices):
        raise ValueError("every slice needs a slice_index to be stacked")
    ordered = sorted(slices, key=lambda s: s.slice_index)  # type: ignore[arg-type, return-value]
    indices = [s.slice_index for s in ordered]
    if len(set(indices)) != len(indices):
        raise ValueError(f"duplicate slice indices in case {ordered[0].case_id}")
    if slice_thickness is None:
        slice_thickness = ordered[0].meta.get("slice_thickness")
    if slice_thickness is None:
        raise DataError(
            "through-plane spacing unknown: pass slice_thickness or keep meta['slice_thickness']",
            ordered[0].source_path or ordered[0].case_id,
        )
    first = ordered[0]
    names = set(first.masks)
    for s in ordered:
        if set(s.masks) != names:
            raise ValueError(f"slice {s.slice_index} of {s.case_id} has annotators {sorted(s.masks)}")
    meta = {k: v for k, v in first.meta.items() if k != "slice_thickness"}
    return Sample(
        image=np.stack([s.image for s in ordered], axis=1),
        masks={k: np.stack([s.masks[k] for s in ordered], axis=0) for k in names},
        target=first.target,
        spacing=(float(slice_thickness), *first.spacing),
        case_id=first.case_id,
        slice_index=None,
        source_path=first.source_path,
        meta=meta,
    )
