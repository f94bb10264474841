"""Output names of predict (medseg.engine.output_paths): no output overwrites another."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medseg.engine.output_paths import append_measurements, check_not_overwriting, output_bases
from medseg.errors import DataError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_unique_names_stay_flat(tmp_path: Path) -> None:
    a, b = _touch(tmp_path / "a" / "one.png"), _touch(tmp_path / "b" / "two.nii.gz")
    assert output_bases([a, b]) == {a: Path("one"), b: Path("two")}


def test_shared_names_keep_their_relative_folders(tmp_path: Path) -> None:
    a = _touch(tmp_path / "site1" / "a" / "scan.nii.gz")
    b = _touch(tmp_path / "site1" / "b" / "scan.nii.gz")
    c = _touch(tmp_path / "site2" / "scan.nii.gz")
    bases = output_bases([a, b, c])
    assert bases == {
        a: Path("site1/a/scan"),
        b: Path("site1/b/scan"),
        c: Path("site2/scan"),
    }
    assert len(set(bases.values())) == 3


def test_same_folder_same_stem_gets_a_numbered_suffix(tmp_path: Path) -> None:
    x_png, x_nii = _touch(tmp_path / "x.png"), _touch(tmp_path / "x.nii.gz")
    assert output_bases([x_png, x_nii]) == {x_png: Path("x"), x_nii: Path("x_2")}


def test_a_file_given_twice_is_predicted_once(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.png")
    assert output_bases([a, tmp_path / "." / "a.png"]) == {a: Path("a")}


def test_check_not_overwriting(tmp_path: Path) -> None:
    old = _touch(tmp_path / "out" / "a_mask.png")
    new = tmp_path / "out" / "b_mask.png"
    check_not_overwriting([new], overwrite=False)
    with pytest.raises(DataError, match=r"a_mask\.png: output already exists; pass --overwrite"):
        check_not_overwriting([new, old], overwrite=False)
    _touch(new)
    with pytest.raises(DataError, match=r"already exists \(and 1 more\)"):
        check_not_overwriting([old, new], overwrite=False)
    check_not_overwriting([old, new], overwrite=True)


def test_append_measurements_keeps_earlier_rows(tmp_path: Path) -> None:
    path = tmp_path / "measurements.csv"
    append_measurements(path, pd.DataFrame({"case": ["a", "b"], "volume_ml_pred": [1.0, 2.0]}))
    append_measurements(path, pd.DataFrame({"case": ["c"], "volume_ml_pred": [3.0]}))
    # b predicted again (--overwrite): its row is replaced, not repeated
    append_measurements(path, pd.DataFrame({"case": ["b"], "volume_ml_pred": [2.5]}))
    table = pd.read_csv(path)
    assert table["case"].tolist() == ["a", "c", "b"] and table["volume_ml_pred"].tolist() == [1.0, 3.0, 2.5]


def test_append_measurements_beside_a_file_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "measurements.csv"
    path.write_text("the user's own notes, not a table of cases\n")
    written = append_measurements(path, pd.DataFrame({"case": ["a"], "volume_ml_pred": [1.0]}))
    assert written == tmp_path / "measurements_2.csv" and pd.read_csv(written)["case"].tolist() == ["a"]
    assert path.read_text() == "the user's own notes, not a table of cases\n"
    (tmp_path / "empty.csv").write_bytes(b"")  # a 0-byte file (an interrupted write) holds nothing
    assert (
        append_measurements(tmp_path / "empty.csv", pd.DataFrame({"case": ["a"]})) == tmp_path / "empty.csv"
    )
