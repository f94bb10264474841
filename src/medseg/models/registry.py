"""The model registry (timm's ``register_model`` / ``create_model`` pattern).

Every architecture registers its class (or a factory) with ``@MODELS.register("name")``; configs
and the CLI then call :func:`build` by name, or :func:`build_from_config` for a whole config. All
models return logits (no final activation). A model that takes its input size (a ViT's position
embedding, a SAM prompt grid) registers with ``input_size=True``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medseg.config import Config, check_num_classes
from medseg.errors import ConfigError
from medseg.registry import Registry

MODELS = Registry("model")


def build(name: str, **options: Any) -> nn.Module:
    """Build the model registered as ``name``, e.g. ``build("unet", in_channels=1, out_channels=1)``."""
    return MODELS.build(name, **options)


def build_from_config(cfg: Config, spatial_dims: int | None = None) -> nn.Module:
    """Build ``cfg.model`` for ``cfg.data``; models registered with ``input_size`` get ``img_size``.

    ``spatial_dims`` defaults to ``cfg.data.spatial_dims`` and is passed to every model; a model
    whose ``spatial_dims`` differs (a 3D-only model asked for 2D) is an error.

    ``out_channels`` is ``data.num_classes`` when set (multi-class; the model then carries
    ``model.num_classes``), else 1; ``model.options.out_channels`` overrides it for a binary task
    whose model needs extra channels (a MONAI UNet trained with ``resunet_wbce``: mask and
    boundary). Res-UNet adds its boundary channel itself (``out_channels`` + 1 outputs).
    """
    spatial_dims = cfg.data.spatial_dims if spatial_dims is None else spatial_dims
    if spatial_dims not in (2, 3):
        raise ConfigError(f"data.spatial_dims must be 2 or 3, got {spatial_dims}")
    num_classes = check_num_classes(cfg.data.num_classes)
    options = dict(cfg.model.options)
    out_channels = options.pop("out_channels", num_classes or 1)
    if num_classes is not None and out_channels != num_classes:
        raise ConfigError(
            f"model.options.out_channels ({out_channels}) differs from data.num_classes ({num_classes})"
        )
    if MODELS.traits(cfg.model.name).get("input_size") and "img_size" not in options:
        size = [int(v) for v in cfg.data.image_size]
        options["img_size"] = size[0] if len(set(size)) == 1 else tuple(size)
    options["spatial_dims"] = spatial_dims
    model = build(cfg.model.name, in_channels=cfg.data.in_channels, out_channels=out_channels, **options)
    if model.spatial_dims != spatial_dims:
        raise ConfigError(
            f"model '{cfg.model.name}' is {model.spatial_dims}D but data.spatial_dims is {spatial_dims}; "
            f"set data.spatial_dims: {model.spatial_dims}"
        )
    if num_classes is not None:
        model.num_classes = num_classes
    return model


def available() -> list[str]:
    """Sorted names of the registered models."""
    return MODELS.available()


def describe() -> dict[str, str]:
    """Name → one-line description of every registered model (for ``medseg models``)."""
    return MODELS.describe()
