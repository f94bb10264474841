"""Exceptions with messages that name the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class MedsegError(Exception):
    """Base class for every error medseg raises on purpose."""


class DataError(MedsegError, ValueError):
    """Bad input data: unreadable file, shape mismatch, NaN, missing spacing, empty data set."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(MedsegError, ValueError):
    """An invalid configuration value or override."""
