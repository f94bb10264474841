import numpy as np
import pytest

from medseg.data.sample import Sample
from medseg.data.splits import SplitLeakageError, check_disjoint, holdout_split, kfold_split, split_samples

IDS = [f"p{i:02d}" for i in range(10)]


def test_holdout_is_seeded_and_disjoint() -> None:
    train, val = holdout_split(IDS, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8
    assert set(train).isdisjoint(val)
    assert holdout_split(IDS, 0.2, seed=1) == (train, val)
    assert holdout_split(IDS, 0.2, seed=2) != (train, val)


def test_holdout_deduplicates_slice_ids() -> None:
    train, val = holdout_split(IDS * 3, 0.2, seed=0)
    assert len(train) + len(val) == 10


def test_kfold_covers_every_case_once() -> None:
    vals = [kfold_split(IDS, 3, f, seed=0)[1] for f in range(3)]
    assert sorted(sum(vals, [])) == IDS
    for fold in range(3):
        train, val = kfold_split(IDS, 3, fold, seed=0)
        assert set(train) | set(val) == set(IDS) and not set(train) & set(val)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        holdout_split(["a"], 0.2)
    with pytest.raises(ValueError):
        holdout_split(IDS, 1.5)
    with pytest.raises(ValueError):
        kfold_split(IDS, 3, fold=3)
    with pytest.raises(ValueError):
        kfold_split(IDS[:2], 5)


def test_leakage_is_an_error() -> None:
    with pytest.raises(SplitLeakageError, match="p01"):
        check_disjoint(["p00", "p01"], ["p01"])


def _sample(case: str, z: int) -> Sample:
    return Sample(np.zeros((1, 4, 4)), {"expert": np.zeros((4, 4), np.uint8)}, "expert", (1.0, 1.0), case, z)


def test_split_samples_keeps_patients_whole() -> None:
    samples = [_sample(c, z) for c in ("a", "b", "c") for z in range(3)]
    train, val = split_samples(samples, ["a", "b"], ["c"])
    assert {s.case_id for s in train} == {"a", "b"} and len(val) == 3
    with pytest.raises(SplitLeakageError):
        split_samples(samples, ["a", "b"], ["b", "c"])
    with pytest.raises(ValueError, match="unknown"):
        split_samples(samples, ["a"], ["zz"])
