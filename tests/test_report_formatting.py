"""How the report shows values (medseg.report.formatting)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd

from medseg.metrics.evaluation import METRIC_NAMES
from medseg.report.formatting import (
    METRIC_LABELS,
    anchor,
    data_uri,
    fmt,
    json_records,
    json_value,
    metric_digits,
    script_json,
    show_value,
)


def test_every_metric_has_a_label_and_its_digits() -> None:
    assert set(METRIC_LABELS) == set(METRIC_NAMES)
    assert metric_digits("hd95_mm") == 2 and metric_digits("dice") == 4
    assert fmt(0.123456) == "0.1235" and fmt(float("nan")) == "—" and fmt(None) == "—"  # type: ignore[arg-type]


def test_values_as_text_and_json() -> None:
    assert show_value({"b": 1, "a": [2]}) == '{"a": [2], "b": 1}' and show_value(1 / 3) == "0.333333"
    assert json_value(np.float32(0.5)) == 0.5 and json_value(np.int64(3)) == 3 and json_value(np.bool_(True))
    assert json_value(float("inf")) is None and json_value("x") == "x"
    frame = pd.DataFrame({"case": ["a"], "dice": [float("nan")], "ok": [np.bool_(False)]})
    assert json_records(frame) == [{"case": "a", "dice": None, "ok": False}]
    text = script_json({"html": "</script>", "n": 1})
    assert "</" not in text and json.loads(text) == {"html": "</script>", "n": 1}


def test_anchor_and_data_uri() -> None:
    assert anchor("overlay", 3, "pat 1/img.png") == "overlay-3-pat_1_img_png"
    uri = data_uri(b"\x89PNG")
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",")[1]) == b"\x89PNG"
