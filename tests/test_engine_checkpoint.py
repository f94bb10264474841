from pathlib import Path

import pytest
import torch

from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.errors import DataError
from medseg.provenance import file_sha256


def test_round_trip_and_no_tmp_left(tmp_path: Path) -> None:
    path = save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "last.pt")
    state = load_checkpoint(path)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))
    assert len(file_sha256(path)) == 64


def test_truncated_and_foreign_files_name_the_file(tmp_path: Path) -> None:
    path = save_checkpoint({"model": {"w": torch.ones(1000)}}, tmp_path / "a.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(DataError, match="foreign.pt.*not a medseg checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
