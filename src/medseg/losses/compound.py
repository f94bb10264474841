"""Weighted sums of losses, e.g. Dice + BCE (the nnU-Net default pairing of a region and a pixel loss)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.errors import ConfigError
from medseg.losses.registry import LOSSES

_TERM = re.compile(r"^\s*(?:(?P<weight>[0-9.eE+-]+)\s*\*\s*)?(?P<name>[a-z_][a-z0-9_]*)\s*$")


class CompoundLoss(nn.Module):
    """Σ wᵢ · lossᵢ(logits, target, batch). ``components`` gives each unweighted term for logging."""

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("CompoundLoss needs at least one loss")
        if set(losses) != set(weights):
            raise ConfigError(f"loss names {sorted(losses)} and weight names {sorted(weights)} differ")
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {name: float(w) for name, w in weights.items()}

    def components(
        self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None
    ) -> dict[str, Tensor]:
        """Each term's unweighted value, by name."""
        return {name: loss(logits, target, batch) for name, loss in self.losses.items()}

    def forward(self, logits: Tensor, target: Tensor, batch: Mapping[str, Any] | None = None) -> Tensor:
        """The weighted sum of the terms (a scalar)."""
        terms = self.components(logits, target, batch)
        return sum(self.weights[name] * value for name, value in terms.items())  # type: ignore[return-value]


def parse_spec(spec: str | Mapping[str, float]) -> dict[str, float]:
    """``"dice+bce"`` / ``"0.5*dice+bce"`` / ``{"dice": 1.0, "bce": 0.5}`` → ``{name: weight}``."""
    if isinstance(spec, Mapping):
        weights = {str(k): float(v) for k, v in spec.items()}
    else:
        weights = {}
        for part in spec.split("+"):
            match = _TERM.match(part)
            if match is None:
                raise ConfigError(
                    f"cannot parse loss term '{part}' in '{spec}' (expected 'name' or 'w*name')"
                )
            name = match["name"]
            if name in weights:
                raise ConfigError(f"loss '{name}' appears twice in '{spec}'")
            weights[name] = float(match["weight"]) if match["weight"] else 1.0
    if not weights:
        raise ConfigError(f"empty loss spec {spec!r}")
    return weights


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


@LOSSES.register("dice_bce")
def dice_bce(
    dice_weight: float = 1.0,
    bce_weight: float = 1.0,
    squared: bool = False,
    smooth: float = 1e-5,
    batch_dice: bool = False,
    pos_weight: float | None = None,
) -> CompoundLoss:
    """dice_weight · Dice + bce_weight · BCE (binary, sigmoid)."""
    return combine(
        {"dice": dice_weight, "bce": bce_weight},
        dice={"squared": squared, "smooth": smooth, "batch_dice": batch_dice},
        bce={"pos_weight": pos_weight},
    )
