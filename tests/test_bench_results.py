"""Tests of benchmarks/bench_results.py: where a benchmark's table is written, and with what."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_results as br  # noqa: E402  (benchmarks/ is not a package)


def test_results_go_to_the_checkout_unless_the_variable_moves_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MEDSEG_BENCH_RESULTS", raising=False)
    assert br.results_path("loss_speed") == BENCHMARKS / "results" / "loss_speed.md"
    monkeypatch.setenv("MEDSEG_BENCH_RESULTS", str(tmp_path))
    assert br.results_path("loss_speed") == tmp_path / "loss_speed.md"
    assert br.results_path("loss_speed", quick=True) == tmp_path / "loss_speed_quick.md"


def test_command_line_is_relative_to_the_checkout() -> None:
    script = str(BENCHMARKS / "loss_speed.py")
    assert br.command_line([script, "--threads", "1"]) == "python benchmarks/loss_speed.py --threads 1"
    assert br.command_line(["/elsewhere/x.py", "a b"]) == "python x.py 'a b'"


def test_render_puts_the_table_between_the_header_and_the_provenance() -> None:
    text = br.render(
        "\n| a |\n|---|\n| 1 |\n", "benchmarks/x.py", "python benchmarks/x.py", "cpu", "2026-01-02"
    )
    lines = text.splitlines()
    assert (
        lines[0] == "<!-- written by benchmarks/x.py: re-run it to update this file; do not edit by hand -->"
    )
    assert lines[2:5] == ["| a |", "|---|", "| 1 |"]
    assert lines[-1] == ("<small>Command: `python benchmarks/x.py` · machine: cpu · date: 2026-01-02</small>")


def test_publish_writes_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDSEG_BENCH_RESULTS", str(tmp_path))
    path = br.publish("demo_table", "| a |\n|---|\n| 1 |", quick=True, argv=[str(BENCHMARKS / "x.py")])
    assert path == tmp_path / "demo_table_quick.md"
    text = path.read_text()
    assert "| 1 |" in text and "Command: `python benchmarks/x.py`" in text
    assert re.search(r"date: \d{4}-\d{2}-\d{2}</small>", text)
    assert not list(tmp_path.glob("*.tmp"))


def test_machine_description_names_cores_and_torch() -> None:
    import torch

    text = br.machine_description()
    assert " cores" in text and f"torch {torch.__version__}" in text
    assert "load average" in text or not hasattr(__import__("os"), "getloadavg")
