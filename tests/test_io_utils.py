"""medseg.io_utils: atomic writes, the guarded torch.load, YAML mappings."""

from __future__ import annotations

import errno
from pathlib import Path

import pandas as pd
import pytest
import torch

from medseg.errors import ConfigError, DataError
from medseg.io_utils import (
    atomic_path,
    atomic_write,
    load_torch_file,
    make_parent,
    read_yaml_mapping,
    write_bytes_atomic,
    write_csv_atomic,
    write_error,
    write_text_atomic,
)


def test_atomic_write_replaces_the_file_only_on_success(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "history.csv"
    write_text_atomic(path, "old\n")
    assert path.read_text() == "old\n"
    with pytest.raises(RuntimeError, match="crash"), atomic_write(path) as handle:
        handle.write("half a new fi")
        raise RuntimeError("crash")
    assert path.read_text() == "old\n"  # the old file survives a crash mid-write
    assert not (tmp_path / "sub" / "history.csv.tmp").exists()
    with atomic_write(path, "wb") as handle:
        handle.write(b"new\n")
    assert path.read_bytes() == b"new\n" and [p.name for p in path.parent.iterdir()] == ["history.csv"]


def test_load_torch_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(3)}, path)
    assert torch.equal(load_torch_file(path)["w"], torch.arange(3))
    with pytest.raises(DataError, match="missing.pt: weight file not found"):
        load_torch_file(tmp_path / "missing.pt", "weight file")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="broken.pt: not a medseg checkpoint, or a truncated one"):
        load_torch_file(broken)


def test_read_yaml_mapping_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text("model:\n  name: unet\n")
    assert read_yaml_mapping(good) == {"model": {"name": "unet"}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty) == {}
    with pytest.raises(ConfigError, match="nope.yaml: grid file not found"):
        read_yaml_mapping(tmp_path / "nope.yaml", "grid file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        read_yaml_mapping(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: the top level of a config file must be a mapping"):
        read_yaml_mapping(listed)


def test_atomic_path_keeps_the_extension_and_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "mask.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith("mask.nii.gz") and tmp.name.startswith(".")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["mask.nii.gz"]
    with pytest.raises(RuntimeError, match="crash"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["mask.nii.gz"]
    with pytest.raises(DataError, match=r"mask\.nii\.gz: the writer left no file"), atomic_path(target):
        pass


def test_write_helpers_and_write_errors(tmp_path: Path) -> None:
    assert write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    frame = pd.DataFrame({"case": ["a"], "dice": [0.5]})
    assert write_csv_atomic(tmp_path / "m.csv", frame, index=False).read_text() == "case,dice\na,0.5\n"
    assert write_text_atomic(tmp_path / "u.txt", "µm").read_text(encoding="utf-8") == "µm"
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(DataError, match=r"file: cannot write \(.*\); a part of the path is a file"):
        write_text_atomic(tmp_path / "file" / "below.txt", "x")
    error = write_error(OSError(errno.ENOSPC, "No space left on device"), "m.csv")
    assert str(error) == "m.csv: cannot write (no space left on device); free some space or write elsewhere"
    assert make_parent(tmp_path / "x" / "y.txt") == tmp_path / "x" / "y.txt" and (tmp_path / "x").is_dir()
