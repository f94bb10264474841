"""The :class:`Plan` (plain, editable YAML) and its reading and writing."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import ConfigError
from medseg.io_utils import atomic_write

NORMALIZATION_SCHEMES = ("ct", "zscore_per_image")


@dataclass
class Plan:
    """Everything a training run needs to start; ``reasons`` says why each value was chosen.

    The fields after ``estimated_memory_bytes`` have defaults, so a plan written before they
    existed still loads (binary task, every axis mirrored, every validation case).
    """

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
    # K of a multi-class task (softmax over K channels), null for a binary one (one sigmoid channel)
    num_classes: int | None = None
    # names of classes 0..K-1, background first, and each class index's label value in the files
    label_names: list[str] | None = None
    class_values: list[int] | None = None
    loss: dict[str, Any] = field(
        default_factory=lambda: {"name": "dice_bce", "options": {"batch_dice": True}}
    )
    # spatial axes mirrored by training augmentation (3D) and test-time mirroring; null = all
    mirror_axes: list[int] | None = None
    # validation volumes scored during training (a fixed subset, for the checkpoint choice); null = all
    validation_cases: int | None = None
    # 2D vs 3D trial: the validation Dice each reached in the same short budget, when one was run
    dims_trial: dict[str, float] | None = None
    reasons: dict[str, str] = field(default_factory=dict)
    # where the data come from (``source``, ``options``, ``split``): what `medseg train --plan` reads
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> Plan:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        unknown, missing = set(data) - names, required - set(data)
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
        k = self.num_classes
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 256):
            problems.append(f"num_classes must be null or an integer in [2, 256], got {k!r}")
        for key in ("label_names", "class_values"):
            value = getattr(self, key)
            if value is not None and k is not None and len(value) != k:
                problems.append(f"{key} needs one entry per class ({k}), got {value!r}")
        axes = self.mirror_axes
        if axes is not None and (
            not isinstance(axes, list)
            or any(not isinstance(a, int) or not 0 <= a < self.spatial_dims for a in axes)
        ):
            problems.append(f"mirror_axes must list spatial axes 0..{self.spatial_dims - 1}, got {axes!r}")
        cases = self.validation_cases
        if cases is not None and (isinstance(cases, bool) or not isinstance(cases, int) or cases < 1):
            problems.append(f"validation_cases must be null or a positive integer, got {cases!r}")
        if not isinstance(self.loss, dict) or "name" not in self.loss:
            problems.append(f"loss must be a mapping with a name, got {self.loss!r}")
        if problems:
            raise ConfigError(prefix + "; ".join(problems))


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as plain, editable YAML (keys in declaration order, ``reasons`` last but one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# medseg plan: edit any value; `reasons` explains each choice (medseg.plan).\n"
    with atomic_write(path) as handle:
        handle.write(header + yaml.safe_dump(plan.to_dict(), sort_keys=False, allow_unicode=True))
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
