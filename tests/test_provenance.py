"""Tests of medseg.provenance: the version, commit and command stored with every evaluation."""

from __future__ import annotations

import re
from pathlib import Path

import medseg
from medseg.provenance import code_provenance, command_line, file_sha256, git_commit


def test_command_line_quotes_arguments_and_shortens_the_program() -> None:
    assert command_line(["/usr/bin/medseg", "evaluate", "a b.pt", "--split", "val"]) == (
        "medseg evaluate 'a b.pt' --split val"
    )
    assert command_line([]) == ""


def test_git_commit_of_this_checkout_or_none(tmp_path: Path) -> None:
    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert git_commit(tmp_path) is None  # not a checkout


def test_code_provenance_keys() -> None:
    info = code_provenance()
    assert info["medseg_version"] == medseg.__version__
    assert set(info) == {"medseg_version", "git_commit", "command"} and info["command"]


def test_file_sha256_is_the_hashlib_digest(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc")
    # FIPS 180-2 test vector for "abc"
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
