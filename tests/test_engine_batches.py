"""Where an epoch's micro-batches come from: workers, oversampling, persistent seeding, device path."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.data.dataset import SegmentationDataset
from medseg.data.loading import train_loader
from medseg.data.sample import Sample
from medseg.data.transforms import augment_transform
from medseg.engine.batches import (
    EpochSeededDataset,
    TrainBatches,
    device_augment_from_config,
    resolve_num_workers,
)
from medseg.errors import ConfigError

CPU = torch.device("cpu")


def _dataset(n: int = 24, with_foreground: int = 4, augment: bool = True) -> SegmentationDataset:
    """``n`` 16×16 slices, the first ``with_foreground`` with a square of foreground."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        mask = np.zeros((16, 16), np.uint8)
        if i < with_foreground:
            mask[4:10, 4:10] = 1
        image = rng.normal(size=(1, 16, 16)).astype(np.float32)
        samples.append(
            Sample(
                image=image, masks={"expert": mask}, target="expert", case_id=f"c{i:02d}", spacing=(1.0, 1.0)
            )
        )
    dataset = SegmentationDataset(samples, (16, 16), 1)
    if augment:
        dataset.augment = augment_transform(dataset.annotators, 2, load_config().augment)
    return dataset


def _cfg(*overrides: str):
    return load_config(None, ["train.batch_size=4", *overrides])


def test_num_workers_auto_is_0_on_the_cpu_and_bounded_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_num_workers("auto", CPU) == 0
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_num_workers("auto", torch.device("cuda")) == 8
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_num_workers("auto", torch.device("cuda")) == 1
    assert resolve_num_workers(3, CPU) == 3
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ConfigError, match="num_workers"):
            resolve_num_workers(bad, CPU)  # type: ignore[arg-type]


def test_sample_path_gives_the_same_batches_as_the_per_epoch_loader() -> None:
    """The persistent loader (seed carried with each index) equals a fresh loader per epoch."""
    dataset = _dataset()
    batches = TrainBatches(_cfg(), dataset, micro_batch=4, steps=6, device=CPU)
    for epoch in (0, 3):
        dataset.set_epoch_seed(epoch)
        reference = list(train_loader(dataset, 4, seed=0, epoch=epoch))
        ours = list(itertools.islice(batches.epoch(epoch), len(reference)))
        for a, b in zip(reference, ours, strict=True):
            assert a["case_id"] == b["case_id"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])


def test_epoch_seeded_dataset_augments_by_epoch_and_index_alone() -> None:
    wrapped = EpochSeededDataset(_dataset())
    first = wrapped[(5, 2)]["image"]
    wrapped[(9, 2)]  # another epoch in between
    assert torch.equal(wrapped[(5, 2)]["image"], first)
    assert not torch.equal(wrapped[(6, 2)]["image"], first)


@pytest.mark.parametrize("augment_on", ["sample", "device"])
def test_oversampling_gives_the_stated_share_of_foreground(augment_on: str) -> None:
    dataset = _dataset(n=30, with_foreground=3)
    cfg = _cfg("data.foreground_share=0.5", f"train.augment_on={augment_on}", "augment.enabled=false")
    batches = TrainBatches(cfg, dataset, micro_batch=4, steps=20, device=CPU)
    drawn = list(itertools.islice(batches.epoch(0), 20))
    with_foreground = [int((b["target"].flatten(1).amax(1) > 0).sum()) for b in drawn]
    assert min(with_foreground) >= 2  # round(0.5 × 4) forced, more by chance
    # uniform sampling would give 4 × 3/30 = 0.4 per batch on average
    assert np.mean(with_foreground) >= 2.0


def test_device_path_reads_cached_items_and_augments_image_and_masks_alike() -> None:
    dataset = _dataset(n=16, with_foreground=16)
    plain = TrainBatches(_cfg("train.augment_on=device", "augment.enabled=false"), dataset, 4, 4, CPU)
    batch = next(iter(plain.epoch(0)))
    for k, case in enumerate(batch["case_id"]):
        index = int(case[1:])
        dataset.augment = None
        assert torch.equal(batch["image"][k], dataset[index]["image"])  # cached = un-augmented item
    cfg = _cfg(
        "train.augment_on=device",
        "augment.prob=1.0",
        "augment.intensity_scale=0",
        "augment.intensity_shift=0",
    )
    augmented = TrainBatches(cfg, _dataset(n=16, with_foreground=16), 4, 4, CPU)
    out = next(iter(augmented.epoch(0)))
    assert torch.equal(out["target"], out["masks"]["expert"])
    assert set(torch.unique(out["target"]).tolist()) <= {0.0, 1.0}  # labels stay labels
    # the same batch again is augmented identically (seeded by epoch and micro-batch)
    assert torch.equal(next(iter(augmented.epoch(0)))["image"], out["image"])


def test_device_augment_follows_the_augment_config() -> None:
    cfg = load_config(None, ["augment.flip=false", "augment.rotate_deg=7", "augment.scale=0.2"])
    augment = device_augment_from_config(cfg)
    assert augment.flip_prob == 0.0 and augment.rotate_deg == 7.0
    assert augment.scale_range == pytest.approx((0.8, 1.2))


def test_bad_batch_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="augment_on"):
        load_config(None, ["train.augment_on=gpu"])
    from medseg.data.volumes import VolumeDataset

    volume = Sample(
        image=np.zeros((1, 8, 8, 8), np.float32),
        masks={"expert": np.ones((8, 8, 8), np.uint8)},
        target="expert",
        case_id="v",
        spacing=(1.0, 1.0, 1.0),
    )
    volumes = VolumeDataset([volume], 1, patch_size=[8, 8, 8])
    with pytest.raises(ConfigError, match="2D path"):
        TrainBatches(_cfg("train.augment_on=device"), volumes, 1, 1, CPU)
    with pytest.raises(ConfigError, match="foreground_ratio"):
        TrainBatches(_cfg("data.foreground_share=0.3"), volumes, 1, 1, CPU)
