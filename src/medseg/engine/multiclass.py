"""Multi-class prediction in 2D and 3D, and the classes of an evaluation.

A multi-class model (``model.num_classes`` = K) has K softmax logit channels (its first K,
:func:`~medseg.engine.inference.class_logits`). A 3D model predicts whole volumes by sliding window
(:func:`~medseg.engine.model_grid.predict_classes_on_input`). A 2D model predicts each image, or each
slice of a volume, resized to ``data.image_size`` as in training: the softmax probabilities are
averaged over the mirrored inputs (``tta_flips``), resized back bilinearly to the input's own
shape, and the argmax is taken there, so that a thin class is not lost to resizing a label map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.resample import GridChange
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, preprocess_images
from medseg.engine.inference import SlidingWindow, class_logits, flip_axes
from medseg.engine.model_grid import labels_on_input, predict_classes_on_input, values_on_input
from medseg.engine.validation import main_output
from medseg.errors import DataError
from medseg.metrics.per_class import ClassSpec, class_specs
from medseg.models import SegmentationModel


@torch.no_grad()
def predict_slice_classes(
    model: SegmentationModel,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    num_classes: int,
    batch_size: int = 16,
    tta_flips: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D model's argmax class indices (uint8) and foreground probability 1 − p(class 0), at the
    sample's own spatial shape (a volume slice by slice; see the module docstring)."""
    model.eval()
    slices = sample.slices() if sample.ndim == 3 else [sample]
    inputs = preprocess_images([s.image for s in slices], image_size, intensity)
    out_shape = slices[0].spatial_shape
    flips = flip_axes(tta_flips, 2)
    classes, foreground = [], []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size].to(device=device, dtype=torch.float32)
        # each mirrored prediction is mirrored back before averaging
        mirrored = [_softmax(model, chunk.flip(dims), num_classes).flip(dims) for dims in flips]
        probs = torch.stack(mirrored).mean(0)
        probs = F.interpolate(probs, size=out_shape, mode="bilinear", align_corners=False)
        classes.append(probs.argmax(1).to(torch.uint8).cpu().numpy())
        foreground.append((1.0 - probs[:, 0]).cpu().numpy())
    labels, probability = np.concatenate(classes), np.concatenate(foreground)
    return (labels, probability) if sample.ndim == 3 else (labels[0], probability[0])


def _softmax(model: SegmentationModel, images: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.softmax(class_logits(main_output(model(images)), num_classes).float(), 1)


def predict_classes(
    model: SegmentationModel,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    num_classes: int,
    window: SlidingWindow | None = None,
    tta_flips: bool = False,
    change: GridChange | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and foreground probability of a multi-class model, 3D (``window``) or 2D.

    ``sample`` is on the model's grid; ``change`` (:func:`~medseg.engine.model_grid.on_model_grid`)
    takes both back onto the input's grid (``None``: the same grid).
    """
    if window is not None:
        return predict_classes_on_input(model, sample, intensity, device, window, num_classes, change)
    classes, foreground = predict_slice_classes(
        model, sample, image_size, intensity, device, num_classes, tta_flips=tta_flips
    )
    return labels_on_input(classes, change), values_on_input(foreground, change)


def evaluation_classes(
    samples: Sequence[Sample], num_classes: int, label_names: Sequence[str] | None = None
) -> list[ClassSpec]:
    """The foreground classes of an evaluation: label values from the samples' ``class_values``,
    names from their ``label_names``, else from ``label_names`` (``data.label_names``: classes
    0..K−1), else ``label <value>``."""
    values = {tuple(s.meta["class_values"]) for s in samples if s.meta.get("class_values") is not None}
    if len(values) > 1:
        raise DataError(f"the cases map classes to different label values: {sorted(values)}")
    named = [
        list(s.meta["label_names"]) for s in samples if len(s.meta.get("label_names") or ()) == num_classes
    ]
    names = named[0] if named else (list(label_names) if label_names else None)
    return class_specs(num_classes, list(values.pop()) if values else None, names)
