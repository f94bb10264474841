"""Inference building blocks: a checkpoint's model, its logits, probabilities and class maps.

Prediction (:mod:`medseg.engine.predict`), uncertainty (:mod:`medseg.engine.uncertainty`),
evaluation and the ONNX runtime (:mod:`medseg.export.runtime`) are built on these; none of
them imports another.

* :func:`model_from_state` / :func:`load_model`: the model of a checkpoint, in eval mode.
* :func:`mask_logits` / :func:`class_logits`: the channels of a model's logits that hold the
  foreground mask (``model.mask_channel``) or its K classes (``model.num_classes``).
* :class:`SlidingWindow` (from the config's ``inference`` section), :func:`volume_logits`,
  :func:`predict_volume_probabilities`, :func:`predict_volume_classes`: a 3D model on a whole
  volume at its own resolution.

Sliding-window inference for volumes (and large images) larger than a model's training patch:

:func:`sliding_window_predict` wraps MONAI's ``monai.inferers.sliding_window_inference`` with the
defaults that avoid visible seams: windows overlap by half and are blended with a Gaussian
importance map (σ = 0.125 × window size), so each voxel is dominated by the windows whose centre
is near it, where a zero-padded network sees the most context. MONAI's own defaults (constant
blending, overlap 0.25) average window borders on equal terms and leave seams (nnU-Net uses the
same Gaussian scheme, Isensee et al. 2021).

Options on top of MONAI's:

* **flip test-time augmentation** (``tta_flips``): every window is also predicted mirrored along
  spatial axes, mirrored back and averaged with the plain prediction before blending;
* **CPU stitching** (``stitch_device="cpu"``): windows run on ``device`` but the full-size output
  and weight map accumulate on the CPU, so a volume that does not fit on the accelerator can still
  be segmented (MONAI's ``sw_device`` = ``device``, MONAI's ``device`` = ``stitch_device``);
* models that return a list (deep supervision left in training mode) give their first element,
  the full-resolution logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.meta_tensor import MetaTensor
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medseg.config import Config, config_from_dict
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, normalize_intensity
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.distributed import check_device
from medseg.errors import ConfigError, DataError
from medseg.models import SegmentationModel, build_from_config

BLEND_MODES = ("gaussian", "constant")
OUTPUTS = ("logits", "sigmoid", "softmax")


def flip_axes(tta_flips: Sequence[Sequence[int]] | bool, spatial_dims: int) -> list[tuple[int, ...]]:
    """The tensor dims to flip for each test-time augmentation, the identity ``()`` first.

    ``True`` means every combination of spatial axes (nnU-Net's mirroring: 4 in 2D, 8 in 3D,
    identity included); ``False`` only the identity. A sequence lists flips as *spatial* axes
    (``0`` = the first spatial axis, D in 3D), e.g. ``[(2,), (1, 2)]`` for left-right and
    left-right + up-down; the identity is always added and duplicates are dropped.
    """
    if tta_flips is True:
        combos: list[tuple[int, ...]] = [
            c for r in range(spatial_dims + 1) for c in itertools.combinations(range(spatial_dims), r)
        ]
    elif tta_flips is False:
        combos = [()]
    else:
        combos = [()]
        for axes in tta_flips:
            axes = tuple(sorted({int(a) for a in axes}))
            if any(a < 0 or a >= spatial_dims for a in axes):
                raise ValueError(
                    f"tta_flips axes are spatial axes 0..{spatial_dims - 1} for a {spatial_dims}D "
                    f"volume; got {axes}"
                )
            if axes not in combos:
                combos.append(axes)
    return [tuple(a + 2 for a in axes) for axes in combos]


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter (or buffer); ``fallback`` for a parameter-free model."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return fallback


def _roi(roi_size: Sequence[int] | int, spatial_dims: int) -> tuple[int, ...]:
    roi = (int(roi_size),) * spatial_dims if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
    if len(roi) != spatial_dims or any(r <= 0 for r in roi):
        raise ValueError(
            f"roi_size needs {spatial_dims} positive sizes for a {spatial_dims}D volume, got {roi_size}"
        )
    return roi


def sliding_window_predict(
    model: nn.Module,
    volume: Tensor,
    roi_size: Sequence[int] | int,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    tta_flips: Sequence[Sequence[int]] | bool = False,
    device: torch.device | str | None = None,
    stitch_device: torch.device | str | None = None,
    progress: bool = False,
    output: str = "logits",
    sigma_scale: float = 0.125,
) -> Tensor:
    """Predict ``volume`` (``B×C×D×H×W`` or ``B×C×H×W``) window by window and blend the windows.

    Args:
        model: returns ``B×K×roi`` logits for a ``B×C×roi`` window (a list: its first element).
            It runs in eval mode under ``torch.no_grad``; every submodule's mode is restored after.
        volume: the full input, on any device; windows are moved to ``device`` one batch at a time.
        roi_size: window size per spatial axis (an int for all axes). A volume smaller than the
            window is zero-padded to it and the output cropped back (MONAI does both).
        overlap: fraction of the window shared by neighbours along each axis, in [0, 1).
        mode: ``gaussian`` (default) or ``constant`` blending of overlapping windows.
        sw_batch_size: windows per forward pass.
        tta_flips: flip test-time augmentation, see :func:`flip_axes` (``True``: all flips).
            Predictions are averaged in the ``output`` domain: averaging logits (the default)
            keeps a logit output; ``output="sigmoid"``/``"softmax"`` averages probabilities,
            as nnU-Net does. For a flip-equivariant model TTA changes nothing.
        device: where the model runs; default the model's own device.
        stitch_device: where the full-size output and weights accumulate; default the volume's
            device. ``"cpu"`` keeps accelerator memory to one window batch.
        progress: show a tqdm bar over windows.
        output: ``logits`` (default), or ``sigmoid``/``softmax`` applied to every window before
            averaging and blending (probabilities out).
        sigma_scale: Gaussian σ as a fraction of the window size (MONAI's default 0.125).

    Returns:
        ``B×K×spatial`` float tensor on ``stitch_device``, same spatial size as ``volume``.
    """
    spatial_dims = volume.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"volume must be B×C×H×W or B×C×D×H×W, got shape {tuple(volume.shape)}")
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}'. Available: {', '.join(BLEND_MODES)}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output '{output}'. Available: {', '.join(OUTPUTS)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be ≥ 1, got {sw_batch_size}")
    roi = _roi(roi_size, spatial_dims)
    flips = flip_axes(tta_flips, spatial_dims)
    compute_device = torch.device(device) if device is not None else _model_device(model, volume.device)
    out_device = torch.device(stitch_device) if stitch_device is not None else volume.device
    if not volume.is_floating_point():
        volume = volume.float()

    def predict_one(window: Tensor, axes: tuple[int, ...]) -> Tensor:
        logits = model(window.flip(axes) if axes else window)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        pred = logits.float()
        if output == "sigmoid":
            pred = torch.sigmoid(pred)
        elif output == "softmax":
            pred = torch.softmax(pred, dim=1)
        return pred.flip(axes) if axes else pred

    def predict_window(window: Tensor) -> Tensor:
        total = predict_one(window, flips[0])  # the identity
        for axes in flips[1:]:
            total = total + predict_one(window, axes)
        return total / len(flips) if len(flips) > 1 else total

    modes = [(module, module.training) for module in model.modules()]  # restored as they were
    model.eval()
    try:
        with torch.no_grad():
            result = sliding_window_inference(
                volume,
                roi,
                sw_batch_size,
                predict_window,
                overlap=overlap,
                mode=mode,
                sigma_scale=sigma_scale,
                sw_device=compute_device,
                device=out_device,
                progress=progress,
            )
    finally:
        for module, training in modes:
            module.training = training
    if isinstance(result, MetaTensor):
        result = result.as_tensor()
    return result


def resolve_device(name: str = "auto", what: str = "--device") -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unknown name or CUDA without a GPU is a
    :class:`ConfigError` naming ``what`` (:func:`~medseg.engine.distributed.check_device`)."""
    return check_device(name, what)


def load_model(
    checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[SegmentationModel, Config]:
    """Rebuild the model from the config stored in a medseg checkpoint and load its weights."""
    return model_from_state(load_checkpoint(checkpoint), device)


def model_from_state(
    state: dict[str, Any], device: torch.device | str = "cpu"
) -> tuple[SegmentationModel, Config]:
    """The model of a loaded checkpoint ``state`` (its config and weights), in eval mode."""
    cfg = config_from_dict(state["config"])
    # the checkpoint holds the trained weights: don't read the pretraining file again
    cfg.model.options = {k: v for k, v in cfg.model.options.items() if k not in ("pretrained", "checkpoint")}
    model = build_from_config(cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def class_logits(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The ``B×K×spatial`` class logits of a multi-class model: its first K channels."""
    if logits.shape[1] < num_classes:
        raise ValueError(f"{num_classes} classes but the model gives {logits.shape[1]} logit channel(s)")
    return logits[:, :num_classes]


def mask_logits(logits: torch.Tensor, model: SegmentationModel) -> torch.Tensor:
    """``B×1×spatial`` foreground logits (channel ``model.mask_channel``) of ``B×K×spatial`` logits."""
    channel = model.mask_channel
    if not 0 <= channel < logits.shape[1]:
        raise ValueError(f"mask channel {channel} is outside the model's {logits.shape[1]} logit channel(s)")
    return logits[:, channel : channel + 1]


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


@dataclass(frozen=True)
class SlidingWindow:
    """How a 3D model meets a whole volume (:func:`sliding_window_predict`)."""

    roi_size: tuple[int, ...]
    overlap: float = 0.5
    mode: str = "gaussian"
    sw_batch_size: int = 1
    # True: every combination of axes; or the flips (spatial axes) to add to the identity
    tta_flips: bool | tuple[tuple[int, ...], ...] = False
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
        tta_flips=(
            icfg.tta_flips
            if isinstance(icfg.tta_flips, bool)
            else tuple(tuple(int(a) for a in axes) for axes in icfg.tta_flips)
        ),
        stitch_device=icfg.stitch_device,
    )


def volume_logits(
    model: nn.Module, image: torch.Tensor, window: SlidingWindow, device: torch.device
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


def normalized_volume(sample: Sample, intensity: Intensity) -> torch.Tensor:
    """``1×C×D×H×W`` image of a volume sample, normalised as in training (2D: a :class:`DataError`)."""
    if sample.ndim != 3:
        raise DataError(
            f"a 3D model needs a C×D×H×W volume, got image shape {sample.image.shape}",
            sample.source_path or sample.case_id,
        )
    return torch.from_numpy(normalize_intensity(sample.image, intensity))[None]


def sample_volume_logits(
    model: SegmentationModel,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
) -> torch.Tensor:
    """All logit channels of a whole volume: normalised as in training, then by sliding window."""
    image = normalized_volume(sample, intensity)
    model.eval()
    image = image.to(window.stitch_device or device)  # the output is stitched where the image is
    return volume_logits(model, image, window, device)


@torch.no_grad()
def predict_volume_probabilities(
    model: SegmentationModel,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
) -> np.ndarray:
    """Foreground probability ``D×H×W`` of a 3D model on a whole volume at its own resolution.

    The volume is normalised as :class:`~medseg.data.volumes.VolumeDataset` does in training, then
    predicted window by window (a volume smaller than the window is padded and cropped back).
    """
    logits = mask_logits(sample_volume_logits(model, sample, intensity, device, window), model)
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()


@torch.no_grad()
def predict_volume_classes(
    model: SegmentationModel,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class indices ``D×H×W`` (uint8) and the foreground probability 1 − p(class 0).

    The multi-class twin of :func:`predict_volume_probabilities` (same normalisation and sliding
    window); the softmax runs over the model's first ``num_classes`` channels.
    """
    logits = sample_volume_logits(model, sample, intensity, device, window)
    logits = class_logits(logits, num_classes).float()
    labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
    foreground = 1.0 - torch.softmax(logits, dim=1)[0, 0].cpu().numpy()
    return labels, foreground
