"""medseg: medical image segmentation, from published data layouts to metrics in millimetres.

The Python API mirrors the CLI::

    import medseg
    cfg = medseg.load_config("configs/demo.yaml", ["train.epochs=5"])
    result = medseg.train(cfg)
    evaluation = medseg.evaluate_checkpoint(result.best_checkpoint, "runs/eval")
    medseg.predict_files(result.best_checkpoint, ["scan.nii.gz"], "runs/pred")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from medseg.errors import ConfigError, DataError, MedsegError

__version__ = "0.1.0"

_LAZY = {
    "load_config": "medseg.config",
    "Config": "medseg.config",
    "train": "medseg.engine.train",
    "evaluate_checkpoint": "medseg.engine.evaluate",
    "evaluate_files": "medseg.engine.evaluate",
    "evaluate_model": "medseg.engine.evaluate",
    "predict_files": "medseg.engine.predict",
    "load_model": "medseg.engine.predict",
    "run_demo": "medseg.engine.demo",
}


def __getattr__(name: str) -> Any:
    # Lazy so that ``import medseg`` stays light (no torch import until needed).
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medseg' has no attribute '{name}'")


__all__ = ["ConfigError", "DataError", "MedsegError", "__version__", *_LAZY]
