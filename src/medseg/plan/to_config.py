""":func:`plan_to_config`: the training :class:`~medseg.config.Config` that carries out a plan."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

from medseg.config import Config, config_from_dict
from medseg.errors import ConfigError
from medseg.plan.schema import Plan

#: Augmentation of the planned recipe (2D: whole batches on the device; 3D: per patch).
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


def mirror_flips(mirror_axes: list[int] | None) -> bool | list[list[int]]:
    """``inference.tta_flips`` for ``mirror_axes``: every combination of them (``True``: all axes)."""
    if mirror_axes is None:
        return True
    return [list(c) for r in range(1, len(mirror_axes) + 1) for c in itertools.combinations(mirror_axes, r)]


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
    flips = mirror_flips(plan.mirror_axes)
    augment = dict(PLANNED_AUGMENT)
    if dims == 3:
        # every mirrored axis at training time too (nnU-Net), so test-time mirroring sees no novelty
        augment["flip_axes"] = list(range(3)) if plan.mirror_axes is None else list(plan.mirror_axes)
    tree: dict[str, Any] = {
        "data": {
            "source": data["source"],
            "options": dict(data.get("options", {})),
            "split": dict(data.get("split", {})),
            "in_channels": in_channels,
            "intensity": intensity,
            "spatial_dims": dims,
            "num_classes": plan.num_classes,
            "label_names": plan.label_names,
            **(
                {"image_size": list(plan.patch_size), "foreground_share": plan.foreground_share}
                if dims == 2
                else {
                    "patch_size": list(plan.patch_size),
                    "foreground_ratio": plan.foreground_share,
                    # every case cropped to its non-zero box and resampled to the planned spacing
                    "target_spacing": [float(v) for v in plan.target_spacing],
                    "crop_nonzero": True,
                }
            ),
        },
        "augment": augment,
        # nnU-Net mirrors at test time too: +0.007 per-volume Dice on the LGG validation split
        "inference": {"tta_flips": flips},
        "model": {"name": plan.model["name"], "options": options},
        "loss": {"name": plan.loss["name"], "options": dict(plan.loss.get("options", {}))},
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
            "val_cases": plan.validation_cases,
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
