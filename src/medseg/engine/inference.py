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

Sliding-window inference for volumes (and large images) larger than a model's training patch
(:func:`sliding_window_predict`, built on :mod:`medseg.engine.sliding_window`): windows overlap by
half and are blended with a Gaussian importance map (σ = 0.125 × window size), so each voxel is
dominated by the windows whose centre is near it, where a zero-padded network sees the most
context. Constant blending with MONAI's default overlap 0.25 averages window borders on equal terms
and leaves seams (nnU-Net uses the same Gaussian scheme, Isensee et al. 2021). Windows, weights and
padding are those of MONAI's ``sliding_window_inference``, and so is the output, up to rounding.

On top of that:

* **batched windows**: ``sw_batch_size`` windows go through the model in one forward pass;
* **mirroring** (``tta_flips``): every window is also predicted mirrored along spatial axes
  (all of them: 4 flips in 2D, 8 in 3D), mirrored back and averaged before blending;
* **bounded memory**: the output is stitched slab by slab along the first spatial axis, so a
  class map (:func:`predict_volume_classes`) never holds the full K×volume logits; a full logit
  output (:func:`sliding_window_predict`) holds them once, plus a buffer one window deep;
* **CPU stitching** (``stitch_device="cpu"``): windows run on ``device`` but the output and the
  weights accumulate on the CPU, so a volume that does not fit on the accelerator can still be
  segmented;
* models that return a list (deep supervision left in training mode) give their first element,
  the full-resolution logits.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medseg.config import Config, config_from_dict
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, normalize_intensity
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.distributed import check_device
from medseg.engine.sliding_window import BLEND_MODES, WindowBlender, importance_map, window_grid
from medseg.errors import ConfigError, DataError
from medseg.models import SegmentationModel, build_from_config

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


def _model_device(model: Callable[..., Any], fallback: torch.device) -> torch.device:
    """The device of the model's first parameter (or buffer); ``fallback`` for a parameter-free
    model or a plain function."""
    if not isinstance(model, nn.Module):
        return fallback
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


@contextlib.contextmanager
def evaluation_mode(model: Callable[..., Any]) -> Iterator[None]:
    """Run ``model`` (an ``nn.Module``; any other callable is left alone) in eval mode without
    gradients, and restore every submodule's mode afterwards."""
    modes = [(module, module.training) for module in model.modules()] if isinstance(model, nn.Module) else []
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def window_predictor(
    model: Callable[[Tensor], Any], flips: Sequence[tuple[int, ...]], output: str = "logits"
) -> Callable[[Tensor], Tensor]:
    """``B×C×roi`` windows → ``B×K×roi`` predictions, averaged over the ``flips`` (tensor dims,
    :func:`flip_axes`), each mirrored back first; ``output`` applies a sigmoid or softmax to every
    mirrored prediction before the average (nnU-Net averages probabilities)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output '{output}'. Available: {', '.join(OUTPUTS)}")

    def predict_one(window: Tensor, axes: tuple[int, ...]) -> Tensor:
        logits = model(window.flip(axes) if axes else window)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        pred = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if output == "sigmoid":
            pred = torch.sigmoid(pred)
        elif output == "softmax":
            pred = torch.softmax(pred, dim=1)
        return pred.flip(axes) if axes else pred

    def predict(window: Tensor) -> Tensor:
        total = predict_one(window, flips[0])
        for axes in flips[1:]:
            total = total + predict_one(window, axes)
        return total / len(flips) if len(flips) > 1 else total

    return predict


def window_blenders(
    model: Callable[[Tensor], Any],
    volume: Tensor,
    roi_size: Sequence[int] | int,
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 1,
    tta_flips: Sequence[Sequence[int]] | bool = False,
    device: torch.device | str | None = None,
    stitch_device: torch.device | str | None = None,
    output: str = "logits",
    sigma_scale: float = 0.125,
    keep_all: bool = False,
) -> Iterator[WindowBlender]:
    """One :class:`~medseg.engine.sliding_window.WindowBlender` per item of ``volume``
    (``B×C×spatial``), made as the previous one is done with. The arguments are those of
    :func:`sliding_window_predict`; ``keep_all`` keeps the full output (else it streams). The
    caller runs the model in :func:`evaluation_mode`.
    """
    spatial_dims = volume.ndim - 2
    if spatial_dims not in (2, 3):
        raise ValueError(f"volume must be B×C×H×W or B×C×D×H×W, got shape {tuple(volume.shape)}")
    if mode not in BLEND_MODES:
        raise ValueError(f"unknown blend mode '{mode}'. Available: {', '.join(BLEND_MODES)}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be ≥ 1, got {sw_batch_size}")
    roi = _roi(roi_size, spatial_dims)
    grid = window_grid(volume.shape[2:], roi, overlap)
    predict = window_predictor(model, flip_axes(tta_flips, spatial_dims), output)
    compute_device = torch.device(device) if device is not None else _model_device(model, volume.device)
    out_device = torch.device(stitch_device) if stitch_device is not None else volume.device
    weights = importance_map(roi, mode, sigma_scale)
    for item in range(volume.shape[0]):
        item_volume = volume[item : item + 1]
        yield WindowBlender(
            predict, item_volume, grid, weights, sw_batch_size, compute_device, out_device, keep_all
        )


def sliding_window_predict(
    model: Callable[[Tensor], Any],
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
            window is zero-padded to it (half before, half after) and the output cropped back.
        overlap: fraction of the window shared by neighbours along each axis, in [0, 1).
        mode: ``gaussian`` (default) or ``constant`` blending of overlapping windows.
        sw_batch_size: windows per forward pass.
        tta_flips: flip test-time augmentation, see :func:`flip_axes` (``True``: all flips).
            Predictions are averaged in the ``output`` domain: averaging logits (the default)
            keeps a logit output; ``output="sigmoid"``/``"softmax"`` averages probabilities,
            as nnU-Net does. For a flip-equivariant model TTA changes nothing.
        device: where the model runs; default the model's own device.
        stitch_device: where the output and the weights accumulate; default the volume's
            device. ``"cpu"`` keeps accelerator memory to one window batch.
        progress: show a tqdm bar over window batches.
        output: ``logits`` (default), or ``sigmoid``/``softmax`` applied to every window before
            averaging and blending (probabilities out).
        sigma_scale: Gaussian σ as a fraction of the window size (MONAI's default 0.125).

    Returns:
        ``B×K×spatial`` float tensor on ``stitch_device``, same spatial size as ``volume``: the
        one full-size buffer the windows accumulate in, normalised in place (the weights take a
        ring buffer one window deep; ``B`` > 1 items are concatenated).
    """
    outputs = []
    with evaluation_mode(model):
        blenders = window_blenders(
            model, volume, roi_size, overlap, mode, sw_batch_size, tta_flips, device, stitch_device,
            output, sigma_scale, keep_all=True,
        )  # fmt: skip
        for blender in blenders:
            for _ in blender.slabs(progress):  # each slab is normalised in the full buffer
                pass
            outputs.append(blender.output())
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


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


def volume_slabs(
    model: Callable[[Tensor], Any], image: Tensor, window: SlidingWindow, device: torch.device
) -> Iterator[tuple[int, Tensor]]:
    """``(start, slab)`` of a ``1×C×D×H×W`` image's logits by sliding window, streamed
    (:meth:`~medseg.engine.sliding_window.WindowBlender.slabs`): rows ``start …`` of all logit
    channels, ``1×K×n×H×W``, each valid until the next slab is asked for."""
    for blender in window_blenders(
        model,
        image,
        window.roi_size,
        overlap=window.overlap,
        mode=window.mode,
        sw_batch_size=window.sw_batch_size,
        tta_flips=window.tta_flips,
        device=device,
        stitch_device=window.stitch_device,
    ):
        yield from blender.slabs()


def predict_volume_probabilities(
    model: SegmentationModel,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
) -> np.ndarray:
    """Foreground probability ``D×H×W`` of a 3D model on a whole volume at its own resolution.

    The volume is normalised as :class:`~medseg.data.volumes.VolumeDataset` does in training, then
    predicted window by window (a volume smaller than the window is padded and cropped back); the
    sigmoid of the mask channel is taken slab by slab, so no full-size logits are held.
    """
    image = normalized_volume(sample, intensity).to(window.stitch_device or device)
    probabilities = np.empty(image.shape[2:], dtype=np.float32)
    with evaluation_mode(model):
        for start, slab in volume_slabs(model, image, window, device):
            mask = mask_logits(slab, model)[0, 0]
            probabilities[start : start + mask.shape[0]] = torch.sigmoid(mask.float()).cpu().numpy()
    return probabilities


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
    window); the softmax runs over the model's first ``num_classes`` channels
    (:func:`sliding_window_classes`).
    """
    image = normalized_volume(sample, intensity).to(window.stitch_device or device)
    return sliding_window_classes(model, image, window, device, num_classes)


def sliding_window_classes(
    model: Callable[[Tensor], Any],
    image: Tensor,
    window: SlidingWindow,
    device: torch.device,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class indices (uint8) and 1 − p(class 0) of a ``1×C×spatial`` image, by sliding window.

    Argmax and softmax over the first ``num_classes`` logit channels are taken slab by slab as the
    windows finish (:func:`volume_slabs`): the prediction holds the label map, the probability and
    a buffer one window deep, never the full K×volume logits.
    """
    labels = np.empty(image.shape[2:], dtype=np.uint8)
    foreground = np.empty(image.shape[2:], dtype=np.float32)
    with evaluation_mode(model):
        for start, slab in volume_slabs(model, image, window, device):
            slab_labels, slab_foreground = argmax_and_foreground(class_logits(slab, num_classes)[0].float())
            rows = slice(start, start + slab_labels.shape[0])
            labels[rows] = slab_labels.cpu().numpy()
            foreground[rows] = slab_foreground.cpu().numpy()
    return labels, foreground


def argmax_and_foreground(logits: Tensor) -> tuple[Tensor, Tensor]:
    """The argmax (uint8; the first of equal maxima) and ``1 − softmax(logits)[0]`` of ``K×spatial``
    logits, K ≤ 256.

    One channel at a time (a reduction across channels is slow on the CPU), and the foreground
    as ``Σ_{c≥1} e_c / Σ_c e_c`` with ``e_c = exp(l_c − max)``, which keeps its precision where
    the background probability is close to 1.
    """
    best = logits[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=logits.device)
    for c in range(1, logits.shape[0]):
        labels.masked_fill_(logits[c] > best, c)
        torch.maximum(best, logits[c], out=best)
    foreground = torch.zeros_like(best)
    term = torch.empty_like(best)
    for c in range(1, logits.shape[0]):
        foreground += torch.sub(logits[c], best, out=term).exp_()
    total = torch.sub(logits[0], best, out=term).exp_().add_(foreground)
    return labels, foreground.div_(total)
