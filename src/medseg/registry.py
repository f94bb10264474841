"""Name → factory registries (after timm's ``register_model`` / ``create_model``).

Every component family (models, losses, optimizers, schedulers, data sources) owns one
:class:`Registry`, so a YAML config or a CLI flag can pick any of them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A mapping from snake_case names to factories, with a uniform ``build``/``available`` API."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}
        self._docs: dict[str, str] = {}
        self._traits: dict[str, dict[str, Any]] = {}

    def register(self, name: str, doc: str | None = None, **traits: Any) -> Callable[[F], F]:
        """Decorator that registers ``factory`` (a function or a class) under ``name``.

        ``doc`` replaces the factory's docstring as the one-line description; ``traits`` are
        declared facts about the entry that its users read with :meth:`traits`. A duplicate name
        is an error.
        """

        def decorator(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = factory
            self._traits[name] = dict(traits)
            summary = doc or (factory.__doc__ or "").strip().splitlines()
            self._docs[name] = summary if isinstance(summary, str) else (summary[0] if summary else "")
            return factory

        return decorator

    def build(self, name: str, **options: Any) -> Any:
        """Call the factory registered as ``name`` with ``options``."""
        if name not in self._factories:
            raise KeyError(
                f"unknown {self.kind} '{name}'. Available: {', '.join(self.available()) or '(none)'}"
            )
        return self._factories[name](**options)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory itself (for introspection)."""
        if name not in self._factories:
            raise KeyError(
                f"unknown {self.kind} '{name}'. Available: {', '.join(self.available()) or '(none)'}"
            )
        return self._factories[name]

    def traits(self, name: str) -> dict[str, Any]:
        """The traits ``name`` was registered with (``{}`` when none)."""
        self.get(name)
        return dict(self._traits[name])

    def available(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._factories)

    def describe(self) -> dict[str, str]:
        """Name → one-line description, for ``medseg models`` / ``medseg losses``."""
        return {name: self._docs[name] for name in self.available()}

    def __contains__(self, name: object) -> bool:
        return name in self._factories
