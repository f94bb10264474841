"""Data sources, one module per published layout, all registered in :data:`SOURCES`."""

from __future__ import annotations

import inspect
from typing import Any

# importing the modules registers the sources
from medseg.data.sources import busi, drive, em_stack, folder, hc18, lgg, microus, msd, nnunet, phantom  # noqa: F401
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import ConfigError


def source_options(name: str) -> dict[str, inspect.Parameter]:
    """The options a registered source takes (its constructor's parameters), by name."""
    factory = SOURCES.get(name)
    params = inspect.signature(factory).parameters
    return {
        key: p
        for key, p in params.items()
        if key != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def check_source_options(name: str, options: dict[str, Any]) -> None:
    """Unknown options (a typo in ``-o key=value`` or ``data.options``) and a missing ``root`` are
    a :class:`ConfigError` that lists the source's valid options."""
    valid = source_options(name)
    listed = ", ".join(valid)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for the "
            f"{name} source (-o key=value / data.options); its options are: {listed}"
        )
    missing = [k for k, p in valid.items() if p.default is inspect.Parameter.empty and k not in options]
    if "root" in missing:
        raise ConfigError(
            f"the {name} source needs its data folder: give --root PATH (data.options.root in a config)"
        )
    if missing:
        raise ConfigError(f"the {name} source needs the option(s) {missing}; its options are: {listed}")


def build(name: str, **options: Any) -> Source:
    """Build a registered data source, e.g. ``build("lgg", root="…/kaggle_3m")``; its options are
    checked first (:func:`check_source_options`)."""
    SOURCES.get(name)  # an unknown name: the registry's error, with the available names
    check_source_options(name, options)
    return SOURCES.build(name, **options)


def available() -> list[str]:
    """Names of the registered data sources."""
    return SOURCES.available()


__all__ = ["SOURCES", "Source", "available", "build", "check_source_options", "source_options"]
