"""Patient-level splits: hold-out and k-fold, seeded. Slices of one case never straddle a split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medseg.data.sample import Sample


class SplitLeakageError(ValueError):
    """The same case (patient/volume) is on both sides of a split."""


def _unique_sorted(case_ids: Iterable[str]) -> list[str]:
    return sorted(set(case_ids))


def holdout_split(
    case_ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Shuffle the unique case ids with ``seed`` and hold out ``round(val_fraction·n)`` (≥ 1)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = _unique_sorted(case_ids)
    if len(ids) < 2:
        raise ValueError(f"a hold-out split needs at least 2 cases, got {len(ids)}: {ids}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def kfold_split(
    case_ids: Sequence[str], k: int = 5, fold: int = 0, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Fold ``fold`` of a seeded k-fold split over unique case ids (sizes differ by at most 1)."""
    ids = _unique_sorted(case_ids)
    if k < 2:
        raise ValueError(f"k must be ≥ 2, got {k}")
    if len(ids) < k:
        raise ValueError(f"{k}-fold split needs at least {k} cases, got {len(ids)}")
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in [0, {k - 1}], got {fold}")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = np.array_split(order, k)
    val = sorted(ids[i] for i in folds[fold])
    train = sorted(ids[i] for f, idx in enumerate(folds) if f != fold for i in idx)
    return train, val


def check_disjoint(train_ids: Iterable[str], val_ids: Iterable[str]) -> None:
    """Raise :class:`SplitLeakageError` if any case id is on both sides."""
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise SplitLeakageError(
            f"{len(both)} case(s) on both sides of the split (slices of one patient would leak): {both}"
        )


def split_samples(
    samples: Sequence[Sample], train_ids: Sequence[str], val_ids: Sequence[str]
) -> tuple[list[Sample], list[Sample]]:
    """Partition samples by case id after checking the id lists are disjoint and known."""
    check_disjoint(train_ids, val_ids)
    known = {s.case_id for s in samples}
    missing = sorted((set(train_ids) | set(val_ids)) - known)
    if missing:
        raise ValueError(f"split names unknown case ids: {missing}")
    train_set, val_set = set(train_ids), set(val_ids)
    return [s for s in samples if s.case_id in train_set], [s for s in samples if s.case_id in val_set]
