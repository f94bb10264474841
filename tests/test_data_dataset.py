import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medseg.data.dataset import SegmentationDataset, all_annotators, expand_to_slices
from medseg.data.sample import Sample
from medseg.errors import DataError


def _volume(case: str, channels: int = 1) -> Sample:
    image = np.random.default_rng(0).normal(size=(channels, 3, 24, 20)).astype(np.float32)
    expert = np.zeros((3, 24, 20), np.uint8)
    expert[:, 6:18, 5:15] = 1
    other = expert.copy()
    other[:, 6:8] = 0
    return Sample(image, {"expert": expert, "non_expert": other}, "expert", (2.0, 0.5, 0.5), case)


def test_expand_and_annotators() -> None:
    slices = expand_to_slices([_volume("a"), _volume("b")])
    assert len(slices) == 6 and slices[0].ndim == 2
    assert all_annotators(slices) == ["expert", "non_expert"]
    with pytest.raises(DataError, match="empty"):
        all_annotators([])


def test_items_and_batches() -> None:
    ds = SegmentationDataset([_volume("a")], (16, 16), in_channels=1)
    item = ds[0]
    assert item["image"].shape == (1, 16, 16)
    assert item["target"].shape == (1, 16, 16)
    assert set(item["masks"]) == {"expert", "non_expert"}
    # resizing 24x20 → 16x16 changes the pixel spacing accordingly
    torch.testing.assert_close(item["spacing"], torch.tensor([0.5 * 24 / 16, 0.5 * 20 / 16]))
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 1, 16, 16)
    assert batch["masks"]["non_expert"].shape == (3, 1, 16, 16)
    assert batch["case_id"] == ["a", "a", "a"]
    assert batch["slice_index"].tolist() == [0, 1, 2]


def test_wrong_channel_count_names_the_case() -> None:
    with pytest.raises(DataError, match="3 channel"):
        SegmentationDataset([_volume("rgbcase", channels=3)], (16, 16), in_channels=1)


def test_missing_annotator_falls_back_to_the_target() -> None:
    both = _volume("a")
    single = Sample(both.image, {"expert": both.masks["expert"]}, "expert", both.spacing, "b")
    ds = SegmentationDataset([both, single], (16, 16), in_channels=1)
    assert ds.annotators == ["expert", "non_expert"]
    item = ds[3]  # first slice of "b"
    assert item["annotator_present"] == {"expert": True, "non_expert": False}
    assert torch.equal(item["masks"]["non_expert"], item["masks"]["expert"])
    assert ds[0]["annotator_present"]["non_expert"]
    with pytest.raises(DataError, match="c.nii.gz"):
        Sample(
            both.image,
            {"non_expert": both.masks["non_expert"]},
            "expert",
            both.spacing,
            "c",
            source_path="c.nii.gz",
        )


def _class_slices(num_classes: int | None = 4) -> list[Sample]:
    """Two 2D class-index maps: classes 1 and 2 in the first, class 3 in the second."""
    first, second = np.zeros((24, 20), np.uint8), np.zeros((24, 20), np.uint8)
    first[2:10, 2:10], first[12:20, 10:18], second[4:16, 4:16] = 1, 2, 3
    meta = {} if num_classes is None else {"num_classes": num_classes, "class_values": [0, 3, 5, 9]}
    if num_classes is not None:
        meta["label_names"] = ["background", "a", "b", "c"]
    image = np.zeros((1, 24, 20), np.float32)
    return [
        Sample(image, {"expert": m}, "expert", (1.0, 1.0), f"c{i}", meta=dict(meta))
        for i, m in enumerate((first, second))
    ]


def test_multi_class_items_keep_class_indices_and_know_their_classes() -> None:
    ds = SegmentationDataset(_class_slices(), (12, 10), in_channels=1, num_classes=4)
    assert ds.num_classes == 4 and ds.class_values == [0, 3, 5, 9]
    assert ds.label_names == ["background", "a", "b", "c"]
    assert set(ds[0]["target"].unique().tolist()) == {0.0, 1.0, 2.0}  # resized by nearest
    assert ds.foreground_classes() == [[1, 2], [3]]
    binary = SegmentationDataset([_volume("a")], (16, 16), in_channels=1)
    assert binary.foreground_classes() is None and binary.class_values is None
    with pytest.raises(DataError, match="set data.num_classes: 4"):
        SegmentationDataset(_class_slices(), (12, 10), in_channels=1)
    with pytest.raises(DataError, match="data.num_classes is 3 but the source gives 4"):
        SegmentationDataset(_class_slices(), (12, 10), in_channels=1, num_classes=3)
