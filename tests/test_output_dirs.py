"""medseg.output_dirs: output folders and files are never replaced silently, and replaced whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medseg.errors import ConfigError, DataError
from medseg.output_dirs import (
    MARKER,
    check_output_dir,
    check_output_file,
    check_writable_dir,
    clear_dir,
    discard_dir,
    make_dir,
    prepare_output_dir,
    replace_dir,
    staging_dir,
)


def test_prepare_output_dir_makes_and_marks_a_new_folder(tmp_path: Path) -> None:
    out = prepare_output_dir(tmp_path / "a" / "run", command="medseg fit")
    assert out.is_dir() and (out / MARKER).read_text() == "written by: medseg fit\n"
    (tmp_path / "empty").mkdir()
    assert [p.name for p in prepare_output_dir(tmp_path / "empty").iterdir()] == [MARKER]


def test_prepare_output_dir_refuses_a_non_empty_folder_and_replaces_it_whole(tmp_path: Path) -> None:
    out = prepare_output_dir(tmp_path / "run")
    (out / "best.pt").write_bytes(b"old")
    (out / "sub").mkdir()
    (out / "sub" / "stale.csv").write_text("x")
    with pytest.raises(DataError, match=r"run: the --out folder exists and is not empty; pass --overwrite"):
        prepare_output_dir(out)
    assert (out / "best.pt").read_bytes() == b"old"
    prepare_output_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


def test_overwrite_empties_only_a_folder_medseg_made(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match=r"--overwrite empties only a folder that medseg made"):
        prepare_output_dir(home, overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"


def test_a_file_where_a_folder_is_named_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ConfigError, match=r"--out .*f: is a file, not a folder"):
        prepare_output_dir(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"--out .*f: is a file, not a folder"):
        make_dir(tmp_path / "f", "--out")
    with pytest.raises(DataError, match=r"cannot create the --out folder: cannot write"):
        make_dir(tmp_path / "f" / "below", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder of mode 0o555")
def test_a_folder_without_write_permission_is_an_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        with pytest.raises(DataError, match=r"locked: --out folder is not writable \(permission denied\)"):
            check_writable_dir(locked, "--out")
    finally:
        locked.chmod(0o755)


def test_check_output_file(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "report.html"
    assert check_output_file(target, "-o") == target and target.parent.is_dir()
    target.write_text("first")
    with pytest.raises(DataError, match=r"report\.html: -o file exists; pass --overwrite"):
        check_output_file(target, "-o")
    assert check_output_file(target, "-o", overwrite=True) == target
    with pytest.raises(ConfigError, match=r"-o .*reports: is a folder; name the file to write"):
        check_output_file(tmp_path / "reports", "-o")


def test_staging_and_replace_dir(tmp_path: Path) -> None:
    target = tmp_path / "Dataset501_x"
    target.mkdir()
    (target / "old_case.nii.gz").write_text("stale")
    staging = staging_dir(target)
    assert staging.parent == tmp_path and staging.name.startswith(".") and not any(staging.iterdir())
    (staging / "dataset.json").write_text("{}")
    assert replace_dir(staging, target) == target
    assert [p.name for p in target.iterdir()] == ["dataset.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset501_x"]  # nothing hidden left behind
    failed = staging_dir(target)
    (failed / "half.nii.gz").write_text("x")
    discard_dir(failed)
    assert not failed.exists() and (target / "dataset.json").is_file()


def test_clear_dir_keeps_the_folder(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("x")
    (tmp_path / "d.txt").write_text("y")
    clear_dir(tmp_path)
    assert tmp_path.is_dir() and not any(tmp_path.iterdir())


def test_check_output_dir_creates_nothing(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "a" / "b", "--out") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("a file")
    with pytest.raises(ConfigError, match=r"^--out .*f: is a file, not a folder"):
        check_output_dir(tmp_path / "f", "--out")
    with pytest.raises(ConfigError, match=r"^--out .*f/sub: .*f is a file, not a folder"):
        check_output_dir(tmp_path / "f" / "sub", "--out")
