import pytest
import torch

from medseg.config import DataConfig, SplitConfig, load_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.loading import build_datasets, load_splits, train_loader
from medseg.data.splits import SplitLeakageError
from medseg.data.volumes import VolumeDataset
from medseg.errors import ConfigError, DataError

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


def test_train_loader_ranks_share_the_single_process_batches() -> None:
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 11  # not a multiple of anything below: the tail is dropped consistently

        def __getitem__(self, index: int) -> int:
            return index

    def batches(micro: int, rank: int, world: int, epoch: int) -> list[list[int]]:
        return [b.tolist() for b in train_loader(Items(), micro, 7, epoch, rank=rank, world_size=world)]

    for epoch in (0, 1):
        single = batches(4, 0, 1, epoch)  # global batch 4 → 2 steps
        for world, accumulate in ((2, 1), (2, 2), (4, 1)):
            micro = 4 // (world * accumulate)
            per_rank = [batches(micro, r, world, epoch) for r in range(world)]
            for step, expected in enumerate(single):
                got = [
                    i
                    for r in range(world)
                    for k in range(accumulate)
                    for i in per_rank[r][step * accumulate + k]
                ]
                assert sorted(got) == sorted(expected)
    assert batches(4, 0, 1, 0) != batches(4, 0, 1, 1)  # set_epoch reshuffles


def test_build_datasets_2d_slices_and_3d_patches() -> None:
    cfg = load_config(
        None, ["data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}", "data.image_size=[16, 16]"]
    )
    train_set, val_set = build_datasets(cfg, load_splits(cfg.data))
    assert isinstance(train_set, SegmentationDataset) and isinstance(val_set, SegmentationDataset)
    assert train_set.augment is not None and val_set.annotators == train_set.annotators
    assert train_set[0]["image"].shape == (1, 16, 16)
    three = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [8, 32, 32]}",
            "data.spatial_dims=3",
            "data.patch_size=[4, 16, 16]",
        ],
    )
    train_3d, val_3d = build_datasets(three, load_splits(three.data))
    assert isinstance(train_3d, VolumeDataset) and isinstance(val_3d, VolumeDataset)
    assert train_3d[0]["image"].shape == (1, 4, 16, 16)
    three.data.patch_size = None
    with pytest.raises(ConfigError, match="needs data.patch_size"):
        build_datasets(three, load_splits(three.data))
