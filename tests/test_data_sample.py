"""The Sample data model: validation, slicing and stacking."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.sample import Sample, assign_keys, binarize, sample_key, stack_slices
from medseg.errors import DataError


def _vol(d: int = 3) -> Sample:
    img = np.random.default_rng(0).normal(size=(2, d, 4, 5))
    m = np.zeros((d, 4, 5), np.uint8)
    m[:, 1:3, 2:4] = 1
    return Sample(
        image=img,
        masks={"expert": m, "other": 1 - m},
        target="expert",
        spacing=(2.0, 0.5, 0.4),
        case_id="c1",
        source_path="/x/c1.nii.gz",
        meta={"k": 1},
    )


def test_basic_properties() -> None:
    s = _vol()
    assert s.image.dtype == np.float32 and s.spatial_shape == (3, 4, 5) and s.ndim == 3
    assert s.target_mask is s.masks["expert"]
    assert s.spacing == (2.0, 0.5, 0.4)
    w = s.with_image(s.image * 2)
    assert np.allclose(w.image, s.image * 2) and w.case_id == "c1"


def test_binarize() -> None:
    out = binarize(np.array([[0, 255], [7, -1]]))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 1], [1, 1]]


def test_bool_mask_stored_as_uint8() -> None:
    s = Sample(np.zeros((1, 2, 2)), {"e": np.ones((2, 2), bool)}, "e", (1.0, 1.0), "c")
    assert s.masks["e"].dtype == np.uint8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 5))}, "C×H×W"),
        ({"image": np.zeros((1, 0, 5))}, "empty"),
        ({"image": np.full((1, 4, 5), np.nan)}, "NaN"),
        ({"spacing": (1.0,)}, "spacing"),
        ({"spacing": (1.0, 0.0)}, "positive"),
        ({"masks": {"e": np.zeros((4, 6), np.uint8)}}, "shape"),
        ({"masks": {"e": np.full((4, 5), 255, np.uint8)}}, "binary"),
        ({"target": "nobody"}, "target"),
    ],
)
def test_validate_errors_name_the_file(kwargs: dict, match: str) -> None:
    base = {
        "image": np.zeros((1, 4, 5)),
        "masks": {"e": np.zeros((4, 5), np.uint8)},
        "target": "e",
        "spacing": (1.0, 1.0),
        "case_id": "c",
        "source_path": "/data/img_07.png",
    }
    with pytest.raises(DataError, match=match) as e:
        Sample(**{**base, **kwargs})
    assert "img_07.png" in str(e.value)


def test_slices_and_stack_round_trip() -> None:
    s = _vol()
    sl = s.slices()
    assert len(sl) == 3 and sl[1].slice_index == 1 and sl[1].spacing == (0.5, 0.4)
    assert sl[0].meta["slice_thickness"] == 2.0 and sl[0].image.shape == (2, 4, 5)
    back = stack_slices(list(reversed(sl)))
    assert np.array_equal(back.image, s.image) and back.spacing == s.spacing
    assert np.array_equal(back.masks["other"], s.masks["other"]) and back.meta == {"k": 1}
    with pytest.raises(ValueError, match="3D"):
        sl[0].slices()


def test_stack_slices_errors() -> None:
    sl = _vol().slices()
    with pytest.raises(ValueError):
        stack_slices([])
    no_thick = [
        Sample(x.image, x.masks, x.target, x.spacing, x.case_id, x.slice_index, "/p/a.png") for x in sl
    ]
    with pytest.raises(DataError, match="through-plane") as e:
        stack_slices(no_thick)
    assert "a.png" in str(e.value)
    assert stack_slices(no_thick, slice_thickness=3.0).spacing[0] == 3.0
    with pytest.raises(ValueError, match="duplicate"):
        stack_slices([sl[0], sl[0]])
    other = Sample(sl[1].image, sl[1].masks, "expert", (0.5, 0.4), "c2", 1, meta={"slice_thickness": 2.0})
    with pytest.raises(ValueError, match="several cases"):
        stack_slices([sl[0], other])


def _image(case_id: str, name: str = "", path: str = "") -> Sample:
    meta = {"image_name": name} if name else {}
    return Sample(np.zeros((1, 4, 4)), {}, "expert", (1.0, 1.0), case_id, source_path=path, meta=meta)


def test_sample_keys_are_unique_within_a_set_and_stable() -> None:
    slices = _vol().slices()
    subject = [_image("s1", "s1_a.png"), _image("s1", path="/data/s1_b.png"), _image("s1")]
    single = _image("s2", "s2.png")
    samples = [*slices[:2], *subject, single, _vol()]
    keys = assign_keys(samples)
    assert keys == ["c1#0", "c1#1", "s1/s1_a.png", "s1/s1_b.png", "s1/4", "s2", "c1"]
    assert [s.key for s in samples] == keys and assign_keys(samples) == keys
    assert sample_key(single) == "s2" and sample_key(single, several_images=True) == "s2/s2.png"
    assert _vol().key == ""  # until assigned
