"""Where the real data sets of the tests and benchmarks live: one place, one variable.

The tests and ``benchmarks/`` read public data sets (LGG, HC18, BUSI, DRIVE, …) from one folder
that is never part of the repository. ``MEDSEG_SHARED_DATA`` names it; without the variable it is
``../shared/data`` beside the checkout. A fresh clone has neither, and then every test that needs
the data skips (the ``shared_dataset`` fixture in ``tests/conftest.py``) and every benchmark that
needs it exits with :data:`SKIP_EXIT_CODE` and one line saying what is missing
(:func:`require_data`), which ``tests/test_benchmarks_quick.py`` reports as a skip.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHARED_DATA_ENV = "MEDSEG_SHARED_DATA"
# the exit code of a benchmark that cannot run here (automake's and meson's "skipped")
SKIP_EXIT_CODE = 77
# src/medseg/testing.py → the checkout's root
_CHECKOUT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """The real-data folder: ``$MEDSEG_SHARED_DATA`` when set, else ``../shared/data`` beside the checkout.

    The folder may not exist (a fresh clone); :func:`missing_data` says whether a data set is there.
    """
    configured = os.environ.get(SHARED_DATA_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return _CHECKOUT.parent / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """``shared_data_root() / parts`` (``shared_data_path("hc18_us")``), whether it exists or not."""
    return shared_data_root().joinpath(*parts)


def missing_data(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a data set (one line naming the variable), or None when it is there."""
    path = Path(path)
    if path.exists():
        return None
    return f"{path} does not exist (real data; set {SHARED_DATA_ENV} to the folder that holds the data sets)"


def require_data(path: str | Path, what: str) -> Path:
    """``path`` when it exists; otherwise print what is missing and exit with :data:`SKIP_EXIT_CODE`.

    For benchmark scripts: ``root = require_data(args.root, "the HC18 training set")``.
    """
    reason = missing_data(path)
    if reason is not None:
        print(f"skipped: needs {what}: {reason}", file=sys.stderr)
        raise SystemExit(SKIP_EXIT_CODE)
    return Path(path)
