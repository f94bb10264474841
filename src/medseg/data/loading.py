"""From a config to train / validation / test samples, the training datasets and their loader."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from medseg.config import Config, DataConfig, check_num_classes
from medseg.data.dataset import SegmentationDataset
from medseg.data.resample import to_target_grid
from medseg.data.sample import Sample
from medseg.data.sources import build as build_source
from medseg.data.splits import check_disjoint, holdout_split, kfold_split, split_samples
from medseg.data.transforms import augment_transform
from medseg.data.volumes import VolumeDataset
from medseg.errors import ConfigError, DataError


@dataclass
class DataSplits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    train_cases: list[str]
    val_cases: list[str]


def _retarget(samples: list[Sample], target: str | None) -> list[Sample]:
    if target is None:
        return samples
    for sample in samples:
        if target not in sample.masks:
            raise DataError(
                f"annotator '{target}' not available (has {sorted(sample.masks)})",
                sample.source_path or sample.case_id,
            )
        sample.target = target
    return samples


def load_splits(cfg: DataConfig) -> DataSplits:
    """Load the training source, split it by patient, and load the test source if configured."""
    source = build_source(cfg.source, **cfg.options)
    samples = _retarget(source.load_all(), cfg.target)
    case_ids = sorted({s.case_id for s in samples})
    split = cfg.split
    if split.train_cases is not None or split.val_cases is not None:
        train_ids = list(split.train_cases or [c for c in case_ids if c not in set(split.val_cases or [])])
        val_ids = list(split.val_cases or [])
        check_disjoint(train_ids, val_ids)
    elif split.method == "holdout":
        train_ids, val_ids = holdout_split(case_ids, split.val_fraction, split.seed)
    elif split.method == "kfold":
        train_ids, val_ids = kfold_split(case_ids, split.k_folds, split.fold, split.seed)
    else:
        raise ValueError(f"data.split.method must be 'holdout' or 'kfold', got '{split.method}'")
    train, val = split_samples(samples, train_ids, val_ids)
    test: list[Sample] = []
    if cfg.test_source:
        test = _retarget(build_source(cfg.test_source, **cfg.test_options).load_all(), cfg.target)
    return DataSplits(train=train, val=val, test=test, train_cases=train_ids, val_cases=val_ids)


def validation_subset(samples: list[Sample], n_cases: int | None) -> list[Sample]:
    """The samples of ``n_cases`` cases spread evenly over the sorted case ids (all when ``None``).

    The same cases every time (a fixed subset keeps successive validation scores comparable).
    """
    cases = sorted({s.case_id for s in samples})
    if n_cases is None or n_cases >= len(cases):
        return samples
    if n_cases < 1:
        raise ConfigError(f"train.val_cases must be null or ≥ 1, got {n_cases}")
    step = len(cases) / n_cases
    keep = {cases[int(i * step)] for i in range(n_cases)}
    return [s for s in samples if s.case_id in keep]


def check_target_spacing(target_spacing: Sequence[float] | None) -> tuple[float, ...] | None:
    """``data.target_spacing`` as a tuple: 2 or 3 positive millimetres (or ``None``)."""
    if target_spacing is None:
        return None
    values = tuple(float(v) for v in target_spacing)
    if len(values) not in (2, 3) or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(
            f"data.target_spacing must be 2 or 3 positive spacings in mm ([sz, sy, sx] or in-plane "
            f"[sy, sx]), got {list(target_spacing)}"
        )
    return values


def to_training_grid(
    samples: Sequence[Sample], target_spacing: Sequence[float] | None, crop_nonzero: bool = False
) -> list[Sample]:
    """Every sample cropped to its non-zero box (``crop_nonzero``) and resampled to
    ``target_spacing`` (:func:`~medseg.data.resample.to_target_grid`; ``meta["grid_change"]`` says
    how to go back); the samples themselves when neither is asked for."""
    target = check_target_spacing(target_spacing)
    if target is None and not crop_nonzero:
        return list(samples)
    return [to_target_grid(sample, target, crop_nonzero) for sample in samples]


def build_datasets(cfg: Config, splits: DataSplits) -> tuple[Dataset, Dataset]:
    """Training and validation datasets of ``cfg.data.spatial_dims`` (see the module docstring),
    made of the samples on the training grid (:func:`to_training_grid`: ``data.crop_nonzero``,
    ``data.target_spacing``); the validation set holds ``cfg.train.val_cases`` cases
    (:func:`validation_subset`)."""
    data = cfg.data
    val_samples = validation_subset(splits.val, cfg.train.val_cases)
    num_classes = check_num_classes(data.num_classes)
    train = to_training_grid(splits.train, data.target_spacing, data.crop_nonzero)
    val = to_training_grid(val_samples, data.target_spacing, data.crop_nonzero)
    if data.spatial_dims == 3:
        if data.patch_size is None:
            raise ConfigError("data.spatial_dims: 3 needs data.patch_size (D×H×W training patch)")
        train_set = VolumeDataset(
            train,
            data.in_channels,
            data.intensity,
            patch_size=data.patch_size,
            foreground_ratio=data.foreground_ratio,
            samples_per_volume=data.samples_per_volume,
            augment=cfg.augment,
            anisotropy_ratio=data.anisotropy_ratio,
            num_classes=num_classes,
        )
        val_set = VolumeDataset(
            val,
            data.in_channels,
            data.intensity,
            annotators=train_set.annotators,
            num_classes=num_classes,
        )
        return train_set, val_set
    if data.spatial_dims != 2:
        raise ConfigError(f"data.spatial_dims must be 2 or 3, got {data.spatial_dims}")
    train_2d = SegmentationDataset(
        train, data.image_size, data.in_channels, data.intensity, num_classes=num_classes
    )
    # The augmentation needs the annotator keys, which the dataset finds while loading.
    train_2d.augment = augment_transform(train_2d.annotators, 2, cfg.augment)
    val_2d = SegmentationDataset(
        val,
        data.image_size,
        data.in_channels,
        data.intensity,
        annotators=train_2d.annotators,
        num_classes=num_classes,
    )
    return train_2d, val_2d


def train_loader(
    dataset: Dataset,
    micro_batch: int,
    seed: int,
    epoch: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """This rank's micro-batches of ``epoch``: a share of one seeded permutation of the whole set.

    ``DistributedSampler(seed=seed)`` with ``set_epoch(epoch)`` permutes all items with
    ``seed + epoch``; rank r of W takes positions r, r + W, …, so the W micro-batches of a step
    together hold W × ``micro_batch`` consecutive positions of the permutation: with one process
    and W-fold batches the same items form each batch. The last incomplete batch is dropped.
    ``rank`` / ``world_size`` are this process's place in the group (one process: 0 and 1).
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=micro_batch,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed + epoch),
    )
