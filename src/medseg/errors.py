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


class DataWarning(UserWarning):
    """Input that is valid but probably not what was meant (a label in no file, a spacing of
    1000 mm, a dataset.json that counts other cases than the folder holds). The CLI prints each
    as a ``warning:`` line; the result is still computed."""
