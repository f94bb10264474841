"""Where a training epoch's micro-batches come from (``train.augment_on``).

``sample`` (the default, every paper recipe): a ``DataLoader`` over the data set, each item
augmented on the CPU by the data set's MONAI transforms. ``device``: the 2D items are decoded,
normalised and resized once into one array per key (:class:`~medseg.data.cache.CachedDataset`),
whole micro-batches are read by index and augmented where the model runs
(:class:`~medseg.data.device_augment.DeviceAugment`): no per-item Python work in the step, so a
GPU is not starved and a CPU spends its cores on the model.

The items of an epoch are a seeded permutation (``DistributedSampler(seed)``, rank r takes every
W-th item) or, with ``data.foreground_share`` > 0 on the 2D path, batches in which that share of
the items contains foreground (:class:`~medseg.data.sampling.ForegroundBatchSampler`, nnU-Net's
oversampling; multi-class: a class drawn first, then an item holding it). Both depend on (seed,
epoch) alone, as does the augmentation of an item (``sample``) or of a micro-batch (``device``: a
generator seeded by (seed + epoch, step, micro-batch)).

``train.num_workers: auto`` gives 0 on the CPU (workers would take the cores the model step uses)
and ``min(8, CPUs − 1)`` on CUDA. The loader is built once per run with persistent workers: each
index carries its epoch's augmentation seed (:class:`EpochSeededDataset`), so a worker's copy of
the data set needs no per-epoch update. Batches go through pinned memory on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from medseg.config import Config
from medseg.data.cache import CachedDataset
from medseg.data.dataset import SegmentationDataset
from medseg.data.device_augment import DeviceAugment
from medseg.data.sampling import ForegroundBatchSampler
from medseg.errors import ConfigError

AUGMENT_ON = ("sample", "device")
#: The cache moves onto a CUDA device when it takes less than this share of its free memory.
DEVICE_CACHE_SHARE = 0.25
MAX_AUTO_WORKERS = 8


def resolve_num_workers(value: int | str, device: torch.device) -> int:
    """``train.num_workers`` as a count: ``auto`` is 0 on the CPU, ``min(8, CPUs − 1)`` on CUDA."""
    if value == "auto":
        if device.type != "cuda":
            return 0  # the model step already uses every core
        return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.num_workers must be an integer ≥ 0 or 'auto', got {value!r}")
    return value


class EpochSeededDataset(Dataset):
    """Takes ``(epoch_seed, index)`` keys, so persistent workers augment each epoch afresh."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch_seed, index = key
        self.dataset.set_epoch_seed(epoch_seed)  # type: ignore[attr-defined]
        return self.dataset[index]


class _SeededBatches(Sampler[list[tuple[int, int]]]):
    """This rank's micro-batches of index lists, each index paired with the epoch's seed."""

    def __init__(self, inner: Sampler[Any], micro_batch: int, seed: int) -> None:
        self.inner, self.micro_batch, self.seed = inner, micro_batch, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)  # type: ignore[attr-defined]

    def _index_batches(self) -> Iterator[list[int]]:
        if isinstance(self.inner, ForegroundBatchSampler):
            yield from self.inner
            return
        batch: list[int] = []
        for index in self.inner:
            batch.append(int(index))
            if len(batch) == self.micro_batch:
                yield batch
                batch = []  # the last incomplete batch is dropped

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch_seed = self.seed + self.epoch
        for batch in self._index_batches():
            yield [(epoch_seed, i) for i in batch]

    def __len__(self) -> int:
        if isinstance(self.inner, ForegroundBatchSampler):
            return len(self.inner)
        return len(self.inner) // self.micro_batch  # type: ignore[arg-type]


class TrainBatches:
    """The micro-batches of each epoch of one run (see the module docstring).

    Args:
        cfg: the run's config (``train``: seed, workers, ``augment_on``, accumulation;
            ``data.foreground_share``; ``augment`` for the device augmentation).
        dataset: the training data set (its per-item augmentation is used by ``sample`` only).
        micro_batch: items per micro-batch on this rank.
        steps: optimiser steps per epoch (each takes ``accumulate_steps`` micro-batches).
        device: where the model runs (pinned memory and the device path on CUDA).
        rank, world_size: this process's place in the DDP group.
    """

    def __init__(
        self,
        cfg: Config,
        dataset: Dataset,
        micro_batch: int,
        steps: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        tcfg = cfg.train
        if tcfg.augment_on not in AUGMENT_ON:
            raise ConfigError(f"train.augment_on must be one of {AUGMENT_ON}, got {tcfg.augment_on!r}")
        self.seed = tcfg.seed
        self.device = device
        self.micro_batch = micro_batch
        self.micro_per_epoch = steps * tcfg.accumulate_steps
        share = cfg.data.foreground_share or 0.0
        if share and not isinstance(dataset, SegmentationDataset):
            raise ConfigError(
                "data.foreground_share is for the 2D path; 3D patches use data.foreground_ratio"
            )
        self.sampler: Sampler[Any] = (
            ForegroundBatchSampler(
                dataset.foreground_flags(),
                micro_batch,
                share,
                num_batches=self.micro_per_epoch,
                seed=tcfg.seed,
                num_replicas=world_size,
                rank=rank,
                item_classes=dataset.foreground_classes(),  # multi-class: each class in turn
            )
            if share
            else DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=tcfg.seed, drop_last=True
            )
        )
        self.on_device = tcfg.augment_on == "device"
        if self.on_device:
            if not isinstance(dataset, SegmentationDataset):
                raise ConfigError("train.augment_on: device needs the 2D path (data.spatial_dims: 2)")
            augment, dataset.augment = dataset.augment, None  # cache the un-augmented items
            try:
                self.cache = CachedDataset(dataset)
            finally:
                dataset.augment = augment
            if device.type != "cuda" or self.cache.nbytes < DEVICE_CACHE_SHARE * _free_bytes(device):
                self.cache.to_device(device)  # batches are then gathered where the model runs
            self.augment = device_augment_from_config(cfg) if cfg.augment.enabled else None
            self.annotators = list(dataset.annotators)
            return
        workers = resolve_num_workers(tcfg.num_workers, device)
        self.batches = _SeededBatches(self.sampler, micro_batch, tcfg.seed)
        self.loader = DataLoader(
            EpochSeededDataset(dataset),
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # worker seeds from their own generator: the global RNG (dropout) stays untouched
            generator=torch.Generator().manual_seed(tcfg.seed),
        )

    def epoch(self, epoch: int) -> Iterator[dict[str, Any]]:
        """Epoch ``epoch``'s micro-batches, endless: after the epoch's items the order repeats
        (a foreground sampler has exactly ``steps × accumulate_steps`` per epoch)."""
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        if not self.on_device:
            self.batches.set_epoch(epoch)
            while True:
                yield from self.loader
        index_batches = (
            iter(self.sampler)
            if isinstance(self.sampler, ForegroundBatchSampler)
            else _chunks(self.sampler, self.micro_batch)
        )
        for k, indices in enumerate(index_batches):
            batch = self.cache.batch(indices, self.device)
            if self.augment is not None:
                generator = torch.Generator().manual_seed((self.seed + epoch) * 1_000_003 + k)
                image, masks = self.augment(batch["image"], batch["masks"], generator)
                target = masks[self.annotators[0]]  # type: ignore[index]
                batch = {**batch, "image": image, "masks": masks, "target": target}
            yield batch


def _free_bytes(device: torch.device) -> int:
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _chunks(indices: Sampler[int], size: int) -> Iterator[list[int]]:
    batch: list[int] = []
    for index in indices:
        batch.append(int(index))
        if len(batch) == size:
            yield batch
            batch = []


def device_augment_from_config(cfg: Config) -> DeviceAugment:
    """The batch augmentation matching ``cfg.augment`` (rotation, scale, flips, intensity)."""
    aug = cfg.augment
    return DeviceAugment(
        spatial_dims=2,
        flip_prob=0.5 if aug.flip else 0.0,
        affine_prob=aug.prob,
        rotate_deg=aug.rotate_deg,
        scale_range=(1.0 - aug.scale, 1.0 + aug.scale),
        intensity_scale_prob=aug.prob if aug.intensity_scale else 0.0,
        intensity_scale=aug.intensity_scale,
        intensity_shift_prob=aug.prob if aug.intensity_shift else 0.0,
        intensity_shift=aug.intensity_shift,
    )
