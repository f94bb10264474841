"""Weighted sums of losses, e.g. Dice + BCE (the nnU-Net default pairing of a region and a pixel loss)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from medseg.errors import ConfigError

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
