"""Box-prompted inference with MedSAM/LiteMedSAM-style models, on 2D images and 3D volumes.

* :func:`segment_2d`: one image, ``N`` boxes → a label map (label ``i`` for box ``i``, 1-based).
  The image is encoded once and the ``N`` boxes are decoded from that embedding in one batch.
* :func:`segment_3d`: a ``D×H×W`` volume and one 3D box → a binary mask. The middle slice of the
  box is segmented with the box's ``x, y`` extent; the segmentation then propagates slice by
  slice up to ``z1`` and down to ``z0``, each slice prompted with the box of the previous slice's
  prediction widened by a few pixels (LiteMedSAM's ``CVPR24_LiteMedSAM_infer.py``: 3 px at
  256). When a slice's prediction is empty, propagation in that direction stops — medseg's
  choice: LiteMedSAM's script instead falls back to the middle slice's box, which keeps
  painting the object onto slices where it has ended.
* :func:`segment_3d_boxes`: several 3D boxes → a label map; slice embeddings are cached, so a
  slice shared by several boxes is encoded once.

A model here is any module with ``img_size``, ``encode(image)`` and ``decode(embedding, boxes)``
(:class:`~medseg.models.medsam.PromptableSAM`); the preprocessing is
:func:`medseg.data.prompts.to_model_input`, and predictions are thresholded at logit 0 after being
resized back to the original size (LiteMedSAM: sigmoid > 0.5 after resizing).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.data.io import file_format, read_image, write_image, write_volume
from medseg.data.prompts import Letterbox, boxes_for_image, boxes_from_mask, to_model_input, validate_boxes
from medseg.engine.output_paths import check_not_overwriting, output_bases
from medseg.errors import ConfigError, DataError
from medseg.models import SegmentationModel
from medseg.output_dirs import make_dir

#: LiteMedSAM widens the previous slice's box by 3 px (at 256) when propagating in 3D
PROPAGATION_MARGIN_AT_256 = 3


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_promptable(model: nn.Module) -> int:
    if not isinstance(model, SegmentationModel) or not model.promptable:
        raise ConfigError(f"{type(model).__name__} is not a promptable model (needs encode/decode and boxes)")
    return int(model.img_size)


def _label_dtype(count: int) -> type[np.integer]:
    return np.uint8 if count < 256 else np.uint16


@torch.inference_mode()
def encode_image(model: nn.Module, image: np.ndarray) -> tuple[torch.Tensor, Letterbox]:
    """The embedding (``1×E×k×k``) of a 2D image and its model-input geometry."""
    size = _check_promptable(model)
    model_input, geometry = to_model_input(image, size)
    tensor = torch.from_numpy(model_input)[None].to(_device(model))
    return model.encode(tensor), geometry


@torch.inference_mode()
def decode_boxes(
    model: nn.Module, embedding: torch.Tensor, geometry: Letterbox, boxes_model: np.ndarray
) -> np.ndarray:
    """Binary masks ``N×H×W`` (original size) for ``N×4`` boxes already in model-input pixels."""
    boxes = torch.as_tensor(np.asarray(boxes_model, dtype=np.float32), device=embedding.device)
    logits, _ = model.decode(embedding, boxes)
    return (geometry.logits_to_original(logits[:, 0]) > 0).cpu().numpy()


def segment_2d(
    model: nn.Module, image: np.ndarray, boxes: np.ndarray | Sequence[Sequence[float]]
) -> np.ndarray:
    """Label map ``H×W`` of ``image`` (``H×W``, ``C×H×W`` or ``H×W×3``) for ``N×4`` boxes in its pixels.

    Label ``i`` marks box ``i``'s object (1-based); where masks overlap, the later box wins (as the
    CVPR24 reference inference writes them). The model is put in eval mode.
    """
    model.eval()
    embedding, geometry = encode_image(model, image)
    boxes = validate_boxes(boxes, geometry.original_shape)
    labels = np.zeros(geometry.original_shape, dtype=_label_dtype(len(boxes)))
    if len(boxes) == 0:
        return labels
    masks = decode_boxes(model, embedding, geometry, geometry.boxes_to_model(boxes))
    for index, mask in enumerate(masks, start=1):
        labels[mask] = index
    return labels


class SliceEmbeddings:
    """Embeddings of a volume's slices, computed on first use and kept for the last ``capacity`` slices."""

    def __init__(self, model: nn.Module, volume: np.ndarray, capacity: int = 32) -> None:
        self.model = model
        self.volume = volume
        self.capacity = max(1, int(capacity))
        self._cache: OrderedDict[int, tuple[torch.Tensor, Letterbox]] = OrderedDict()
        self.encoded = 0  # how many slices were encoded (cache misses)

    def __getitem__(self, z: int) -> tuple[torch.Tensor, Letterbox]:
        if z in self._cache:
            self._cache.move_to_end(z)
            return self._cache[z]
        item = encode_image(self.model, self.volume[z])
        self.encoded += 1
        self._cache[z] = item
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return item


def _propagation_box(mask: np.ndarray, geometry: Letterbox, margin: float) -> np.ndarray:
    """The tight box of ``mask`` in model pixels, widened by ``margin`` and clipped to the image part."""
    tight = boxes_from_mask(mask.astype(np.uint8), per="label")[0].astype(np.float64)
    box = geometry.boxes_to_model(tight)[0] + np.array([-margin, -margin, margin, margin])
    h, w = geometry.resized_shape
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])


def _segment_3d_box(
    slices: SliceEmbeddings, box3d: np.ndarray, margin: float, stop_on_empty: bool
) -> np.ndarray:
    volume = slices.volume
    mask = np.zeros(volume.shape, dtype=bool)
    x0, y0, z0, x1, y1, z1 = box3d
    z0, z1 = int(z0), int(z1)
    z_mid = (z0 + z1) // 2
    embedding, geometry = slices[z_mid]
    first_box = geometry.boxes_to_model([x0, y0, x1, y1])
    mask[z_mid] = decode_boxes(slices.model, embedding, geometry, first_box)[0]
    if not mask[z_mid].any():
        return mask
    for direction, end in ((1, z1), (-1, z0)):
        previous = z_mid
        for z in range(z_mid + direction, end + direction, direction):
            embedding, geometry = slices[z]
            box = _propagation_box(mask[previous], geometry, margin)
            mask[z] = decode_boxes(slices.model, embedding, geometry, box[None])[0]
            if not mask[z].any():
                if stop_on_empty:
                    break
                continue  # keep the last non-empty slice as the prompt source
            previous = z
    return mask


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise DataError(f"expected a D×H×W volume, got shape {volume.shape}")
    return volume


def _margin(model: nn.Module, margin: float | None) -> float:
    return PROPAGATION_MARGIN_AT_256 * int(model.img_size) / 256 if margin is None else float(margin)


def segment_3d(
    model: nn.Module,
    volume: np.ndarray,
    box3d: np.ndarray | Sequence[float],
    margin: float | None = None,
    stop_on_empty: bool = True,
) -> np.ndarray:
    """Binary mask ``D×H×W`` of the object in ``box3d`` = ``(x0, y0, z0, x1, y1, z1)`` (pixel indices).

    Slices ``z0..z1`` (both included) are segmented from the middle one outward (module doc).
    ``margin``: model-input pixels added to each side of a propagated box (default 3 at 256, scaled
    to the model's size). ``stop_on_empty=False`` keeps going past an empty slice, prompting with
    the last non-empty slice's box.
    """
    _check_promptable(model)
    model.eval()
    volume = _check_volume(volume)
    box = validate_boxes(box3d, volume.shape)[0]
    slices = SliceEmbeddings(model, volume, capacity=1)  # one box visits each slice once
    return _segment_3d_box(slices, box, _margin(model, margin), stop_on_empty).astype(np.uint8)


def segment_3d_boxes(
    model: nn.Module,
    volume: np.ndarray,
    boxes3d: np.ndarray | Sequence[Sequence[float]],
    margin: float | None = None,
    stop_on_empty: bool = True,
    cache_slices: int = 64,
) -> np.ndarray:
    """Label map ``D×H×W`` for ``N×6`` 3D boxes (label ``i`` for box ``i``; later boxes win overlaps)."""
    _check_promptable(model)
    model.eval()
    volume = _check_volume(volume)
    boxes = validate_boxes(boxes3d, volume.shape)
    slices = SliceEmbeddings(model, volume, capacity=cache_slices)
    labels = np.zeros(volume.shape, dtype=_label_dtype(len(boxes)))
    for index, box in enumerate(boxes, start=1):
        labels[_segment_3d_box(slices, box, _margin(model, margin), stop_on_empty)] = index
    return labels


def predict_files_with_boxes(
    model: nn.Module,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    boxes: np.ndarray | None = None,
    box_table: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> list[tuple[Path, Path]]:
    """Segment image files (PNG/TIFF/JPEG) or volumes (NIfTI/NRRD) with box prompts; returns
    ``(input, label file)`` pairs.

    ``boxes`` (``N×4`` in 2D, ``N×6`` in 3D, the input's pixel indices) prompt every input; a
    ``box_table`` (:func:`medseg.data.prompts.read_box_file`) gives each input its own. 2D inputs
    give a label PNG (label ``i`` for box ``i``); volumes give a label volume in the input's format
    and geometry (NIfTI affine kept), segmented slice by slice from each 3D box's middle slice.
    Outputs never overwrite each other nor (without ``overwrite``) an existing file
    (:mod:`medseg.engine.output_paths`).
    """
    out = Path(out_dir)
    make_dir(out, "--out")  # a file or a read-only folder there: one line naming it
    if boxes is None and box_table is None:
        raise ConfigError("give boxes (--box x0,y0,x1,y1) or a box file (--boxes FILE)")
    bases = output_bases([Path(p) for p in inputs])

    def target_of(path: Path) -> Path:
        if file_format(path) == "2d":
            return out / f"{bases[path]}_seg.png"
        return out / f"{bases[path]}_seg{'.nii.gz' if file_format(path) == 'nifti' else '.nrrd'}"

    check_not_overwriting([target_of(p) for p in bases], overwrite)
    results = []
    for path in bases:
        image_boxes = boxes if box_table is None else boxes_for_image(box_table, path)
        array, _, meta = read_image(path)
        target = target_of(path)
        if file_format(path) == "2d":
            labels = segment_2d(model, array, image_boxes)
            write_image(target, labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
        else:
            volume = np.asarray(array, dtype=np.float32)
            if volume.ndim == 4:  # C×D×H×W: prompt on the first channel
                volume = volume[0]
            labels = segment_3d_boxes(model, volume, image_boxes)
            write_volume(target, labels, meta)
        results.append((path, target))
    return results
