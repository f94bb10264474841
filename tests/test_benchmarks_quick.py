"""Every script in benchmarks/ still runs: each with ``--quick``, in a subprocess (issue 17).

A fresh install once broke ``agbce_speed.py`` (OpenCV 5) and nothing noticed. These runs check
that each script starts, measures and prints its table; they assert no timing. Scripts that read
``../shared/data`` skip when it is absent. Deselected by default (marker ``benchmarks``): run them
with ``pytest -m benchmarks tests/test_benchmarks_quick.py`` (``make bench-quick``, and CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BENCHMARKS = REPO_ROOT / "benchmarks"
# modules the budget scripts import (not scripts themselves)
HELPER_MODULES = {"budget_common.py", "budget_nnunet.py", "nnunet_wallclock_trainer.py"}
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in HELPER_MODULES)
# scripts whose --quick run reads the real data sets (skipped in a clone without them)
NEEDS_SHARED_DATA = {
    "drive_annotation_guided.py",
    "instance_ap.py",
    "budget_hc18.py",
    "budget_lgg.py",
    "lgg_unet.py",
    "umedsam_ablation.py",
    "uncertainty_calibration.py",
    "volumetric_train.py",
}
pytestmark = pytest.mark.benchmarks


def test_every_script_has_a_quick_mode() -> None:
    assert len(SCRIPTS) >= 17
    shared_quick = '"--quick"' in (BENCHMARKS / "budget_common.py").read_text()
    for name in SCRIPTS:
        text = (BENCHMARKS / name).read_text()
        # the budget scripts take their flags, --quick among them, from budget_common.add_arguments
        has_quick = '"--quick"' in text or (shared_quick and "add_arguments(parser" in text)
        assert has_quick, f"{name} has no --quick mode"


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run(script: str, tmp_path: Path) -> None:
    if script in NEEDS_SHARED_DATA and not SHARED_DATA.is_dir():
        pytest.skip("needs ../shared/data beside the checkout")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        cwd=tmp_path,  # the scripts write runs/… relative to the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script} --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "|" in done.stdout, f"{script} --quick printed no table:\n{done.stdout[-2000:]}"
