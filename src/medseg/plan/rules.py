"""The planner's rules: each one small function that returns its value and the reason for it.

A rule reads the :class:`~medseg.data.fingerprint.Fingerprint` (and, where it must, the budget or
what earlier rules chose) and returns a :class:`Decision`. :func:`~medseg.plan.make.make_plan`
only composes them, so every rule can be read and tested alone. The table of rules and their
sources is in :mod:`medseg.plan`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from medseg.data.fingerprint import Fingerprint
from medseg.errors import ConfigError
from medseg.models.resenc_unet import default_blocks, default_features, training_cost
from medseg.plan.budget import Budget

T = TypeVar("T")

#: Spacing ratio (coarsest / finest) from which a volume is trained in-plane (2D).
ANISOTROPY_2D = 3.0
MEMORY_HEADROOM = 0.8
#: The deepest feature map keeps at least this many voxels along every pooled axis.
MIN_FEATURE_MAP = 4
MAX_STAGES = {2: 7, 3: 6}
MAX_BATCH = 64
DATASET_SHARE_PER_BATCH = 0.05
MIN_PATCH_2D = 64
#: The narrowest network the plan makes (channels at full resolution) to buy steps on a slow device.
MIN_BASE_WIDTH = 8
FOREGROUND_SHARE = 1 / 3
#: The batch is not lowered below this to buy steps (2D: noisy gradients below ~16 slices).
MIN_BATCH_FOR_STEPS = {2: 16, 3: 2}
#: Two classes whose mean centroids lie this far apart along an axis (as a share of its length) are
#: told apart by position there: mirroring that axis would swap them.
MIRROR_SEPARATION = 0.15
#: Below this many steps the plan trains with AdamW: SGD with momentum 0.99 starts too slowly.
SGD_MIN_STEPS = 10_000
#: In-training validation may take this share of the training time per pass at most.
VALIDATION_PASS_SHARE = 0.02
MIN_VALIDATION_CASES = 8


@dataclass(frozen=True)
class Decision(Generic[T]):
    """A rule's value and why."""

    value: T
    reason: str


@dataclass(frozen=True)
class Topology:
    """The network's resolutions: per stage, how each spatial axis is downsampled (1 or 2)."""

    strides: tuple[tuple[int, ...], ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Per axis, the product of its strides: a patch size must be a multiple of it."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(len(self.strides[0])))

    def round_patch(self, patch: list[float]) -> list[int]:
        """Each axis rounded up to a multiple of its :attr:`size_multiples`."""
        return [int(math.ceil(p / m) * m) for p, m in zip(patch, self.size_multiples, strict=True)]

    def options(self) -> list[list[int]]:
        return [list(s) for s in self.strides]


@dataclass(frozen=True)
class Network:
    """A candidate network and batch: what a training step costs is a function of these."""

    patch: list[int]
    topology: Topology
    base_width: int
    batch: int
    in_channels: int
    out_channels: int

    @property
    def spatial_dims(self) -> int:
        return len(self.patch)

    @property
    def features(self) -> list[int]:
        return list(default_features(self.topology.n_stages, self.spatial_dims, self.base_width))

    @property
    def blocks(self) -> list[int]:
        return planned_blocks(self.topology.n_stages)

    def with_batch(self, batch: int) -> Network:
        return Network(self.patch, self.topology, self.base_width, batch, self.in_channels, self.out_channels)

    def model_options(self) -> dict[str, Any]:
        """``resenc_unet`` options of this candidate (strides only when not the uniform default)."""
        uniform = self.topology.strides[1:] == ((2,) * self.spatial_dims,) * (self.topology.n_stages - 1)
        options: dict[str, Any] = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "spatial_dims": self.spatial_dims,
            "features": self.features,
            "blocks": self.blocks,
            "deep_supervision": True,
        }
        if not uniform:
            options["strides"] = self.topology.options()
        return options

    def memory_bytes(self, device: str) -> int:
        """Bytes of one training step (activations fp16 under CUDA AMP, SGD with momentum)."""
        cost = training_cost(
            self.patch,
            self.batch,
            self.in_channels,
            self.out_channels,
            self.features,
            self.blocks,
            strides=self.topology.strides,
        )
        return cost.memory_bytes(activation_bytes=2 if device == "cuda" else 4, optimizer_states=1)

    def flops(self) -> int:
        return training_cost(
            self.patch,
            self.batch,
            self.in_channels,
            self.out_channels,
            self.features,
            self.blocks,
            strides=self.topology.strides,
        ).flops


def planned_blocks(n_stages: int) -> list[int]:
    """Residual blocks per stage: none at full resolution (the stem only: a full-resolution block
    costs as much as all the deeper stages together), then :func:`default_blocks`."""
    return [0, *default_blocks(n_stages)[1:]]


# --------------------------------------------------------------------------- data rules


def spatial_dims_rule(fingerprint: Fingerprint) -> Decision[int]:
    """2D images → 2D; volumes with spacing ratio ≥ :data:`ANISOTROPY_2D` → 2D in-plane; else 3D."""
    if fingerprint.spatial_dims == 2:
        return Decision(2, "the data are 2D images")
    if fingerprint.anisotropy >= ANISOTROPY_2D:
        return Decision(
            2,
            f"volumes are anisotropic (spacing ratio {fingerprint.anisotropy:.1f} ≥ {ANISOTROPY_2D:g}): "
            "train in-plane in 2D; a 3D kernel would mostly see interpolated voxels",
        )
    return Decision(
        3,
        f"volumes are isotropic enough (spacing ratio {fingerprint.anisotropy:.1f} < {ANISOTROPY_2D:g}): "
        "3D context",
    )


def target_spacing_rule(fingerprint: Fingerprint) -> Decision[list[float]]:
    """Median spacing; a 3D axis coarser than 3× the finest takes its 10th percentile (nnU-Net)."""
    spacing = list(fingerprint.spacing_median)
    finest = min(spacing)
    coarse = [
        i for i, s in enumerate(spacing) if fingerprint.spatial_dims == 3 and s >= ANISOTROPY_2D * finest
    ]
    for i in coarse:
        spacing[i] = fingerprint.spacing_p10[i]
    reason = "median spacing of the data set"
    if coarse:
        reason += (
            f"; axis {coarse} (coarser than {ANISOTROPY_2D:g}× the finest) takes its 10th percentile, "
            "so thin-slice cases keep their detail"
        )
    return Decision(spacing, reason)


def normalization_rule(fingerprint: Fingerprint) -> Decision[list[dict[str, Any]]]:
    """CT: clip to the foreground 0.5/99.5 percentiles, then a global z-score; else per-image z-score."""
    if fingerprint.modality == "ct":
        schemes = []
        for c, stats in enumerate(fingerprint.intensity_foreground):
            if stats is None:
                raise ConfigError(f"CT normalisation needs foreground voxels; channel {c} has none")
            schemes.append(
                {
                    "scheme": "ct",
                    "clip": [stats.percentile_00_5, stats.percentile_99_5],
                    "mean": stats.mean,
                    "std": stats.std if stats.std > 0 else 1.0,
                }
            )
        return Decision(
            schemes, "CT (quantitative HU): clip to the foreground 0.5/99.5 percentiles, z-score globally"
        )
    modality = fingerprint.modality or "unknown modality"
    return Decision(
        [{"scheme": "zscore_per_image"} for _ in range(fingerprint.n_channels)],
        f"{modality}: intensities are arbitrary per scan, so z-score each image and channel",
    )


@dataclass(frozen=True)
class Classes:
    """The task's classes: K (None: binary, one sigmoid channel), names and label values."""

    num_classes: int | None
    label_names: list[str] | None
    class_values: list[int] | None

    @property
    def out_channels(self) -> int:
        return self.num_classes or 1


def classes_rule(fingerprint: Fingerprint) -> Decision[Classes]:
    """K from the data set (dataset.json labels, or the masks' values) with its label names."""
    k = fingerprint.num_classes
    names = list(fingerprint.label_names) if fingerprint.label_names else None
    values = list(fingerprint.class_values) if fingerprint.class_values else None
    if k is None:
        return Decision(Classes(None, names, None), "binary masks: one sigmoid channel for the foreground")
    named = ", ".join(f"{v}={n}" for v, n in zip(values or range(k), names or [], strict=False))
    return Decision(
        Classes(int(k), names, values),
        f"{k} classes in the data set ({named or 'class indices 0..' + str(k - 1)}): softmax over "
        f"{k} channels",
    )


def loss_rule(classes: Classes) -> Decision[dict[str, Any]]:
    """Batch Dice + cross-entropy: sigmoid BCE for a binary task, softmax CE over K classes."""
    if classes.num_classes is None:
        return Decision(
            {"name": "dice_bce", "options": {"batch_dice": True}},
            "Dice pooled over the batch + BCE (nnU-Net: most slices of an imbalanced set are empty, and "
            "a per-slice Dice of an empty slice is ~1 whatever the network does)",
        )
    return Decision(
        {"name": "dice_ce", "options": {"batch_dice": True, "include_background": False}},
        "soft Dice of the foreground classes pooled over the batch + cross-entropy over all "
        f"{classes.num_classes} classes (nnU-Net's multi-class loss)",
    )


def mirror_axes_rule(fingerprint: Fingerprint, spatial_dims: int) -> Decision[list[int] | None]:
    """Mirror every axis, except one along which two classes lie apart (mirroring would swap them).

    A binary task mirrors every axis (nnU-Net). With several classes, an axis along which two
    classes' mean centroids differ by ≥ :data:`MIRROR_SEPARATION` of its length tells them apart by
    position (left/right, anterior/posterior): a mirrored case there shows the classes swapped.
    """
    classes = [c for c in fingerprint.classes if len(c.centroid_relative) == fingerprint.spatial_dims]
    offset = fingerprint.spatial_dims - spatial_dims  # 2D plans of volumes keep the in-plane axes
    if len(classes) < 2:
        return Decision(None, "mirroring along every axis (nnU-Net's test-time mirroring)")
    separated: dict[int, float] = {}
    for a, b in itertools.combinations(classes, 2):
        for axis in range(offset, fingerprint.spatial_dims):
            gap = abs(a.centroid_relative[axis] - b.centroid_relative[axis])
            if gap >= MIRROR_SEPARATION:
                separated[axis - offset] = max(gap, separated.get(axis - offset, 0.0))
    axes = [a for a in range(spatial_dims) if a not in separated]
    if not separated:
        return Decision(None, "mirroring along every axis: no axis tells the classes apart by position")
    gaps = ", ".join(f"axis {a}: {g:.2f}" for a, g in sorted(separated.items()))
    return Decision(
        axes,
        f"mirroring only along axes {axes}: the classes lie apart along the others ({gaps} of the axis "
        f"length ≥ {MIRROR_SEPARATION:g}), where a mirrored case would show them swapped",
    )


def foreground_share_rule(fingerprint: Fingerprint) -> Decision[float]:
    """A third of every batch is centred on foreground (each class in turn when there are several)."""
    per_class = (
        "; a foreground patch picks its class uniformly among the classes in the case, so rare "
        "classes are seen as often as common ones"
        if fingerprint.num_classes
        else ""
    )
    return Decision(
        FOREGROUND_SHARE,
        "nnU-Net oversamples foreground in a third of each batch "
        f"({fingerprint.empty_slice_share:.0%} of slices are empty){per_class}",
    )


# --------------------------------------------------------------------------- network rules


def base_width_rule(budget: Budget) -> Decision[int]:
    """32 channels at full resolution on a GPU, 16 on a CPU (FLOP-bound: ¼ of the FLOPs)."""
    if budget.device == "cuda":
        return Decision(32, "32 channels at full resolution (GPU)")
    return Decision(
        16, "16 channels at full resolution: a CPU is FLOP-bound, half the width is ¼ of the FLOPs"
    )


def topology_rule(shape: list[float], spacing: list[float]) -> Decision[Topology]:
    """Per-axis pooling (nnU-Net): pool an axis while it keeps ≥ :data:`MIN_FEATURE_MAP` voxels and
    its spacing is within 2× the finest, so an axis that is already small or coarse is not pooled.

    At least one pooling of every axis, at most :data:`MAX_STAGES` stages.
    """
    dims = len(shape)
    size, current = [float(s) for s in shape], [float(s) for s in spacing]
    strides: list[tuple[int, ...]] = [(1,) * dims]
    held: set[int] = set()
    while len(strides) < MAX_STAGES[dims]:
        finest = min(current)
        pool = tuple(
            2 if size[a] >= 2 * MIN_FEATURE_MAP and current[a] <= 2 * finest else 1 for a in range(dims)
        )
        if pool == (1,) * dims:
            break
        held |= {a for a in range(dims) if pool[a] == 1}
        strides.append(pool)
        size = [s / p for s, p in zip(size, pool, strict=True)]
        current = [c * p for c, p in zip(current, pool, strict=True)]
    if len(strides) == 1:
        strides.append((2,) * dims)  # a U-Net needs one pooling: the patch is rounded up to 2
    topology = Topology(tuple(strides))
    reason = (
        f"{topology.n_stages} stages: each axis pools while its deepest map keeps ≥ {MIN_FEATURE_MAP} "
        f"voxels (poolings per axis {[int(math.log2(m)) for m in topology.size_multiples]})"
    )
    if held:
        reason += (
            f"; axes {sorted(held)} skip some poolings (small, or coarser than 2× the finest spacing) "
            "so the deep maps stay near-isotropic"
        )
    return Decision(topology, reason)


def batch_rule(network: Network, budget: Budget, dataset_voxels: float) -> Decision[int]:
    """The largest batch within :data:`MEMORY_HEADROOM` of the memory, ≥ 2, ≤ :data:`MAX_BATCH` and
    ≤ 5 % of the data set's voxels (nnU-Net: one step should not see most of the data set)."""
    usable = MEMORY_HEADROOM * budget.memory_bytes
    if network.with_batch(2).memory_bytes(budget.device) > usable:
        raise ConfigError(
            f"the memory budget ({budget.memory_bytes / 2**30:.2f} GiB) does not fit batch 2 of "
            f"patch {network.patch}; give more memory"
        )
    batch = 2
    while batch < MAX_BATCH and network.with_batch(batch + 1).memory_bytes(budget.device) <= usable:
        batch += 1
    cap = max(2, int(DATASET_SHARE_PER_BATCH * dataset_voxels / math.prod(network.patch)))
    reason = f"largest batch within {MEMORY_HEADROOM:.0%} of {budget.memory_bytes / 2**30:.2f} GiB is {batch}"
    if cap < batch:
        reason += f"; capped at {cap} (5 % of the data set's voxels per batch)"
    return Decision(min(batch, cap), reason)


def step_seconds_rule(network: Network, budget: Budget) -> Decision[float]:
    """A fixed step time, else a few real steps timed on the device, else FLOPs / throughput."""
    if budget.step_seconds is not None:
        return Decision(budget.step_seconds, "given")
    if budget.step_timer is not None:
        seconds = budget.step_timer(
            {"model": network.model_options(), "patch": list(network.patch), "batch": network.batch}
        )
        return Decision(seconds, f"timed: real training steps on the {budget.device}")
    return Decision(network.flops() / budget.throughput, f"estimated at {budget.throughput:.3g} FLOP/s")


def total_steps_rule(step_seconds: float, budget: Budget) -> Decision[int]:
    """⌊minutes · 60 · (1 − validation share) / step seconds⌋ steps."""
    steps = max(1, int(budget.training_seconds / step_seconds))
    return Decision(
        steps,
        f"{budget.minutes:g} min × (1 − {budget.validation_share:g} validation) / {step_seconds:.3g} s per "
        "step",
    )


def optimizer_rule(total_steps: int) -> Decision[dict[str, Any]]:
    """nnU-Net's SGD (Nesterov momentum 0.99, lr 0.01) for a long run; AdamW (lr 3e-3) when the
    budget buys fewer than :data:`SGD_MIN_STEPS` steps.

    Momentum 0.99 averages about 100 steps of gradients, and nnU-Net's schedule keeps lr ≈ 0.01 for
    its first thousands of steps: a short budget anneals the lr before the network has left its
    all-background start. ``benchmarks/budget_hippocampus.py`` shows it: nnU-Net's SGD predicts
    only background after its ~700 steps in 15 CPU minutes, where the planned AdamW trains.
    """
    if total_steps >= SGD_MIN_STEPS:
        return Decision(
            {"name": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
            f"nnU-Net's SGD (Nesterov momentum 0.99, lr 0.01, weight decay 3e-5): {total_steps} steps "
            f"≥ {SGD_MIN_STEPS}",
        )
    return Decision(
        {"name": "adamw", "lr": 3e-3, "weight_decay": 3e-5},
        f"AdamW, lr 3e-3, weight decay 3e-5: {total_steps} steps < {SGD_MIN_STEPS}, too few for "
        "momentum-0.99 SGD to leave its all-background start (it needs thousands of steps at lr 0.01)",
    )


def scheduler_rule(budget: Budget) -> Decision[dict[str, Any]]:
    """Poly (power 0.9) over the time budget, ending at 0 exactly when it is spent."""
    return Decision(
        {"name": "budget", "budget_seconds": budget.training_seconds, "shape": "poly", "power": 0.9},
        "poly (power 0.9) over the time budget, reaching 0 exactly when it ends",
    )


def validation_cases_rule(
    n_validation_cases: int | None, seconds_per_case: float, budget: Budget
) -> Decision[int | None]:
    """Every validation case, unless one pass would take more than :data:`VALIDATION_PASS_SHARE` of the
    training time: then a fixed subset that fits (at least :data:`MIN_VALIDATION_CASES`)."""
    if n_validation_cases is None:
        return Decision(None, "every validation case (their number is not known yet)")
    allowed = VALIDATION_PASS_SHARE * budget.training_seconds
    total = n_validation_cases * seconds_per_case
    if total <= allowed:
        return Decision(
            None,
            f"all {n_validation_cases} validation cases: one pass takes ~{total:.0f} s, within "
            f"{VALIDATION_PASS_SHARE:.0%} of the training time",
        )
    cases = max(MIN_VALIDATION_CASES, int(allowed / max(seconds_per_case, 1e-9)))
    if cases >= n_validation_cases:
        return Decision(
            None, f"all {n_validation_cases} validation cases (no fewer than {MIN_VALIDATION_CASES})"
        )
    return Decision(
        cases,
        f"{cases} of the {n_validation_cases} validation cases per pass during training "
        f"(~{seconds_per_case:.1f} s each; one pass within {VALIDATION_PASS_SHARE:.0%} of the time); "
        "the final evaluation scores all",
    )


def median_shape_at(fingerprint: Fingerprint, spacing: list[float]) -> list[float]:
    """The median image shape resampled to ``spacing`` (all spatial axes)."""
    return [
        m * s / t
        for m, s, t in zip(fingerprint.shape_median, fingerprint.spacing_median, spacing, strict=True)
    ]


def dataset_voxels_at(fingerprint: Fingerprint, spacing: list[float]) -> float:
    """The data set's voxel count at ``spacing`` (spatial axes of the fingerprint)."""
    return fingerprint.n_voxels_total * float(
        np.prod([s / t for s, t in zip(fingerprint.spacing_median, spacing, strict=True)])
    )
