"""Shared fixtures. Real data lives outside the repository (never committed): ``$MEDSEG_SHARED_DATA``,
else ``shared/data`` in the checkout's parent folder (:mod:`medseg.testing`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.testing import missing_data, shared_data_path, shared_data_root


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (make test: -n 2) each worker gets its share of the cores, so that two
    # workers with torch's default of one thread per core do not fight over them.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture()
def shared_data() -> Path:
    """The real-data folder itself (:func:`medseg.testing.shared_data_root`), or a skip when it is
    absent. Prefer ``shared_dataset(...)``, which also skips when one data set is missing."""
    root = shared_data_root()
    reason = missing_data(root)
    if reason is not None:
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[..., Path]:
    """``shared_dataset("hc18_us")``: that real data set's folder, or a skip naming what is missing (a
    fresh clone has none). Mark the test ``realdata``."""

    def find(*parts: str) -> Path:
        path = shared_data_path(*parts)
        reason = missing_data(path)
        if reason is not None:
            pytest.skip(reason)
        return path

    return find


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture()
def dropout_unet_checkpoint(tmp_path: Path) -> Path:
    """A random tiny 2D U-Net with dropout 0.2 on the phantom, saved as a medseg checkpoint."""
    from medseg.config import load_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.models import build_from_config

    cfg = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}",
            "data.image_size=[32, 32]",
            "model.options={features: [4, 8], dropout: 0.2}",
        ],
    )
    model = build_from_config(cfg)
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "model.pt")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two contended ones (small CI machines); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``. The thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
