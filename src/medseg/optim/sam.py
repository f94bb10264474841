"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) and adaptive SAM, ASAM (Kwon et al., ICML 2021).

SAM minimises max_{‖ε‖ ≤ ρ} L(w + ε) with two forward/backward passes per step:

1. pass 1 at w gives g; ``first_step`` moves to w + e_w, e_w = ρ·g/‖g‖ (ASAM: e_w = ρ·w²⊙g/‖|w|⊙g‖,
   so that ‖e_w / |w|‖ = ρ), and remembers w;
2. pass 2 at w + e_w gives the sharpness-aware gradient; ``second_step`` restores w exactly (a
   copy, not w + e_w − e_w) and lets the base optimizer step with that gradient.

The interface follows the widely used reference implementation (davda54/sam): ``first_step``,
``second_step``, ``step(closure)``, ``base_optimizer``, with ``param_groups`` shared between the
wrapper and the base optimizer, so an LR scheduler built on either changes the lr the base uses.

Recommended use: :func:`sam_training_step`, which does the whole two-pass step. Its sequence with
a ``torch.amp.GradScaler`` (the scaler keeps its inf check and its scale update):

1. ``scaler.scale(loss).backward()``; ``scaler.unscale_(sam)``: the gradient is unscaled and the
   scaler records pass 1's infs;
2. ``sam.first_step()``: a non-finite gradient norm skips the whole step (no perturbation, no base
   step, ``sam.skipped = True``); then ``scaler.update()`` lowers the scale, and we are done;
3. pass 2 with BatchNorm running statistics frozen (:func:`disable_running_stats`):
   ``scaler.scale(loss).backward()``; ``scaler.unscale_(sam.base_optimizer)`` (a second
   ``unscale_`` on the same optimizer object is an error, so pass 2 is unscaled through the base
   optimizer's own scaler state); optional gradient clipping;
4. ``sam.second_step(base_step=lambda: scaler.step(sam.base_optimizer))``: weights restored, and
   the scaler steps the base optimizer only if pass 2's gradient is finite; ``scaler.update()``.

Under ``DistributedDataParallel`` pass 1 runs inside ``model.no_sync()``: each rank perturbs with
its own gradient (SAM's m-sharpness, and half the communication); pass 2 is all-reduced as usual.
The skip decision of pass 1 is then agreed across ranks, so that no rank runs a pass 2 backward
alone (which would hang the all-reduce).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from medseg.errors import ConfigError
from medseg.optim.registry import OPTIMIZERS

__all__ = ["SAM", "disable_running_stats", "param_groups_with_loss", "sam_training_step"]


class SAM(torch.optim.Optimizer):
    """Sharpness-Aware Minimization around a base optimizer (Foret et al. 2021; ASAM: Kwon et al. 2021).

    Args:
        params: parameters or param groups (dicts), given to the base optimizer.
        base_optimizer: a registered optimizer name (``"adamw"``, built through
            :mod:`medseg.optim`'s registry), or a class/callable ``f(params, **base_options)``
            such as ``torch.optim.SGD``.
        rho: ρ, the radius of the neighbourhood (0.05 by default, as Foret et al.). Per-group
            ``rho`` / ``adaptive`` entries override the defaults.
        adaptive: ASAM: scale the perturbation by |w| (element-wise), ρ ≈ 0.5–2 is typical there.
        eps: added to the gradient norm before dividing by it.
        **base_options: options of the base optimizer (lr, weight_decay, betas, ...).

    ``skipped`` tells whether the last step was skipped because a gradient was non-finite.
    ``state_dict()`` is the base optimizer's (its param groups carry ``rho`` and ``adaptive``);
    the saved weights between the two passes are transient and not saved.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: str | Callable[..., torch.optim.Optimizer] = "adamw",
        rho: float = 0.05,
        adaptive: bool = False,
        eps: float = 1e-12,
        **base_options: Any,
    ) -> None:
        if not rho >= 0:
            raise ConfigError(f"rho must be ≥ 0, got {rho}")
        if not eps > 0:
            raise ConfigError(f"eps must be positive, got {eps}")
        if isinstance(base_optimizer, str):
            if base_optimizer == "sam":
                raise ConfigError("the base optimizer of SAM cannot be SAM itself")
            base = OPTIMIZERS.build(base_optimizer, params=params, **base_options)
        else:
            base = base_optimizer(params, **base_options)
        if not isinstance(base, torch.optim.Optimizer):
            raise ConfigError(f"base_optimizer built a {type(base).__name__}, not a torch.optim.Optimizer")
        self.base_optimizer = base
        self.eps = float(eps)
        self.skipped = False
        self._perturbed: list[Tensor] = []
        # Registers the base's group dicts (adding rho/adaptive to them), then shares the very list.
        super().__init__(base.param_groups, {"rho": float(rho), "adaptive": bool(adaptive)})
        self.param_groups = self.base_optimizer.param_groups

    # ------------------------------------------------------------------ the two passes

    @torch.no_grad()
    def grad_norm(self) -> Tensor:
        """‖g‖₂ over every parameter with a gradient (ASAM: ‖|w|⊙g‖₂), a 0-dim float32 tensor.

        Non-finite when any gradient entry is inf or NaN; 0 when no parameter has a gradient.
        """
        norms = []
        device: torch.device | None = None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                device = device or p.device
                g = p.grad.float()
                if group["adaptive"]:
                    g = p.detach().abs().float() * g
                norms.append(torch.linalg.vector_norm(g).to(device))
        if not norms:
            return torch.zeros((), dtype=torch.float32)
        return torch.linalg.vector_norm(torch.stack(norms))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, *, grad_norm: Tensor | None = None) -> None:
        """Move to w + e_w, e_w = ρ·g/‖g‖ (ASAM: ρ·w²⊙g/‖|w|⊙g‖), and remember w.

        A non-finite gradient norm (an inf/NaN gradient, e.g. an AMP overflow) skips the whole
        step: nothing moves, ``skipped`` becomes True and :meth:`second_step` will not step the
        base optimizer. ``grad_norm`` may be given precomputed (:func:`sam_training_step` passes
        one agreed across DDP ranks).
        """
        norm = self.grad_norm() if grad_norm is None else grad_norm
        self._perturbed = []
        self.skipped = not bool(torch.isfinite(norm))
        if not self.skipped:
            for group in self.param_groups:
                scale = group["rho"] / (norm + self.eps)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if "old_p" in state:
                        state["old_p"].copy_(p)
                    else:
                        state["old_p"] = p.detach().clone()
                    e_w = p.grad * scale.to(p.device, p.grad.dtype)
                    if group["adaptive"]:
                        e_w = e_w * p.detach() ** 2
                    p.add_(e_w)
                    self._perturbed.append(p)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the weights saved by :meth:`first_step` (exact copies); a no-op if none are saved."""
        for p in self._perturbed:
            p.copy_(self.state[p]["old_p"])
        self._perturbed = []

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, *, base_step: Callable[[], Any] | None = None) -> None:
        """Restore w exactly, then step the base optimizer with the pass-2 (sharpness-aware) gradient.

        No base step when :meth:`first_step` skipped, or when the pass-2 gradient is non-finite
        (``skipped`` is then True). ``base_step`` replaces ``base_optimizer.step`` (e.g.
        ``lambda: scaler.step(sam.base_optimizer)`` under AMP).
        """
        self.restore()
        if not self.skipped:
            self.skipped = not bool(torch.isfinite(self.grad_norm()))
        if not self.skipped:
            (base_step or self.base_optimizer.step)()
            self._opt_called = True  # an LR scheduler built on this wrapper checks it (no false warning)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Both passes: ``closure`` runs forward + backward and returns the loss; returns pass 1's loss.

        Unlike the reference implementation (whose ``step`` expects pass 1's backward to be done
        already), this zeroes the gradients and calls ``closure`` twice. Without BatchNorm
        freezing, DDP ``no_sync`` or AMP: use :func:`sam_training_step` for those.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that runs forward + backward and returns the loss")
        closure = torch.enable_grad()(closure)
        self.zero_grad(set_to_none=True)
        loss = closure()
        self.first_step(zero_grad=True)
        if not self.skipped:
            closure()
        self.second_step(zero_grad=False)
        return loss

    # ------------------------------------------------------------------ (de)serialisation

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (its param groups hold ``rho`` and ``adaptive`` too)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` into the base optimizer and share its new param groups again."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        for group in self.param_groups:
            group.setdefault("rho", self.defaults["rho"])
            group.setdefault("adaptive", self.defaults["adaptive"])


@OPTIMIZERS.register("sam")
def sam(
    params: Iterable[Any], base: str = "adamw", rho: float = 0.05, adaptive: bool = False, **options: Any
) -> SAM:
    """Sharpness-Aware Minimization (Foret et al. 2021) around a registered base; adaptive=True is ASAM."""
    return SAM(params, base, rho=rho, adaptive=adaptive, **options)


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def disable_running_stats(model: nn.Module) -> Iterator[None]:
    """Freeze every BatchNorm's running mean/var and ``num_batches_tracked`` inside the block.

    In training mode the layers still normalise with the batch statistics (as in pass 1), but do
    not update the running ones: SAM's pass 2 sees perturbed weights, whose activations must not
    leak into the statistics used at inference. Done by ``track_running_stats = False`` (which
    covers ``momentum=None`` too, where a zero momentum would not), restored on exit.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    flags = [m.track_running_stats for m in layers]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, flag in zip(layers, flags, strict=True):
            m.track_running_stats = flag


def param_groups_with_loss(
    model: nn.Module, loss: nn.Module, weight_decay: float, *, loss_lr: float | None = None
) -> list[dict[str, Any]]:
    """Param groups: the model's with ``weight_decay``, the loss's own parameters without.

    Learned loss weights (the σ of :class:`medseg.losses.umedsam.UMedSAMLoss`) must not decay:
    weight decay pulls σ to 0, which blows up every weight 1/(2σ²). ``loss_lr`` gives them their
    own learning rate (they move by about one lr per step under Adam, so at the paper's 5e-5 they
    barely move; a larger ``loss_lr`` lets them adapt). Pass the result as ``params`` to any
    optimizer, SAM included: ``optim.build("sam", param_groups_with_loss(m, l, 1e-2), lr=5e-5)``.
    A loss without trainable parameters adds no group.
    """
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be ≥ 0, got {weight_decay}")
    model_params = [p for p in model.parameters() if p.requires_grad]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    shared = {id(p) for p in model_params} & {id(p) for p in loss_params}
    if shared:
        raise ConfigError(f"{len(shared)} parameter(s) belong to both the model and the loss")
    groups: list[dict[str, Any]] = [{"params": model_params, "weight_decay": float(weight_decay)}]
    if loss_params:
        group: dict[str, Any] = {"params": loss_params, "weight_decay": 0.0}
        if loss_lr is not None:
            if not loss_lr > 0:
                raise ConfigError(f"loss_lr must be positive, got {loss_lr}")
            group["lr"] = float(loss_lr)
        groups.append(group)
    return groups


def _backward(loss: Tensor, scaler: torch.amp.GradScaler | None) -> None:
    (scaler.scale(loss) if scaler is not None else loss).backward()


def _agreed_grad_norm(optimizer: SAM, model: nn.Module) -> Tensor:
    """The local gradient norm, made inf on every rank if any DDP rank's is non-finite."""
    norm = optimizer.grad_norm()
    if isinstance(model, DistributedDataParallel) and torch.distributed.is_initialized():
        finite = torch.isfinite(norm).to(torch.float32)
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() < 1:
            norm = torch.full_like(norm, float("inf"))
    return norm


def sam_training_step(
    model: nn.Module,
    optimizer: SAM,
    compute_loss: Callable[[], Tensor],
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
) -> Tensor:
    """One complete SAM step; returns pass 1's loss (detached), the one to log.

    ``compute_loss()`` runs the forward pass (under autocast if wanted) and returns the scalar
    loss; it is called twice, and must not call backward. Pass 1 runs inside ``model.no_sync()``
    for a ``DistributedDataParallel`` model; pass 2 with BatchNorm running statistics frozen.
    ``grad_clip`` clips the norm of pass 2's gradient, the one the base optimizer uses (clipping
    pass 1's would not change the direction, nor therefore e_w). With ``scaler`` the sequence in
    the module docstring is used. ``optimizer.skipped`` tells whether the step was skipped
    (non-finite gradient).
    """
    if not isinstance(optimizer, SAM):
        raise TypeError(f"sam_training_step needs a SAM optimizer, got {type(optimizer).__name__}")
    if grad_clip is not None and not grad_clip > 0:
        raise ConfigError(f"grad_clip must be positive, got {grad_clip}")
    optimizer.zero_grad(set_to_none=True)
    sync_off = model.no_sync() if isinstance(model, DistributedDataParallel) else contextlib.nullcontext()
    with sync_off:
        loss = compute_loss()
        _backward(loss, scaler)
    if scaler is not None:
        scaler.unscale_(optimizer)
    optimizer.first_step(zero_grad=True, grad_norm=_agreed_grad_norm(optimizer, model))
    if optimizer.skipped:
        if scaler is not None:
            scaler.update()  # pass 1's inf was recorded by unscale_: the scale goes down
        return loss.detach()
    with disable_running_stats(model):
        _backward(compute_loss(), scaler)
    if scaler is not None:
        scaler.unscale_(optimizer.base_optimizer)
    if grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        base = optimizer.base_optimizer
        optimizer.second_step(zero_grad=True, base_step=lambda: scaler.step(base))
        scaler.update()
    else:
        optimizer.second_step(zero_grad=True)
    return loss.detach()
