"""How the report shows values: metric labels, digits, and JSON that is safe inside ``<script>``."""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd

METRIC_LABELS = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "hd_mm": "HD (mm)",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
    "nsd": "NSD",
}


def show_value(value: Any) -> str:
    """A config value as text: JSON for lists and dicts, 6 significant digits for floats."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fmt(value: float, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; an em dash for None or a non-finite value."""
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def metric_digits(metric: str) -> int:
    """Decimals shown for ``metric``: 2 for distances in mm, 4 otherwise."""
    return 2 if metric.endswith("_mm") else 4


def json_value(value: Any) -> Any:
    """A table cell as JSON: numpy scalars as Python numbers, NaN / inf as None, anything else as text."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-safe dicts (:func:`json_value`)."""
    return [{str(k): json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]


def script_json(value: Any) -> str:
    """JSON safe inside ``<script>``: no ``</`` and no NaN."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def anchor(prefix: str, index: int, case: str) -> str:
    """An HTML id for the ``index``-th overlay of ``case`` (only ``[A-Za-z0-9_-]``)."""
    return f"{prefix}-{index}-" + re.sub(r"[^A-Za-z0-9_-]+", "_", case)[:40]


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI, to embed it in the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
