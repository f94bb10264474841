"""Tests of medseg.models.state_dict: the shared weight-file reader and strict key/shape check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medseg.errors import DataError
from medseg.models.state_dict import (
    check_state_dict,
    listed,
    load_strict,
    read_torch_state_dict,
    unwrap_state_dict,
)


def test_listed_shows_the_first_keys_and_the_count() -> None:
    assert listed("missing key(s)", ["a", "b"]) == "2 missing key(s): a, b"
    long = listed("x", [str(i) for i in range(13)])
    assert long.startswith("13 x: 0, 1,") and long.endswith("… (3 more)")


@pytest.mark.parametrize("wrap", ["flat", "model", "state_dict", "model_state"])
def test_unwrap_finds_the_state_dict_and_drops_ddp_prefixes(wrap: str) -> None:
    state = {"module.w": torch.zeros(2), "module.b": torch.ones(1)}
    obj = state if wrap == "flat" else {wrap: state, "epoch": 3}
    assert sorted(unwrap_state_dict(obj, "f.pt")) == ["b", "w"]
    mixed = {"module.w": torch.zeros(1), "b": torch.zeros(1)}  # only a whole-DDP save is unprefixed
    assert sorted(unwrap_state_dict(mixed, "f.pt")) == ["b", "module.w"]
    with pytest.raises(DataError, match=r"f\.pt.*not a state dict"):
        unwrap_state_dict([1, 2], "f.pt")
    with pytest.raises(DataError, match="1 non-tensor value"):
        unwrap_state_dict({"w": torch.zeros(1), "step": 3}, "f.pt")


def test_read_torch_state_dict_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.arange(3.0)}}, good)
    assert torch.equal(read_torch_state_dict(good)["w"], torch.arange(3.0))
    with pytest.raises(DataError, match="absent.pt.*not found"):
        read_torch_state_dict(tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.pt.*cannot read"):
        read_torch_state_dict(tmp_path / "bad.pt")


def test_check_and_load_strict() -> None:
    layer = nn.Linear(2, 3)
    state = {"weight": torch.zeros(3, 2), "bias": torch.ones(3)}
    load_strict(layer, state, "w.pt")
    assert torch.equal(layer.bias.detach(), torch.ones(3))
    wrong = {"weight": torch.zeros(2, 2), "extra": torch.zeros(1)}
    with pytest.raises(DataError) as err:
        check_state_dict(layer, wrong, "w.pt", "the head")
    message = str(err.value)
    assert "w.pt" in message and "does not fit the head" in message
    assert "1 missing key(s): bias" in message and "1 unexpected key(s): extra" in message
    assert "1 shape mismatch(es): weight (file (2, 2), model (3, 2))" in message
