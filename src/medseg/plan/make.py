""":func:`make_plan`: the rules of :mod:`medseg.plan.rules`, composed under a budget.

The data rules (dimensionality, spacing, normalisation, classes, loss, mirroring, oversampling)
are independent. The network is then sized in a loop, cheapest change first, until the budget
buys enough optimizer steps: a smaller batch, then a narrower network (3D: only below half of
``min_steps``), then (3D) a 2D network, then (2D) a coarser in-plane resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.data.fingerprint import Fingerprint
from medseg.plan.budget import Budget
from medseg.plan.rules import (
    MEMORY_HEADROOM,
    MIN_BASE_WIDTH,
    MIN_BATCH_FOR_STEPS,
    MIN_PATCH_2D,
    Decision,
    Network,
    base_width_rule,
    batch_rule,
    classes_rule,
    dataset_voxels_at,
    foreground_share_rule,
    loss_rule,
    median_shape_at,
    mirror_axes_rule,
    normalization_rule,
    optimizer_rule,
    scheduler_rule,
    spatial_dims_rule,
    step_seconds_rule,
    target_spacing_rule,
    topology_rule,
    total_steps_rule,
    validation_cases_rule,
)
from medseg.plan.schema import Plan

#: A 3D network keeps its width down to this share of ``Budget.min_steps`` (AdamW trains a
#: 16-wide 3D network in hundreds of steps), then narrows;
NARROW_3D_STEP_SHARE = 0.5
#: below this share even at the narrowest width, the plan is 2D.
MIN_3D_STEP_SHARE = 0.25


@dataclass(frozen=True)
class _Sized:
    network: Network
    patch_reason: str
    topology_reason: str
    batch_reason: str
    step: Decision[float]
    steps: Decision[int]


def _size_network(
    shape: list[float],
    spacing: list[float],
    base_width: int,
    channels: tuple[int, int],
    budget: Budget,
    dataset_voxels: float,
) -> tuple[Network, str, str]:
    """Patch (the median image; in 3D shrunk until batch 2 fits) and its topology, at batch 2."""
    topology = topology_rule(shape, spacing)
    patch = topology.value.round_patch(shape)
    network = Network(patch, topology.value, base_width, 2, *channels)
    if len(shape) == 2:
        return network, "the median in-plane image at the target spacing", topology.reason
    usable = MEMORY_HEADROOM * budget.memory_bytes
    shrunk = False
    while network.memory_bytes(budget.device) > usable:
        axis = int(np.argmax(network.patch))
        multiple = network.topology.size_multiples[axis]
        if network.patch[axis] <= multiple:
            break
        smaller = [float(p) for p in network.patch]
        smaller[axis] -= multiple
        topology = topology_rule(smaller, spacing)
        network = Network(topology.value.round_patch(smaller), topology.value, base_width, 2, *channels)
        shrunk = True
    reason = "the median volume at the target spacing" + (
        ", shrunk along its largest axis to fit batch 2" if shrunk else ""
    )
    return network, reason, topology.reason


def _sized(
    fingerprint: Fingerprint,
    dims: int,
    spacing: list[float],
    base_width: int,
    channels: tuple[int, int],
    budget: Budget,
) -> _Sized:
    full_shape = median_shape_at(fingerprint, spacing)
    shape = full_shape[-2:] if dims == 2 else full_shape
    network, patch_reason, topology_reason = _size_network(
        shape, spacing[-dims:], base_width, channels, budget, dataset_voxels_at(fingerprint, spacing)
    )
    patch_reason += f", rounded up to multiples of {list(network.topology.size_multiples)}"
    batch = batch_rule(network, budget, dataset_voxels_at(fingerprint, spacing))
    network = network.with_batch(batch.value)
    step = step_seconds_rule(network, budget)
    steps = total_steps_rule(step.value, budget)
    batch_reason = batch.reason
    floor = MIN_BATCH_FOR_STEPS[dims]
    if steps.value < budget.min_steps and network.batch > floor and budget.adapts:
        wanted = max(floor, int(network.batch * steps.value / budget.min_steps))
        batch_reason += f"; lowered to {wanted} to afford {budget.min_steps} steps in {budget.minutes:g} min"
        network = network.with_batch(wanted)
        step = step_seconds_rule(network, budget)
        steps = total_steps_rule(step.value, budget)
    return _Sized(network, patch_reason, topology_reason, batch_reason, step, steps)


def make_plan(
    fingerprint: Fingerprint,
    budget: Budget,
    out_channels: int | None = None,
    spatial_dims: int | None = None,
    n_validation_cases: int | None = None,
) -> Plan:
    """The :class:`Plan` for ``fingerprint`` under ``budget`` (rules: :mod:`medseg.plan`).

    ``out_channels`` defaults to 1 for a binary task and K for ``num_classes`` = K.
    ``spatial_dims`` forces 2D or 3D instead of :func:`~medseg.plan.rules.spatial_dims_rule`.
    ``n_validation_cases`` sizes the in-training validation (all cases when ``None``).
    """
    reasons: dict[str, str] = {}
    dims_rule = spatial_dims_rule(fingerprint)
    if spatial_dims is None:
        dims, reasons["spatial_dims"] = dims_rule.value, dims_rule.reason
    else:
        dims, reasons["spatial_dims"] = spatial_dims, f"{spatial_dims}D asked for"
    spacing_rule = target_spacing_rule(fingerprint)
    full_spacing, reasons["target_spacing"] = spacing_rule.value, spacing_rule.reason
    normalization = normalization_rule(fingerprint)
    classes = classes_rule(fingerprint)
    loss = loss_rule(classes.value)
    mirror = mirror_axes_rule(fingerprint, dims)
    foreground = foreground_share_rule(fingerprint)
    width = base_width_rule(budget)
    channels = (fingerprint.n_channels, out_channels or classes.value.out_channels)

    base_width, in_plane_scale = width.value, 1.0
    while True:
        spacing = [*full_spacing[:-2], *(s * in_plane_scale for s in full_spacing[-2:])]
        sized = _sized(fingerprint, dims, spacing, base_width, channels, budget)
        steps = sized.steps.value
        too_few = budget.adapts and steps < budget.min_steps
        few_3d = dims == 3 and budget.adapts and steps < NARROW_3D_STEP_SHARE * budget.min_steps
        if few_3d and base_width > MIN_BASE_WIDTH:
            base_width //= 2  # a narrower 3D network (¼ of the FLOPs) before giving up 3D context
            continue
        if (
            dims == 3
            and budget.adapts
            and steps < MIN_3D_STEP_SHARE * budget.min_steps
            and spatial_dims is None
        ):
            plan_2d = make_plan(fingerprint, budget, out_channels, 2, n_validation_cases)
            plan_2d.reasons["spatial_dims"] = (
                f"{reasons['spatial_dims']}, but even the narrowest 3D network gets only {steps} steps in "
                f"{budget.minutes:g} min on this device (< {MIN_3D_STEP_SHARE:.0%} of the "
                f"{budget.min_steps} steps worth training): 2D"
            )
            return plan_2d
        if dims == 2 and too_few and base_width > MIN_BASE_WIDTH:
            base_width //= 2  # first narrower (¼ of the FLOPs), then lower resolution
            continue
        if dims == 2 and too_few and min(sized.network.patch) >= 2 * MIN_PATCH_2D:
            in_plane_scale *= 2
            continue
        break

    network = sized.network
    if in_plane_scale > 1:
        reasons["target_spacing"] += (
            f"; in-plane spacing ×{in_plane_scale:g}: at full resolution the budget buys fewer than "
            f"{budget.min_steps} steps on this device"
        )
    if dims == 2 and fingerprint.spatial_dims == 3:
        spacing = spacing[-2:]
    seconds_per_case = _validation_seconds_per_case(fingerprint, network, sized.step.value, dims)
    validation = validation_cases_rule(n_validation_cases, seconds_per_case, budget)
    optimizer, scheduler = optimizer_rule(int(steps)), scheduler_rule(budget)
    full_width = width.value
    reasons.update(
        normalization=normalization.reason,
        classes=classes.reason,
        loss=loss.reason,
        patch_size=sized.patch_reason,
        batch_size=sized.batch_reason,
        network_depth=sized.topology_reason,
        model=(
            f"residual-encoder U-Net, {width.reason}"
            + (
                f"; narrowed to {base_width} ({full_width // base_width}× narrower buys "
                f"{(full_width // base_width) ** 2}× the steps on this device)"
                if base_width != full_width
                else ""
            )
            + "; only the stem convolves at full resolution; deep supervision on"
        ),
        total_steps=f"{sized.steps.reason} ({sized.step.reason})",
        optimizer=optimizer.reason,
        scheduler=scheduler.reason,
        foreground_share=foreground.reason,
        mirror_axes=mirror.reason,
        validation_cases=validation.reason,
    )
    return Plan(
        spatial_dims=dims,
        target_spacing=[float(s) for s in spacing],
        normalization=normalization.value,
        patch_size=[int(p) for p in network.patch],
        batch_size=int(network.batch),
        model={"name": "resenc_unet", "options": network.model_options()},
        optimizer=optimizer.value,
        scheduler=scheduler.value,
        total_steps=int(steps),
        step_seconds=float(sized.step.value),
        foreground_share=foreground.value,
        estimated_memory_bytes=int(network.memory_bytes(budget.device)),
        num_classes=classes.value.num_classes,
        label_names=classes.value.label_names,
        class_values=classes.value.class_values,
        loss=loss.value,
        mirror_axes=mirror.value,
        validation_cases=validation.value,
        reasons=reasons,
    )


def _validation_seconds_per_case(
    fingerprint: Fingerprint, network: Network, step_seconds: float, dims: int
) -> float:
    """Forward passes of one validation case (sliding windows at overlap ½ in 3D, slices in 2D), each
    about a third of a training step's time per item."""
    forward = step_seconds / 3 / network.batch
    if dims == 2:
        slices = fingerprint.shape_median[0] if fingerprint.spatial_dims == 3 else 1
        return float(slices) * forward
    windows = math.prod(
        max(1, math.ceil((s - p) / (p / 2)) + 1)
        for s, p in zip(fingerprint.shape_median, network.patch, strict=True)
    )
    return windows * forward
