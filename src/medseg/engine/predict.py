"""Prediction: a model applied to samples or files, with masks written in the input's geometry.

2D models (``data.spatial_dims: 2``) see slices resized to ``data.image_size``; 3D models see
whole volumes at their own resolution, window by window
(:class:`~medseg.engine.inference.SlidingWindow`, from the config's ``inference`` section), and a
written mask keeps the input's affine / origin and spacing. A config with ``data.target_spacing``
or ``data.crop_nonzero`` crops and resamples each input like its training data and maps the
prediction back onto the input's exact grid (:mod:`medseg.engine.model_grid`).

Multi-class models (``data.num_classes`` = K ≥ 2, 2D or 3D) have K softmax logit channels (the
first K, :func:`~medseg.engine.inference.class_logits`); they predict the argmax label map
(:mod:`medseg.engine.multiclass`), written with the label values of the training data
(``class_values`` in the checkpoint, e.g. 0/1/7/8/9) when known, a PNG as those values. The
building blocks are :mod:`medseg.engine.inference`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.data.dicom import is_dicom_series_dir
from medseg.data.dicom_seg import check_output_format, checkpoint_algorithm, write_prediction
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
from medseg.data.prompts import PromptSampler
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, mask_key, preprocess_images, preprocess_transform
from medseg.engine.inference import (
    SlidingWindow,
    class_index_to_value,
    flip_axes,
    predict_volume_probabilities,
    resolve_device,
    sliding_window_from_config,
)
from medseg.engine.model_grid import on_model_grid, uncertainty_on_input, values_on_input
from medseg.engine.multiclass import predict_classes
from medseg.engine.output_paths import (
    MEASUREMENTS_FILE,
    append_measurements,
    check_not_overwriting,
    output_bases,
)
from medseg.engine.postprocess import postprocess_labels, stored_postprocessing
from medseg.engine.uncertainty import UncertaintyOptions, predict_sample_uncertainty, write_uncertainty_maps
from medseg.errors import DataError
from medseg.export.runtime import load_predictor
from medseg.io_utils import atomic_write
from medseg.metrics.measurements import measurement_rows
from medseg.models import SegmentationModel
from medseg.output_dirs import make_dir
from medseg.report.figures import save_overlay


@torch.no_grad()
def predict_probabilities(
    model: SegmentationModel,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    batch_size: int = 16,
    window: SlidingWindow | None = None,
    tta_flips: bool = False,
) -> np.ndarray:
    """Foreground probability at the sample's own spatial shape.

    With a ``window`` (a 3D model) the volume is predicted whole by sliding window
    (:func:`predict_volume_probabilities`; ``image_size`` is unused; its own ``tta_flips``
    applies). Otherwise 3D volumes go slice by slice: each slice gets the same preprocessing as in
    training (normalise, resize to ``image_size``) and the probabilities are resized back
    bilinearly, so metrics are computed at the original resolution and spacing. ``tta_flips``
    averages the probabilities of the four mirrored inputs (identity, left-right, up-down, both:
    nnU-Net's test-time mirroring); a promptable model is predicted once (its box prompt would
    have to be mirrored too).
    """
    if window is not None:
        return predict_volume_probabilities(model, sample, intensity, device, window)
    model.eval()
    slices = sample.slices() if sample.ndim == 3 else [sample]
    promptable = model.promptable
    if promptable:
        # box prompts from the ground truth (the evaluation protocol of MedSAM-style models), made
        # in the model's input pixels from the mask resized like the image, without jitter
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
    flips = flip_axes(tta_flips, 2)  # a promptable model is predicted once
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size].to(device=device, dtype=torch.float32)
        if promptable:
            target = targets[start : start + batch_size].to(device=device, dtype=torch.float32)
            logits = _main_logits(model(chunk, sampler.boxes(target, jitter=False)))
            # an empty ground-truth slice has no object to prompt: it is predicted empty
            empty = target.flatten(1).amax(1) < 0.5
            logits = torch.where(empty[:, None, None, None], torch.full_like(logits, -1e4), logits)
            prob = torch.sigmoid(logits.float())
        else:
            # each mirrored prediction is mirrored back before averaging
            prob = torch.stack(
                [torch.sigmoid(_main_logits(model(chunk.flip(dims))).float()).flip(dims) for dims in flips]
            ).mean(0)
        prob = F.interpolate(prob, size=out_shape, mode="bilinear", align_corners=False)
        probs.append(prob[:, 0].cpu().numpy())
    stacked = np.concatenate(probs, axis=0)
    return stacked if sample.ndim == 3 else stacked[0]


def _main_logits(logits: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The full-resolution output of a model that may return a deep-supervision list."""
    return logits[0] if isinstance(logits, (list, tuple)) else logits


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
    output_format: str = "auto",
    postprocess: bool = True,
    tta_flips: bool | None = None,
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

    A DICOM series (a folder of slices, :mod:`medseg.data.dicom`) gets its mask as NIfTI on the
    series' grid, or, with ``output_format="dicom-seg"``, as a DICOM Segmentation that references
    the series (:mod:`medseg.data.dicom_seg`; segment names from ``data.label_names`` /
    ``data.segments``, else the training data's ``label_names`` the checkpoint carries; the SEG
    records the model name, the checkpoint's SHA-256 and medseg's version). ``measurements.csv``
    next to the masks has each mask's volume (mL) or area (mm²), longest in-plane diameter and
    component count (:mod:`medseg.metrics.measurements`).

    The checkpoint's postprocessing (largest connected components where they raised the validation
    Dice, :mod:`medseg.engine.postprocess`) applies to every mask unless ``postprocess`` is false;
    probabilities are left as predicted. ``tta_flips`` overrides the checkpoint's
    ``inference.tta_flips`` (mirroring) when given.
    """
    check_output_format(output_format)
    torch_device = resolve_device(device)
    model, cfg, state = load_predictor(checkpoint, torch_device, backend)
    if tta_flips is not None:
        cfg.inference.tta_flips = tta_flips
    window = sliding_window_from_config(cfg)
    thr = cfg.eval.threshold if threshold is None else threshold
    num_classes = model.num_classes
    class_values = state.get("class_values")  # class index → label value (multi-class)
    label_names = cfg.data.label_names or state.get("label_names")  # the training data's names
    algorithm = checkpoint_algorithm(checkpoint, cfg.model.name) if output_format == "dicom-seg" else None
    postprocessing = stored_postprocessing(state, checkpoint) if postprocess else None
    out = make_dir(Path(out_dir), "--out")
    paths = _expand_inputs(inputs)
    if not paths:
        raise DataError("no input images found", ", ".join(str(p) for p in inputs))
    bases = output_bases(paths)
    planned = [
        _output_path(out, base, path, kind, output_format)
        for path, base in bases.items()
        for kind, wanted in (("mask", True), ("prob", save_probabilities), ("overlay", save_overlays))
        if wanted
    ]
    check_not_overwriting(planned, overwrite)
    results = []
    measured: list[dict[str, Any]] = []
    for path, base in bases.items():
        array, spacing, meta = read_image(path)
        spacing_known = spacing is not None
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
        if cfg.data.target_spacing is not None and not spacing_known:
            raise DataError(
                "the model resamples to data.target_spacing, but the file carries no spacing", path
            )
        # crop / resample like the training data; every prediction goes back onto the input's grid
        sample, change = on_model_grid(sample, cfg.data.target_spacing, cfg.data.crop_nonzero)
        maps = None
        if uncertainty is not None:
            mask, probs, maps = predict_sample_uncertainty(
                model, sample, cfg, torch_device, window, uncertainty, thr, class_values
            )
            mask, probs, maps = uncertainty_on_input(mask, maps, change, thr)
            class_map = maps.classes is not None
            classes = maps.classes if class_map else mask
        elif num_classes is not None:
            classes, probs = predict_classes(
                model,
                sample,
                cfg.data.image_size,
                cfg.data.intensity,
                torch_device,
                num_classes,
                window,
                cfg.inference.tta_flips,
                change,
            )
            class_map = True
        else:
            probs = predict_probabilities(
                model,
                sample,
                cfg.data.image_size,
                cfg.data.intensity,
                torch_device,
                window=window,
                tta_flips=cfg.inference.tta_flips,
            )
            probs = values_on_input(probs, change)
            classes, class_map = (probs >= thr).astype(np.uint8), False
        classes = postprocess_labels(classes, postprocessing)  # class indices (binary: 0/1)
        mask = class_index_to_value(classes, class_values) if class_map else classes
        stem = strip_extension(path.name)
        where = out / base.parent
        where.mkdir(parents=True, exist_ok=True)
        prob_path = overlay_path = None
        mask_path = _output_path(out, base, path, "mask", output_format)
        measured += [
            {**row, "spacing_assumed": not spacing_known}
            for row in measurement_rows(base.as_posix(), mask, spacing)
        ]
        if meta.get("format") == "dicom" or output_format == "dicom-seg":
            mask_path = write_prediction(
                mask,
                meta,
                where,
                base.name,
                output_format,
                label_names,
                cfg.data.segments,
                class_values,
                algorithm,
            )
            if save_probabilities:
                prob_path = out / f"{base}_prob{_output_extension(path, 'prob')}"
                write_volume(prob_path, probs.astype(np.float32), meta)
        elif header_format:
            write_volume(mask_path, mask, meta)
            if save_probabilities:
                prob_path = out / f"{base}_prob{_output_extension(path, 'prob')}"
                write_volume(prob_path, probs.astype(np.float32), meta)
        else:
            if num_classes is None:
                write_image(mask_path, mask * 255)
            else:
                write_image(mask_path, mask, label_map=True)
            if save_probabilities:
                prob_path = out / f"{base}_prob.npy"
                with atomic_write(prob_path, "wb") as handle:
                    np.save(handle, probs.astype(np.float32))
        map_paths = None
        if maps is not None:
            suffix = _output_extension(path, "mask")  # a DICOM series folder has none: NIfTI
            map_paths = write_uncertainty_maps(maps, where, base.name, suffix, meta)
            prob_path = map_paths["probability"]
        if save_overlays:
            overlay_path = out / f"{base}_overlay.png"
            values = None if num_classes is None else list(class_values or range(num_classes))[1:]
            names = label_names[1:] if label_names and values else None
            save_overlay(image, None, mask, overlay_path, spacing, stem, values, names)
        results.append(PredictedFile(path, mask_path, prob_path, overlay_path, map_paths))
    append_measurements(out / MEASUREMENTS_FILE, pd.DataFrame(measured))
    return results


def _output_path(out: Path, base: Path, path: Path, kind: str, output_format: str = "auto") -> Path:
    """Where ``predict`` writes output ``kind`` (mask, prob, overlay) of input ``path``: ``out/base``
    + ``_kind`` + :func:`_output_extension`; a DICOM-SEG mask is ``_seg.dcm`` (:func:`write_prediction`)."""
    if kind == "mask" and output_format == "dicom-seg":
        return out / f"{base}_seg.dcm"
    return out / f"{base}_{kind}{_output_extension(path, kind)}"


def _output_extension(path: Path, kind: str) -> str:
    """Extension of a ``predict`` output: the input's own for header formats, NIfTI for a DICOM
    series, else PNG / npy."""
    if kind == "overlay":
        return ".png"
    fmt = file_format(path)
    if fmt == "dicom":
        return ".nii.gz"
    if fmt != "2d":
        return path.name[len(strip_extension(path.name)) :]
    return ".png" if kind == "mask" else ".npy"


IMAGE_SUFFIXES = IMAGE_2D_EXTS + NIFTI_EXTS + ITK_EXTS


def _expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if is_dicom_series_dir(path):
            paths.append(path)  # a folder of DICOM slices is one input
        elif path.is_dir():
            paths.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.name.lower().endswith(IMAGE_SUFFIXES) or is_dicom_series_dir(p)
                )
            )
        elif path.exists():
            paths.append(path)
        else:
            raise DataError("input file not found", path)
    return paths
