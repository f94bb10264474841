"""Rebuild the README's results table from the budget benchmarks' results files.

The README shows one table across the data sets: medseg's planned default against MONAI's UNet and
nnU-Net v2, each trained for the same minutes and scored on the same held-out split. Its numbers
live in ``benchmarks/results/budget_*.md`` (written by ``budget_lgg.py``, ``budget_hc18.py``,
``budget_hippocampus.py``, …); this script copies them into the block between the README's
markers, so no number is typed by hand. ``tests/test_readme_tables.py`` fails when they differ.

    python benchmarks/update_readme.py           # rewrite the README's block
    python benchmarks/update_readme.py --check   # exit 1 (and say so) when the README is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "results"
START = "<!-- results:budget:start (written by benchmarks/update_readme.py from benchmarks/results) -->"
END = "<!-- results:budget:end -->"
# the data sets in this order first, then any other budget_*.md by name
ORDER = ("budget_lgg", "budget_hc18", "budget_hippocampus")
ARMS = {"medseg": "medseg", "monai": "MONAI UNet", "nnunet": "nnU-Net v2"}
PROVENANCE = re.compile(
    r"<small>Command: `(?P<command>[^`]*)` · machine: (?P<machine>.*?) · date: (?P<date>[0-9-]+)"
)
# the arms' mean Dice and HD95: budget_common's columns, or the per-class tables' "mean" columns
# (budget_hippocampus.py: "Dice mean (mean / median)", a cell "0.881 / 0.890")
DSC_COLUMNS = ("DSC mean", "Dice mean (mean / median)", "Dice mean")
HD95_COLUMNS = ("HD95 mean (mm)", "HD95 mean mm (mean / median)", "HD95 mean")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
HEADING_COMMAND = re.compile(r";\s*command:\s*`(?P<command>[^`]*)`\s*$")


@dataclass
class BudgetResult:
    """One budget benchmark's results file: what it measured, per arm, and where it ran."""

    name: str
    dataset: str
    protocol: str
    arms: dict[str, dict[str, str]] = field(default_factory=dict)  # arm → {"DSC", "HD95"} → cell
    command: str = ""
    machine: str = ""
    date: str = ""


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def read_budget(path: Path) -> BudgetResult:
    """Parse ``budget_<x>.md``: the heading (data set, then the protocol), the arms' table, provenance."""
    lines = path.read_text().splitlines()
    body = [line for line in lines if line.strip() and not line.startswith("<!--")]
    if not body or body[0].startswith("|"):
        raise ValueError(f"{path}: no heading line before the arms' table")
    heading = body[0]
    command = HEADING_COMMAND.search(heading)
    if command:  # "…; command: `python benchmarks/x.py`" at the end of the heading
        heading = heading[: command.start()]
    dataset, _, protocol = heading.partition(", ")
    table = []
    for line in lines[lines.index(body[0]) + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if len(table) < 3 or _cells(table[0])[0] != "arm":
        raise ValueError(f"{path}: the first table is not the arms' table (| arm | … |)")
    header = _cells(table[0])
    arms = {}
    for line in table[2:]:
        row = dict(zip(header, _cells(line), strict=False))
        arms[row["arm"]] = {"DSC": _mean_cell(row, DSC_COLUMNS), "HD95": _mean_cell(row, HD95_COLUMNS)}
    result = BudgetResult(path.stem, dataset.strip(), protocol.strip(), arms)
    match = PROVENANCE.search(path.read_text())
    if match:
        result.command, result.machine, result.date = match["command"], match["machine"], match["date"]
    elif command:
        result.command = command["command"]
    return result


def _mean_cell(row: dict[str, str], columns: tuple[str, ...]) -> str:
    """The first number of the first of ``columns`` the row has (``0.881 / 0.890`` → ``0.881``), or '–'."""
    for column in columns:
        if column in row:
            number = NUMBER.search(row[column])
            return number.group(0) if number else "–"
    return "–"


def budget_files(results: Path = RESULTS) -> list[Path]:
    """``budget_*.md`` in :data:`ORDER`, then the rest by name (``--quick`` files excluded)."""
    found = {p.stem: p for p in results.glob("budget_*.md") if not p.stem.endswith("_quick")}
    return [found[n] for n in ORDER if n in found] + [found[n] for n in sorted(found) if n not in ORDER]


def _best(values: dict[str, str], lower: bool) -> set[str]:
    numbers = {}
    for arm, text in values.items():
        try:
            numbers[arm] = float(text)
        except ValueError:  # '–' where an arm did not run
            continue
    if not numbers:
        return set()
    best = min(numbers.values()) if lower else max(numbers.values())
    return {arm for arm, value in numbers.items() if value == best}


def results_table(results: list[BudgetResult]) -> str:
    """One row per data set: DSC and HD95 of each arm, the best of each in bold."""
    header = (
        ["data set", "held-out split and budget"]
        + [f"{label} DSC" for label in ARMS.values()]
        + [f"{label} HD95 (mm)" for label in ARMS.values()]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.dataset, result.protocol]
        for column, lower in (("DSC", False), ("HD95", True)):
            values = {arm: result.arms.get(arm, {}).get(column, "–") for arm in ARMS}
            best = _best(values, lower)
            cells += [f"**{values[arm]}**" if arm in best else values[arm] for arm in ARMS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_block(results_dir: Path = RESULTS) -> str:
    """The README block: the table, then each data set's command, machine and date."""
    results = [read_budget(path) for path in budget_files(results_dir)]
    if not results:
        raise FileNotFoundError(f"{results_dir}: no budget_*.md results file")
    sources = "\n".join(
        f"- {r.dataset}: `{r.command}` ({', '.join(filter(None, [r.machine, r.date]))}"
        f"{'; ' if r.machine or r.date else ''}[{r.name}.md](benchmarks/results/{r.name}.md))"
        for r in results
    )
    return f"{START}\n{results_table(results)}\n\n{sources}\n{END}"


def replace_block(readme: str, block: str) -> str:
    """``readme`` with the text between (and including) the markers replaced by ``block``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no results block: add the lines {START!r} and {END!r}")
    return readme[:start] + block + readme[end + len(END) :]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only say whether the README is up to date")
    args = parser.parse_args()
    current = README.read_text()
    updated = replace_block(current, render_block())
    if args.check:
        if updated != current:
            sys.exit(
                "README.md's results table differs from benchmarks/results: "
                "run python benchmarks/update_readme.py"
            )
        print("README.md's results table matches benchmarks/results")
        return
    if updated != current:
        from medseg.io_utils import write_text_atomic

        write_text_atomic(README, updated)
    print(f"{README}: results table {'updated' if updated != current else 'already up to date'}")


if __name__ == "__main__":
    main()
