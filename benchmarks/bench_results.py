"""Where a benchmark's table goes: ``benchmarks/results/<name>.md``, the one copy of its numbers.

The documentation includes these files (``--8<--`` snippets) and ``benchmarks/update_readme.py``
builds the README's results table from them, so no number is copied by hand. Each file holds the
table as the script printed it, then the command, the machine and the date that produced it.

``--quick`` runs write ``<name>_quick.md`` instead; ``$MEDSEG_BENCH_RESULTS`` moves the folder
(the quick tests write into a temporary one, never into the checkout).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from medseg.io_utils import write_text_atomic

RESULTS_ENV = "MEDSEG_BENCH_RESULTS"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# the first line of every results file: what wrote it (checked by tests/test_readme_tables.py)
HEADER = "<!-- written by {script}: re-run it to update this file; do not edit by hand -->"


def results_dir() -> Path:
    """``$MEDSEG_BENCH_RESULTS`` when set, else ``benchmarks/results`` of this checkout."""
    configured = os.environ.get(RESULTS_ENV, "").strip()
    return Path(configured) if configured else RESULTS_DIR


def results_path(name: str, quick: bool = False) -> Path:
    """The file a benchmark called ``name`` writes (``<name>_quick.md`` for a ``--quick`` run)."""
    return results_dir() / f"{name}{'_quick' if quick else ''}.md"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The running benchmark as a shell line from the checkout's root: ``python benchmarks/x.py --quick``."""
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else Path(script.name)
    return shlex.join(["python", shown.as_posix(), *args[1:]])


def machine_description() -> str:
    """CPU (or GPU), core count, load and the versions that move timings (``x86_64, 2 cores (load
    average 0.3); Python 3.11.7, torch 2.14.1``)."""
    import torch

    cpu = _cpu_model() or platform.machine()
    parts = [f"{cpu}, {os.cpu_count()} cores"]
    if hasattr(os, "getloadavg"):  # other jobs inflate wall-clock timings: say how busy it was
        parts[0] += f" (load average {os.getloadavg()[0]:.1f})"
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    monai_version = _version_of("monai")
    if monai_version:
        versions += f", MONAI {monai_version}"
    return "; ".join([*parts, versions])


def _version_of(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # MONAI is a dependency; a broken install still gets its table
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        return None
    return None


def render(body: str, script: str, command: str, machine: str, date: str) -> str:
    """A results file: the header, ``body`` (markdown tables and notes), then the provenance line."""
    return (
        HEADER.format(script=script)
        + "\n\n"
        + body.strip()
        + f"\n\n<small>Command: `{command}` · machine: {machine} · date: {date}</small>\n"
    )


def publish(name: str, body: str, quick: bool, argv: Sequence[str] | None = None) -> Path:
    """Write ``body`` with its command, machine and today's date to :func:`results_path`; the path."""
    command = command_line(argv)
    script = shlex.split(command)[1]
    text = render(body, script, command, machine_description(), dt.date.today().isoformat())
    path = write_text_atomic(results_path(name, quick), text)
    print(f"\nresults: {path}")
    return path
