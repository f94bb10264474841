"""The paired comparison of folders (medseg.report.paired), on folders written like medseg evaluate's."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report_html import _cases, write_eval_dir

from medseg.errors import DataError
from medseg.report.paired import compare_overlays, config_table, paired_table
from medseg.report.results import load_result_dir
from medseg.report.stats import paired_comparison


def test_paired_table_on_the_shared_cases(tmp_path: Path) -> None:
    a = load_result_dir(write_eval_dir(tmp_path / "a", _cases(6), empty={"case_001": "both"}), name="a")
    b = load_result_dir(
        write_eval_dir(tmp_path / "b", [*_cases(6)[1:], "extra"], seed=1, shift=1.0), name="b"
    )
    table = paired_table([a, b], tie_tolerance=1e-3, seed=0)
    assert table["shared"] == _cases(6)[1:]
    assert table["not_shared"] == [
        {"case": "case_000", "in": "a", "missing from": "b"},
        {"case": "extra", "in": "b", "missing from": "a"},
    ]
    dice = next(s for s in table["stats"] if s["metric"] == "dice")
    # case_001 is empty in both masks of a: its Dice is set by policy and left out of the pairs
    usable = _cases(6)[2:]
    expected = paired_comparison(
        a.cases.set_index("case").loc[usable, "dice"], b.cases.set_index("case").loc[usable, "dice"], "dice"
    )
    assert dice["n"] == 4 and dice["mean_delta"] == expected.mean_delta and dice["ci_low"] == expected.ci_low
    assert table["notes"]["case_001"] == "a: both empty" and table["notes"]["case_002"] == ""
    row = next(r for r in table["rows"] if r["case"] == "case_002")
    assert row["d_dice:1"] == pytest.approx(row["dice:1"] - row["dice:0"])
    assert [c["key"] for c in table["columns"]][:3] == ["case", "dice:0", "dice:1"]
    with pytest.raises(DataError, match="share no case"):
        paired_table([a, load_result_dir(write_eval_dir(tmp_path / "c", ["other"]))], 1e-3, 0)


def test_config_table_and_compare_overlays(tmp_path: Path) -> None:
    a = load_result_dir(write_eval_dir(tmp_path / "a", _cases(4), config={"optim": {"lr": 0.1}}), name="a")
    b = load_result_dir(
        write_eval_dir(tmp_path / "b", _cases(4), seed=3, shift=2.0, config={"optim": {"lr": 0.2}}), name="b"
    )
    assert config_table([a, b]) == [{"key": "optim.lr", "values": ["0.1", "0.2"]}]
    overlays = compare_overlays([a, b], _cases(4), n=2, size=64)
    assert len(overlays) == 2 and [p["run"] for p in overlays[0]["panels"]] == ["a", "b"]
    gaps = [float(o["gap"]) for o in overlays]
    assert gaps == sorted(gaps, reverse=True)  # the largest |ΔDice| first
    assert overlays[0]["panels"][0]["src"].startswith("data:image/png;base64,")
    assert compare_overlays([a, b], _cases(4), n=0, size=64) == []
