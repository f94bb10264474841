"""Box prompts for promptable models (MedSAM, LiteMedSAM), and the model-input geometry they live in.

Box convention (MedSAM's and the CVPR24 challenge's): ``x0, y0, x1, y1`` in **pixel indices**,
``x`` the column and ``y`` the row, both ends inclusive, so the tight box of a mask is
``(min col, min row, max col, max row)``. 3D boxes are ``x0, y0, z0, x1, y1, z1`` with ``z`` the
slice index (the challenge's order).

* Training: :func:`boxes_from_mask` gives the tight box of each object (connected component or
  label) and :func:`jitter_box` moves each side *outward* by a random 0..``shift`` pixels
  (MedSAM: 20 px at 1024, LiteMedSAM: 5 px at 256 — :func:`default_box_shift`). As in MedSAM,
  the box is taken and jittered in the model input's pixels (after :func:`to_model_input`).
* Inference: :func:`parse_box` reads ``--box x0,y0,x1,y1``; :func:`read_box_file` reads a JSON
  (``{"image name": [[x0, y0, x1, y1], ...]}``) or CSV (``image,x0,y0,x1,y1``) of boxes per image;
  :func:`validate_boxes` checks them against the image.

Model input (MedSAM/LiteMedSAM preprocessing, :func:`to_model_input`): min-max to [0, 1], the
longest side resized to the model's ``S`` (bilinear, antialiased when shrinking; the shorter
side rounded as LiteMedSAM does), zero padding at the bottom and right to ``S×S``, grey repeated
to three channels. :class:`Letterbox` records that geometry: :meth:`Letterbox.boxes_to_model`
maps boxes into the input, :meth:`Letterbox.logits_to_original` crops the padding and resizes
predictions back to the original size. LiteMedSAM normalises after resizing; min-max before a
bilinear resize gives the same range, so the order here (normalise first) is immaterial.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medseg.data.io import strip_extension
from medseg.errors import ConfigError, DataError
from medseg.models.base import SegmentationModel

#: MedSAM's training box jitter: up to 20 px per side at a 1024 px input
MEDSAM_BOX_SHIFT = 20
MEDSAM_IMG_SIZE = 1024
BOX_COLUMNS_2D = ("x0", "y0", "x1", "y1")
BOX_COLUMNS_3D = ("x0", "y0", "z0", "x1", "y1", "z1")


# --------------------------------------------------------------------------- model-input geometry


@dataclass(frozen=True)
class Letterbox:
    """An ``H×W`` image resized (longest side → ``size``) and padded bottom/right to ``size×size``."""

    original_shape: tuple[int, int]
    size: int

    @property
    def resized_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the image inside the padded input (LiteMedSAM's ``int(x * scale + 0.5)``)."""
        height, width = self.original_shape
        scale = self.size / max(height, width)
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def boxes_to_model(self, boxes: np.ndarray | Sequence[float]) -> np.ndarray:
        """``N×4`` boxes (``x0, y0, x1, y1``) from original to model-input pixels (float)."""
        boxes = _as_boxes(boxes, 4)
        (height, width), (h, w) = self.original_shape, self.resized_shape
        return boxes * np.array([w / width, h / height, w / width, h / height])

    def boxes_to_original(self, boxes: np.ndarray | Sequence[float]) -> np.ndarray:
        """The inverse of :meth:`boxes_to_model`."""
        boxes = _as_boxes(boxes, 4)
        (height, width), (h, w) = self.original_shape, self.resized_shape
        return boxes * np.array([width / w, height / h, width / w, height / h])

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """``…×S×S`` predictions → ``…×H×W``: crop the padding, resize bilinearly (LiteMedSAM)."""
        if tuple(logits.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected …×{self.size}×{self.size} predictions, got {tuple(logits.shape)}")
        h, w = self.resized_shape
        lead = logits.shape[:-2]
        cropped = logits[..., :h, :w].reshape(-1, 1, h, w).float()
        out = F.interpolate(cropped, size=self.original_shape, mode="bilinear", align_corners=False)
        return out.reshape(*lead, *self.original_shape)


def _resize(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize the last two axes of ``array`` (``C×H×W`` or ``H×W``)."""
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    squeeze = tensor.ndim == 2
    tensor = tensor[None, None] if squeeze else tensor[None]
    if tuple(tensor.shape[-2:]) != tuple(shape):
        if nearest:
            tensor = F.interpolate(tensor, size=shape, mode="nearest-exact")
        else:
            shrink = shape[0] < tensor.shape[-2] or shape[1] < tensor.shape[-1]
            tensor = F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False, antialias=shrink)
    out = tensor[0, 0] if squeeze else tensor[0]
    return out.numpy()


def minmax_normalize(image: np.ndarray) -> np.ndarray:
    """Min-max over the whole image (all channels) to [0, 1]; a constant image becomes 0."""
    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    return (image - low) / max(high - low, 1e-8)


def channels_first(image: np.ndarray) -> np.ndarray:
    """``H×W`` → ``1×H×W``; ``C×H×W`` (C = 1 or 3) kept; ``H×W×3``/``H×W×4`` → ``3×H×W`` (alpha dropped)."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[0] in (1, 3):
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return np.moveaxis(image[..., :3], -1, 0)
    raise DataError(f"expected an H×W, C×H×W (C = 1 or 3) or H×W×3 image, got shape {image.shape}")


def to_model_input(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """A 2D image as the ``3×size×size`` float32 input of MedSAM/LiteMedSAM, with its :class:`Letterbox`."""
    chw = channels_first(image)
    if not np.isfinite(chw).all():
        raise DataError("image has NaN/inf values")
    geometry = Letterbox((int(chw.shape[1]), int(chw.shape[2])), int(size))
    h, w = geometry.resized_shape
    resized = _resize(minmax_normalize(chw), (h, w), nearest=False)
    padded = np.zeros((3, size, size), dtype=np.float32)
    padded[:, :h, :w] = resized  # a grey channel broadcasts to all three
    return padded, geometry


def mask_to_model(mask: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """A label map ``H×W`` in the model input's geometry (nearest neighbour, zero padding)."""
    mask = np.asarray(mask)
    if tuple(mask.shape) != geometry.original_shape:
        raise DataError(f"mask shape {mask.shape} differs from the image's {geometry.original_shape}")
    h, w = geometry.resized_shape
    out = np.zeros((geometry.size, geometry.size), dtype=mask.dtype)
    out[:h, :w] = _resize(mask, (h, w), nearest=True).astype(mask.dtype)
    return out


# --------------------------------------------------------------------------- boxes


def _as_boxes(boxes: np.ndarray | Sequence[float], width: int) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"expected N×{width} boxes, got shape {array.shape}")
    return array


def boxes_from_mask(
    mask: np.ndarray, per: str = "component", return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Tight boxes of the objects in a 2D (``N×4``) or 3D (``N×6``) label map, in pixel indices.

    ``per="label"``: one box per non-zero label value (ascending). ``per="component"``: one box per
    connected component of each label (8-connected in 2D, 26 in 3D), ordered by label and then by
    scipy's scan order. ``return_labels=True`` also returns the label value of each box. An empty
    mask gives zero boxes.
    """
    if per not in ("component", "label"):
        raise ValueError(f"per must be 'component' or 'label', got '{per}'")
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise DataError(f"expected an H×W or D×H×W label map, got shape {mask.shape}")
    boxes, labels = [], []
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    for value in np.unique(mask[mask != 0]):
        objects = mask == value
        if per == "component":
            components, _ = ndimage.label(objects, structure=structure)
            slices = ndimage.find_objects(components)
        else:
            slices = ndimage.find_objects(objects.astype(np.int8))
        for region in slices:
            if region is None:
                continue
            start = [s.start for s in region][::-1]  # (z, y, x) → (x, y, z)
            stop = [s.stop - 1 for s in region][::-1]
            boxes.append(start + stop)
            labels.append(value)
    width = 2 * mask.ndim
    box_array = np.asarray(boxes, dtype=np.int64).reshape(-1, width)
    if return_labels:
        return box_array, np.asarray(labels, dtype=mask.dtype)
    return box_array


def default_box_shift(img_size: int) -> int:
    """MedSAM's box jitter scaled to the input size: 20 px at 1024, 5 px at 256."""
    return round(MEDSAM_BOX_SHIFT * img_size / MEDSAM_IMG_SIZE)


def jitter_box(
    box: np.ndarray | Sequence[float],
    shift: int,
    rng: np.random.Generator,
    image_shape: Sequence[int],
) -> np.ndarray:
    """Move each side of ``box`` (``4`` or ``N×4``) outward by a random 0..``shift`` px, inside the image.

    ``image_shape`` is ``(H, W)``; the result stays within ``[0, W-1] × [0, H-1]`` (MedSAM's
    training augmentation, ``x_min - randint(0, shift)``, ``x_max + randint(0, shift)``, ...).
    """
    if shift < 0:
        raise ValueError(f"shift must be ≥ 0, got {shift}")
    array = np.asarray(box)
    boxes = _as_boxes(array, 4)
    height, width = int(image_shape[0]), int(image_shape[1])
    moves = rng.integers(0, shift + 1, size=boxes.shape)
    out = boxes + moves * np.array([-1, -1, 1, 1])
    out = np.clip(out, 0, np.array([width - 1, height - 1, width - 1, height - 1]))
    out = out.astype(array.dtype) if np.issubdtype(array.dtype, np.number) else out
    return out[0] if array.ndim == 1 else out


def _box_problem(box: np.ndarray, shape: Sequence[int], strict: bool = True) -> str | None:
    """Why ``box`` does not fit an image of spatial ``shape`` (``H, W`` or ``D, H, W``), or ``None``.

    ``strict``: ``x1 > x0`` and ``y1 > y0`` (a typed box); otherwise ``x1 >= x0`` is enough (with
    inclusive indices, the tight box of a one-pixel-wide object has ``x1 == x0``).
    """
    half = len(box) // 2
    names = ("x", "y", "z")[:half]
    extents = list(shape)[::-1]  # (W, H[, D]) in box axis order
    if not np.all(np.isfinite(box)):
        return "has non-finite coordinates"
    for axis, name in enumerate(names):
        low, high = box[axis], box[axis + half]
        if (name == "z" or not strict) and high < low:
            return f"{name}1 ({high:g}) < {name}0 ({low:g})"
        if name != "z" and strict and high <= low:
            return f"{name}1 ({high:g}) <= {name}0 ({low:g})"
        if low < 0:
            return f"{name}0 ({low:g}) is negative"
        limit = extents[axis] - (1 if name == "z" else 0)  # x1/y1 may be the image edge; z1 a slice
        if high > limit:
            size = ("width", "height", "depth")[axis]
            return f"{name}1 ({high:g}) is outside the image ({size} {extents[axis]:g})"
    return None


def validate_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]], image_shape: Sequence[int], where: str | Path | None = None
) -> np.ndarray:
    """Check ``N×4`` boxes against an ``H×W`` image (or ``N×6`` against ``D×H×W``); float64 ``N×2d`` back.

    Each box needs ``x1 >= x0``, ``y1 >= y0`` and ``z1 >= z0`` (inclusive indices: the tight box of a
    one-pixel object is valid) and must lie in the image: ``0 <= x <= W`` and ``0 <= y <= H`` (the
    far edge is allowed), ``0 <= z < D``. Typed boxes are held to ``x1 > x0`` by :func:`parse_box`.
    """
    dims = len(image_shape)
    boxes = _as_boxes(boxes, 2 * dims)
    for i, box in enumerate(boxes):
        problem = _box_problem(box, image_shape, strict=False)
        if problem is not None:
            shape = "×".join(str(int(s)) for s in image_shape)
            raise DataError(f"box {i} {box.tolist()} for a {shape} image: {problem}", where)
    return boxes


def parse_box(text: str) -> np.ndarray:
    """``"x0,y0,x1,y1"`` (or ``"x0,y0,z0,x1,y1,z1"``) → a float array; the shape is checked here."""
    parts = [p.strip() for p in str(text).replace(" ", ",").split(",") if p.strip()]
    if len(parts) not in (4, 6):
        raise ConfigError(f"a box is 'x0,y0,x1,y1' (or 'x0,y0,z0,x1,y1,z1' in 3D), got '{text}'")
    try:
        box = np.array([float(p) for p in parts])
    except ValueError as err:
        raise ConfigError(f"box '{text}' has a coordinate that is not a number") from err
    problem = _box_problem(box, [np.inf] * (len(box) // 2))
    if problem is not None:
        raise ConfigError(f"box '{text}': {problem}")
    return box


def _boxes_of(name: str, value: object, path: Path) -> np.ndarray:
    array = np.asarray(value, dtype=object)
    if array.ndim == 1:  # one box given without the outer list
        array = array[None]
    if array.ndim != 2 or array.shape[1] not in (4, 6):
        raise DataError(f"boxes of '{name}' must be a list of [x0, y0, x1, y1] (or 6 values in 3D)", path)
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"boxes of '{name}' have a coordinate that is not a number", path) from err


def read_box_file(path: str | Path) -> dict[str, np.ndarray]:
    """Boxes per image from JSON ``{"name": [[x0, y0, x1, y1], ...]}`` or CSV ``image,x0,y0,x1,y1``.

    A CSV may instead have ``image,x0,y0,z0,x1,y1,z1`` (3D); rows of one image keep their order
    (box ``i`` → label ``i + 1``). Coordinates are checked for order here and against the image by
    :func:`validate_boxes` once it is read.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("box file not found", path)
    suffix = path.suffix.lower()
    table: dict[str, np.ndarray] = {}
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"not valid JSON ({err})", path) from err
        if not isinstance(data, Mapping):
            raise DataError('expected a JSON object {"image name": [[x0, y0, x1, y1], ...]}', path)
        table = {str(name): _boxes_of(str(name), value, path) for name, value in data.items()}
    elif suffix == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in reader.fieldnames or []]
            columns = BOX_COLUMNS_3D if set(BOX_COLUMNS_3D) <= set(fields) else BOX_COLUMNS_2D
            if "image" not in fields or not set(columns) <= set(fields):
                raise DataError(f"CSV columns must be image,{','.join(BOX_COLUMNS_2D)}, got {fields}", path)
            rows: dict[str, list[list[str]]] = {}
            for row in reader:
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                rows.setdefault(row["image"], []).append([row[c] for c in columns])
        table = {name: _boxes_of(name, values, path) for name, values in rows.items()}
    else:
        raise DataError("box file must be .json or .csv", path)
    for name, boxes in table.items():
        for i, box in enumerate(boxes):
            problem = _box_problem(box, [np.inf] * (len(box) // 2))
            if problem is not None:
                raise DataError(f"box {i} of '{name}' {box.tolist()}: {problem}", path)
    return table


def boxes_for_image(table: Mapping[str, np.ndarray], image: str | Path) -> np.ndarray:
    """The boxes of ``image`` in a :func:`read_box_file` table: by file name, or name without extension."""
    name = Path(image).name
    for key in (name, strip_extension(name), str(image)):
        if key in table:
            return table[key]
    known = sorted(table)
    listed = ", ".join(known[:10]) + (f", … ({len(known) - 10} more)" if len(known) > 10 else "")
    raise DataError(f"no boxes for this image in the box file (it has: {listed or 'none'})", image)


class PromptSampler:
    """Box prompts for a batch during training and validation, from its target masks.

    Training boxes are the tight box of each sample's target, each side moved outward by a random
    0..``shift`` px (MedSAM's augmentation) and clipped to the image; validation boxes are tight.
    A sample with an empty target gets the whole image as its box. Randomness comes from torch's
    global generator, which the engine re-seeds every epoch, so a resumed run draws the same boxes.
    """

    def __init__(self, shift: int) -> None:
        if shift < 0:
            raise ValueError(f"box shift must be ≥ 0, got {shift}")
        self.shift = int(shift)

    @classmethod
    def for_model(cls, model: SegmentationModel, cfg: Any, seed: int = 0) -> PromptSampler | None:
        """A sampler for a promptable model (``model.promptable``), else ``None``.

        The training images must already be the model's square input (``data.image_size`` =
        ``[img_size, img_size]``); ``cfg.data.box_shift`` overrides the default jitter.
        """
        del seed  # boxes use the engine's per-epoch seeding of torch's global generator
        if not model.promptable:
            return None
        size = int(model.img_size)
        if [int(v) for v in cfg.data.image_size] != [size, size]:
            raise ConfigError(
                f"{type(model).__name__} takes {size}×{size} inputs: set data.image_size: [{size}, {size}] "
                f"(got {list(cfg.data.image_size)})"
            )
        shift = cfg.data.box_shift if cfg.data.box_shift is not None else default_box_shift(size)
        return cls(shift)

    def boxes(self, target: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        """``B×4`` float boxes ``(x0, y0, x1, y1)`` in pixels of ``target`` (``B×1×H×W``)."""
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(f"expected a B×1×H×W target, got shape {tuple(target.shape)}")
        b, _, height, width = target.shape
        fg = target[:, 0] >= 0.5
        rows, cols = fg.any(dim=2), fg.any(dim=1)  # B×H (any x), B×W (any y)
        empty = ~rows.any(dim=1)
        ys = torch.arange(height, device=target.device)
        xs = torch.arange(width, device=target.device)
        y0 = torch.where(rows, ys, height).amin(dim=1)
        y1 = torch.where(rows, ys, -1).amax(dim=1)
        x0 = torch.where(cols, xs, width).amin(dim=1)
        x1 = torch.where(cols, xs, -1).amax(dim=1)
        boxes = torch.stack([x0, y0, x1, y1], dim=1)
        full = torch.tensor([0, 0, width - 1, height - 1], device=target.device)
        boxes = torch.where(empty[:, None], full, boxes)
        if jitter and self.shift > 0:
            moves = torch.randint(0, self.shift + 1, (b, 4)).to(target.device)
            boxes = boxes + moves * torch.tensor([-1, -1, 1, 1], device=target.device)
            upper = torch.tensor([width - 1, height - 1, width - 1, height - 1], device=target.device)
            boxes = torch.minimum(boxes.clamp(min=0), upper)
        return boxes.to(torch.float32)
