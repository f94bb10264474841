"""Inference: a model applied to samples or files, with masks written in the input's geometry.

2D models (``data.spatial_dims: 2``) see slices resized to ``data.image_size``; 3D models see whole
volumes at their own resolution, window by window (:class:`SlidingWindow`, from the config's
``inference`` section), and a written mask keeps the input's affine / origin and spacing.

Multi-class models (``data.num_classes`` = K ≥ 2, 3D path) have K softmax logit channels (the
first K, :func:`class_logits`); they predict the argmax label map, written with the label values
of the training data (``class_values`` in the checkpoint, e.g. 0/1/7/8/9) when known.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg import models
from medseg.config import Config, config_from_dict
from medseg.data.io import (
    IMAGE_2D_EXTS,
    ITK_EXTS,
    NIFTI_EXTS,
    file_format,
    read_image,
    strip_extension,
    write_image,
    write_volume,
)
from medseg.data.sample import Sample
from medseg.data.transforms import mask_key, normalize_intensity, preprocess_images, preprocess_transform
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import sliding_window_predict
from medseg.engine.output_paths import check_not_overwriting, output_bases
from medseg.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medseg.engine.uncertainty import UncertaintyOptions


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_num_classes(num_classes: object, spatial_dims: int) -> int | None:
    """``data.num_classes`` validated: ``None`` (binary) or an integer K ≥ 2 on the 3D path."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 256:
        raise ConfigError(
            f"data.num_classes must be null (binary) or an integer in [2, 256], got {num_classes!r}"
        )
    if spatial_dims != 3:
        raise ConfigError("data.num_classes (multi-class) needs the 3D path: set data.spatial_dims: 3")
    return num_classes


def build_model_from_config(cfg: Config, spatial_dims: int | None = None) -> torch.nn.Module:
    """Build ``cfg.model`` for ``cfg.data``; models that need ``img_size`` (ViTs) get the input size.

    ``spatial_dims`` defaults to ``cfg.data.spatial_dims``; it is passed only to factories that
    take it, and a model that reports other dimensions (``model.spatial_dims``) is an error.

    ``out_channels`` is ``data.num_classes`` when set (multi-class; the model then carries
    ``model.num_classes``), else 1; ``model.options.out_channels`` overrides it for a binary task
    whose model needs extra channels (a MONAI UNet trained with ``resunet_wbce``: mask and
    boundary). Res-UNet adds its boundary channel itself (``out_channels`` + 1 outputs).
    """
    spatial_dims = cfg.data.spatial_dims if spatial_dims is None else spatial_dims
    if spatial_dims not in (2, 3):
        raise ConfigError(f"data.spatial_dims must be 2 or 3, got {spatial_dims}")
    num_classes = check_num_classes(cfg.data.num_classes, spatial_dims)
    options = dict(cfg.model.options)
    out_channels = options.pop("out_channels", num_classes or 1)
    if num_classes is not None and out_channels != num_classes:
        raise ConfigError(
            f"model.options.out_channels ({out_channels}) differs from data.num_classes ({num_classes})"
        )
    factory = models.MODELS.get(cfg.model.name)
    parameters = inspect.signature(factory).parameters
    if "img_size" in parameters and "img_size" not in options:
        size = [int(v) for v in cfg.data.image_size]
        options["img_size"] = size[0] if len(set(size)) == 1 else tuple(size)
    if "spatial_dims" in parameters:
        options["spatial_dims"] = spatial_dims
    model = models.build(
        cfg.model.name, in_channels=cfg.data.in_channels, out_channels=out_channels, **options
    )
    built_dims = getattr(model, "spatial_dims", spatial_dims)
    if built_dims != spatial_dims:
        raise ConfigError(
            f"model '{cfg.model.name}' is {built_dims}D but data.spatial_dims is {spatial_dims}; "
            f"set data.spatial_dims: {built_dims}"
        )
    if num_classes is not None:
        model.num_classes = num_classes
    return model


def model_num_classes(model: torch.nn.Module) -> int | None:
    """K of a multi-class model (``model.num_classes``, set from ``data.num_classes``); None = binary."""
    k = getattr(model, "num_classes", None)
    return int(k) if isinstance(k, int) and not isinstance(k, bool) and k >= 2 else None


def class_logits(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``B×K×spatial`` class logits of a multi-class model: its first K channels."""
    if logits.shape[1] < num_classes:
        raise ValueError(f"{num_classes} classes but the model gives {logits.shape[1]} logit channel(s)")
    return logits[:, :num_classes]


def mask_channel(model: torch.nn.Module) -> int:
    """The logit channel that holds the foreground mask: ``model.mask_channel``, else 0.

    Models with extra outputs (Res-UNet's instance boundary, channel 1) keep the mask in channel
    0; the loss sees every channel, validation Dice, evaluation and prediction this one only.
    """
    return int(getattr(model, "mask_channel", 0))


def mask_logits(logits: torch.Tensor, model: torch.nn.Module) -> torch.Tensor:
    """``B×1×spatial`` foreground logits out of ``B×K×spatial`` model logits."""
    channel = mask_channel(model)
    if not 0 <= channel < logits.shape[1]:
        raise ValueError(f"mask channel {channel} is outside the model's {logits.shape[1]} logit channel(s)")
    return logits[:, channel : channel + 1]


@dataclass(frozen=True)
class SlidingWindow:
    """How a 3D model meets a whole volume (:func:`~medseg.engine.inference.sliding_window_predict`)."""

    roi_size: tuple[int, ...]
    overlap: float = 0.5
    mode: str = "gaussian"
    sw_batch_size: int = 1
    tta_flips: bool = False
    stitch_device: str | None = None


def sliding_window_from_config(cfg: Config) -> SlidingWindow | None:
    """The sliding window of a 3D config (``inference.roi_size`` or ``data.patch_size``); ``None`` in 2D."""
    if cfg.data.spatial_dims != 3:
        return None
    roi = cfg.inference.roi_size or cfg.data.patch_size
    if roi is None or len(roi) != 3:
        raise ConfigError(
            f"3D inference needs a D×H×W window: set data.patch_size (or inference.roi_size), got {roi}"
        )
    icfg = cfg.inference
    return SlidingWindow(
        roi_size=tuple(int(r) for r in roi),
        overlap=float(icfg.sw_overlap),
        mode=icfg.sw_mode,
        sw_batch_size=int(icfg.sw_batch_size),
        tta_flips=bool(icfg.tta_flips),
        stitch_device=icfg.stitch_device,
    )


def volume_logits(
    model: torch.nn.Module, image: torch.Tensor, window: SlidingWindow, device: torch.device
) -> torch.Tensor:
    """All logit channels of ``image`` (``B×C×D×H×W``, already normalised) by sliding window.

    The windows run on ``device``; the output is on ``window.stitch_device`` (default: the image's
    device).
    """
    return sliding_window_predict(
        model,
        image,
        window.roi_size,
        overlap=window.overlap,
        mode=window.mode,
        sw_batch_size=window.sw_batch_size,
        tta_flips=window.tta_flips,
        device=device,
        stitch_device=window.stitch_device,
    )


@torch.no_grad()
def predict_volume_probabilities(
    model: torch.nn.Module, sample: Sample, intensity: str, device: torch.device, window: SlidingWindow
) -> np.ndarray:
    """Foreground probability ``D×H×W`` of a 3D model on a whole volume at its own resolution.

    The volume is normalised as :class:`~medseg.data.volumes.VolumeDataset` does in training, then
    predicted window by window (a volume smaller than the window is padded and cropped back).
    """
    logits = mask_logits(_sample_volume_logits(model, sample, intensity, device, window), model)
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()


def _sample_volume_logits(
    model: torch.nn.Module, sample: Sample, intensity: str, device: torch.device, window: SlidingWindow
) -> torch.Tensor:
    """All logit channels of a whole volume: normalised as in training, then by sliding window."""
    if sample.ndim != 3:
        raise DataError(
            f"a 3D model needs a C×D×H×W volume, got image shape {sample.image.shape}",
            sample.source_path or sample.case_id,
        )
    model.eval()
    image = torch.from_numpy(normalize_intensity(sample.image, intensity))[None]
    image = image.to(window.stitch_device or device)  # the output is stitched where the image is
    return volume_logits(model, image, window, device)


@torch.no_grad()
def predict_volume_classes(
    model: torch.nn.Module,
    sample: Sample,
    intensity: str,
    device: torch.device,
    window: SlidingWindow,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class indices ``D×H×W`` (uint8) and the foreground probability 1 − p(class 0).

    The multi-class twin of :func:`predict_volume_probabilities` (same normalisation and sliding
    window); the softmax runs over the model's first ``num_classes`` channels.
    """
    logits = _sample_volume_logits(model, sample, intensity, device, window)
    logits = class_logits(logits, num_classes).float()
    labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
    foreground = 1.0 - torch.softmax(logits, dim=1)[0, 0].cpu().numpy()
    return labels, foreground


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """Rebuild the model from the config stored in a medseg checkpoint and load its weights."""
    return model_from_state(load_checkpoint(checkpoint), device)


def model_from_state(
    state: dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, Config]:
    """The model of a loaded checkpoint ``state`` (its config and weights), in eval mode."""
    cfg = config_from_dict(state["config"])
    # the checkpoint holds the trained weights: don't read the pretraining file again
    cfg.model.options = {k: v for k, v in cfg.model.options.items() if k not in ("pretrained", "checkpoint")}
    model = build_model_from_config(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


@torch.no_grad()
def predict_probabilities(
    model: torch.nn.Module,
    sample: Sample,
    image_size: Sequence[int],
    intensity: str,
    device: torch.device,
    batch_size: int = 16,
    window: SlidingWindow | None = None,
) -> np.ndarray:
    """Foreground probability at the sample's own spatial shape.

    With a ``window`` (a 3D model) the volume is predicted whole by sliding window
    (:func:`predict_volume_probabilities`; ``image_size`` is unused). Otherwise 3D volumes go slice
    by slice: each slice gets the same preprocessing as in training (normalise, resize to
    ``image_size``) and the probabilities are resized back bilinearly, so metrics are computed at
    the original resolution and spacing.
    """
    if window is not None:
        return predict_volume_probabilities(model, sample, intensity, device, window)
    model.eval()
    slices = sample.slices() if sample.ndim == 3 else [sample]
    promptable = getattr(model, "promptable", False)
    if promptable:
        # box prompts from the ground truth (the evaluation protocol of MedSAM-style models), made
        # in the model's input pixels from the mask resized like the image, without jitter
        from medseg.data.prompts import PromptSampler

        key = mask_key(sample.target)
        preprocess = preprocess_transform([sample.target], image_size, intensity)
        prepared = [
            preprocess({"image": s.image, key: s.target_mask[None].astype(np.float32)}) for s in slices
        ]
        inputs = torch.stack([torch.as_tensor(np.asarray(p["image"])) for p in prepared])
        targets = torch.stack([torch.as_tensor(np.asarray(p[key])) for p in prepared])
        sampler = PromptSampler(0)
    else:
        inputs = preprocess_images([s.image for s in slices], image_size, intensity)
    out_shape = slices[0].spatial_shape
    probs = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size].to(device=device, dtype=torch.float32)
        if promptable:
            target = targets[start : start + batch_size].to(device=device, dtype=torch.float32)
            logits = model(chunk, sampler.boxes(target, jitter=False))
            # an empty ground-truth slice has no object to prompt: it is predicted empty
            empty = target.flatten(1).amax(1) < 0.5
            logits = torch.where(empty[:, None, None, None], torch.full_like(logits, -1e4), logits)
        else:
            logits = model(chunk)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        prob = torch.sigmoid(logits.float())
        prob = F.interpolate(prob, size=out_shape, mode="bilinear", align_corners=False)
        probs.append(prob[:, 0].cpu().numpy())
    stacked = np.concatenate(probs, axis=0)
    return stacked if sample.ndim == 3 else stacked[0]


def image_to_channels_first(
    array: np.ndarray, in_channels: int, path: str | Path, is_volume: bool
) -> np.ndarray:
    """Arrange a file's array as ``C×spatial`` with ``in_channels`` channels (RGB → grey if 1)."""
    array = np.asarray(array, dtype=np.float32)
    if is_volume:
        if array.ndim != 3:
            raise DataError(f"expected a 3D volume, got shape {array.shape}", path)
        image = array[None]
    elif array.ndim == 2:
        image = array[None]
    elif array.ndim == 3 and array.shape[-1] in (3, 4):
        image = np.moveaxis(array[..., :3], -1, 0)
    else:
        raise DataError(f"cannot interpret image of shape {array.shape}", path)
    if image.shape[0] == in_channels:
        return image
    if in_channels == 1 and image.shape[0] == 3:
        return image.mean(axis=0, keepdims=True)
    if in_channels == 3 and image.shape[0] == 1:
        return np.repeat(image, 3, axis=0)
    raise DataError(f"image has {image.shape[0]} channels, the model expects {in_channels}", path)


@dataclass
class PredictedFile:
    input: Path
    mask: Path
    probabilities: Path | None
    overlay: Path | None
    uncertainty: dict[str, Path] | None = None  # map name → file (--uncertainty)


def predict_files(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    save_probabilities: bool = False,
    save_overlays: bool = False,
    device: str = "auto",
    threshold: float | None = None,
    uncertainty: UncertaintyOptions | None = None,
    backend: str = "auto",
    overwrite: bool = False,
) -> list[PredictedFile]:
    """Segment image files or volumes; masks keep the input geometry (NIfTI affine preserved).

    No output overwrites another (:mod:`medseg.engine.output_paths`: inputs sharing a name keep
    their relative folders), and an existing output is an error unless ``overwrite``.

    ``uncertainty`` samples the prediction (TTA / MC-dropout, :mod:`medseg.engine.uncertainty`):
    the mask comes from the merged probability, and ``_prob``, ``_entropy``, ``_expected_entropy``
    and ``_mi`` maps are written next to it.

    A multi-class model writes its argmax label map in the training labels' values (class index →
    ``class_values`` of the checkpoint; class indices when it has none) and, with
    ``save_probabilities``, the foreground probability 1 − p(background); ``threshold`` is unused.

    ``checkpoint`` may be an ONNX export (``backend`` ``onnxruntime``, or ``auto`` for a ``.onnx``
    file, :func:`medseg.export.runtime.load_predictor`): the same pre- and post-processing apply.
    """
    from medseg.export.runtime import load_predictor
    from medseg.report.figures import save_overlay  # figures import matplotlib; keep it lazy

    torch_device = resolve_device(device)
    model, cfg, state = load_predictor(checkpoint, torch_device, backend)
    window = sliding_window_from_config(cfg)
    thr = cfg.eval.threshold if threshold is None else threshold
    num_classes = model_num_classes(model)
    class_values = state.get("class_values")  # class index → label value (multi-class)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = _expand_inputs(inputs)
    if not paths:
        raise DataError("no input images found", ", ".join(str(p) for p in inputs))
    bases = output_bases(paths)
    planned = [
        out / f"{base}_{kind}{_output_extension(path, kind)}"
        for path, base in bases.items()
        for kind, wanted in (("mask", True), ("prob", save_probabilities), ("overlay", save_overlays))
        if wanted
    ]
    check_not_overwriting(planned, overwrite)
    results = []
    for path, base in bases.items():
        array, spacing, meta = read_image(path)
        header_format = file_format(path) != "2d"
        volume = header_format and array.ndim == 3  # a 2D NIfTI/NRRD/MHA is a 2D image
        if window is not None and not volume:
            raise DataError("a 3D model predicts NIfTI/NRRD/MHA volumes, not 2D images", path)
        image = image_to_channels_first(array, cfg.data.in_channels, path, volume)
        spatial = image.shape[1:]
        spacing = tuple(spacing) if spacing is not None else (1.0,) * len(spatial)
        sample = Sample(
            image=image,
            masks={},
            target="expert",
            spacing=spacing,
            case_id=strip_extension(path.name),
            source_path=str(path),
        )
        maps = None
        if uncertainty is not None:
            from medseg.engine.uncertainty import predict_sample_uncertainty

            mask, probs, maps = predict_sample_uncertainty(
                model, sample, cfg, torch_device, window, uncertainty, thr, class_values
            )
        elif num_classes is not None and window is not None:
            classes, probs = predict_volume_classes(
                model, sample, cfg.data.intensity, torch_device, window, num_classes
            )
            mask = class_index_to_value(classes, class_values)
        else:
            probs = predict_probabilities(
                model, sample, cfg.data.image_size, cfg.data.intensity, torch_device, window=window
            )
            mask = (probs >= thr).astype(np.uint8)
        stem = strip_extension(path.name)
        where = out / base.parent
        where.mkdir(parents=True, exist_ok=True)
        prob_path = overlay_path = None
        mask_path = out / f"{base}_mask{_output_extension(path, 'mask')}"
        if header_format:
            write_volume(mask_path, mask, meta)
            if save_probabilities:
                prob_path = out / f"{base}_prob{_output_extension(path, 'prob')}"
                write_volume(prob_path, probs.astype(np.float32), meta)
        else:
            write_image(mask_path, mask * 255)
            if save_probabilities:
                prob_path = out / f"{base}_prob.npy"
                np.save(prob_path, probs.astype(np.float32))
        map_paths = None
        if maps is not None:
            from medseg.engine.uncertainty import write_uncertainty_maps

            map_paths = write_uncertainty_maps(maps, where, base.name, path.name[len(stem) :], meta)
            prob_path = map_paths["probability"]
        if save_overlays:
            overlay_path = out / f"{base}_overlay.png"
            shown = mask if num_classes is None else (mask != 0).astype(np.uint8)
            save_overlay(image, None, shown, overlay_path, spacing=spacing, title=stem)
        results.append(PredictedFile(path, mask_path, prob_path, overlay_path, map_paths))
    return results


def _output_extension(path: Path, kind: str) -> str:
    """Extension of a ``predict`` output: the input's own for header formats, else PNG / npy."""
    if kind == "overlay":
        return ".png"
    if file_format(path) != "2d":
        return path.name[len(strip_extension(path.name)) :]
    return ".png" if kind == "mask" else ".npy"


def class_index_to_value(classes: np.ndarray, class_values: Sequence[int] | None) -> np.ndarray:
    """Class indices → label values (``class_values[i]`` for class i); as they are when unknown.

    The result is uint8 when every value fits, else int16/int32.
    """
    if class_values is None:
        return classes.astype(np.uint8)
    lut = np.asarray(class_values, dtype=np.int64)
    if int(classes.max(initial=0)) >= lut.size:
        raise ValueError(
            f"class index {int(classes.max())} has no value in class_values {list(class_values)}"
        )
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lut.min() and lut.max() <= info.max:
            return lut.astype(dtype)[classes]
    raise ValueError(f"class_values {list(class_values)} do not fit int32")


IMAGE_SUFFIXES = IMAGE_2D_EXTS + NIFTI_EXTS + ITK_EXTS


def _expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)))
        elif path.exists():
            paths.append(path)
        else:
            raise DataError("input file not found", path)
    return paths
