"""Predictions made on the grid a model was trained on, handed back on each input's own grid.

A config with ``data.target_spacing`` or ``data.crop_nonzero`` trains on cropped and resampled
cases (:func:`medseg.data.loading.to_training_grid`). Prediction and evaluation do the same to
each input, predict there, and take the prediction back to the input's exact shape
(:mod:`medseg.data.resample`): probabilities linearly, class maps from their resampled class
probabilities (argmax after resampling), background outside the crop box. The input's spacing,
origin and direction are then those of the file it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from medseg.data.loading import to_training_grid
from medseg.data.resample import (
    GridChange,
    grid_change_of,
    labels_to_input_grid,
    scores_to_input_labels,
    values_to_input_grid,
)
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity
from medseg.engine.inference import (
    SlidingWindow,
    class_logits,
    predict_volume_classes,
    sample_volume_logits,
)
from medseg.engine.uncertainty import UncertaintyMaps
from medseg.models import SegmentationModel


def on_model_grid(
    sample: Sample, target_spacing: Sequence[float] | None, crop_nonzero: bool
) -> tuple[Sample, GridChange | None]:
    """``sample`` as the model saw its training cases, and the way back (``None``: unchanged)."""
    (moved,) = to_training_grid([sample], target_spacing, crop_nonzero)
    return moved, grid_change_of(moved)


def values_on_input(values: np.ndarray, change: GridChange | None) -> np.ndarray:
    """A probability (or other real-valued) map back on the input's grid, linearly."""
    return values if change is None else values_to_input_grid(values, change)


def labels_on_input(labels: np.ndarray, change: GridChange | None) -> np.ndarray:
    """A label map back on the input's grid (per-label linear, then argmax; 0 outside the box)."""
    return labels if change is None else labels_to_input_grid(labels, change)


@torch.no_grad()
def predict_classes_on_input(
    model: SegmentationModel,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
    num_classes: int,
    change: GridChange | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and foreground probability of a multi-class model on the input's grid.

    ``sample`` is on the model's grid (:func:`on_model_grid`). Without a grid change this is
    :func:`~medseg.engine.inference.predict_volume_classes`; with one, the K softmax
    probabilities go back to the input's grid channel by channel and the argmax is taken there.
    """
    if change is None:
        return predict_volume_classes(model, sample, intensity, device, window, num_classes)
    logits = class_logits(sample_volume_logits(model, sample, intensity, device, window), num_classes)
    probabilities = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    labels = scores_to_input_labels(probabilities, change)
    foreground = values_to_input_grid(1.0 - probabilities[0], change)
    return labels, foreground


def uncertainty_on_input(
    mask: np.ndarray, maps: UncertaintyMaps, change: GridChange | None, threshold: float
) -> tuple[np.ndarray, np.ndarray, UncertaintyMaps]:
    """The mask, foreground probability and uncertainty maps of
    :func:`~medseg.engine.uncertainty.predict_sample_uncertainty` back on the input's grid: the maps
    linearly, a binary mask re-thresholded there, a class map as a label map."""
    if change is None:
        return mask, maps.probability, maps
    back = replace(
        maps,
        probability=values_to_input_grid(maps.probability, change),
        entropy=values_to_input_grid(maps.entropy, change),
        expected_entropy=values_to_input_grid(maps.expected_entropy, change),
        mutual_information=values_to_input_grid(maps.mutual_information, change),
        classes=None if maps.classes is None else labels_to_input_grid(maps.classes, change),
    )
    if maps.classes is None:
        mask = (back.probability >= threshold).astype(np.uint8)
    else:
        mask = labels_to_input_grid(mask, change)
    return mask, back.probability, back
