"""The report's measurement section: Bland–Altman statistics by hand, the plot, the HTML section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medseg.report.measurements import (
    bland_altman_png,
    bland_altman_stats,
    measurement_summary_rows,
    measurements_section,
)


def test_bland_altman_stats_by_hand() -> None:
    # differences 1, 3, -1, NaN pair dropped: bias 1, SD = sqrt(((0)² + 2² + (-2)²) / 2) = 2
    stats = bland_altman_stats([11.0, 23.0, 29.0, np.nan], [10.0, 20.0, 30.0, 5.0])
    assert stats == pytest.approx(
        {"n": 3, "bias": 1.0, "sd": 2.0, "lower": 1.0 - 3.92, "upper": 1.0 + 3.92, "mean_abs_diff": 5 / 3}
    )
    assert bland_altman_stats([1.0], [0.5])["sd"] == 0.0
    with pytest.raises(ValueError, match="no finite"):
        bland_altman_stats([np.nan], [1.0])


def test_plot_and_section(tmp_path: Path) -> None:
    import io

    png = bland_altman_png([1.0, 2.0, 3.5], [1.1, 2.0, 3.0], "volume", "mL")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size[0] > 200 and image.size[1] > 150
    assert measurements_section(tmp_path) is None  # no measurements.csv
    table = pd.DataFrame(
        {
            "case": ["a", "b", "c"],
            "label": [1, 1, 1],
            "hc_mm_pred": [100.0, 152.0, np.nan],
            "hc_mm_gt": [101.0, 151.0, 120.0],
            "hc_mm_reference": [100.5, 150.0, 119.0],
            "area_mm2_pred": [10.0, 20.0, 0.0],
            "area_mm2_gt": [12.0, 20.0, 5.0],
        }
    )
    table.to_csv(tmp_path / "measurements.csv", index=False)
    html = str(measurements_section(tmp_path))
    assert '<h2 id="measurements">' in html and html.count("<img") == 2  # HC and area; not the floor
    assert 'label 1: head circumference vs the reference HC</td><td>mm</td><td class="num">2</td>' in html
    rows = {r["measurement"]: r for r in measurement_summary_rows(tmp_path)}
    assert rows["area vs ground truth"]["bias"] == pytest.approx(-7 / 3)
    assert rows["head circumference vs the reference HC"]["bias"] == pytest.approx((-0.5 + 2.0) / 2)


def test_report_shows_the_section(tmp_path: Path) -> None:
    from medseg.report.html import build_report

    pd.DataFrame({"case": ["a", "b"], "dice": [0.9, 0.8]}).to_csv(tmp_path / "metrics.csv", index=False)
    pd.DataFrame(
        {"case": ["a", "b"], "label": [1, 1], "volume_ml_pred": [1.0, 2.0], "volume_ml_gt": [1.5, 2.0]}
    ).to_csv(tmp_path / "measurements.csv", index=False)
    text = build_report([tmp_path], tmp_path / "report.html", timestamp="t").read_text()
    assert '<a href="#measurements">Measurements</a>' in text
    assert "label 1: volume vs ground truth</td><td>mL</td>" in text
