"""A training plan made from a dataset fingerprint and a compute budget (after nnU-Net's planner).

:func:`make_plan` turns a :class:`~medseg.data.fingerprint.Fingerprint` and a :class:`Budget`
(memory, minutes, device) into a :class:`Plan`; :func:`write_plan` / :func:`load_plan` keep it as
plain YAML that a user can edit. Every decision is a rule below, and the plan carries the reason
for each one under ``reasons:``. The network is :class:`~medseg.models.resenc_unet.ResEncUNet`,
whose memory and FLOPs come from :func:`~medseg.models.resenc_unet.training_cost`.

============== ============================================ =============================================
decision       rule                                         reason
============== ============================================ =============================================
2D / 3D        2D images → 2D. Volumes whose anisotropy     Thick slices: a 3D kernel would mostly see
               (largest / smallest median spacing) is ≥ 3   interpolated voxels; nnU-Net's 2D model wins
               → 2D on the in-plane axes. Other volumes →    on such data. Otherwise 3D context helps
               3D.                                          (Isensee et al. 2021).
target spacing Median spacing per axis; in 3D, an axis      nnU-Net: the median keeps most cases near
               coarser than 3× the finest gets its 10th     their native resolution; the 10th percentile
               percentile instead.                          keeps thin-slice detail on anisotropic data.
               A slow device halves the in-plane            Enough optimizer steps matter more than full
               resolution while the budget buys fewer than  resolution when the time budget is short.
               ``min_steps`` steps (patch ≥ 64).
normalisation  CT: clip each channel to its foreground      CT intensities (HU) are quantitative: one
               0.5/99.5 percentiles, then z-score with the  global mapping keeps tissue values
               foreground mean and std. MR, ultrasound and  comparable. MR/US intensities are arbitrary
               unknown: z-score per image and channel.      per scan, so each image is standardised.
depth          Halve while every axis of the smallest map   nnU-Net pools down to feature maps of about
               keeps ≥ 4 voxels (at most 7 stages in 2D, 6  4 voxels: the deepest stage sees the whole
               in 3D); the patch is rounded up to a          patch.
               multiple of 2^(stages − 1).
width          32 channels at full resolution on a GPU, 16  A CPU run is FLOP-bound: half the width is
               on a CPU; ×2 per stage, capped at 320.       ¼ of the FLOPs, so 4× the steps in a budget.
patch size     2D: the median in-plane shape at the target  nnU-Net: the patch covers the median image
               spacing. 3D: the median shape, shrunk along   when memory allows, else as much context as
               its largest axis until batch 2 fits.          fits at batch 2.
batch size     Largest that fits 80 % of the memory budget  The 20 % margin covers cuDNN workspaces and
               (activations in fp16 under CUDA AMP, fp32    allocator fragmentation. nnU-Net caps a
               weights, gradients and momentum), at least   batch at 5 % of the data set's voxels, so
               2, at most 5 % of the data set's voxels and  one step does not see most of it.
               at most 64. If the budget then buys fewer
               than ``min_steps`` steps, the batch shrinks
               (not below 8 in 2D, 2 in 3D) to buy them.
steps          ⌊minutes · 60 · (1 − validation_share) /     The schedule (optim ``budget``) ends exactly
               step_seconds⌋; step_seconds is measured, or  when the budget does; validation takes its
               estimated as FLOPs / device throughput.      share of the time.
optimizer      SGD, Nesterov momentum 0.99, lr 0.01, weight nnU-Net's default; robust across data sets
               decay 3e-5, poly (power 0.9) to 0.           without tuning.
oversampling   A third of every batch contains foreground.  nnU-Net: small, rare structures (most slices
                                                            empty) are otherwise rarely seen.
test time      Mirroring: the mean of the predictions of    nnU-Net's default; +0.007 per-volume Dice
               the flipped inputs (4 in 2D, 8 in 3D).       on the LGG validation split (README).
============== ============================================ =============================================
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config import Config, config_from_dict
from medseg.data.fingerprint import Fingerprint
from medseg.errors import ConfigError
from medseg.models.resenc_unet import default_blocks, default_features, training_cost

ANISOTROPY_2D = 3.0
MEMORY_HEADROOM = 0.8
MIN_FEATURE_MAP = 4
MAX_STAGES = {2: 7, 3: 6}
MAX_BATCH = 64
DATASET_SHARE_PER_BATCH = 0.05
MIN_PATCH_2D = 64
#: The narrowest network the plan makes (channels at full resolution) to buy steps on a slow device.
MIN_BASE_WIDTH = 8
FOREGROUND_SHARE = 1 / 3
NORMALIZATION_SCHEMES = ("ct", "zscore_per_image")
#: Rough sustained training throughput (FLOP/s) when no step time is measured: 2 CPU cores in fp32
#: (the LGG U-Net of issue 14 trained at about 1.8e11 FLOP/s there), and a data-centre GPU under
#: AMP. A measured ``Budget.step_seconds`` replaces it.
DEFAULT_THROUGHPUT = {"cpu": 1e11, "cuda": 3e13}
#: The batch is not lowered below this to buy steps (2D: noisy gradients below ~8 slices).
MIN_BATCH_FOR_STEPS = {2: 16, 3: 2}


@dataclass(frozen=True)
class Budget:
    """What the run may spend.

    Attributes:
        memory_bytes: device memory (CUDA) or RAM (CPU) available to training.
        minutes: wall-clock training time.
        device: ``cpu`` or ``cuda`` (CUDA trains under AMP: fp16 activations).
        step_seconds: a measured training step time at the planned size; else estimated.
        flops_per_second: sustained throughput for the estimate (default :data:`DEFAULT_THROUGHPUT`).
        validation_share: share of the minutes kept for validation.
        min_steps: the least number of optimizer steps worth training for (batch and resolution
            shrink to buy them on a slow device).
    """

    memory_bytes: int
    minutes: float
    device: str = "cpu"
    step_seconds: float | None = None
    flops_per_second: float | None = None
    validation_share: float = 0.1
    min_steps: int = 1000

    def __post_init__(self) -> None:
        if self.device not in DEFAULT_THROUGHPUT:
            raise ConfigError(
                f"budget device must be one of {sorted(DEFAULT_THROUGHPUT)}, got '{self.device}'"
            )
        if self.memory_bytes <= 0 or self.minutes <= 0:
            raise ConfigError(
                f"budget memory and minutes must be positive, got {self.memory_bytes}, {self.minutes}"
            )
        if not 0 <= self.validation_share < 1:
            raise ConfigError(f"validation_share must be in [0, 1), got {self.validation_share}")
        if self.step_seconds is not None and self.step_seconds <= 0:
            raise ConfigError(f"step_seconds must be positive, got {self.step_seconds}")

    @property
    def throughput(self) -> float:
        return self.flops_per_second or DEFAULT_THROUGHPUT[self.device]

    @property
    def training_seconds(self) -> float:
        return self.minutes * 60.0 * (1.0 - self.validation_share)


@dataclass
class Plan:
    """Everything a training run needs to start; ``reasons`` says why each value was chosen."""

    spatial_dims: int
    target_spacing: list[float]
    normalization: list[dict[str, Any]]
    patch_size: list[int]
    batch_size: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    total_steps: int
    step_seconds: float
    foreground_share: float
    estimated_memory_bytes: int
    reasons: dict[str, str] = field(default_factory=dict)
    # where the data come from (``source``, ``options``, ``split``): what `medseg train --plan` reads
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> Plan:
        names = {f.name for f in fields(cls)}
        unknown, missing = set(data) - names, names - set(data) - {"reasons", "data"}
        if unknown or missing:
            raise ConfigError(
                f"{where + ': ' if where else ''}plan keys wrong: "
                f"unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        plan = cls(**data)
        plan.validate(where)
        return plan

    def validate(self, where: str | None = None) -> None:
        """Raise :class:`ConfigError` (naming ``where``, e.g. the plan file) for inconsistent values."""
        prefix = f"{where}: " if where else ""
        problems = []
        if self.spatial_dims not in (2, 3):
            problems.append(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        for key in ("patch_size", "target_spacing"):
            value = getattr(self, key)
            if not isinstance(value, list) or len(value) != self.spatial_dims:
                problems.append(f"{key} needs {self.spatial_dims} values, got {value!r}")
        if not all(isinstance(p, int) and p > 0 for p in self.patch_size or []):
            problems.append(f"patch_size must hold positive integers, got {self.patch_size!r}")
        for key in ("batch_size", "total_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        schemes = [n.get("scheme") if isinstance(n, dict) else n for n in self.normalization]
        if any(scheme not in NORMALIZATION_SCHEMES for scheme in schemes):
            problems.append(f"normalization schemes must be among {NORMALIZATION_SCHEMES}, got {schemes}")
        if not 0.0 <= float(self.foreground_share) <= 1.0:
            problems.append(f"foreground_share must be in [0, 1], got {self.foreground_share!r}")
        if problems:
            raise ConfigError(prefix + "; ".join(problems))


# --------------------------------------------------------------------------- the rules


def choose_dims(fingerprint: Fingerprint) -> tuple[int, str]:
    """2D or 3D, with the reason."""
    if fingerprint.spatial_dims == 2:
        return 2, "the data are 2D images"
    if fingerprint.anisotropy >= ANISOTROPY_2D:
        return 2, (
            f"volumes are anisotropic (spacing ratio {fingerprint.anisotropy:.1f} ≥ {ANISOTROPY_2D:g}): "
            "train in-plane in 2D; a 3D kernel would mostly see interpolated voxels"
        )
    return (
        3,
        f"volumes are isotropic enough (spacing ratio {fingerprint.anisotropy:.1f} < {ANISOTROPY_2D:g}): "
        "3D context",
    )


def choose_target_spacing(fingerprint: Fingerprint) -> tuple[list[float], str]:
    """Median spacing; a 3D axis coarser than 3× the finest takes its 10th percentile."""
    spacing = list(fingerprint.spacing_median)
    finest = min(spacing)
    coarse = [
        i for i, s in enumerate(spacing) if fingerprint.spatial_dims == 3 and s >= ANISOTROPY_2D * finest
    ]
    for i in coarse:
        spacing[i] = fingerprint.spacing_p10[i]
    reason = "median spacing of the data set"
    if coarse:
        reason += f"; axis {coarse} (coarser than {ANISOTROPY_2D:g}× the finest) takes its 10th percentile"
    return spacing, reason


def choose_normalization(fingerprint: Fingerprint) -> tuple[list[dict[str, Any]], str]:
    """CT: clip to foreground 0.5/99.5 percentiles then global z-score; otherwise per-image z-score."""
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
        return schemes, "CT (quantitative HU): clip to the foreground 0.5/99.5 percentiles, z-score globally"
    modality = fingerprint.modality or "unknown modality"
    return (
        [{"scheme": "zscore_per_image"} for _ in range(fingerprint.n_channels)],
        f"{modality}: intensities are arbitrary per scan, so z-score each image and channel",
    )


def network_depth(patch: list[float], spatial_dims: int) -> int:
    """Stages such that the smallest feature map keeps ≥ 4 voxels per axis (capped)."""
    halvings = min(max(int(math.floor(math.log2(max(s, 1) / MIN_FEATURE_MAP))), 1) for s in patch)
    return min(halvings + 1, MAX_STAGES[spatial_dims])


def round_patch(patch: list[float], n_stages: int) -> list[int]:
    """Round each axis up to a multiple of 2^(n_stages − 1)."""
    divisor = 2 ** (n_stages - 1)
    return [int(math.ceil(s / divisor) * divisor) for s in patch]


def estimated_memory(
    patch: list[int],
    batch: int,
    n_stages: int,
    base_width: int,
    in_channels: int,
    out_channels: int,
    device: str,
) -> int:
    """Bytes of one training step (activations fp16 under CUDA AMP, SGD with momentum)."""
    features = default_features(n_stages, len(patch), base_width)
    cost = training_cost(patch, batch, in_channels, out_channels, features, planned_blocks(n_stages))
    return cost.memory_bytes(activation_bytes=2 if device == "cuda" else 4, optimizer_states=1)


def _step_seconds(
    patch: list[int], batch: int, n_stages: int, base_width: int, channels: tuple[int, int], budget: Budget
) -> float:
    if budget.step_seconds is not None:
        return budget.step_seconds
    features = default_features(n_stages, len(patch), base_width)
    cost = training_cost(patch, batch, channels[0], channels[1], features, planned_blocks(n_stages))
    return cost.flops / budget.throughput


def planned_blocks(n_stages: int) -> list[int]:
    """Residual blocks per stage: none at full resolution (the stem only: a full-resolution block
    costs as much as all the deeper stages together), then :func:`default_blocks`."""
    return [0, *default_blocks(n_stages)[1:]]


def make_plan(
    fingerprint: Fingerprint,
    budget: Budget,
    out_channels: int | None = None,
    spatial_dims: int | None = None,
) -> Plan:
    """The :class:`Plan` for ``fingerprint`` under ``budget`` (rules in the module docstring).

    ``out_channels`` defaults to 1 for a binary task and K for ``num_classes`` = K.
    ``spatial_dims`` forces 2D or 3D instead of :func:`choose_dims`.
    """
    reasons: dict[str, str] = {}
    if spatial_dims is None:
        dims, reasons["spatial_dims"] = choose_dims(fingerprint)
    else:
        dims, reasons["spatial_dims"] = spatial_dims, f"{spatial_dims}D asked for"
    spacing, reasons["target_spacing"] = choose_target_spacing(fingerprint)
    normalization, reasons["normalization"] = choose_normalization(fingerprint)
    channels = (fingerprint.n_channels, out_channels or fingerprint.num_classes or 1)
    base_width = 32 if budget.device == "cuda" else 16
    full_shape = [
        m * s / t
        for m, s, t in zip(fingerprint.shape_median, fingerprint.spacing_median, spacing, strict=True)
    ]
    dataset_voxels = fingerprint.n_voxels_total * math.prod(
        s / t for s, t in zip(fingerprint.spacing_median, spacing, strict=True)
    )
    shape = full_shape[-2:] if dims == 2 else full_shape
    in_plane_scale = 1.0
    usable = MEMORY_HEADROOM * budget.memory_bytes

    while True:
        n_stages = network_depth(shape, dims)
        patch = round_patch(shape, n_stages)
        if dims == 3:
            patch, n_stages = _fit_3d_patch(patch, n_stages, base_width, channels, budget, usable)
        memory = estimated_memory(patch, 2, n_stages, base_width, *channels, budget.device)
        if memory > usable:
            raise ConfigError(
                f"the memory budget ({budget.memory_bytes / 2**30:.2f} GiB) does not fit batch 2 of "
                f"patch {patch}; give more memory"
            )
        batch = 2
        while (
            batch < MAX_BATCH
            and estimated_memory(patch, batch + 1, n_stages, base_width, *channels, budget.device) <= usable
        ):
            batch += 1
        memory_batch = batch
        dataset_cap = max(
            2, int(DATASET_SHARE_PER_BATCH * dataset_voxels / in_plane_scale**2 / math.prod(patch))
        )
        batch = min(batch, dataset_cap)
        batch_reason = (
            f"largest batch within {MEMORY_HEADROOM:.0%} of {budget.memory_bytes / 2**30:.2f} GiB "
            f"is {memory_batch}"
            + (
                f"; capped at {dataset_cap} (5 % of the data set's voxels per batch)"
                if dataset_cap < memory_batch
                else ""
            )
        )
        step = _step_seconds(patch, batch, n_stages, base_width, channels, budget)
        steps = int(budget.training_seconds / step)
        floor = MIN_BATCH_FOR_STEPS[dims]
        if steps < budget.min_steps and batch > floor and budget.step_seconds is None:
            wanted = max(floor, int(batch * steps / budget.min_steps))
            batch_reason += (
                f"; lowered to {wanted} to afford {budget.min_steps} steps in {budget.minutes:g} min"
            )
            batch = wanted
            step = _step_seconds(patch, batch, n_stages, base_width, channels, budget)
            steps = int(budget.training_seconds / step)
        too_few = steps < budget.min_steps and budget.step_seconds is None
        if too_few and dims == 3 and fingerprint.spatial_dims == 3 and spatial_dims is None:
            plan_2d = make_plan(fingerprint, budget, out_channels, spatial_dims=2)
            plan_2d.reasons["spatial_dims"] = (
                f"{reasons['spatial_dims']}, but a 3D model gets only {steps} of the "
                f"{budget.min_steps} steps worth training in {budget.minutes:g} min on this device: 2D"
            )
            return plan_2d
        if too_few and base_width > MIN_BASE_WIDTH:
            base_width //= 2  # first narrower (¼ of the FLOPs), then lower resolution
            continue
        if dims == 2 and too_few and min(patch) >= 2 * MIN_PATCH_2D:
            in_plane_scale *= 2
            shape = [s / 2 for s in shape]
            continue
        break

    if in_plane_scale > 1:
        spacing = [*spacing[:-2], *(s * in_plane_scale for s in spacing[-2:])]
        reasons["target_spacing"] += (
            f"; in-plane spacing ×{in_plane_scale:g}: at full resolution the budget buys fewer than "
            f"{budget.min_steps} steps on this device"
        )
    if dims == 2 and fingerprint.spatial_dims == 3:
        spacing = spacing[-2:]
    reasons["patch_size"] = (
        "the median in-plane image at the target spacing"
        if dims == 2
        else "the median volume, shrunk to fit batch 2"
    ) + f", rounded up to a multiple of {2 ** (n_stages - 1)}"
    reasons["batch_size"] = batch_reason
    reasons["network_depth"] = (
        f"{n_stages} stages: the deepest feature map keeps ≥ {MIN_FEATURE_MAP} voxels per axis"
    )
    full_width = 32 if budget.device == "cuda" else 16
    reasons["model"] = (
        f"residual-encoder U-Net, {base_width} channels at full resolution"
        + (
            " (GPU)"
            if budget.device == "cuda" and base_width == full_width
            else f" (a CPU is FLOP-bound: {full_width // base_width}× narrower than on a GPU buys "
            f"{(full_width // base_width) ** 2}× the steps)"
            if base_width != full_width
            else " (CPU)"
        )
        + "; only the stem convolves at full resolution; deep supervision on"
    )
    measured = (
        "measured" if budget.step_seconds is not None else f"estimated at {budget.throughput:.3g} FLOP/s"
    )
    reasons["total_steps"] = (
        f"{budget.minutes:g} min × (1 − {budget.validation_share:g} validation) / {step:.3g} s per step "
        f"({measured})"
    )
    reasons["optimizer"] = "nnU-Net's SGD: Nesterov momentum 0.99, lr 0.01, weight decay 3e-5"
    reasons["scheduler"] = "poly (power 0.9) over the time budget, reaching 0 exactly when it ends"
    reasons["foreground_share"] = (
        "nnU-Net oversamples foreground in a third of each batch "
        f"({fingerprint.empty_slice_share:.0%} of slices are empty)"
    )
    features = list(default_features(n_stages, dims, base_width))
    blocks = planned_blocks(n_stages)
    return Plan(
        spatial_dims=dims,
        target_spacing=[float(s) for s in spacing],
        normalization=normalization,
        patch_size=[int(p) for p in patch],
        batch_size=int(batch),
        model={
            "name": "resenc_unet",
            "options": {
                "in_channels": channels[0],
                "out_channels": channels[1],
                "spatial_dims": dims,
                "features": features,
                "blocks": blocks,
                "deep_supervision": True,
            },
        },
        optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.99, "nesterov": True, "weight_decay": 3e-5},
        scheduler={
            "name": "budget",
            "budget_seconds": budget.training_seconds,
            "shape": "poly",
            "power": 0.9,
        },
        total_steps=max(int(steps), 1),
        step_seconds=float(step),
        foreground_share=FOREGROUND_SHARE,
        estimated_memory_bytes=int(
            estimated_memory(patch, batch, n_stages, base_width, *channels, budget.device)
        ),
        reasons=reasons,
    )


def _fit_3d_patch(
    patch: list[int], n_stages: int, base_width: int, channels: tuple[int, int], budget: Budget, usable: float
) -> tuple[list[int], int]:
    """Shrink the largest axis by one divisor step until batch 2 fits (nnU-Net's 3D rule)."""
    patch = list(patch)
    while estimated_memory(patch, 2, n_stages, base_width, *channels, budget.device) > usable:
        divisor = 2 ** (n_stages - 1)
        axis = int(np.argmax(patch))
        if patch[axis] <= divisor:
            break
        patch[axis] -= divisor
        n_stages = network_depth(patch, 3)
        patch = round_patch(patch, n_stages)
    return patch, n_stages


# --------------------------------------------------------------------------- plan → config

#: The planned recipe's loss: Dice pooled over the batch (nnU-Net's batch Dice: most slices of an
#: imbalanced set are empty, and a per-slice soft Dice of an empty slice is ~1 whatever the network
#: does) plus BCE, weighted per deep-supervision scale.
PLANNED_LOSS = {"name": "dice_bce", "options": {"batch_dice": True}}
#: Augmentation of the planned recipe (applied to whole batches on the device, 2D).
PLANNED_AUGMENT = {"prob": 0.3, "rotate_deg": 20.0, "scale": 0.15, "flip": True}


def intensity_setting(normalization: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """``data.intensity`` for the plan's normalisation: ``zscore`` (per image) when every channel is
    ``zscore_per_image``, else one fixed window per channel (``ct``: clip + global z-score)."""
    schemes = [n.get("scheme") if isinstance(n, dict) else n for n in normalization]
    if all(s == "zscore_per_image" for s in schemes):
        return "zscore"
    if all(s == "ct" for s in schemes):
        return [{"clip": list(n["clip"]), "mean": n["mean"], "std": n["std"]} for n in normalization]
    raise ConfigError(
        f"normalization {schemes}: every channel must use one scheme, zscore_per_image or ct "
        "(the training path normalises all channels alike)"
    )


def plan_to_config(
    plan: Plan,
    output_dir: str | Path,
    minutes: float | None = None,
    device: str = "auto",
    seed: int = 0,
    data: dict[str, Any] | None = None,
) -> Config:
    """A training :class:`~medseg.config.Config` that carries out ``plan``.

    ``data`` (``source``, ``options``, ``split``) defaults to ``plan.data``. ``minutes`` (default:
    the plan's own budget) is the wall-clock budget of training, validation included: the
    ``budget`` schedule anneals the lr to its end value exactly when it is spent, and the run stops
    there. ``best.pt`` is the epoch with the highest moving average of the validation Dice.
    """
    data = dict(plan.data if data is None else data)
    if "source" not in data:
        raise ConfigError("the plan names no data source: give one (medseg plan --source NAME --root PATH)")
    intensity = intensity_setting(plan.normalization)
    options = dict(plan.model["options"])
    in_channels = int(options.pop("in_channels"))
    options.pop("spatial_dims", None)
    budget_seconds = plan.scheduler.get("budget_seconds") if minutes is None else 60.0 * minutes
    if budget_seconds is None:
        raise ConfigError("give the training minutes: the plan's scheduler has no budget_seconds")
    scheduler_options = {k: v for k, v in plan.scheduler.items() if k not in ("name", "budget_seconds")}
    optimizer = dict(plan.optimizer)
    dims = plan.spatial_dims
    tree: dict[str, Any] = {
        "data": {
            "source": data["source"],
            "options": dict(data.get("options", {})),
            "split": dict(data.get("split", {})),
            "in_channels": in_channels,
            "intensity": intensity,
            "spatial_dims": dims,
            **(
                {"image_size": list(plan.patch_size), "foreground_share": plan.foreground_share}
                if dims == 2
                else {
                    "patch_size": list(plan.patch_size),
                    "foreground_ratio": plan.foreground_share,
                    # every case cropped to its non-zero box and resampled to the planned spacing
                    "target_spacing": [float(s) for s in plan.target_spacing],
                    "crop_nonzero": True,
                }
            ),
        },
        "augment": dict(PLANNED_AUGMENT),
        # nnU-Net mirrors at test time too: +0.007 per-volume Dice on the LGG validation split
        "inference": {"tta_flips": True},
        "model": {"name": plan.model["name"], "options": options},
        "loss": dict(PLANNED_LOSS),
        "optim": {
            "name": optimizer.pop("name"),
            "lr": optimizer.pop("lr"),
            "weight_decay": optimizer.pop("weight_decay", 0.0),
            "options": optimizer,
            "scheduler": plan.scheduler.get("name", "budget"),
            "scheduler_options": scheduler_options,
        },
        "train": {
            "epochs": 100_000,  # an upper bound: the time budget ends the run
            "batch_size": plan.batch_size,
            "num_workers": "auto",
            "seed": seed,
            "device": device,
            "max_time_minutes": budget_seconds / 60.0,
            "val_every": "auto",
            "checkpoint_selection": "ema",
            "augment_on": "device" if dims == 2 else "sample",
        },
        "output_dir": str(output_dir),
    }
    return config_from_dict(copy.deepcopy(_deep_merge(Config().to_dict(), tree)))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("options",):
            merged[key] = _deep_merge(base[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- YAML


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as plain, editable YAML (keys in declaration order, ``reasons`` last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# medseg plan: edit any value; `reasons` explains each choice (medseg.plan).\n"
    path.write_text(header + yaml.safe_dump(plan.to_dict(), sort_keys=False, allow_unicode=True))
    return path


def load_plan(path: str | Path) -> Plan:
    """Read a plan written by :func:`write_plan` (possibly edited); bad files name themselves."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: plan file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan is a mapping of keys, got {type(data).__name__}")
    return Plan.from_dict(data, str(path))
