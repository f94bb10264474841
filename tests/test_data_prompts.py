"""Box prompts: tight boxes from masks, outward jitter, parsing and box files, model-input geometry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.prompts import (
    Letterbox,
    boxes_for_image,
    boxes_from_mask,
    default_box_shift,
    jitter_box,
    mask_to_model,
    minmax_normalize,
    parse_box,
    read_box_file,
    to_model_input,
    validate_boxes,
)
from medseg.errors import ConfigError, DataError


def two_label_mask() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[2:5, 3:9] = 1  # label 1, first component
    mask[10:15, 20:28] = 1  # label 1, second component
    mask[16:18, 1:3] = 2
    return mask


def test_boxes_per_component_and_per_label() -> None:
    mask = two_label_mask()
    np.testing.assert_array_equal(boxes_from_mask(mask), [[3, 2, 8, 4], [20, 10, 27, 14], [1, 16, 2, 17]])
    boxes, labels = boxes_from_mask(mask, per="label", return_labels=True)
    np.testing.assert_array_equal(boxes, [[3, 2, 27, 14], [1, 16, 2, 17]])
    np.testing.assert_array_equal(labels, [1, 2])
    assert boxes_from_mask(np.zeros((4, 4))).shape == (0, 4)
    diagonal = np.eye(4, dtype=np.uint8)  # 8-connected: one component
    np.testing.assert_array_equal(boxes_from_mask(diagonal), [[0, 0, 3, 3]])
    with pytest.raises(ValueError, match="per must be"):
        boxes_from_mask(mask, per="pixel")


def test_boxes_from_3d_mask_are_x_y_z_ordered() -> None:
    volume = np.zeros((6, 20, 30), dtype=np.uint8)
    volume[1:4, 2:5, 3:9] = 1
    np.testing.assert_array_equal(boxes_from_mask(volume), [[3, 2, 1, 8, 4, 3]])


def test_default_box_shift_is_medsams() -> None:
    assert default_box_shift(1024) == 20
    assert default_box_shift(256) == 5


def test_jitter_moves_outward_within_shift_and_stays_inside() -> None:
    rng = np.random.default_rng(0)
    box = np.array([10, 8, 20, 15])
    shape = (24, 25)
    seen = set()
    for _ in range(300):
        out = jitter_box(box, 5, rng, shape)
        outward = np.array([box[0] - out[0], box[1] - out[1], out[2] - box[2], out[3] - box[3]])
        assert np.all(outward >= 0)
        clipped = np.array([box[0] - 0, box[1] - 0, shape[1] - 1 - box[2], shape[0] - 1 - box[3]])
        assert np.all(outward <= np.minimum(5, clipped))
        assert out[2] <= shape[1] - 1 and out[3] <= shape[0] - 1
        seen.update(outward.tolist())
    assert seen == {0, 1, 2, 3, 4, 5}  # 0..shift inclusive, and the clip at the right edge (4)
    many = jitter_box(np.array([[10, 8, 20, 15], [0, 0, 3, 3]]), 2, rng, shape)
    assert many.shape == (2, 4) and np.all(many[1, :2] == 0)
    np.testing.assert_array_equal(jitter_box(box, 0, rng, shape), box)


def test_parse_box_and_its_errors() -> None:
    np.testing.assert_array_equal(parse_box("1, 2, 30, 40"), [1, 2, 30, 40])
    np.testing.assert_array_equal(parse_box("1,2,3,10,20,3"), [1, 2, 3, 10, 20, 3])  # one-slice 3D box
    for text, message in [
        ("1,2,3", "x0,y0,x1,y1"),
        ("a,2,3,4", "not a number"),
        ("5,2,3,4", r"x1 \(3\) <= x0 \(5\)"),
        ("5,2,5,4", r"x1 \(5\) <= x0 \(5\)"),
        ("1,5,3,4", r"y1 \(4\) <= y0 \(5\)"),
        ("-1,0,3,4", "negative"),
        ("0,0,0,3,3,-1", r"z1 \(-1\) < z0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_box(text)


def test_validate_boxes_against_the_image() -> None:
    np.testing.assert_array_equal(validate_boxes([[0, 0, 30, 20]], (20, 30)), [[0, 0, 30, 20]])
    validate_boxes([[4, 0, 4, 3]], (20, 30))  # a one-pixel-wide object's tight box
    with pytest.raises(DataError, match=r"x1 \(3\) < x0 \(4\)"):
        validate_boxes([[4, 0, 3, 3]], (20, 30))
    with pytest.raises(DataError, match=r"box 1 .* x1 \(31\) is outside the image \(width 30\)"):
        validate_boxes([[0, 0, 5, 5], [0, 0, 31, 10]], (20, 30))
    with pytest.raises(DataError, match="y1 .*height 20"):
        validate_boxes([[0, 0, 5, 21]], (20, 30))
    with pytest.raises(DataError, match="depth 4"):
        validate_boxes([[0, 0, 1, 5, 5, 4]], (4, 20, 30))
    with pytest.raises(ValueError, match="N×4"):
        validate_boxes([[0, 0, 5]], (20, 30))


def test_read_box_files(tmp_path: Path) -> None:
    js = tmp_path / "boxes.json"
    js.write_text(json.dumps({"case_01.png": [[1, 2, 10, 12], [3, 3, 5, 5]], "case_02": [0, 0, 4, 4]}))
    table = read_box_file(js)
    assert table["case_01.png"].shape == (2, 4) and table["case_02"].shape == (1, 4)
    np.testing.assert_array_equal(boxes_for_image(table, "/data/case_02.nii.gz"), [[0, 0, 4, 4]])
    with pytest.raises(DataError, match="no boxes for this image.*case_01.png"):
        boxes_for_image(table, "other.png")

    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("image,x0,y0,x1,y1\na.png,1,2,10,12\nb.png,0,0,4,4\na.png,3,3,5,5\n")
    table = read_box_file(csv_path)
    np.testing.assert_array_equal(table["a.png"], [[1, 2, 10, 12], [3, 3, 5, 5]])  # file order kept
    csv3d = tmp_path / "boxes3d.csv"
    csv3d.write_text("image,x0,y0,z0,x1,y1,z1\nv.nii.gz,1,2,0,10,12,5\n")
    assert read_box_file(csv3d)["v.nii.gz"].shape == (1, 6)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", "{not json", "not valid JSON"),
        ("list.json", "[[1, 2, 3, 4]]", "expected a JSON object"),
        ("short.json", '{"a.png": [[1, 2, 3]]}', "list of \\[x0, y0, x1, y1\\]"),
        ("text.json", '{"a.png": [[1, 2, "x", 4]]}', "not a number"),
        ("order.json", '{"a.png": [[10, 2, 3, 4]]}', r"box 0 of 'a.png'.*x1 \(3\) <= x0 \(10\)"),
        ("cols.csv", "name,x0,y0,x1,y1\na.png,1,2,3,4\n", "CSV columns must be image,x0,y0,x1,y1"),
        ("boxes.txt", "a.png 1 2 3 4", ".json or .csv"),
    ],
)
def test_box_file_errors_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_box_file(path)
    assert str(path) in str(err.value)


def test_model_input_pads_bottom_right_and_repeats_grey() -> None:
    image = np.linspace(-100, 400, 100 * 60, dtype=np.float32).reshape(100, 60)  # tall: W is padded
    model_input, geometry = to_model_input(image, 64)
    assert model_input.shape == (3, 64, 64) and model_input.dtype == np.float32
    assert geometry == Letterbox((100, 60), 64) and geometry.resized_shape == (64, 38)
    assert model_input.min() >= 0 and model_input.max() <= 1
    assert np.all(model_input[:, :, 38:] == 0)  # right padding
    np.testing.assert_array_equal(model_input[0], model_input[2])
    wide, geometry = to_model_input(np.ones((3, 30, 120)), 64)  # C×H×W colour, constant image
    assert geometry.resized_shape == (16, 64) and np.all(wide == 0)
    _, geometry = to_model_input(np.zeros((30, 120, 3), dtype=np.uint8), 256)  # H×W×3 (CVPR24 2D)
    assert geometry.original_shape == (30, 120)
    np.testing.assert_allclose(minmax_normalize(np.array([2.0, 4.0, 6.0])), [0, 0.5, 1])


def test_geometry_round_trips_predictions_and_boxes() -> None:
    yy, xx = np.mgrid[0:90, 0:50]
    smooth = np.sin(yy / 15.0) + np.cos(xx / 11.0)
    model_input, geometry = to_model_input(smooth, 128)  # upsampling: back to the original exactly-ish
    back = geometry.logits_to_original(torch.from_numpy(model_input[0])).numpy()
    assert back.shape == (90, 50)
    np.testing.assert_allclose(back, minmax_normalize(smooth), atol=0.02)

    mask = np.zeros((90, 50), dtype=np.uint8)
    mask[20:60, 10:35] = 1
    in_model = mask_to_model(mask, geometry)
    assert in_model.shape == (128, 128) and set(np.unique(in_model)) == {0, 1}
    back_mask = geometry.logits_to_original(torch.from_numpy(in_model.astype(np.float32))).numpy() > 0.5
    assert np.mean(back_mask != mask.astype(bool)) < 0.01

    box = boxes_from_mask(mask)  # [[10, 20, 34, 59]]
    model_box = geometry.boxes_to_model(box)
    tight_in_model = boxes_from_mask(in_model).astype(float)
    np.testing.assert_allclose(model_box, tight_in_model, atol=1.5)  # within the resampling of one pixel
    np.testing.assert_allclose(geometry.boxes_to_original(model_box), box)
    with pytest.raises(DataError, match="differs from the image"):
        mask_to_model(mask[:10], geometry)
