"""Optimizer factories: SGD (momentum, Nesterov), Adam, AdamW."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from medseg.errors import ConfigError
from medseg.optim.registry import OPTIMIZERS


def _check(lr: float, weight_decay: float) -> None:
    if lr <= 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be ≥ 0, got {weight_decay}")


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable[Any],
    lr: float = 0.01,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> torch.optim.SGD:
    """SGD with momentum 0.9 (MicroSegNet/TransUNet; nnU-Net uses 0.99 with nesterov=True)."""
    _check(lr, weight_decay)
    if nesterov and momentum <= 0:
        raise ConfigError("nesterov=True needs momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def adam(
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Adam:
    """Adam (Kingma & Ba 2015); weight_decay is L2 added to the gradient."""
    _check(lr, weight_decay)
    return torch.optim.Adam(
        params, lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=weight_decay
    )


@OPTIMIZERS.register("adamw")
def adamw(
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    weight_decay: float = 1e-2,
) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019): decoupled weight decay."""
    _check(lr, weight_decay)
    return torch.optim.AdamW(
        params, lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=weight_decay
    )
