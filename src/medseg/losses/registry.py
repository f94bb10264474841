"""The loss registry. Each loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)``.

``batch`` is the whole batch dict (``"image"``, ``"target"``, ``"masks"``: {annotator: tensor},
...) so that annotation-guided losses can read every annotator's mask; most losses ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from medseg.errors import ConfigError
from medseg.losses.compound import CompoundLoss, parse_spec
from medseg.registry import Registry

LOSSES = Registry("loss")


def build(name: str, **options: Any) -> nn.Module:
    """Build a loss by name; a name with ``+`` (``"dice+bce"``, ``"0.5*dice+bce"``) is a weighted sum.

    For a sum, ``options`` maps each term's name to that term's options, e.g.
    ``build("dice+bce", dice={"squared": True}, bce={"pos_weight": 2.0})``.
    """
    if "+" in name or "*" in name:
        return combine(name, **options)
    return LOSSES.build(name, **options)


def combine(spec: str | Mapping[str, float], **term_options: Mapping[str, Any]) -> CompoundLoss:
    """Build a :class:`CompoundLoss` from a spec; ``term_options[name]`` are that term's options.

    Example: ``combine("dice+bce", dice={"squared": True})`` or ``combine({"dice": 1, "bce": 0.5})``.
    """
    weights = parse_spec(spec)
    unknown = set(term_options) - set(weights)
    if unknown:
        raise ConfigError(f"options given for {sorted(unknown)}, which are not terms of {sorted(weights)}")
    losses = {name: LOSSES.build(name, **dict(term_options.get(name, {}))) for name in weights}
    return CompoundLoss(losses, weights)


def available() -> list[str]:
    """Sorted names of the registered losses (sums like ``dice+bce`` are built on the fly)."""
    return LOSSES.available()


def describe() -> dict[str, str]:
    """Name → one-line description of every registered loss (for ``medseg losses``)."""
    return LOSSES.describe()
