"""The README's numbers come from the benchmarks' results files (benchmarks/update_readme.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_results as br  # noqa: E402  (benchmarks/ is not a package)
import budget_common as bc  # noqa: E402
import update_readme as ur  # noqa: E402


def _summary(arm: str, dice: float, hd95: float) -> dict[str, object]:
    return {
        "arm": arm,
        "budget_min": 15.0,
        "train_min": 15.1,
        "epochs": 3,
        "cases": 4,
        "dice_mean": dice,
        "dice_median": dice,
        "patient_dice_mean": dice,
        "hd95_mean": hd95,
        "hd95_median": hd95,
        "recipe": "ResEnc U-Net, SGD",
    }


def _budget_file(folder: Path, name: str, heading: str, rows: list[dict[str, object]]) -> Path:
    """A results file as budget_common writes it: the heading, the arms' table, the paired table."""
    body = f"{heading}\n\n{bc.summary_table(rows)}\n\nPaired per case:\n\n| comparison |\n|---|\n| x |"
    text = br.render(body, f"benchmarks/{name}.py", f"python benchmarks/{name}.py", "2 cores", "2026-01-02")
    path = folder / f"{name}.md"
    path.write_text(text)
    return path


def test_the_readme_block_matches_the_results_files() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    expected = ur.render_block()
    assert ur.replace_block(readme, expected) == readme, (
        "README.md's results table differs from benchmarks/results: run python benchmarks/update_readme.py"
    )


def test_read_budget_reads_what_budget_common_writes(tmp_path: Path) -> None:
    path = _budget_file(
        tmp_path,
        "budget_toy",
        "Toy MRI, 4 validation patients, 15 min per arm on cpu",
        [_summary("medseg", 0.81234, 3.5), _summary("monai", 0.8, 12.25)],
    )
    result = ur.read_budget(path)
    assert (result.dataset, result.protocol) == ("Toy MRI", "4 validation patients, 15 min per arm on cpu")
    assert result.arms["medseg"]["DSC"] == "0.8123" and result.arms["monai"]["HD95"] == "12.25"
    assert (result.command, result.machine, result.date) == (
        "python benchmarks/budget_toy.py",
        "2 cores",
        "2026-01-02",
    )


def test_the_table_bolds_the_best_arm_and_marks_missing_ones(tmp_path: Path) -> None:
    _budget_file(
        tmp_path, "budget_b", "B set, protocol b", [_summary("medseg", 0.7, 2.0), _summary("monai", 0.9, 1.0)]
    )
    _budget_file(
        tmp_path,
        "budget_lgg",
        "LGG, protocol a",
        [_summary("medseg", 0.8, 1.0), _summary("nnunet", 0.8, 9.0)],
    )
    _budget_file(tmp_path, "budget_b_quick", "quick, ignored", [_summary("medseg", 0.1, 1.0)])
    block = ur.render_block(tmp_path)
    assert block.startswith(ur.START) and block.endswith(ur.END)
    rows = [line for line in block.splitlines() if line.startswith("| ") and "data set" not in line]
    # budget_lgg first (ORDER), then the others by name; ties are both bold; '–' for an arm that did not run
    assert rows[0] == "| LGG | protocol a | **0.8000** | – | **0.8000** | **1.00** | – | 9.00 |"
    assert rows[1] == "| B set | protocol b | 0.7000 | **0.9000** | – | 2.00 | **1.00** | – |"
    assert len(rows) == 2
    assert "`python benchmarks/budget_b.py` (2 cores, 2026-01-02" in block


def test_a_per_class_table_with_mean_median_cells_is_read(tmp_path: Path) -> None:
    """budget_hippocampus.py's layout: per-class 'mean / median' cells and the command in the heading."""
    path = tmp_path / "budget_hippocampus.md"
    path.write_text(
        "MSD Hippocampus (Task04), 40 validation volumes, 15 min per arm on cpu; "
        "command: `python benchmarks/budget_hippocampus.py`\n\n"
        "| arm | train (min) | Dice anterior (mean / median) | Dice mean (mean / median) "
        "| HD95 mean mm (mean / median) |\n"
        "|---|---|---|---|---|\n"
        "| medseg | 15.0 | 0.801 / 0.810 | 0.845 / 0.850 | 1.732 / 1.414 |\n"
        "| monai | 15.0 | 0.790 / 0.800 | 0.830 / 0.840 | — |\n"
    )
    result = ur.read_budget(path)
    assert (result.dataset, result.protocol) == (
        "MSD Hippocampus (Task04)",
        "40 validation volumes, 15 min per arm on cpu",
    )
    assert result.command == "python benchmarks/budget_hippocampus.py" and result.machine == ""
    assert result.arms["medseg"] == {"DSC": "0.845", "HD95": "1.732"}
    assert result.arms["monai"] == {"DSC": "0.830", "HD95": "–"}
    row = ur.results_table([result]).splitlines()[2]
    assert row == (
        "| MSD Hippocampus (Task04) | 40 validation volumes, 15 min per arm on cpu "
        "| **0.845** | 0.830 | – | **1.732** | – | – |"
    )
    assert "[budget_hippocampus.md](benchmarks/results/budget_hippocampus.md)" in ur.render_block(tmp_path)


def test_replace_block_needs_the_markers() -> None:
    text = f"intro\n{ur.START}\nold\n{ur.END}\noutro\n"
    assert (
        ur.replace_block(text, f"{ur.START}\nnew\n{ur.END}") == f"intro\n{ur.START}\nnew\n{ur.END}\noutro\n"
    )
    with pytest.raises(ValueError, match="no results block"):
        ur.replace_block("no markers here", "x")


def test_a_heading_is_required(tmp_path: Path) -> None:
    path = tmp_path / "budget_x.md"
    path.write_text("<!-- c -->\n\n| arm |\n|---|\n| medseg |\n")
    with pytest.raises(ValueError, match="no heading"):
        ur.read_budget(path)


def test_every_results_file_says_what_wrote_it() -> None:
    """A results file starts with the script that writes it and ends with command, machine and date."""
    files = sorted((BENCHMARKS / "results").glob("*.md"))
    assert files, "benchmarks/results holds the published tables"
    for path in files:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("<!-- written by "), path.name
        assert ur.PROVENANCE.search(lines[-1]), f"{path.name}: no command/machine/date line at the end"
