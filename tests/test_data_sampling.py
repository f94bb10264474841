"""Foreground oversampling: the stated share per batch, determinism per (seed, epoch), DDP split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medseg.data.sample import Sample
from medseg.data.sampling import ForegroundBatchSampler, foreground_count, foreground_flags
from medseg.errors import ConfigError, DataError

# 10 % of the items contain foreground (indices 0, 10, 20, ...), as on a data set of mostly empty slices.
FLAGS = [i % 10 == 0 for i in range(200)]


@pytest.mark.parametrize(("batch", "count"), [(1, 0), (2, 1), (3, 1), (12, 4), (16, 5), (64, 21)])
def test_foreground_count_rounds_a_third_half_up(batch: int, count: int) -> None:
    assert foreground_count(batch) == count
    assert foreground_count(4, 0.5) == 2 and foreground_count(4, 0.0) == 0 and foreground_count(4, 1.0) == 4


@pytest.mark.parametrize("batch_size", [2, 3, 12, 16])
def test_every_batch_has_the_stated_share_of_foreground(batch_size: int) -> None:
    sampler = ForegroundBatchSampler(FLAGS, batch_size, num_batches=50, seed=1)
    n = foreground_count(batch_size)
    for batch in sampler:
        assert len(batch) == batch_size
        assert all(FLAGS[i] for i in batch[:n])  # the forced part
        assert sum(FLAGS[i] for i in batch) >= n
    # The rest is uniform: over many batches its foreground share is near the data set's 10 %.
    rest = [
        FLAGS[i] for b in ForegroundBatchSampler(FLAGS, 12, num_batches=500).global_batches() for i in b[4:]
    ]
    assert 0.07 < np.mean(rest) < 0.13


def test_forced_items_are_distinct_when_the_pool_allows() -> None:
    for batch in ForegroundBatchSampler(FLAGS, 30, num_batches=20):
        assert len(set(batch[:10])) == 10
    tiny = ForegroundBatchSampler([True, False, False], 9, foreground_share=1 / 3, num_batches=3)
    assert all(b[:3] == [0, 0, 0] for b in tiny)  # one foreground item: drawn with replacement


def test_deterministic_per_seed_and_epoch() -> None:
    a = ForegroundBatchSampler(FLAGS, 8, seed=5)
    b = ForegroundBatchSampler(FLAGS, 8, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(ForegroundBatchSampler(FLAGS, 8, seed=6)) != first
    assert len(a) == 25  # ceil(200 / 8)


def test_ranks_split_the_same_global_sequence() -> None:
    single = ForegroundBatchSampler(FLAGS, 4, num_batches=6, seed=2)
    ranks = [ForegroundBatchSampler(FLAGS, 4, num_batches=3, seed=2, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == 3 == len(ranks[1])
    interleaved = [batch for pair in zip(*ranks, strict=True) for batch in pair]
    assert interleaved == list(single)
    assert ForegroundBatchSampler(FLAGS, 4, num_replicas=2).num_batches == 25


def test_works_as_a_dataloader_batch_sampler() -> None:
    dataset = TensorDataset(torch.arange(200), torch.tensor(FLAGS))
    loader = DataLoader(dataset, batch_sampler=ForegroundBatchSampler(FLAGS, 6, num_batches=4))
    for index, has_fg in loader:
        assert index.shape == (6,) and int(has_fg.sum()) >= 2


def test_foreground_flags_follow_the_slices_of_volumes() -> None:
    mask = np.zeros((3, 4, 4), np.uint8)
    mask[1, 2, 2] = 1
    volume = Sample(np.zeros((1, 3, 4, 4), np.float32), {"e": mask}, "e", (1, 1, 1), "v")
    image = Sample(np.zeros((1, 4, 4), np.float32), {"e": np.ones((4, 4), np.uint8)}, "e", (1, 1), "i")
    unlabeled = Sample(np.zeros((1, 4, 4), np.float32), {}, "e", (1, 1), "u")
    assert foreground_flags([volume, image, unlabeled]) == [False, True, False, True, False]


def test_bad_options() -> None:
    with pytest.raises(DataError, match="none of the 3 has any"):
        ForegroundBatchSampler([False] * 3, 3)
    assert len(ForegroundBatchSampler([False] * 3, 3, foreground_share=0.0)) == 1
    with pytest.raises(DataError, match="empty"):
        ForegroundBatchSampler([], 3)
    with pytest.raises(ConfigError, match="batch_size"):
        ForegroundBatchSampler(FLAGS, 0)
    with pytest.raises(ConfigError, match="foreground_share"):
        ForegroundBatchSampler(FLAGS, 2, foreground_share=1.5)
    with pytest.raises(ConfigError, match="rank 2"):
        ForegroundBatchSampler(FLAGS, 2, num_replicas=2, rank=2)


def test_multi_class_forced_items_draw_a_class_first() -> None:
    # class 1 in every item, class 2 in items 0..9, the rare class 3 in item 7 alone
    classes = [[1, 2, 3] if i == 7 else [1, 2] if i < 10 else [1] for i in range(100)]
    flags = [True] * 100
    sampler = ForegroundBatchSampler(flags, 6, 0.5, num_batches=400, seed=0, item_classes=classes)
    forced = [i for batch in sampler.global_batches() for i in batch[:3]]
    # each class is drawn for a third of the forced items: item 7 at least that often, items
    # 0..9 (classes 2 and 3) about two thirds, where uniform draws give 1 % and 10 %
    assert 0.3 < np.mean([i == 7 for i in forced]) < 0.4
    assert 0.62 < np.mean([i < 10 for i in forced]) < 0.72
    # deterministic, like the binary sampler
    again = ForegroundBatchSampler(flags, 6, 0.5, num_batches=400, seed=0, item_classes=classes)
    assert again.global_batches() == sampler.global_batches()
    with pytest.raises(DataError, match="2 class lists for 100 items"):
        ForegroundBatchSampler(flags, 6, item_classes=classes[:2])
