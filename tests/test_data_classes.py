"""Class-index masks (medseg.data.classes): declared class counts, common label values, classes present."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.classes import check_sample_classes, common_class_values, common_label_names, present_classes
from medseg.data.sample import Sample
from medseg.errors import DataError


def _sample(meta: dict[str, object], mask: np.ndarray | None = None) -> Sample:
    mask = np.zeros((4, 4), np.uint8) if mask is None else mask
    return Sample(
        np.zeros((1, 4, 4), np.float32), {"e": mask}, "e", (1.0, 1.0), "c", source_path="c.png", meta=meta
    )


def test_check_sample_classes() -> None:
    declared = _sample({"num_classes": 3})
    check_sample_classes(declared, 3)
    check_sample_classes(_sample({}), 3)  # binary {0, 1}: class 1 of K
    check_sample_classes(_sample({}), None)
    with pytest.raises(DataError, match=r"c\.png: .*set data.num_classes: 3"):
        check_sample_classes(declared, None)
    with pytest.raises(DataError, match="data.num_classes is 4 but the source gives 3"):
        check_sample_classes(declared, 4)


def test_common_class_values() -> None:
    assert common_class_values([_sample({}), _sample({})]) is None
    assert common_class_values([_sample({"class_values": [0, 3, 5]}), _sample({})]) == [0, 3, 5]
    with pytest.raises(DataError, match="different label values"):
        common_class_values([_sample({"class_values": [0, 3]}), _sample({"class_values": [0, 4]})])


def test_common_label_names() -> None:
    named = _sample({"label_names": ["background", "tumour"]})
    assert common_label_names([named, _sample({})]) == ["background", "tumour"]
    assert common_label_names([named, _sample({"label_names": ["bg", "lesion"]})]) is None  # disagree
    assert common_label_names([_sample({})]) is None


def test_present_classes() -> None:
    mask = np.array([[0, 2, 2], [0, 0, 3]], np.uint8)
    assert present_classes(mask, 4) == [2, 3]
    assert present_classes(mask.astype(np.float32), 4) == [2, 3]  # float tensors of a data set
    assert present_classes(np.zeros((2, 2)), 4) == []
