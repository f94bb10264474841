"""A full disk (a small tmpfs mounted for the test) never leaves a 0-byte or half-written output.

Every file medseg writes goes to a temporary file first and is renamed onto its name only when
complete (:func:`medseg.io_utils.atomic_write` / :func:`~medseg.io_utils.atomic_path`), so a write
that runs out of space leaves the earlier file, or none, and the command ends with a one-line
error naming the file (exit 2). Mounting a tmpfs needs root (CI runs as root); elsewhere, or where
the container refuses the mount, the tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from medseg.errors import DataError
from medseg.io_utils import atomic_path, atomic_write

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at ``tmp_path/disk`` (unmounted afterwards)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"mount of a tmpfs refused here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes with one file (returned)."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def zero_byte_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == 0]


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]


def test_atomic_writes_keep_the_old_file_when_the_disk_is_full(small_disk: Path) -> None:
    old = small_disk / "metrics.csv"
    old.write_text("case,dice\na,0.9\n")
    fill(small_disk, leave=0)
    full = r"cannot write \(no space left on device\)"
    with pytest.raises(DataError, match=rf"metrics\.csv: {full}"), atomic_write(old) as handle:
        handle.write("case,dice\n" + "b,0.5\n" * 20_000)
    with (
        pytest.raises(DataError, match=rf"mask\.nii\.gz: {full}"),
        atomic_path(small_disk / "mask.nii.gz") as tmp,
    ):
        tmp.write_bytes(os.urandom(64 * 1024))
    assert old.read_text() == "case,dice\na,0.9\n"
    assert not (small_disk / "mask.nii.gz").exists()
    assert zero_byte_files(small_disk) == [] and temporary_files(small_disk) == []


def _pair(tmp: Path) -> tuple[Path, Path]:
    gt = np.zeros((8, 32, 32), np.uint8)
    gt[2:6, 8:20, 8:20] = 1
    pred = np.roll(gt, 2, axis=2)
    paths = []
    for name, array in (("gt", gt), ("pred", pred)):
        path = tmp / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array.T, np.diag([0.8, 0.8, 2.0, 1.0])), str(path))
        paths.append(path)
    return paths[1], paths[0]


def test_evaluate_on_a_full_disk_leaves_no_zero_byte_file(small_disk: Path, tmp_path: Path) -> None:
    pred, gt = _pair(tmp_path)
    out = small_disk / "eval"
    first = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fill(small_disk, leave=200)  # room for no table
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "no space left on device" in result.output and "eval" in result.output
    assert zero_byte_files(small_disk) == [] and temporary_files(small_disk) == []
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # every earlier output as it was: none was truncated


def test_predict_into_a_full_disk_leaves_no_zero_byte_file(small_disk: Path, tmp_path: Path) -> None:
    from medseg.config import load_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.models import build_from_config

    cfg = load_config(None, ["data.image_size=[32, 32]", "model.options={features: [4, 8]}"])
    checkpoint = save_checkpoint(
        {"model": build_from_config(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "model.pt"
    )
    scan = tmp_path / "scan.nii"  # uncompressed: its float32 probabilities (512 KiB) cannot fit
    volume = np.random.default_rng(0).normal(size=(8, 128, 128)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume.T, np.eye(4)), str(scan))
    out = small_disk / "pred"
    result = runner.invoke(app, ["predict", str(checkpoint), str(scan), "--probs", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "no space left on device" in result.output and "scan_prob.nii" in result.output
    assert zero_byte_files(small_disk) == [] and temporary_files(small_disk) == []
    assert not (out / "scan_prob.nii").exists()
