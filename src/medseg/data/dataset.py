"""A torch ``Dataset`` over 2D samples: cached preprocessing, MONAI augmentation, batch dicts.

An item is ``{"image": C×H×W, "target": 1×H×W, "masks": {annotator: 1×H×W}, "spacing": (2,),
"case_id": str, "slice_index": int, "annotator_present": {annotator: bool}}``; the default collate
turns it into the batch that models and losses receive (losses read every annotator from ``batch["masks"]``).

Multi-class (``num_classes`` = K ≥ 2): the masks are class indices 0..K−1, resized and augmented by
nearest neighbour (so they stay class indices), and ``"target"`` is the class-index target of the
``dice_ce`` / ``ce`` / ``dice`` losses. A sample that declares ``meta["num_classes"]`` needs the same
K; ``class_values`` (class index → label value) and ``label_names`` are kept for prediction, and
:meth:`SegmentationDataset.foreground_classes` tells the foreground oversampling which classes
each item holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from medseg.data.classes import (
    check_sample_classes,
    common_class_values,
    common_label_names,
    present_classes,
)
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, mask_key, preprocess_transform
from medseg.errors import DataError


def expand_to_slices(samples: Sequence[Sample]) -> list[Sample]:
    """3D samples become their 2D slices; 2D samples pass through."""
    out: list[Sample] = []
    for sample in samples:
        out.extend(sample.slices() if sample.ndim == 3 else [sample])
    return out


def all_annotators(samples: Sequence[Sample]) -> list[str]:
    """Every annotator seen in any sample, the target first; the target must be in every sample."""
    if not samples:
        raise DataError("the data set is empty: no samples to train or evaluate on")
    target = samples[0].target
    missing = [s.source_path or s.case_id for s in samples if target not in s.masks]
    if missing:
        raise DataError(f"target annotator '{target}' is missing in {len(missing)} sample(s): {missing[:5]}")
    names = set().union(*(s.masks for s in samples))
    return [target, *sorted(names - {target})]


def _to_tensor(value: Any) -> torch.Tensor:
    tensor = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
    return tensor.float().contiguous()


class SegmentationDataset(Dataset):
    """2D slices (or images) preprocessed once to ``image_size``, augmented on the fly."""

    def __init__(
        self,
        samples: Sequence[Sample],
        image_size: Sequence[int],
        in_channels: int,
        intensity: Intensity = "zscore",
        augment: Compose | None = None,
        annotators: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        slices = expand_to_slices(samples)
        for sample in slices:
            check_sample_classes(sample, num_classes)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.class_values = common_class_values(slices) if num_classes is not None else None
        self.label_names = common_label_names(slices) if num_classes is not None else None
        self.annotators = list(annotators) if annotators is not None else all_annotators(slices)
        self.image_size = tuple(int(s) for s in image_size)
        self.augment = augment
        self._epoch_seed = 0
        preprocess = preprocess_transform(self.annotators, self.image_size, intensity)
        self.items: list[dict[str, Any]] = []
        for sample in slices:
            if sample.image.shape[0] != in_channels:
                raise DataError(
                    f"image has {sample.image.shape[0]} channel(s) but the model expects {in_channels} "
                    f"(set data.in_channels)",
                    sample.source_path or sample.case_id,
                )
            item: dict[str, Any] = {"image": sample.image}
            present = {}
            for name in self.annotators:
                # A sample without this annotator gets the target's mask: the annotators then agree
                # everywhere, so annotation-guided losses fall back to their plain form there.
                present[name] = name in sample.masks
                mask = sample.masks[name] if present[name] else sample.target_mask
                item[mask_key(name)] = mask[None].astype(np.float32)
            item = preprocess(item)
            scale = np.array(sample.spatial_shape, dtype=np.float64) / np.array(self.image_size)
            self.items.append(
                {
                    **{k: _to_tensor(v) for k, v in item.items()},
                    "spacing": torch.tensor(np.array(sample.spacing) * scale, dtype=torch.float32),
                    "case_id": sample.case_id,
                    "slice_index": -1 if sample.slice_index is None else sample.slice_index,
                    "annotator_present": present,
                }
            )

    def foreground_flags(self) -> list[bool]:
        """Whether each item's target mask (at ``image_size``) has foreground (for oversampling)."""
        target = mask_key(self.annotators[0])
        return [bool(item[target].any()) for item in self.items]

    def foreground_classes(self) -> list[list[int]] | None:
        """Multi-class: the foreground classes in each item's target mask (at ``image_size``), for
        oversampling every class; ``None`` for a binary data set."""
        if self.num_classes is None:
            return None
        target = mask_key(self.annotators[0])
        return [present_classes(item[target].numpy(), self.num_classes) for item in self.items]

    def set_epoch_seed(self, seed: int) -> None:
        """Seed of the next epoch's augmentation: item ``i`` draws from ``(seed, i)`` alone.

        So an item is augmented alike whatever the order, the worker, the DDP rank or a resume.
        """
        self._epoch_seed = int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        arrays = {k: v for k, v in item.items() if k == "image" or k.startswith("mask_")}
        if self.augment is not None:
            rng = np.random.default_rng([self._epoch_seed, int(index)])
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            arrays = self.augment(dict(arrays))
        masks = {name: _to_tensor(arrays[mask_key(name)]) for name in self.annotators}
        return {
            "image": _to_tensor(arrays["image"]),
            "target": masks[self.annotators[0]],
            "masks": masks,
            "spacing": item["spacing"],
            "case_id": item["case_id"],
            "slice_index": item["slice_index"],
            "annotator_present": item["annotator_present"],
        }
