import pytest

from medseg.config import DataConfig, SplitConfig
from medseg.data.loading import load_splits
from medseg.data.splits import SplitLeakageError
from medseg.errors import DataError

PHANTOM = {"n_patients": 5, "seed": 0, "shape": [4, 32, 32]}


def test_holdout_split_by_patient() -> None:
    splits = load_splits(DataConfig(source="phantom", options=PHANTOM))
    assert len(splits.train_cases) == 4 and len(splits.val_cases) == 1
    assert {s.case_id for s in splits.train} == set(splits.train_cases)
    assert {s.case_id for s in splits.val} == set(splits.val_cases)
    assert splits.test == []


def test_kfold_and_test_source() -> None:
    cfg = DataConfig(
        source="phantom",
        options=PHANTOM,
        split=SplitConfig(method="kfold", k_folds=5, fold=2),
        test_source="phantom",
        test_options={"n_patients": 2, "seed": 9, "shape": [4, 32, 32]},
    )
    splits = load_splits(cfg)
    assert len(splits.val_cases) == 1 and len(splits.test) == 2


def test_explicit_lists_and_leakage() -> None:
    ids = [f"phantom_{i:02d}" for i in range(5)]
    ok = load_splits(DataConfig(source="phantom", options=PHANTOM, split=SplitConfig(val_cases=ids[:2])))
    assert ok.train_cases == ids[2:]
    with pytest.raises(SplitLeakageError):
        load_splits(
            DataConfig(
                source="phantom", options=PHANTOM, split=SplitConfig(train_cases=ids[:3], val_cases=ids[2:])
            )
        )


def test_target_annotator_and_bad_method() -> None:
    splits = load_splits(DataConfig(source="phantom", options=PHANTOM, target="non_expert"))
    assert splits.train[0].target == "non_expert"
    with pytest.raises(DataError, match="annotator_9"):
        load_splits(DataConfig(source="phantom", options=PHANTOM, target="annotator_9"))
    with pytest.raises(ValueError, match="method"):
        load_splits(DataConfig(source="phantom", options=PHANTOM, split=SplitConfig(method="random")))
