"""Decode-once cache: a cached epoch equals an uncached one (memory and memmap), batches, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medseg.data.cache import CachedDataset
from medseg.data.dataset import SegmentationDataset
from medseg.data.sample import Sample
from medseg.errors import ConfigError, DataError


def _samples() -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(5):
        shape = (20 + i, 24)
        mask = (rng.random(shape) > 0.7).astype(np.uint8)
        masks = {"expert": mask} if i % 2 else {"expert": mask, "novice": 1 - mask}
        out.append(
            Sample(rng.normal(size=(2, *shape)).astype(np.float32), masks, "expert", (1.0, 0.5), f"c{i}", i)
        )
    return out


def _dataset() -> SegmentationDataset:
    return SegmentationDataset(_samples(), image_size=(16, 16), in_channels=2)


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for key in a:
            _assert_same(a[key], b[key])
    else:
        assert a == b


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_a_cached_epoch_equals_an_uncached_one(storage: str, tmp_path: Path) -> None:
    plain = _dataset()
    cached = CachedDataset(plain, storage=storage, directory=tmp_path / "cache")
    assert cached.storage == storage and len(cached) == len(plain) == 5
    epochs = []
    for data in (plain, cached):
        loader = DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3))
        epochs.append(list(loader))
    for uncached_batch, cached_batch in zip(*epochs, strict=True):
        _assert_same(uncached_batch, cached_batch)
    if storage == "memmap":
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
            "image.npy", "masks__expert.npy", "masks__novice.npy", "spacing.npy", "target.npy",
        ]  # fmt: skip


def test_batch_stacks_items_like_the_default_collate() -> None:
    cached = CachedDataset(_dataset(), storage="memory")
    batch = cached.batch([4, 1, 4], device="cpu")
    _assert_same(batch, torch.utils.data.default_collate([cached[4], cached[1], cached[4]]))
    assert batch["case_id"] == ["c4", "c1", "c4"] and batch["slice_index"].tolist() == [4, 1, 4]
    assert batch["annotator_present"]["novice"].tolist() == [True, False, True]


def test_auto_storage_follows_the_size() -> None:
    assert CachedDataset(_dataset(), storage="auto").storage == "memory"
    big = CachedDataset(_dataset(), storage="auto", max_memory_bytes=100)
    assert big.storage == "memmap" and big.nbytes > 100
    assert big.directory.is_dir()


class _Ragged(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(1, 4 + index, 4)}


def test_errors() -> None:
    with pytest.raises(DataError, match=r"item 1 has 'image' of shape \(1, 5, 4\), item 0 has \(1, 4, 4\)"):
        CachedDataset(_Ragged())
    augmented = _dataset()
    augmented.augment = object()  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="without augmentation"):
        CachedDataset(augmented)
    with pytest.raises(ConfigError, match="unknown cache storage 'disk'"):
        CachedDataset(_dataset(), storage="disk")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_to_cuda() -> None:
    cached = CachedDataset(_dataset(), storage="memory")
    batch = cached.batch([1, 2], device="cuda")
    torch.cuda.synchronize()
    assert batch["image"].is_cuda and torch.equal(batch["image"].cpu(), cached.batch([1, 2])["image"])


def test_a_device_resident_cache_gives_the_same_batches() -> None:
    cached = CachedDataset(_dataset(), storage="memory")
    host = cached.batch([4, 0, 2], device="cpu")
    cached.to_device("cpu")
    resident = cached.batch([4, 0, 2], device="cpu")
    _assert_same(host, resident)
    assert cached.batch([1])["case_id"] == [cached[1]["case_id"]]
