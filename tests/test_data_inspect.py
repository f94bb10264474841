"""inspect_source / render_inspect on small sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from rich.table import Table

from medseg.data import sources
from medseg.data.inspect import InspectReport, dice, inspect_source, render_inspect
from medseg.data.io import write_image
from medseg.errors import DataError


def test_dice() -> None:
    a = np.zeros((4, 4), np.uint8)
    assert dice(a, a) == 1.0
    b = a.copy()
    b[0, :2] = 1
    c = a.copy()
    c[0, :1] = 1
    assert dice(b, c) == pytest.approx(2 / 3)


def test_inspect_phantom() -> None:
    src = sources.build("phantom", n_patients=2, shape=(6, 32, 32))
    rep = inspect_source(src, "phantom")
    assert isinstance(rep, InspectReport) and len(rep.rows) == 2
    r = rep.rows[0]
    s = src.load_case(r.case_id)[0]
    assert r.n_samples == 1 and r.n_slices == 6 and r.spatial_size == (6, 32, 32)
    assert r.annotators == ("expert", "non_expert") and not r.spacing_assumed
    assert r.coverage_pct == pytest.approx(100 * s.masks["expert"].mean())
    expected = dice(s.masks["expert"], s.masks["non_expert"])
    assert r.agreement["expert vs non_expert"] == pytest.approx(expected)
    assert rep.summary["n_cases"] == 2 and rep.summary["n_slices"] == 12
    assert "expert vs non_expert" in rep.summary["mean_agreement"]
    table = render_inspect(rep)
    assert isinstance(table, Table) and table.row_count == 2
    console = Console(record=True, width=200)
    console.print(table)
    assert "phantom_01" in console.export_text()


def test_inspect_2d_assumed_spacing_and_max_cases(tmp_path: Path) -> None:
    for k in ("a", "b", "c"):
        write_image(tmp_path / "images" / f"{k}.png", np.zeros((5, 6), np.uint8))
        write_image(tmp_path / "masks" / f"{k}.png", np.zeros((5, 6), np.uint8))
    rep = inspect_source(sources.build("folder", root=tmp_path), max_cases=2)
    assert rep.summary["n_cases"] == 3 and rep.summary["n_inspected"] == 2
    assert rep.summary["spacing_assumed"] and rep.summary["empty_target_cases"] == ["a", "b"]
    assert rep.rows[0].n_slices == 1 and rep.rows[0].spatial_size == (5, 6)
    render_inspect(rep)


def test_inspect_empty_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no cases") as e:
        inspect_source(sources.build("folder", root=tmp_path))
    assert str(tmp_path) in str(e.value)
