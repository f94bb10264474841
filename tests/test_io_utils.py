"""medseg.io_utils: atomic writes, the guarded torch.load, YAML mappings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.errors import ConfigError, DataError
from medseg.io_utils import atomic_write, load_torch_file, read_yaml_mapping, write_text_atomic


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
