"""The loss registry. Each loss is an ``nn.Module`` called as ``loss(logits, target, batch=None)``.

``batch`` is the whole batch dict (``"image"``, ``"target"``, ``"masks"``: {annotator: tensor},
...) so that annotation-guided losses can read every annotator's mask; most losses ignore it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medseg.registry import Registry

LOSSES = Registry("loss")


def build(name: str, **options: Any) -> nn.Module:
    """Build a loss by name; a name with ``+`` (``"dice+bce"``, ``"0.5*dice+bce"``) is a weighted sum.

    For a sum, ``options`` maps each term's name to that term's options, e.g.
    ``build("dice+bce", dice={"squared": True}, bce={"pos_weight": 2.0})``.
    """
    if "+" in name or "*" in name:
        from medseg.losses.compound import combine  # compound imports this module

        return combine(name, **options)
    return LOSSES.build(name, **options)


def available() -> list[str]:
    """Sorted names of the registered losses (sums like ``dice+bce`` are built on the fly)."""
    return LOSSES.available()


def describe() -> dict[str, str]:
    """Name → one-line description of every registered loss (for ``medseg losses``)."""
    return LOSSES.describe()
