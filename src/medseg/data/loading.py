"""From a :class:`~medseg.config.DataConfig` to train / validation / test samples."""

from __future__ import annotations

from dataclasses import dataclass

from medseg.config import DataConfig
from medseg.data.sample import Sample
from medseg.data.sources import build as build_source
from medseg.data.splits import check_disjoint, holdout_split, kfold_split, split_samples
from medseg.errors import DataError


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
