"""How the command line reports errors: one line and exit code 2, never a raw traceback.

A user's mistake (a bad file, a bad config value, an unknown name) is a
:class:`~medseg.errors.MedsegError` with a message naming the file or key; the CLI prints that
message and exits with code 2. So is an ``OSError`` that the machine or the user's paths cause
(permission denied, read-only file system, no space left, a file where a folder must be): the
message names the path. Anything else that escapes a command is printed as one line too (exit 1,
an internal error: a bug), with the hint that ``medseg --debug …`` shows the traceback.

A :class:`~medseg.errors.DataWarning` raised while a command runs (valid input that is probably
not what was meant) is printed as a ``warning:`` line; the command goes on.

Also the parsers of CLI option values (``--spacing``, ``--minutes``, ``--memory-gb``,
``--device``), whose errors name the option, the value and what was expected.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from medseg.errors import ConfigError, DataWarning, MedsegError

#: exit code of a user error (bad input, bad option); 1 is an internal error
USER_ERROR_EXIT = 2
# errors of the standard library that the CLI's own parsing raises on a user's value
_USER_ERRORS = (MedsegError, ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError)
#: at most this many warnings are printed per command (then a count of the rest)
MAX_WARNINGS = 10

_console = Console(soft_wrap=True)  # one line, however long


def is_cli_control(exc: BaseException) -> bool:
    """Typer's and click's own exits, aborts and usage errors (typer ≥ 0.2x vendors click)."""
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def is_user_os_error(exc: BaseException) -> bool:
    """An ``OSError`` from the machine or the user's paths (no permission, no space, read-only,
    a file in the way), not from a bug."""
    from medseg.io_utils import USER_OS_ERRNOS  # here: `medseg --help` needs no YAML parser

    return isinstance(exc, OSError) and exc.errno in USER_OS_ERRNOS


def error_message(exc: BaseException) -> str:
    """The one line printed for ``exc`` (a ``KeyError``'s message without its quotes; an
    ``OSError``'s path, then its reason)."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else "(no path given)"
        other = f" → {exc.filename2}" if exc.filename2 is not None else ""
        return f"{where}{other}: {exc.strerror.lower()}"
    return str(exc) or type(exc).__name__


def report_error(exc: BaseException, console: Console | None = None) -> int:
    """Print ``exc`` as one line; the exit code: 2 for a user error, 1 for an internal error."""
    out = console or _console
    if isinstance(exc, _USER_ERRORS) or is_user_os_error(exc):
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
        with warnings.catch_warnings():
            shown = WarningPrinter(warnings.showwarning)
            warnings.simplefilter("always", DataWarning)  # each file's warning, deduplicated below
            warnings.showwarning = shown
            try:
                return super().invoke(ctx)
            except Exception as exc:
                if is_cli_control(exc) or ctx.params.get("debug"):
                    raise
                raise typer.Exit(report_error(exc)) from exc
            finally:
                shown.close()


class WarningPrinter:
    """``warnings.showwarning`` for a command: a :class:`DataWarning` becomes one ``warning:``
    line (each message once, at most :data:`MAX_WARNINGS`); other warnings go to ``fallback``."""

    def __init__(self, fallback: Callable[..., Any], console: Console | None = None) -> None:
        self.fallback = fallback
        self.console = console
        self.seen: set[str] = set()
        self.hidden = 0

    def __call__(self, message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, DataWarning):
            self.fallback(message, category, *args, **kwargs)
            return
        text = str(message)
        if text in self.seen:
            return
        self.seen.add(text)
        if len(self.seen) > MAX_WARNINGS:
            self.hidden += 1
            return
        (self.console or _console).print(f"[yellow]warning:[/] {text}", highlight=False)

    def close(self) -> None:
        """Print how many warnings were not shown."""
        if self.hidden:
            (self.console or _console).print(
                f"[yellow]warning:[/] … and {self.hidden} more warnings not shown", highlight=False
            )


def parse_spacing_option(text: str, option: str = "--spacing") -> tuple[float, ...]:
    """``"0.5,0.5"`` → ``(0.5, 0.5)``: positive finite mm per axis, else a :class:`ConfigError`."""
    expected = "positive numbers in mm, one per axis, separated by commas (e.g. 0.5,0.5)"
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected {expected}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"{option} {text!r}: expected {expected}")
    # here, not at the top: `medseg --help` answers without importing the data package
    from medseg.data.plausibility import check_spacing_plausible

    check_spacing_plausible(values, option, what="spacing")  # 500 or 0.0001: a warning
    return values


def positive_number(option: str, unit: str, hint: str = "") -> Callable[[float | None], float | None]:
    """A typer ``callback`` that accepts a finite positive number for ``option`` (or no value) and
    names the option and the typed value otherwise (``--minutes inf``, ``--memory-gb 0``)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{option} {value:g}: expected a positive, finite number of {unit}{hint}")
        return value

    return check


def device_option(value: str) -> str:
    """A typer ``callback`` for ``--device``: a device that exists on this machine (auto, cpu,
    cuda, cuda:N), else an error naming the value."""
    from medseg.engine.distributed import check_device

    check_device(value, "--device")
    return value
