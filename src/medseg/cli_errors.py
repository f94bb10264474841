"""How the command line reports errors: one line and exit code 2, never a raw traceback.

A user's mistake (a bad file, a bad config value, an unknown name) is a
:class:`~medseg.errors.MedsegError` with a message naming the file or key; the CLI prints that
message and exits with code 2. Anything else that escapes a command is printed as one line too
(exit 1, an internal error), with the hint that ``medseg --debug …`` shows the traceback.

Also the parsers of CLI option values (``--spacing``, ``-o key=value``), whose errors name the
option, the value and what was expected.
"""

from __future__ import annotations

import math
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from medseg.errors import ConfigError, MedsegError

#: exit code of a user error (bad input, bad option); 1 is an internal error
USER_ERROR_EXIT = 2
# errors of the standard library that the CLI's own parsing raises on a user's value
_USER_ERRORS = (MedsegError, ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError)

_console = Console(soft_wrap=True)  # one line, however long


def is_cli_control(exc: BaseException) -> bool:
    """Typer's and click's own exits, aborts and usage errors (typer ≥ 0.2x vendors click)."""
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def error_message(exc: BaseException) -> str:
    """The one line printed for ``exc`` (a ``KeyError``'s message without its quotes)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc) or type(exc).__name__


def report_error(exc: BaseException, console: Console | None = None) -> int:
    """Print ``exc`` as one line; the exit code: 2 for a user error, 1 for an internal error."""
    out = console or _console
    if isinstance(exc, _USER_ERRORS):
        out.print(f"[bold red]error:[/] {error_message(exc)}", highlight=False)
        return USER_ERROR_EXIT
    out.print(
        f"[bold red]internal error:[/] {type(exc).__name__}: {error_message(exc)} "
        "(run `medseg --debug ...` for the traceback, and please report it)",
        highlight=False,
    )
    return 1


class UserErrorGroup(TyperGroup):
    """The root command group: errors escaping a command become one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if is_cli_control(exc) or ctx.params.get("debug"):
                raise
            raise typer.Exit(report_error(exc)) from exc


def parse_spacing_option(text: str, option: str = "--spacing") -> tuple[float, ...]:
    """``"0.5,0.5"`` → ``(0.5, 0.5)``: positive finite mm per axis, else a :class:`ConfigError`."""
    expected = "positive numbers in mm, one per axis, separated by commas (e.g. 0.5,0.5)"
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected {expected}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"{option} {text!r}: expected {expected}")
    return values
