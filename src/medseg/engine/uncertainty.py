"""Sample-based uncertainty: flip TTA, MC-dropout, or both, and the maps they give.

Samples
-------
* ``tta``: every combination of flips of the allowed spatial axes, the identity included (2D: H, W
  → 4 samples; 3D: D, H, W → 8; ``inference.tta_axes`` restricts the axes, e.g. ``[1, 2]`` for
  in-plane only). Each flipped prediction is flipped back.
* ``mcdropout`` (Gal & Ghahramani 2016): ``samples`` forward passes (default 20) with only the
  ``nn.Dropout*`` modules in train mode; every other module (batch norm above all) stays in eval
  mode, and every module's mode is restored afterwards. A model without dropout is an error
  (:class:`~medseg.errors.ConfigError`), never a silent zero uncertainty.
* ``both``: MC-dropout × TTA, ``samples × n_flips`` forward passes.

Maps (natural log, so entropies are in nats; binary models use the Bernoulli entropy of the
foreground probability, multi-class models the entropy over their K softmax classes)
--------------------------------------------------------------------------------------------------
* ``probability``: the merged foreground probability, the prediction that is thresholded. Merge
  ``"probs"`` (default) averages the samples' probabilities; ``"logits"`` averages their logits and
  then applies the sigmoid/softmax (nnU-Net's behaviour for its mirroring TTA).
* ``entropy``: predictive entropy ``H[E p]`` of the probability mean (total uncertainty).
* ``expected_entropy``: ``E[H p]``, the mean of the samples' entropies (aleatoric part).
* ``mutual_information``: ``H[E p] - E[H p]`` ≥ 0 (BALD, the epistemic part; 0 when all samples
  agree). The three entropies always use the probability mean, whatever the merge, so that the
  decomposition holds.

Large inputs: a 3D model runs by sliding window (the config's window); each window returns its
sample statistics (mean probabilities, mean entropy, mean logits), which are blended like logits.
A 2D model sees each image/slice resized to ``data.image_size``; the statistics are resized back
bilinearly. Blending and bilinear resizing are convex combinations, so the mutual information
stays ≥ 0 (it is then that of the mixture of samples and windows).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.meta_tensor import MetaTensor
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medseg.config import Config
from medseg.data.io import write_volume
from medseg.data.sample import Sample
from medseg.data.transforms import Intensity, preprocess_images
from medseg.engine.inference import (
    SlidingWindow,
    class_index_to_value,
    class_logits,
    flip_axes,
    mask_logits,
    normalized_volume,
)
from medseg.errors import ConfigError, DataError
from medseg.io_utils import atomic_write
from medseg.models import SegmentationModel

METHODS = ("tta", "mcdropout", "both")
MERGES = ("probs", "logits")
DEFAULT_SAMPLES = 20
MAP_SUFFIXES = {
    "probability": "prob",
    "entropy": "entropy",
    "expected_entropy": "expected_entropy",
    "mutual_information": "mi",
}


@dataclass(frozen=True)
class UncertaintyOptions:
    """How to sample: ``method`` (tta, mcdropout, both), MC-dropout ``samples``, ``merge``, ``seed``."""

    method: str = "tta"
    samples: int = DEFAULT_SAMPLES
    merge: str = "probs"
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown uncertainty method '{self.method}'. Available: {', '.join(METHODS)}")
        if self.merge not in MERGES:
            raise ConfigError(f"unknown TTA merge '{self.merge}'. Available: {', '.join(MERGES)}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {self.samples!r}")

    @property
    def flips(self) -> bool:
        return self.method in ("tta", "both")

    @property
    def dropout(self) -> bool:
        return self.method in ("mcdropout", "both")


@dataclass
class UncertaintyMaps:
    """The maps of one input at its own spatial shape (float32); see the module docstring."""

    probability: np.ndarray
    entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    classes: np.ndarray | None  # multi-class: argmax of the merged class probabilities (uint8)
    n_samples: int


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's dropout modules with a non-zero rate (``nn.Dropout``, ``Dropout2d/3d``, alpha)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


@contextmanager
def inference_modes(model: nn.Module, dropout: bool = False, name: str | None = None) -> Iterator[None]:
    """Eval mode for every module, or with ``dropout`` eval except the dropout modules (train mode).

    The train/eval flag of every module is restored on exit.
    """
    drops = dropout_modules(model) if dropout else []
    if dropout and not drops:
        raise ConfigError(
            f"model {name or type(model).__name__} has no Dropout modules; MC-dropout needs dropout: "
            "train with model option dropout>0 (e.g. --set 'model.options={dropout: 0.2}' for unet), "
            "or use --uncertainty tta"
        )
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    for module in drops:
        module.train()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def tta_flips(spatial_dims: int, axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Tensor dims to flip for every combination of the allowed spatial ``axes`` (identity first).

    ``axes`` are spatial axes (0 = the first spatial axis); ``None`` allows all of them.
    """
    allowed = list(range(spatial_dims)) if axes is None else sorted({int(a) for a in axes})
    if any(a < 0 or a >= spatial_dims for a in allowed):
        raise ConfigError(
            f"inference.tta_axes are spatial axes 0..{spatial_dims - 1} of a {spatial_dims}D model, "
            f"got {list(axes or [])}"
        )
    combos = [c for r in range(1, len(allowed) + 1) for c in itertools.combinations(allowed, r)]
    return flip_axes(combos, spatial_dims)


def binary_entropy(p: Tensor) -> Tensor:
    """Bernoulli entropy in nats, ``-p log p - (1 - p) log(1 - p)`` (0 at p = 0 and 1)."""
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def categorical_entropy(p: Tensor, dim: int = 1) -> Tensor:
    """Entropy in nats over the class dimension, ``-sum_k p_k log p_k``."""
    return -torch.xlogy(p, p).sum(dim)


class SampleStatistics:
    """Per-input sample statistics ``B×(2K+1)×spatial``: mean probabilities (K), mean entropy (1),
    mean logits (K); K = 1 (foreground) for a binary model, the number of classes otherwise."""

    def __init__(
        self, model: SegmentationModel, flips: list[tuple[int, ...]], n_draws: int, num_classes: int | None
    ) -> None:
        self.model = model
        self.flips = flips
        self.n_draws = n_draws
        self.num_classes = num_classes

    @property
    def n_samples(self) -> int:
        return self.n_draws * len(self.flips)

    def logits(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        if self.num_classes is None:
            return mask_logits(out, self.model).float()
        return class_logits(out, self.num_classes).float()

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        sum_p = sum_h = sum_z = None
        for _, axes in itertools.product(range(self.n_draws), self.flips):
            z = self.logits(x.flip(axes) if axes else x)
            z = z.flip(axes) if axes else z
            if self.num_classes is None:
                p = torch.sigmoid(z)
                h = binary_entropy(p)
            else:
                p = torch.softmax(z, dim=1)
                h = categorical_entropy(p)[:, None]
            sum_p = p if sum_p is None else sum_p + p
            sum_h = h if sum_h is None else sum_h + h
            sum_z = z if sum_z is None else sum_z + z
        assert sum_p is not None and sum_h is not None and sum_z is not None
        return torch.cat([sum_p, sum_h, sum_z], dim=1) / self.n_samples


def maps_from_statistics(
    stats: Tensor, num_classes: int | None, merge: str, n_samples: int
) -> UncertaintyMaps:
    """The maps of ``C×spatial`` statistics (mean probabilities, mean entropy, mean logits)."""
    k = 1 if num_classes is None else num_classes
    if stats.shape[0] != 2 * k + 1:
        raise ValueError(f"expected {2 * k + 1} statistics channels for K={k}, got {stats.shape[0]}")
    stats = stats.double()
    mean_p, expected, mean_z = stats[:k], stats[k], stats[k + 1 :]
    classes = None
    if num_classes is None:
        mean_p = mean_p[0].clamp(0.0, 1.0)
        entropy = binary_entropy(mean_p)
        merged = torch.sigmoid(mean_z[0]) if merge == "logits" else mean_p
        foreground = merged
    else:
        mean_p = mean_p.clamp(0.0, 1.0)
        entropy = categorical_entropy(mean_p, dim=0)
        merged = torch.softmax(mean_z, dim=0) if merge == "logits" else mean_p
        foreground = 1.0 - merged[0]
        classes = merged.argmax(0).to(torch.uint8).cpu().numpy()
    mi = (entropy - expected).clamp(min=0.0)  # >= 0 up to rounding (Jensen)

    def out(t: Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    return UncertaintyMaps(out(foreground), out(entropy), out(expected), out(mi), classes, n_samples)


def _sliding_statistics(
    statistics: SampleStatistics,
    sample: Sample,
    intensity: Intensity,
    device: torch.device,
    window: SlidingWindow,
) -> Tensor:
    image = normalized_volume(sample, intensity).float()
    image = image.to(window.stitch_device or device)
    result = sliding_window_inference(
        image,
        window.roi_size,
        window.sw_batch_size,
        statistics,
        overlap=window.overlap,
        mode=window.mode,
        sw_device=device,
        device=image.device,
    )
    if isinstance(result, MetaTensor):
        result = result.as_tensor()
    return result[0]


def _resized_statistics(
    statistics: SampleStatistics,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    batch_size: int,
) -> Tensor:
    slices = sample.slices() if sample.ndim == 3 else [sample]
    inputs = preprocess_images([s.image for s in slices], image_size, intensity)
    out_shape = slices[0].spatial_shape
    parts = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size].to(device=device, dtype=torch.float32)
        stats = F.interpolate(statistics(chunk), size=out_shape, mode="bilinear", align_corners=False)
        parts.append(stats.cpu())
    stacked = torch.cat(parts)  # N×C×H×W
    return stacked.transpose(0, 1) if sample.ndim == 3 else stacked[0]


@torch.no_grad()
def predict_uncertainty(
    model: SegmentationModel,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    options: UncertaintyOptions | None = None,
    window: SlidingWindow | None = None,
    tta_axes: Sequence[int] | None = None,
    batch_size: int = 16,
    name: str | None = None,
) -> UncertaintyMaps:
    """Uncertainty maps of ``sample`` at its own spatial shape (see the module docstring).

    Preprocessing is that of :func:`~medseg.engine.predict.predict_probabilities`: a 3D model
    (``window``) sees the whole normalised volume by sliding window (the window's own
    ``tta_flips`` is not used: the flips are the samples here), a 2D model each image or slice
    resized to ``image_size``. ``options=None`` is a single deterministic prediction (entropy only,
    MI = 0). ``seed`` (in the options) makes MC-dropout reproducible without touching the global
    random state.
    """
    options = options or UncertaintyOptions(method="tta", samples=1)
    if model.promptable:
        raise ConfigError("uncertainty maps are not available for promptable (box-prompted) models")
    spatial_dims = 3 if window is not None else 2
    flips = tta_flips(spatial_dims, tta_axes) if options.flips else [()]
    n_draws = options.samples if options.dropout else 1
    num_classes = model.num_classes
    statistics = SampleStatistics(model, flips, n_draws, num_classes)
    with torch.random.fork_rng(devices=None if device.type == "cuda" else []):
        if options.seed is not None:
            torch.manual_seed(options.seed)
        with inference_modes(model, dropout=options.dropout, name=name):
            if window is not None:
                stats = _sliding_statistics(statistics, sample, intensity, device, window)
            else:
                if num_classes is not None:
                    raise DataError(
                        "uncertainty maps of a 2D multi-class model are not available; predict without them"
                    )
                stats = _resized_statistics(statistics, sample, image_size, intensity, device, batch_size)
    return maps_from_statistics(stats, num_classes, options.merge, statistics.n_samples)


def predict_sample_uncertainty(
    model: SegmentationModel,
    sample: Sample,
    cfg: Config,
    device: torch.device,
    window: SlidingWindow | None,
    options: UncertaintyOptions,
    threshold: float,
    class_values: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, UncertaintyMaps]:
    """``(mask, foreground probability, maps)`` for :func:`~medseg.engine.predict.predict_files`.

    The mask is the merged probability ≥ ``threshold`` (binary) or the argmax label map in the
    training label values (multi-class).
    """
    maps = predict_uncertainty(
        model,
        sample,
        cfg.data.image_size,
        cfg.data.intensity,
        device,
        options,
        window=window,
        tta_axes=cfg.inference.tta_axes,
        name=cfg.model.name,
    )
    if maps.classes is not None:
        mask = class_index_to_value(maps.classes, class_values)
    else:
        mask = (maps.probability >= threshold).astype(np.uint8)
    return mask, maps.probability, maps


def write_uncertainty_maps(
    maps: UncertaintyMaps, out_dir: str | Path, stem: str, extension: str, meta: dict[str, Any] | None
) -> dict[str, Path]:
    """Write ``<stem>_prob``, ``_entropy``, ``_expected_entropy`` and ``_mi`` (float32).

    A volume (``meta`` from :func:`~medseg.data.io.read_image`) is written with ``extension``
    (e.g. ``.nii.gz``) and the input's geometry (NIfTI affine kept); a 2D image's maps are ``.npy``
    arrays ``H×W`` in the image's pixel grid (PNG/TIFF cannot hold floats losslessly).
    Returns the paths by map name.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for field, suffix in MAP_SUFFIXES.items():
        array = np.asarray(getattr(maps, field), dtype=np.float32)
        if meta is not None and meta.get("format") != "2d":
            paths[field] = write_volume(out / f"{stem}_{suffix}{extension}", array, meta)
        else:
            path = out / f"{stem}_{suffix}.npy"
            with atomic_write(path, "wb") as handle:
                np.save(handle, array)
            paths[field] = path
    return paths


def predict_logits(
    model: SegmentationModel,
    sample: Sample,
    image_size: Sequence[int],
    intensity: Intensity,
    device: torch.device,
    batch_size: int = 16,
) -> np.ndarray:
    """Foreground logits of a binary 2D model at the sample's own shape (logits resized bilinearly).

    For temperature scaling: ``sigmoid(logits / T)`` is the calibrated probability.
    """
    if model.num_classes is not None:
        raise ConfigError("predict_logits is for binary models (one foreground logit)")
    statistics = SampleStatistics(model, [()], 1, None)
    with torch.no_grad(), inference_modes(model):
        stats = _resized_statistics(statistics, sample, image_size, intensity, device, batch_size)
    return stats[2].numpy()


def uncertainty_options(
    method: str | None, samples: int = DEFAULT_SAMPLES, merge: str = "probs", seed: int | None = 0
) -> UncertaintyOptions | None:
    """Options from command-line values; ``None`` when ``method`` is ``None`` (no sampling)."""
    if method is None:
        return None
    return UncertaintyOptions(method=method, samples=samples, merge=merge, seed=seed)
