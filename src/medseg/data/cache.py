"""Decode and normalise once: a data set's items kept as contiguous arrays, in memory or memory-mapped.

Reading, decoding, normalising and resizing an image costs more than a training step on a fast
device. :class:`CachedDataset` runs the wrapped data set once and stores every tensor of every
item in one array per key (``N×C×spatial``), in memory or, for sets larger than
``max_memory_bytes``, as a numpy memory map on disk (the page cache then keeps what fits).
Training reads whole batches by index (:meth:`CachedDataset.batch`: no per-item collate, pinned
memory and ``non_blocking`` copies to the device) and augments them there
(:mod:`medseg.data.device_augment`).

The wrapped data set must be deterministic (no augmentation) and its tensors must have one shape
per key (e.g. :class:`~medseg.data.dataset.SegmentationDataset`, whose slices are resized to
``image_size``, or a 3D data set of fixed-size patches).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from medseg.errors import ConfigError, DataError

STORAGES = ("auto", "memory", "memmap")
DEFAULT_MAX_MEMORY_BYTES = 8 * 2**30


def _flatten(item: dict[str, Any]) -> dict[str, Any]:
    """``{"masks": {"a": t}}`` → ``{"masks/a": t}`` (one level of nesting, as the data sets use)."""
    flat: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for key, value in flat.items():
        if "/" in key:
            outer, inner = key.split("/", 1)
            item.setdefault(outer, {})[inner] = value
        else:
            item[key] = value
    return item


class CachedDataset(Dataset):
    """Every item of ``dataset`` computed once and stored per key as one array.

    Args:
        dataset: a map-style data set of dict items (tensors, and other values such as ids).
        storage: ``memory``, ``memmap`` or ``auto`` (memmap when the tensors exceed ``max_memory_bytes``).
        directory: where the memory maps go (default: a new temporary directory).
        max_memory_bytes: the ``auto`` threshold.

    ``__getitem__`` returns the wrapped data set's item (same keys, values and dtypes).
    """

    def __init__(
        self,
        dataset: Dataset,
        storage: str = "auto",
        directory: str | Path | None = None,
        max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    ) -> None:
        if storage not in STORAGES:
            raise ConfigError(f"unknown cache storage '{storage}'. Available: {', '.join(STORAGES)}")
        if getattr(dataset, "augment", None) is not None:
            raise ConfigError(
                "cache a data set without augmentation (augment=None); augment the cached batches on the "
                "device (medseg.data.device_augment)"
            )
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise DataError("cannot cache an empty data set")
        first = _flatten(dataset[0])
        self.tensor_keys = [k for k, v in first.items() if isinstance(v, torch.Tensor)]
        shapes = {k: tuple(first[k].shape) for k in self.tensor_keys}
        dtypes = {k: first[k].dtype for k in self.tensor_keys}
        nbytes = sum(n * first[k].numel() * first[k].element_size() for k in self.tensor_keys)
        self.storage = storage if storage != "auto" else ("memmap" if nbytes > max_memory_bytes else "memory")
        self.nbytes = nbytes
        self.arrays: dict[str, np.ndarray] = {}
        if self.storage == "memmap":
            self.directory = (
                Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="medseg_cache_"))
            )
            self.directory.mkdir(parents=True, exist_ok=True)
        for key in self.tensor_keys:
            dtype = torch.empty((), dtype=dtypes[key]).numpy().dtype
            if self.storage == "memmap":
                path = self.directory / f"{key.replace('/', '__')}.npy"
                self.arrays[key] = np.lib.format.open_memmap(
                    path, mode="w+", dtype=dtype, shape=(n, *shapes[key])
                )
            else:
                self.arrays[key] = np.empty((n, *shapes[key]), dtype=dtype)
        self.others: dict[str, list[Any]] = {k: [] for k in first if k not in shapes}
        for i in range(n):
            flat = first if i == 0 else _flatten(dataset[i])
            for key in self.tensor_keys:
                value = flat.get(key)
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != shapes[key]:
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise DataError(
                        f"item {i} has '{key}' of shape {got}, item 0 has {shapes[key]}: the cache needs one "
                        "shape per key (resize to a fixed image_size, or cache fixed-size patches)"
                    )
                self.arrays[key][i] = value.numpy()
            for key in self.others:
                self.others[key].append(flat[key])
        if self.storage == "memmap":
            for array in self.arrays.values():
                array.flush()  # type: ignore[attr-defined]
        self._length = n

    def __len__(self) -> int:
        return self._length

    def to_device(self, device: torch.device | str) -> None:
        """Keep every array on ``device`` (for a set that fits its memory): a batch is then one
        ``index_select`` there, with no host gather, pinning or copy per step."""
        self.device_arrays = {k: torch.as_tensor(np.asarray(a)).to(device) for k, a in self.arrays.items()}

    def __getitem__(self, index: int) -> dict[str, Any]:
        flat: dict[str, Any] = {k: torch.from_numpy(np.array(a[index])) for k, a in self.arrays.items()}
        flat.update({k: v[index] for k, v in self.others.items()})
        return _unflatten(flat)

    def batch(
        self, indices: Sequence[int], device: torch.device | str | None = None, non_blocking: bool = True
    ) -> dict[str, Any]:
        """Items ``indices`` as one batch, equal to the DataLoader's default collate, tensors on ``device``.

        Reads each array once with fancy indexing (no per-item collate); on CUDA the batch goes
        through pinned memory with a ``non_blocking`` copy, which overlaps the next step's work.
        """
        order = np.asarray(indices, dtype=np.int64)
        target = torch.device(device) if device is not None else None
        flat: dict[str, Any] = {}
        resident = getattr(self, "device_arrays", None)
        if resident is not None and (target is None or next(iter(resident.values())).device == target):
            for key, tensor in resident.items():  # already on the device: gather there
                flat[key] = tensor.index_select(0, torch.as_tensor(order, device=tensor.device))
            flat.update({k: default_collate([v[i] for i in order]) for k, v in self.others.items()})
            return _unflatten(flat)
        for key, array in self.arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array[order]))
            if target is not None and target.type == "cuda":
                tensor = tensor.pin_memory().to(target, non_blocking=non_blocking)
            elif target is not None:
                tensor = tensor.to(target)
            flat[key] = tensor
        # Ids, flags and indices collate as the DataLoader would (strings → lists, numbers → tensors).
        flat.update({k: default_collate([v[i] for i in order]) for k, v in self.others.items()})
        return _unflatten(flat)
