"""Decide a checkpoint's postprocessing on its validation cases and store it in the checkpoint.

:func:`choose_postprocessing` is the last step of ``medseg fit`` before evaluation: it predicts
every validation case once with the checkpoint (as ``medseg predict`` would: sliding window and
mirroring from the config, the evaluation threshold for a binary model), decides per step whether
keeping the largest connected component raises the mean validation Dice
(:func:`medseg.metrics.postprocess.decide_postprocessing`, nnU-Net's rule), and writes the
decision into the checkpoint (:mod:`medseg.engine.postprocess`), where ``predict`` and
``evaluate`` find it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from medseg.config import Config
from medseg.data.loading import load_splits
from medseg.data.sample import Sample
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import model_from_state, resolve_device, sliding_window_from_config
from medseg.engine.model_grid import on_model_grid, values_on_input
from medseg.engine.multiclass import predict_classes
from medseg.engine.postprocess import store_postprocessing
from medseg.engine.predict import predict_probabilities
from medseg.metrics.postprocess import PostprocessingDecision, decide_postprocessing
from medseg.models import SegmentationModel


def predict_label_map(
    model: SegmentationModel, cfg: Config, sample: Sample, device: torch.device
) -> np.ndarray:
    """The label map ``predict`` makes of ``sample`` before postprocessing, on the sample's own grid
    (cropped and resampled like the training cases, then mapped back, as ``predict`` does): class
    indices (multi-class, 2D or 3D) or the probability ≥ ``eval.threshold`` as 0/1 (binary)."""
    window = sliding_window_from_config(cfg)
    on_grid, change = on_model_grid(sample, cfg.data.target_spacing, cfg.data.crop_nonzero)
    if model.num_classes is None:
        probabilities = predict_probabilities(
            model,
            on_grid,
            cfg.data.image_size,
            cfg.data.intensity,
            device,
            window=window,
            tta_flips=cfg.inference.tta_flips,
        )
        return (values_on_input(probabilities, change) >= cfg.eval.threshold).astype(np.uint8)
    classes, _ = predict_classes(
        model,
        on_grid,
        cfg.data.image_size,
        cfg.data.intensity,
        device,
        model.num_classes,
        window,
        cfg.inference.tta_flips,
        change,
    )
    return classes


def choose_postprocessing(
    checkpoint: str | Path,
    samples: Sequence[Sample] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> PostprocessingDecision:
    """Predict ``samples`` (default: the checkpoint's validation split) once, decide the
    postprocessing on them, store it in ``checkpoint`` atomically, and return it.

    Without validation cases nothing is decided: the stored decision applies nothing.
    """
    torch_device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_state(state, torch_device)
    if samples is None:
        samples = load_splits(cfg.data).val
    num_classes = model.num_classes or 2  # a binary model: background and one class
    iterator = track(samples, description="postprocessing") if progress else samples
    predictions, ground_truths = [], []
    for sample in iterator:
        predictions.append(predict_label_map(model, cfg, sample, torch_device))
        truth = sample.target_mask
        ground_truths.append((truth > 0).astype(np.uint8) if model.num_classes is None else truth)
    decision = decide_postprocessing(predictions, ground_truths, num_classes)
    store_postprocessing(checkpoint, decision)
    return decision
