"""Shared fixtures. Real data lives in ``../shared/data`` beside the checkout (never committed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; tests that use it skip when it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


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
