"""Sliding-window inference for volumes (and large images) larger than a model's training patch.

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

import torch
from monai.data.meta_tensor import MetaTensor
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

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
