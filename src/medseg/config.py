"""Typed experiment configuration: dataclasses, YAML files and ``--set key=value`` overrides.

The defaults are the built-in demo (the phantom in the micro-US layout, a small 2D U-Net); a YAML
file only states what differs. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import ConfigError
from medseg.io_utils import read_yaml_mapping, write_text_atomic


@dataclass
class SplitConfig:
    """Patient-level split of the training source into train/validation."""

    method: str = "holdout"  # "holdout" | "kfold"
    val_fraction: float = 0.2
    k_folds: int = 5
    fold: int = 0
    seed: int = 0
    train_cases: list[str] | None = None  # explicit lists override the method
    val_cases: list[str] | None = None


@dataclass
class DataConfig:
    """Where the data comes from and how it is shaped for the network."""

    source: str = "phantom"
    options: dict[str, Any] = field(default_factory=lambda: {"n_patients": 10, "seed": 0})
    target: str | None = None  # annotator used as training target (source default if None)
    test_source: str | None = None  # e.g. "microus" with options {"subset": "test"}
    test_options: dict[str, Any] = field(default_factory=dict)
    image_size: list[int] = field(default_factory=lambda: [96, 96])
    in_channels: int = 1
    # "zscore" | "minmax" | "none" (per image), or one fixed window per channel,
    # [{clip: [low, high], mean: m, std: s}, ...] (CT; what `medseg plan` writes for CT data)
    intensity: str | list[dict[str, Any]] = "zscore"
    split: SplitConfig = field(default_factory=SplitConfig)
    # 2: slices/images resized to image_size (the default); 3: whole volumes at their own
    # resolution, trained on patches and predicted by sliding window (medseg.data.volumes)
    spatial_dims: int = 2
    patch_size: list[int] | None = None  # 3D training patch D×H×W (required when spatial_dims is 3)
    foreground_ratio: float = 0.5  # probability that a 3D patch is centred on a foreground voxel
    # 2D: share of every training batch drawn among the slices with foreground (nnU-Net: 1/3);
    # null = a plain permutation of the slices (the paper recipes)
    foreground_share: float | None = None
    samples_per_volume: int = 4  # 3D patches drawn from each training volume per epoch
    # z spacing above this multiple of the in-plane spacing makes a volume anisotropic: its 3D
    # augmentation then rotates and scales in-plane only (no out-of-plane rotation, no z scaling)
    anisotropy_ratio: float = 2.0
    # null: binary segmentation (one sigmoid logit channel). K ≥ 2: multi-class (2D or 3D): K
    # softmax logit channels (the model's out_channels), masks are class indices 0..K-1 (e.g. the
    # folder source's `labels` option gives K = len(labels) + 1), losses `ce` / `dice`
    num_classes: int | None = None
    # promptable models (medsam, litemedsam): each side of a training box moves outward by a
    # random 0..box_shift px; None = MedSAM's 20 px at 1024, scaled (5 px at 256)
    box_shift: int | None = None
    # names of classes 0..K-1 (background first) and DICOM-SEG segments ({label, name, category,
    # type}; medseg.data.dicom_seg.segment_specs) for `medseg predict --format dicom-seg`
    label_names: list[str] | None = None
    segments: list[dict[str, Any]] | None = None
    # mm per spatial axis in array order ([sz, sy, sx]; two values [sy, sx]: in-plane only) that
    # every case is resampled to before training, and that prediction resamples each input to
    # before mapping its mask back onto the input's grid (medseg.data.resample); null = as stored
    target_spacing: list[float] | None = None
    # crop every case to the bounding box of its non-zero voxels before training (nnU-Net); the
    # prediction is pasted back into the full input (background outside the box)
    crop_nonzero: bool = False


@dataclass
class AugmentConfig:
    """Random augmentation (paper 004 §6: rotation 15°, scale 0.05), via MONAI transforms."""

    enabled: bool = True
    prob: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.05
    flip: bool = True
    # spatial axes mirrored (each with probability prob) when flip is on; null = the last axis (x)
    flip_axes: list[int] | None = None
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1


@dataclass
class ModelConfig:
    name: str = "unet"
    options: dict[str, Any] = field(default_factory=lambda: {"features": [16, 32, 64, 128]})


@dataclass
class LossConfig:
    name: str = "dice_bce"
    options: dict[str, Any] = field(default_factory=dict)
    deep_supervision_weights: list[float] | None = None


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    options: dict[str, Any] = field(default_factory=dict)
    scheduler: str = "poly"
    scheduler_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16
    num_workers: int | str = 0  # or "auto": 0 on the CPU, min(8, CPUs − 1) on CUDA
    seed: int = 0
    deterministic: bool = True
    amp: bool = True  # used on CUDA only
    grad_clip: float | None = 12.0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1"
    # stop after the epoch that crosses this budget; with optim.scheduler "budget" the lr anneals
    # to its end value exactly when it is spent and training stops there (mid-epoch if need be)
    max_time_minutes: float | None = None
    val_every: int | str = 1  # every k-th epoch, or "auto" (≤ 10 % of the time); the last always
    # validation cases scored during training (a fixed subset spread over the sorted case ids, so
    # a pass fits its share of a budget); null = all. Evaluation afterwards scores every case.
    val_cases: int | None = None
    # which validated epoch is best.pt: "best" (highest val Dice), "ema" (highest moving average
    # of the val Dice, decay ema_decay), "last" (the latest: the annealed end of a budget run)
    checkpoint_selection: str = "best"
    ema_decay: float = 0.9
    # "sample": MONAI transforms per item in the DataLoader; "device": cached 2D batches augmented
    # on the model's device with tensor ops (medseg.engine.batches)
    augment_on: str = "sample"
    channels_last: bool = False  # 2D: NHWC activations (faster convolutions on some devices)
    tensorboard: bool = True
    progress: bool = True
    # batch_size is the GLOBAL batch of one optimiser step: under torchrun each of W processes
    # runs micro-batches of batch_size / (W × accumulate_steps) (medseg.engine.distributed)
    accumulate_steps: int = 1
    dtype: str = "float32"  # "float32" | "float64" (float64: exact reproducibility checks)
    find_unused_parameters: bool = False  # DDP: only for models whose loss leaves parameters unused
    sync_batchnorm: bool = False  # DDP on CUDA: BatchNorm statistics over the global batch


@dataclass
class EvalConfig:
    hd95_mode: str = "pooled"  # "pooled" (medpy, the papers) | "max" (MONAI)
    nsd_tolerance_mm: float = 1.0
    threshold: float = 0.5
    n_overlays: int = 6
    # "volumetric" (3D per patient, header spacing; always computed) and/or "microsegnet"
    # (the official MicroSegNet test script, see medseg.metrics.protocols)
    protocols: list[str] = field(default_factory=lambda: ["volumetric"])
    # pixel size the microsegnet protocol multiplies HD95 (pixels) by: the official script's
    # 0.033586 mm for real micro-US; null = the in-plane spacing from the image header
    microsegnet_pixel_mm: float | None = 0.033586


@dataclass
class InferenceConfig:
    """Sliding-window inference of 3D models (validation, evaluation, prediction).

    MONAI's own defaults (constant blending, overlap 0.25) leave seams between windows; a
    Gaussian weight with overlap 0.5 does not.
    """

    roi_size: list[int] | None = None  # window D×H×W; null = data.patch_size
    sw_overlap: float = 0.5
    sw_mode: str = "gaussian"  # "gaussian" | "constant"
    sw_batch_size: int = 1
    # average the predictions of the mirrored inputs (2D and 3D): true = every combination of
    # axes; or a list of the flips to add, as spatial axes (e.g. [[2], [1, 2]]; the identity is implied)
    tta_flips: bool | list[list[int]] = False
    stitch_device: str | None = None  # e.g. "cpu" when the whole volume does not fit the GPU
    # spatial axes the uncertainty flip TTA may mirror (medseg.engine.uncertainty): null = all
    # axes of the model input (2D: H, W; 3D: D, H, W); e.g. [1, 2] = in-plane only for a 3D model
    tta_axes: list[int] | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output_dir: str = "runs/experiment"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_num_classes(num_classes: object) -> int | None:
    """``data.num_classes`` validated: ``None`` (binary) or an integer K ≥ 2 (2D or 3D path)."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 256:
        raise ConfigError(
            f"data.num_classes must be null (binary) or an integer in [2, 256], got {num_classes!r}"
        )
    return num_classes


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or 'config'}; valid keys: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        sub = known[name].default_factory if known[name].default_factory is not dataclasses.MISSING else None
        key = f"{where}.{name}".strip(".")
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[name] = _from_dict(sub, value, key)  # type: ignore[arg-type]
        else:
            kwargs[name] = _check_choice(key, _coerce(key, value, hints[name]))
    return cls(**kwargs)


def check_intensity_windows(windows: Sequence[Mapping[str, Any]]) -> None:
    """A :class:`ValueError` naming the first channel window that is not ``{clip: [lo, hi], mean, std}``."""
    if not windows:
        raise ValueError("intensity windows: give one {clip: [low, high], mean, std} per channel")
    for c, window in enumerate(windows):
        if not isinstance(window, Mapping) or set(window) != {"clip", "mean", "std"}:
            raise ValueError(f"intensity window of channel {c}: keys must be clip, mean, std: {window!r}")
        clip = window["clip"]
        if not isinstance(clip, (list, tuple)) or len(clip) != 2 or not float(clip[0]) <= float(clip[1]):
            raise ValueError(f"intensity window of channel {c}: clip must be [low, high], got {clip!r}")
        if not float(window["std"]) > 0 or not math.isfinite(float(window["mean"])):
            raise ValueError(f"intensity window of channel {c}: needs a finite mean, std > 0: {window!r}")


#: config keys whose value is one of a fixed set (enums); registry names: medseg.config_validation
CHOICES: dict[str, tuple[Any, ...]] = {
    "data.intensity": ("zscore", "minmax", "none"),
    "data.spatial_dims": (2, 3),
    "data.split.method": ("holdout", "kfold"),
    "train.dtype": ("float32", "float64"),
    "train.checkpoint_selection": ("best", "ema", "last"),
    "train.augment_on": ("sample", "device"),
    "eval.hd95_mode": ("pooled", "max"),
    "eval.protocols": ("volumetric", "microsegnet"),
    "inference.sw_mode": ("gaussian", "constant"),
}

_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _bad(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key {key} = {value!r}: expected {expected}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the dataclass field's type ``hint`` (and converted where lossless)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0]) if len(inner) == 1 else value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _bad(key, value, f"a list of {_EXPECTED.get(args[0], 'values')}" if args else "a list")
        return [_coerce(f"{key}[{i}]", v, args[0] if args else Any) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(key, value, "a mapping of options (key: value)")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(key, value, _EXPECTED[bool])
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, value, _EXPECTED[int])
        return value
    if hint is float:
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return float(value)  # `lr: 1e-3` in a YAML file (YAML 1.1 reads it as a string)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(key, value, _EXPECTED[float])
        return float(value)
    if hint is str and not isinstance(value, str):
        raise _bad(key, value, _EXPECTED[str])
    return value


def _check_choice(key: str, value: Any) -> Any:
    if key == "data.intensity" and isinstance(value, list):
        try:
            check_intensity_windows(value)
        except ValueError as err:
            raise ConfigError(f"config key {key}: {err}") from None
        return value
    choices = CHOICES.get(key)
    if choices is None or value is None:
        return value
    for item in value if isinstance(value, list) else [value]:
        if item not in choices:
            raise ConfigError(f"config key {key} = {item!r}: expected one of {', '.join(map(str, choices))}")
    return value


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a :class:`Config` from a nested dict; unknown keys raise :class:`ConfigError`."""
    return _from_dict(Config, values, "")


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if key not in node or not isinstance(node[key], dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def parse_override(override: str) -> tuple[str, Any]:
    """``"train.epochs=5"`` → ``("train.epochs", 5)``; the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form key=value")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{override}' has an empty key")
    if raw.strip().lower() == "none":  # YAML spells it null; accept the Python spelling too
        return key, None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:  # not YAML (a glob such as *_img.nii.gz): the text as it is
        value = raw.strip()
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file ← ``--set`` overrides, validated into a :class:`Config`."""
    tree = Config().to_dict()
    if path is not None:
        _merge(tree, read_yaml_mapping(path, "config file"))
    for override in overrides or []:
        key, value = parse_override(override)
        _set_path(tree, key, value)
    return config_from_dict(tree)


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """A new :class:`Config` with ``key=value`` overrides applied (validated like ``--set``)."""
    tree = config.to_dict()
    for override in overrides:
        key, value = parse_override(override)
        _set_path(tree, key, value)
    return config_from_dict(tree)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in ("options",):
            _merge(base[key], value)
        else:
            base[key] = value


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as YAML, atomically."""
    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_diff(config: Config, reference: Config | None = None) -> dict[str, Any]:
    """Flat ``{dotted.key: value}`` of the entries that differ from ``reference`` (the defaults)."""
    ref = flatten_config((reference or Config()).to_dict())
    cur = flatten_config(config.to_dict())
    return {k: v for k, v in cur.items() if ref.get(k, object()) != v}


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; ``options`` mappings stay whole (they are replaced whole)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key not in ("options", "test_options"):
            out.update(flatten_config(value, dotted + "."))
        else:
            out[dotted] = value
    return out
