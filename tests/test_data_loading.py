import pytest
import torch

from medseg.config import DataConfig, SplitConfig, load_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.loading import (
    build_datasets,
    check_target_spacing,
    load_splits,
    to_training_grid,
    train_loader,
)
from medseg.data.resample import GRID_KEY
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


def test_target_spacing_is_checked() -> None:
    assert check_target_spacing(None) is None
    assert check_target_spacing([1, 0.5, 0.5]) == (1.0, 0.5, 0.5)
    assert check_target_spacing([0.5, 0.5]) == (0.5, 0.5)
    for bad in ([1.0], [1.0, 1.0, 1.0, 1.0], [1.0, -1.0], [float("nan"), 1.0]):
        with pytest.raises(ConfigError, match="data.target_spacing"):
            check_target_spacing(bad)


def test_training_grid_crops_and_resamples_once_before_the_datasets() -> None:
    splits = load_splits(DataConfig(source="phantom", options={**PHANTOM, "shape": [8, 32, 32]}))
    assert to_training_grid(splits.train, None) == splits.train  # nothing asked: the samples as they are
    in_plane = to_training_grid(splits.train, [0.6, 0.6])  # phantom spacing (1.0, 0.3, 0.3)
    assert in_plane[0].spatial_shape == (8, 16, 16) and in_plane[0].spacing == (1.0, 0.6, 0.6)
    assert in_plane[0].meta[GRID_KEY]["input_shape"] == [8, 32, 32]
    assert GRID_KEY not in splits.train[0].meta  # the loaded samples keep their own grid

    three = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [8, 32, 32]}",
            "data.spatial_dims=3",
            "data.patch_size=[4, 8, 8]",
            "data.target_spacing=[1.0, 0.6, 0.6]",
            "data.crop_nonzero=true",
        ],
    )
    _, val_3d = build_datasets(three, load_splits(three.data))
    assert val_3d[0]["image"].shape[1:] == (8, 16, 16)  # whole validation volume, resampled
    two = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [8, 32, 32]}",
            "data.image_size=[16, 16]",
            "data.target_spacing=[2.0, 0.3, 0.3]",
        ],
    )
    train_2d, _ = build_datasets(two, load_splits(two.data))
    plain = load_config(None, ["data.options={n_patients: 4, seed: 0, shape: [8, 32, 32]}"])
    train_plain, _ = build_datasets(plain, load_splits(plain.data))
    assert len(train_2d) * 2 == len(train_plain)  # 2 mm slices: half as many
    two.data.target_spacing = [0.0, 1.0]
    with pytest.raises(ConfigError, match="target_spacing"):
        build_datasets(two, load_splits(two.data))
