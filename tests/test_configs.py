"""Every recipe in configs/ loads, and its model and loss build from the registries."""

from pathlib import Path

import pytest

from medseg import losses
from medseg.config import load_config
from medseg.models import build_from_config

# compare_*.yaml are grids for `medseg compare`, tested in test_engine_compare.py
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("compare_"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_builds(path: Path) -> None:
    cfg = load_config(path)
    losses.build(cfg.loss.name, **cfg.loss.options)
    if cfg.model.options.get("variant") == "base":
        pytest.skip("full-size model: built once in tests/test_models_transunet.py")
    model = build_from_config(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_paper_recipes_match_paper_000() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "microsegnet_microus.yaml")
    assert cfg.data.image_size == [224, 224] and cfg.train.batch_size == 8 and cfg.train.epochs == 10
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("sgd", 0.01, 0.0001)
    assert cfg.optim.options["momentum"] == 0.9 and cfg.optim.scheduler == "poly"
    assert cfg.train.seed == 1234 and cfg.loss.name == "ag_bce_ds"
