"""Every script in benchmarks/ still runs: each with ``--quick``, in a subprocess.

A fresh install once broke ``agbce_speed.py`` (OpenCV 5) and nothing noticed. These runs check
that each script starts, measures, prints its table and writes its results file; they assert no
timing. A script that needs a real data set it cannot find exits with
:data:`medseg.testing.SKIP_EXIT_CODE` and says what is missing, and its test skips with that line
(a fresh clone, or ``MEDSEG_SHARED_DATA`` pointing at an empty folder: ``.ci/run`` runs both).
Deselected by default (marker ``benchmarks``): ``pytest -m benchmarks tests/test_benchmarks_quick.py``
(``make bench-quick``, and CI).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.testing import SKIP_EXIT_CODE

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
# modules the scripts import, and the README updater: not benchmarks themselves
HELPER_MODULES = {
    "bench_results.py",
    "budget_common.py",
    "budget_nnunet.py",
    "nnunet_wallclock_trainer.py",
    "update_readme.py",
}
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in HELPER_MODULES)


def test_every_script_has_a_quick_mode() -> None:
    assert len(SCRIPTS) >= 17
    shared_quick = '"--quick"' in (BENCHMARKS / "budget_common.py").read_text()
    for name in SCRIPTS:
        text = (BENCHMARKS / name).read_text()
        # the budget scripts take their flags, --quick among them, from budget_common.add_arguments
        has_quick = '"--quick"' in text or (shared_quick and "add_arguments(parser" in text)
        assert has_quick, f"{name} has no --quick mode"


def test_every_script_publishes_its_table() -> None:
    """Each script writes ``benchmarks/results/<name>.md`` (the budget scripts through budget_common)."""
    for name in SCRIPTS:
        text = (BENCHMARKS / name).read_text()
        assert "publish(" in text or "run_benchmark(" in text, f"{name} writes no results file"


@pytest.mark.benchmarks
@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run(script: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "MEDSEG_BENCH_RESULTS": str(results),  # never the checkout's benchmarks/results
    }
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        cwd=tmp_path,  # the scripts write runs/… relative to the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode == SKIP_EXIT_CODE:
        pytest.skip(f"{script}: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"{script} --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "|" in done.stdout, f"{script} --quick printed no table:\n{done.stdout[-2000:]}"
    written = sorted(p.name for p in results.glob("*_quick.md"))
    assert written == [f"{Path(script).stem}_quick.md"], f"{script} wrote {written}"
    assert "|---" in (results / written[0]).read_text()


# the ways a script could build the data path itself instead of asking medseg.testing
HARD_CODED_DATA = re.compile(r"""["']shared["']\s*/\s*["']data["']|\.\./shared/data|["']shared/data""")


def test_no_script_or_test_builds_the_data_path_itself() -> None:
    """The real-data folder comes from one place (:mod:`medseg.testing`, ``$MEDSEG_SHARED_DATA``)."""
    allowed = {Path(__file__).name, "test_testing.py"}  # this check, and the test of the default
    offenders = []
    for path in [*BENCHMARKS.glob("*.py"), *(REPO_ROOT / "tests").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if HARD_CODED_DATA.search(line) and path.name not in allowed:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "build the path with medseg.testing.shared_data_path:\n" + "\n".join(offenders)
