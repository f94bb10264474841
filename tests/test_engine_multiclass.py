"""Multi-class prediction (medseg.engine.multiclass): 2D slice by slice at the input's own size,
mirroring, the 3D dispatch, and the classes (values, names) of an evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.data.sample import Sample
from medseg.engine.inference import SlidingWindow
from medseg.engine.multiclass import evaluation_classes, predict_classes, predict_slice_classes
from medseg.errors import DataError
from medseg.metrics.per_class import ClassSpec
from medseg.models import SegmentationModel

CPU = torch.device("cpu")


class PixelClasses(SegmentationModel):
    """Logit of class c is −(x − c)²: the argmax is the pixel value rounded to a class index."""

    def __init__(self, num_classes: int, spatial_dims: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * self.spatial_dims
        classes = torch.arange(self.num_classes, dtype=x.dtype, device=x.device).view(shape)
        return -((x[:, :1] - classes) ** 2) * self.scale


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[..., 2:10, 3:12] = 1
    labels[..., 14:22, 8:18] = 2
    return labels


def test_2d_classes_at_the_network_size_and_back() -> None:
    labels = _labels((24, 20))
    sample = Sample(labels[None].astype(np.float32), {}, "expert", (1.0, 1.0), "a")
    model = PixelClasses(3, 2)
    classes, foreground = predict_slice_classes(model, sample, (24, 20), "none", CPU, 3)
    np.testing.assert_array_equal(classes, labels)
    assert classes.dtype == np.uint8 and foreground.shape == (24, 20)
    assert foreground[labels > 0].min() > 0.5 > foreground[labels == 0].max()
    mirrored, _ = predict_slice_classes(model, sample, (24, 20), "none", CPU, 3, tta_flips=True)
    np.testing.assert_array_equal(mirrored, labels)  # a pixel-wise model commutes with flips
    # at half the size the probabilities are resized back: the input's shape, boundaries move ≤ 1 px
    half, _ = predict_slice_classes(model, sample, (12, 10), "none", CPU, 3)
    assert half.shape == (24, 20) and np.mean(half == labels) > 0.9


def test_volumes_go_slice_by_slice_in_2d_and_by_window_in_3d() -> None:
    labels = _labels((3, 24, 20))
    volume = Sample(labels[None].astype(np.float32), {}, "expert", (2.0, 1.0, 1.0), "v")
    classes, _ = predict_classes(PixelClasses(3, 2), volume, (24, 20), "none", CPU, 3)
    np.testing.assert_array_equal(classes, labels)
    window = SlidingWindow((2, 16, 16))
    classes_3d, _ = predict_classes(PixelClasses(3, 3), volume, (0, 0), "none", CPU, 3, window)
    np.testing.assert_array_equal(classes_3d, labels)


def test_evaluation_classes_from_the_samples() -> None:
    def sample(meta: dict[str, object]) -> Sample:
        return Sample(np.zeros((1, 4, 4), np.float32), {}, "expert", (1.0, 1.0), "a", meta=meta)

    named = {"class_values": [0, 1, 2], "label_names": ["background", "anterior", "posterior"]}
    assert evaluation_classes([sample(named), sample({})], 3) == [
        ClassSpec(1, 1, "anterior"),
        ClassSpec(2, 2, "posterior"),
    ]
    assert evaluation_classes([sample({"class_values": [0, 7]})], 2) == [ClassSpec(1, 7, "label 7")]
    # data.label_names when the source names nothing
    assert evaluation_classes([sample({})], 2, ["bg", "tumour"]) == [ClassSpec(1, 1, "tumour")]
    with pytest.raises(DataError, match="different label values"):
        evaluation_classes([sample({"class_values": [0, 7]}), sample({"class_values": [0, 8]})], 2)
