"""The report of a multi-class result (medseg.report.classes): the summary per class, the legend, the
case × class table, class-coloured overlays, and a page that opens on the result."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from medseg.config import EvalConfig
from medseg.engine.evaluate import evaluate_files, write_evaluation
from medseg.report.classes import class_legend, class_summary_rows, classes_section
from medseg.report.figures import CLASS_RGB, hex_color
from medseg.report.html import build_report


def _write(path: Path, labels: np.ndarray) -> None:
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    image.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(image, str(path))


def _cases(n: int = 6) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Label maps with values 1 (a block) and 2 (a bar): case 0 lacks label 2 in both, case 1
    misses it in the prediction; the others are shifted by 0..3 voxels."""
    out = []
    for i in range(n):
        gt = np.zeros((6, 24, 24), np.uint8)
        gt[1:5, 3:11, 3:11] = 1
        if i != 0:
            gt[2:5, 14:20, 4:20] = 2
        pred = np.roll(gt, i % 4, axis=2)
        if i == 1:
            pred[pred == 2] = 0
        out.append((f"case{i}", gt, pred))
    return out


@pytest.fixture()
def class_eval(tmp_path: Path) -> Path:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name, gt, pred in _cases():
        _write(tmp_path / "gt" / f"{name}.nrrd", gt)
        _write(tmp_path / "pred" / f"{name}.nrrd", pred)
    result = evaluate_files(tmp_path / "pred", tmp_path / "gt", EvalConfig(), labels="all")
    write_evaluation(result, tmp_path / "eval")
    return tmp_path / "eval"


def _json_script(html: str, element_id: str) -> object:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert found is not None, element_id
    return json.loads(found.group(1))


def test_class_summary_rows_follow_the_empty_class_rule(class_eval: Path) -> None:
    per_class = pd.read_csv(class_eval / "metrics_per_class.csv")
    legend = class_legend(per_class)
    assert [(c["value"], c["name"], c["color"]) for c in legend] == [
        (1, "label 1", hex_color(CLASS_RGB[0])),
        (2, "label 2", hex_color(CLASS_RGB[1])),
    ]
    rows = class_summary_rows(per_class)
    assert [r["n"] for r in rows] == [6, 6]
    assert (rows[1]["n_absent"], rows[1]["n_missed"], rows[1]["n_spurious"]) == (1, 1, 0)
    dice = rows[1]["metrics"][0]
    assert dice["n"] == 5  # the case without label 2 anywhere is left out; the miss counts (Dice 0)
    usable = per_class[(per_class["class_value"] == 2) & (per_class["case"] != "case0")]["dice"]
    assert dice["mean_sd"] == f"{usable.mean():.4f} ± {usable.std(ddof=1):.4f}"
    assert rows[1]["metrics"][2]["n"] == 4  # HD95 also without the miss (no surface to measure)
    assert classes_section(None, {}) == {"classes": None}


def test_the_report_opens_on_the_per_class_result(class_eval: Path, tmp_path: Path) -> None:
    html = build_report([class_eval], tmp_path / "report.html", n_worst=3, n_median=1, n_best=1).read_text()
    sections = re.findall(r'<h2 id="([a-z-]+)"', html)
    assert sections[:3] == ["summary", "figure", "worst"] and sections[-1] == "provenance"
    assert sections.index("cases") < sections.index("class-cases") < sections.index("overlays")
    summary = html[
        html.index('<table class="class-summary">') : html.index("</table>", html.index("class-summary"))
    ]
    assert "label 1" in summary and "label 2" in summary and hex_color(CLASS_RGB[1]) in summary
    rows = _json_script(html, "class-data")
    assert len(rows) == 12 and rows[0]["dice"] == min(r["dice"] for r in rows)  # worst first
    assert {r["note"] for r in rows} >= {"both empty", "empty prediction"}
    # the worst overlays colour each class: both class colours appear in the page's worst cases
    worst = html[html.index('<h2 id="worst">') : html.index('<h2 id="cases">')]
    colours = set()
    for encoded in re.findall(r'src="data:image/png;base64,([^"]+)"', worst):
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as png:
            colours |= {tuple(int(v) for v in c) for c in np.asarray(png.convert("RGB")).reshape(-1, 3)}
    assert CLASS_RGB[0] in colours and CLASS_RGB[1] in colours


def test_a_binary_report_also_opens_on_the_result(tmp_path: Path) -> None:
    from test_report_html import _cases as names
    from test_report_html import write_eval_dir

    run = write_eval_dir(tmp_path / "run", names(6), config={"train": {"epochs": 3}})
    html = build_report([run], tmp_path / "report.html", n_worst=2, n_median=1, n_best=1).read_text()
    sections = re.findall(r'<h2 id="([a-z-]+)"', html)
    assert sections[:3] == ["summary", "figure", "worst"] and sections[-1] == "provenance"
    assert "class-cases" not in sections and "Per class" not in html
