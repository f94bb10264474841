"""The model registry (timm's ``register_model`` / ``create_model`` pattern).

Every architecture registers a factory with ``@MODELS.register("name")``; configs and the CLI
then call :func:`build` by name. All models return logits (no final activation).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medseg.registry import Registry

MODELS = Registry("model")


def build(name: str, **options: Any) -> nn.Module:
    """Build the model registered as ``name``, e.g. ``build("unet", in_channels=1, out_channels=1)``."""
    return MODELS.build(name, **options)


def available() -> list[str]:
    """Sorted names of the registered models."""
    return MODELS.available()


def describe() -> dict[str, str]:
    """Name → one-line description of every registered model (for ``medseg models``)."""
    return MODELS.describe()
