"""Foreground oversampling for 2D slice data sets (after nnU-Net's ``oversample_foreground_percent``).

On imbalanced tasks (LGG: most slices are empty, tumours small) uniform sampling rarely shows the
network any foreground. nnU-Net forces a third of every batch to contain foreground (Isensee et
al. 2021, "Training pipeline"); :class:`ForegroundBatchSampler` does the same for slices: in every
batch, :func:`foreground_count` items are drawn among the items that contain foreground and the
rest uniformly among all items (which may contain foreground too).

Multi-class (``item_classes``: the foreground classes each item holds): each forced item first
draws a class uniformly among the classes that some item holds, then an item holding that class,
as nnU-Net picks a class before a foreground voxel. A rare class is so shown as often as a common
one, instead of in proportion to the slices that hold it.

The sampler is a ``batch_sampler`` for a ``DataLoader``. Its draws depend on ``(seed, epoch)``
alone, so every DDP rank computes the same global sequence of batches and takes its own share
(batches ``rank, rank + R, ...``); call :meth:`ForegroundBatchSampler.set_epoch` each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from medseg.data.dataset import expand_to_slices
from medseg.data.sample import Sample
from medseg.errors import ConfigError, DataError

FOREGROUND_SHARE = 1 / 3


def foreground_count(batch_size: int, share: float = FOREGROUND_SHARE) -> int:
    """Items per batch forced to contain foreground: ``share · batch_size`` rounded half up
    (batch 2 → 1, batch 12 → 4, as nnU-Net's 0.33 gives)."""
    return int(math.floor(share * batch_size + 0.5))


def foreground_flags(samples: Sequence[Sample]) -> list[bool]:
    """Whether each 2D item (volumes expanded to slices, in the order of
    :class:`~medseg.data.dataset.SegmentationDataset`) has any foreground in its target mask."""
    return [bool(s.masks) and bool(np.any(s.target_mask)) for s in expand_to_slices(samples)]


class ForegroundBatchSampler(Sampler[list[int]]):
    """Batches of indices in which ``foreground_count(batch_size, share)`` items contain foreground.

    Args:
        has_foreground: one flag per data set item (:func:`foreground_flags`).
        batch_size: items per batch (per rank).
        foreground_share: share of each batch forced to contain foreground (default 1/3).
        num_batches: batches per epoch and rank; default ``ceil(N / (batch_size · num_replicas))``.
        seed: the run's seed; an epoch's batches come from ``numpy.random.default_rng([seed, epoch])``.
        num_replicas, rank: DDP world size and this process's rank.
        item_classes: multi-class: the foreground classes of each item (module docstring); ``None``
            for binary data.

    Within a batch, the forced items come first; items are distinct within each part of a batch
    when the pool is large enough, else drawn with replacement (class-first draws: always with
    replacement).
    """

    def __init__(
        self,
        has_foreground: Sequence[bool],
        batch_size: int,
        foreground_share: float = FOREGROUND_SHARE,
        num_batches: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        item_classes: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
        if not 0.0 <= foreground_share <= 1.0:
            raise ConfigError(f"foreground_share must be in [0, 1], got {foreground_share}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"rank {rank} is not in [0, num_replicas={num_replicas})")
        flags = np.asarray(has_foreground, dtype=bool)
        if flags.size == 0:
            raise DataError("the data set is empty: nothing to sample")
        self.batch_size = int(batch_size)
        self.n_foreground = foreground_count(batch_size, foreground_share)
        self.foreground_indices = np.flatnonzero(flags)
        if self.n_foreground and self.foreground_indices.size == 0:
            raise DataError(
                f"foreground oversampling needs items with foreground, but none of the {flags.size} has any; "
                "set foreground_share: 0"
            )
        self.n_items = int(flags.size)
        self.class_pools: list[np.ndarray] = []
        if item_classes is not None:
            if len(item_classes) != flags.size:
                raise DataError(f"{len(item_classes)} class lists for {flags.size} items")
            by_class: dict[int, list[int]] = {}
            for index, present in enumerate(item_classes):
                for c in present:
                    by_class.setdefault(int(c), []).append(index)
            self.class_pools = [np.asarray(by_class[c]) for c in sorted(by_class)]
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.num_batches = (
            int(num_batches)
            if num_batches is not None
            else math.ceil(self.n_items / (batch_size * num_replicas))
        )
        if self.num_batches < 1:
            raise ConfigError(f"num_batches must be ≥ 1, got {self.num_batches}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s draws on the next iteration (the same on every rank)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    @staticmethod
    def _draw(rng: np.random.Generator, pool: np.ndarray | int, k: int) -> np.ndarray:
        size = pool if isinstance(pool, int) else pool.size
        picks = rng.choice(size, size=k, replace=k > size)
        return picks if isinstance(pool, int) else pool[picks]

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of this epoch, in order (rank r iterates ``[r::num_replicas]``)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        rest = self.batch_size - self.n_foreground
        batches = []
        for _ in range(self.num_batches * self.num_replicas):
            forced = self._forced(rng) if self.n_foreground else []
            uniform = self._draw(rng, self.n_items, rest) if rest else []
            batches.append([int(i) for i in (*forced, *uniform)])
        return batches

    def _forced(self, rng: np.random.Generator) -> np.ndarray:
        """The batch's items that must contain foreground (class first when classes are known)."""
        if not self.class_pools:
            return self._draw(rng, self.foreground_indices, self.n_foreground)
        classes = rng.integers(len(self.class_pools), size=self.n_foreground)
        return np.asarray([self.class_pools[c][rng.integers(self.class_pools[c].size)] for c in classes])

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.num_replicas]
