"""Data sources, one module per published layout, all registered in :data:`SOURCES`."""

from __future__ import annotations

from typing import Any

# importing the modules registers the sources
from medseg.data.sources import busi, drive, em_stack, folder, hc18, lgg, microus, msd, nnunet, phantom  # noqa: F401
from medseg.data.sources.base import SOURCES, Source


def build(name: str, **options: Any) -> Source:
    """Build a registered data source, e.g. ``build("lgg", root="…/kaggle_3m")``."""
    return SOURCES.build(name, **options)


def available() -> list[str]:
    """Names of the registered data sources."""
    return SOURCES.available()


__all__ = ["SOURCES", "Source", "available", "build"]
