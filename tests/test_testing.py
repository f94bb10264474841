"""Tests of medseg.testing: the one place that says where the real data sets are."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg import testing


def test_the_variable_names_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDSEG_SHARED_DATA", str(tmp_path))
    assert testing.shared_data_root() == tmp_path
    assert testing.shared_data_path("hc18_us", "training_set") == tmp_path / "hc18_us" / "training_set"


def test_without_the_variable_the_folder_is_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_SHARED_DATA", raising=False)
    checkout = Path(__file__).resolve().parents[1]
    assert testing.shared_data_root() == checkout.parent / "shared" / "data"
    monkeypatch.setenv("MEDSEG_SHARED_DATA", "  ")  # blank counts as unset
    assert testing.shared_data_root() == checkout.parent / "shared" / "data"


def test_missing_data_names_the_path_and_the_variable(tmp_path: Path) -> None:
    assert testing.missing_data(tmp_path) is None
    reason = testing.missing_data(tmp_path / "busi_us")
    assert reason is not None and str(tmp_path / "busi_us") in reason and "MEDSEG_SHARED_DATA" in reason


def test_require_data_exits_with_the_skip_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert testing.require_data(tmp_path, "anything") == tmp_path
    with pytest.raises(SystemExit) as stop:
        testing.require_data(tmp_path / "hc18_us", "the HC18 training set")
    assert stop.value.code == testing.SKIP_EXIT_CODE == 77
    assert capsys.readouterr().err.startswith("skipped: needs the HC18 training set: ")


def test_the_fixture_skips_a_missing_data_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shared_dataset
) -> None:
    monkeypatch.setenv("MEDSEG_SHARED_DATA", str(tmp_path))
    (tmp_path / "hc18_us").mkdir()
    assert shared_dataset("hc18_us") == tmp_path / "hc18_us"
    with pytest.raises(pytest.skip.Exception, match="lgg_mri"):
        shared_dataset("lgg_mri", "kaggle_3m")


def test_the_root_fixture_skips_without_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request
) -> None:
    monkeypatch.setenv("MEDSEG_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception, match="absent"):
        request.getfixturevalue("shared_data")
