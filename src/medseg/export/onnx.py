"""ONNX export of a medseg checkpoint (``torch.onnx.export(..., dynamo=True)``) with a parity check.

The model is exported in eval mode, where every medseg model returns its main logits only (deep
supervision heads and SAM's IoU-in-training dict are training-mode outputs), into one ``.onnx``
file with the weights embedded. Which axes stay dynamic comes from the model:

* the batch axis always;
* the spatial axes when the model declares ``export_spatial_divisor`` = d (U-Net: 2**depth,
  U-Net++ likewise, V-Net 16): the graph then takes every multiple of d (``torch.export.Dim``
  derived dims ``d·n``); ``None`` means a fixed input grid (TransUNet/MicroSegNet position
  embedding, SAM-style models) and the spatial axes are static. A model that declares nothing
  falls back on its ``size_multiple`` if it has one, else static.

SAM-style (promptable) models become two graphs, ``X.encoder.onnx`` (image → embedding) and
``X.decoder.onnx`` (embedding + box → logits, IoU), so an embedding serves several boxes.

The metadata (``metadata_props``, keys ``medseg.*``, JSON values) holds what prediction needs to
rebuild its pre- and post-processing: the full config, intensity normalisation, image/patch size,
activation, classes, mask channel, spatial dims, the checkpoint's SHA-256 and the medseg version
(:func:`medseg.export.runtime.load_onnx_model` reads it back).

The parity check runs onnxruntime against PyTorch at batch 1 and 2 and at two or more sizes per
dynamic spatial axis, with ``torch.testing``-style tolerances ``|onnx − torch| ≤ atol + rtol·|torch|``,
and writes ``X.parity.json``; a failure raises :class:`ParityError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import medseg
from medseg.config import Config
from medseg.data.loading import load_splits
from medseg.data.transforms import preprocess_images
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import model_from_state
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.export.runtime import INSTALL_HINT, METADATA_PREFIX, open_session, ort_errors, sam_graph_paths
from medseg.io_utils import atomic_path, write_text_atomic
from medseg.models import SegmentationModel
from medseg.provenance import file_sha256

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
EXAMPLE_BATCH = 2  # a traced size of 1 would be specialised (torch.export's 0/1 rule)


class ParityError(MedsegError):
    """onnxruntime and PyTorch disagree beyond the tolerances."""


@dataclass(frozen=True)
class ExportSpec:
    """Which input axes an exported graph leaves dynamic.

    ``spatial_divisor``: every spatial size must be a multiple of it; ``None`` = fixed input grid.
    """

    dynamic_batch: bool = True
    spatial_divisor: int | None = None


def export_spec(model: SegmentationModel) -> ExportSpec:
    """The model's declared ``export_spatial_divisor`` (``None``: a fixed input grid)."""
    divisor = model.export_spatial_divisor
    if divisor is not None and (isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1):
        raise ConfigError(f"{type(model).__name__} declares an invalid spatial divisor {divisor!r}")
    return ExportSpec(dynamic_batch=True, spatial_divisor=divisor)


def resolve_dynamic_spatial(spec: ExportSpec, requested: bool | None, name: str) -> bool:
    """Whether the spatial axes are exported dynamic: ``None`` = when the model allows it."""
    if requested is None:
        return spec.spatial_divisor is not None
    if requested and spec.spatial_divisor is None:
        raise ConfigError(
            f"model '{name}' has a fixed input grid (position embedding / prompt grid): its spatial axes "
            "cannot be dynamic. Export it with --static (the batch axis stays dynamic)."
        )
    return requested


@dataclass
class ParityCase:
    """onnxruntime vs PyTorch on one input shape."""

    graph: str
    input_shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    within_tolerance: bool
    label_agreement: float | None = None
    dice: float | None = None
    empty_masks: bool = False  # both masks empty: Dice is 1 by convention
    inputs: str = "random"  # "random", or "data": images of the checkpoint's own data set


@dataclass
class ParityReport:
    """Every :class:`ParityCase` of an export and the tolerances they were held to."""

    models: list[str]
    atol: float
    rtol: float
    cases: list[ParityCase] = field(default_factory=list)
    data_inputs: str = "not used"  # where the real-image cases came from, or why there are none

    @property
    def passed(self) -> bool:
        return all(c.within_tolerance for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """The JSON written beside the model."""
        labelled = [c for c in self.cases if c.label_agreement is not None]
        return {
            "models": self.models,
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "max_abs_diff": max(c.max_abs_diff for c in self.cases),
            "mean_abs_diff": float(np.mean([c.mean_abs_diff for c in self.cases])),
            "min_label_agreement": min((c.label_agreement for c in labelled), default=None),
            "min_dice": min((c.dice for c in labelled if c.dice is not None), default=None),
            "data_inputs": self.data_inputs,
            "cases": [asdict(c) for c in self.cases],
        }


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote."""

    paths: list[Path]
    dynamic_spatial: bool
    parity: ParityReport | None = None
    parity_path: Path | None = None


class MainLogits(nn.Module):
    """The model's eval-mode output, checked to be the single main logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        out = self.model(image)
        if not isinstance(out, Tensor):
            raise ConfigError(
                f"{type(self.model).__name__} returns {type(out).__name__} in eval mode, not a logits tensor"
            )
        return out


class SamImageEncoder(nn.Module):
    """Graph 1 of a SAM-style model: image ``B×C×S×S`` → embedding ``B×E×k×k``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.encode(image)


class SamPromptDecoder(nn.Module):
    """Graph 2 of a SAM-style model: embedding ``B×E×k×k`` + box ``B×4`` → logits ``B×1×S×S``, IoU ``B×1``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embedding: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.decode(image_embedding, boxes)


def require_exporter() -> None:
    """The dynamo exporter needs ``onnx`` and ``onnxscript``; a clear error when they are missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MedsegError(
            f"ONNX export needs onnx and onnxscript ({exc}); install them with `{INSTALL_HINT}`"
        ) from exc


def nominal_spatial_size(cfg: Config, model: SegmentationModel) -> tuple[int, ...]:
    """The spatial size prediction feeds the model: SAM ``img_size``, the 3D window, else ``image_size``."""
    if model.promptable:
        return (int(model.img_size),) * 2
    if cfg.data.spatial_dims == 3:
        roi = cfg.inference.roi_size or cfg.data.patch_size
        if roi is None or len(roi) != 3:
            raise ConfigError(
                f"a 3D model needs data.patch_size (or inference.roi_size) to export, got {roi}"
            )
        return tuple(int(r) for r in roi)
    return tuple(int(s) for s in cfg.data.image_size)


def export_metadata(
    cfg: Config,
    model: SegmentationModel,
    state: dict[str, Any],
    checkpoint_sha256: str,
    graph: str,
    spatial_size: Sequence[int],
    divisor: int | None,
    opset: int | None,
) -> dict[str, str]:
    """The ``medseg.*`` metadata of an exported graph (values JSON-encoded)."""
    num_classes = model.num_classes
    class_values = state.get("class_values")
    if num_classes is None:
        class_names: list[str] | None = ["background", "foreground"]
    elif class_values is not None:
        class_names = ["background", *(f"label {v}" for v in list(class_values)[1:])]
    else:
        class_names = ["background", *(f"class {i}" for i in range(1, num_classes))]
    values: dict[str, Any] = {
        "version": medseg.__version__,
        "graph": graph,
        "model": cfg.model.name,
        "config": cfg.to_dict(),
        "checkpoint_sha256": checkpoint_sha256,
        "spatial_dims": cfg.data.spatial_dims,
        "in_channels": cfg.data.in_channels,
        "intensity": cfg.data.intensity,
        "image_size": list(cfg.data.image_size),
        "patch_size": cfg.data.patch_size,
        "input_size": list(spatial_size),
        "spatial_divisor": divisor,
        "dynamic_batch": True,
        "activation": "sigmoid" if num_classes is None else "softmax",
        "num_classes": num_classes,
        "class_values": None if class_values is None else list(class_values),
        "class_names": class_names,
        "mask_channel": model.mask_channel,
        "threshold": cfg.eval.threshold,
        "postprocessing": state.get("postprocessing"),  # the checkpoint's, applied by predict
        "opset": opset,
    }
    if model.promptable:
        values["img_size"] = int(model.img_size)
        values["embedding_size"] = int(model.embedding_size)
    return {METADATA_PREFIX + k: json.dumps(v) for k, v in values.items()}


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    dynamic_shapes: tuple[dict[int, Any], ...],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    metadata: dict[str, str],
    opset: int | None,
) -> Path:
    """One graph, weights embedded, metadata attached, written to ``path`` as a single file."""
    with warnings.catch_warnings():
        # the shared batch Dim of the SAM decoder's two inputs makes the exporter warn about naming
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints.*")
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            external_data=False,
            dynamic_shapes=dynamic_shapes,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            verbose=False,
        )
    if program is None:
        raise MedsegError(f"torch.onnx.export returned no program for {path}")
    program.model.metadata_props.update(metadata)
    # the opset actually written (the exporter's default when none was asked for)
    program.model.metadata_props[METADATA_PREFIX + "opset"] = json.dumps(program.model.opset_imports.get(""))
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


def _spatial_dims_spec(size: Sequence[int], divisor: int) -> tuple[tuple[int, ...], dict[int, Any]]:
    """Traced spatial size (each side ≥ 2·divisor) and ``{axis: divisor·Dim}`` for the spatial axes."""
    from torch.export import Dim

    names = "dhw"[-len(size) :]
    traced = tuple(max(int(s), 2 * divisor) for s in size)
    dims = {2 + i: divisor * Dim(f"{names[i]}_blocks", min=1) for i in range(len(size))}
    return traced, dims


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    dynamic: bool | None = None,
    opset: int | None = None,
    check: bool = False,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> OnnxExport:
    """Export a medseg checkpoint to ``output`` (``.onnx``); SAM-style models to two graphs.

    ``dynamic``: spatial axes dynamic (``True``), static (``False``) or when the model allows it
    (``None``); the batch axis is always dynamic. ``check`` runs :func:`check_parity`, writes
    ``<output stem>.parity.json`` and raises :class:`ParityError` when it fails.
    """
    from torch.export import Dim

    output = Path(output)
    if not output.name.endswith(".onnx"):
        raise ConfigError(f"{output}: the exported model's file name must end with .onnx")
    require_exporter()
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_state(state, "cpu")
    sha = file_sha256(checkpoint)
    spec = export_spec(model)
    dynamic_spatial = resolve_dynamic_spatial(spec, dynamic, cfg.model.name)
    divisor = spec.spatial_divisor if dynamic_spatial else None
    size = nominal_spatial_size(cfg, model)
    if divisor is not None and any(s % divisor for s in size):
        raise ConfigError(
            f"{checkpoint}: input size {list(size)} is not a multiple of the model's divisor {divisor}"
        )
    batch = Dim("batch", min=1)
    channels = cfg.data.in_channels
    promptable = model.promptable

    def meta(graph: str) -> dict[str, str]:
        return export_metadata(cfg, model, state, sha, graph, size, divisor, opset)

    if promptable:
        encoder_path, decoder_path = sam_graph_paths(output)
        encoder, decoder = SamImageEncoder(model), SamPromptDecoder(model)
        # the encoder graph takes RGB (grey input is repeated by the runtime wrapper, as encode does)
        image = torch.rand(EXAMPLE_BATCH, 3, *size)
        with torch.no_grad():
            embedding = encoder(image)
        boxes = random_boxes(EXAMPLE_BATCH, size[0], torch.Generator().manual_seed(0))
        paths = [
            _export_graph(
                encoder,
                (image,),
                ({0: batch},),
                ["image"],
                ["image_embedding"],
                encoder_path,
                meta("encoder"),
                opset,
            ),
            _export_graph(
                decoder,
                (embedding, boxes),
                ({0: batch}, {0: batch}),
                ["image_embedding", "boxes"],
                ["logits", "iou"],
                decoder_path,
                meta("decoder"),
                opset,
            ),
        ]
    else:
        axes: dict[int, Any] = {0: batch}
        traced = size
        if divisor is not None:
            traced, spatial = _spatial_dims_spec(size, divisor)
            axes.update(spatial)
        image = torch.randn(EXAMPLE_BATCH, channels, *traced)
        paths = [
            _export_graph(
                MainLogits(model), (image,), (axes,), ["image"], ["logits"], output, meta("model"), opset
            )
        ]
    result = OnnxExport(paths=paths, dynamic_spatial=dynamic_spatial)
    if check:
        data_images, data_note = (None, "not used") if promptable else data_images_for_parity(cfg, size)
        report = check_parity(model, paths, size, divisor, channels, atol, rtol, data_images=data_images)
        report.data_inputs = data_note
        result.parity = report
        result.parity_path = write_parity(report, output)
        if not report.passed:
            raise ParityError(parity_failure_message(report, result.parity_path))
    return result


def parity_path_for(output: str | Path) -> Path:
    """``X.parity.json`` beside ``X.onnx``."""
    output = Path(output)
    stem = output.name[: -len(".onnx")] if output.name.endswith(".onnx") else output.name
    return output.with_name(f"{stem}.parity.json")


def write_parity(report: ParityReport, output: str | Path) -> Path:
    """Write the report as ``X.parity.json`` beside ``X.onnx``."""
    path = parity_path_for(output)
    write_text_atomic(path, json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def parity_failure_message(report: ParityReport, parity_path: Path) -> str:
    """Which shapes failed, by how much, and where the full report is."""
    failed = [c for c in report.cases if not c.within_tolerance]
    worst = max(failed, key=lambda c: c.max_abs_diff)
    return (
        f"ONNX parity check failed for {', '.join(report.models)}: {len(failed)} of {len(report.cases)} "
        f"inputs exceed |Δ| ≤ {report.atol:g} + {report.rtol:g}·|torch| (worst: {worst.graph} on the "
        f"{worst.inputs} input {worst.input_shape}, max |Δ| {worst.max_abs_diff:.3g}); see {parity_path}"
    )


def random_boxes(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``n×4`` boxes (x0, y0, x1, y1) inside a ``size``-pixel square, each side ≥ size/8."""
    corners = torch.rand(n, 2, generator=generator) * size * 0.5
    extent = (torch.rand(n, 2, generator=generator) * 0.375 + 0.125) * size
    return torch.cat([corners, (corners + extent).clamp(max=size - 1)], dim=1)


def parity_shapes(size: Sequence[int], divisor: int | None) -> list[tuple[int, ...]]:
    """Spatial sizes to check: the nominal one, then (dynamic) every side + divisor, and one side only."""
    shapes = [tuple(size)]
    if divisor is not None:
        shapes.append(tuple(s + divisor for s in size))
        if len(size) > 1:
            shapes.append((*size[:-1], size[-1] + divisor))
    return shapes


def compare_outputs(
    graph: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    atol: float,
    rtol: float,
    labels: str | None = None,
    channel: int = 0,
    num_classes: int | None = None,
) -> ParityCase:
    """|Δ| statistics of ``candidate`` (onnxruntime) against ``reference`` (PyTorch).

    ``labels``: ``"sigmoid"`` (foreground = logit of ``channel`` > 0) or ``"softmax"`` (argmax of the
    first ``num_classes`` channels) adds the label agreement and the Dice of the foreground masks.
    """
    if reference.shape != candidate.shape:
        raise ParityError(f"{graph}: onnxruntime output shape {candidate.shape} ≠ torch {reference.shape}")
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    within = bool(np.all(diff <= atol + rtol * np.abs(reference)))
    case = ParityCase(graph, [], float(diff.max(initial=0.0)), float(diff.mean()), within)
    if labels is None:
        return case
    if labels == "softmax":
        ref_labels = reference[:, :num_classes].argmax(1)
        onnx_labels = candidate[:, :num_classes].argmax(1)
    else:
        ref_labels = (reference[:, channel] > 0).astype(np.int64)
        onnx_labels = (candidate[:, channel] > 0).astype(np.int64)
    case.label_agreement = float(np.mean(ref_labels == onnx_labels))
    ref_fg, onnx_fg = ref_labels != 0, onnx_labels != 0
    total = int(ref_fg.sum() + onnx_fg.sum())
    case.empty_masks = total == 0
    case.dice = 1.0 if total == 0 else float(2 * np.logical_and(ref_fg, onnx_fg).sum() / total)
    return case


@torch.no_grad()
def check_parity(
    model: SegmentationModel,
    paths: Sequence[Path],
    size: Sequence[int],
    divisor: int | None,
    channels: int,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    batches: Sequence[int] = (1, 2),
    data_images: Tensor | None = None,
) -> ParityReport:
    """onnxruntime vs ``model`` (PyTorch, eval mode) at every batch × :func:`parity_shapes` size.

    Random inputs give a trained model empty masks, so ``data_images`` (N×C×H×W real images at
    the nominal size, :func:`data_images_for_parity`) adds cases at batch 1 and 2 whose masks mean
    something."""
    model = model.eval()
    generator = torch.Generator().manual_seed(0)
    report = ParityReport([str(p) for p in paths], atol, rtol)
    sessions = [open_session(p) for p in paths]
    if model.promptable:
        encoder, decoder = sessions
        for b in batches:
            image = torch.rand(b, 3, *size, generator=generator)
            embedding = model.encode(image)
            (onnx_embedding,) = encoder.run(None, {"image": image.numpy()})
            case = compare_outputs("encoder", embedding.numpy(), onnx_embedding, atol, rtol)
            case.input_shape = list(image.shape)
            report.cases.append(case)
            boxes = random_boxes(b, size[0], generator)
            logits, iou = model.decode(embedding, boxes)
            onnx_logits, onnx_iou = decoder.run(
                None, {"image_embedding": embedding.numpy(), "boxes": boxes.numpy()}
            )
            case = compare_outputs("decoder", logits.numpy(), onnx_logits, atol, rtol, "sigmoid")
            iou_case = compare_outputs("decoder", iou.numpy(), onnx_iou, atol, rtol)
            case.max_abs_diff = max(case.max_abs_diff, iou_case.max_abs_diff)
            case.within_tolerance = case.within_tolerance and iou_case.within_tolerance
            case.input_shape = list(embedding.shape)
            report.cases.append(case)
        return report
    (session,) = sessions
    num_classes = model.num_classes
    labels = "sigmoid" if num_classes is None else "softmax"
    inputs = [
        (torch.randn(b, channels, *spatial, generator=generator), "random")
        for spatial in parity_shapes(size, divisor)
        for b in batches
    ]
    if data_images is not None:
        inputs += [(data_images[:b], "data") for b in batches if b <= len(data_images)]
    for image, kind in inputs:
        reference = MainLogits(model)(image).numpy()
        try:
            (candidate,) = session.run(None, {"image": image.numpy()})
        except ort_errors() as exc:  # an onnxruntime error names no file: add it
            raise DataError(f"onnxruntime failed on shape {list(image.shape)} ({exc})", paths[0]) from exc
        case = compare_outputs(
            "model", reference, candidate, atol, rtol, labels, model.mask_channel, num_classes
        )
        case.input_shape = list(image.shape)
        case.inputs = kind
        report.cases.append(case)
    return report


def data_images_for_parity(cfg: Config, size: Sequence[int], n: int = 2) -> tuple[Tensor | None, str]:
    """Up to ``n`` preprocessed 2D images of the config's own data (validation, else test, else
    training cases), the slices with the most foreground first; ``(None, reason)`` when the data is
    not on this machine or the model is not a 2D one."""

    if cfg.data.spatial_dims != 2 or len(size) != 2:
        return None, "not used: real-image cases are made for 2D models only"
    try:
        splits = load_splits(cfg.data)
    except (MedsegError, OSError, ValueError) as exc:
        return None, f"not used: the config's data could not be read ({exc})"
    samples = splits.val or splits.test or splits.train
    slices = [s for sample in samples[:4] for s in (sample.slices() if sample.ndim == 3 else [sample])]
    if not slices:
        return None, "not used: the config's data has no cases"
    slices.sort(key=lambda s: -int(np.count_nonzero(s.target_mask)))
    images = preprocess_images([s.image for s in slices[:n]], size, cfg.data.intensity)
    names = ", ".join(sorted({str(s.case_id) for s in slices[:n]}))
    return images, f"{len(images)} image(s) of {cfg.data.source} ({names})"
