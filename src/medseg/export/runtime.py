"""Running an exported ONNX model with onnxruntime behind the interface of a medseg model.

:func:`load_predictor` opens a medseg checkpoint (``.pt``, PyTorch) or an ONNX export (``.onnx``,
onnxruntime) and returns ``(model, config, state)``: ``model`` is a ``torch.nn.Module`` in both
cases (for ONNX, :class:`OnnxSegmenter` or :class:`OnnxPromptableSAM`, which call an
``InferenceSession`` with numpy arrays and hand torch tensors back), ``config`` is the medseg
:class:`~medseg.config.Config` (rebuilt from the ONNX metadata, :mod:`medseg.export.onnx`), and
``state`` holds ``config``, ``class_values`` and ``postprocessing`` as a checkpoint does. The
engine's pre- and post-processing and sliding window therefore run unchanged on either backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medseg.config import Config, config_from_dict
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import model_from_state
from medseg.errors import ConfigError, DataError, MedsegError
from medseg.models import SegmentationModel

BACKENDS = ("auto", "torch", "onnxruntime")
INSTALL_HINT = "pip install medseg[onnx]"
METADATA_PREFIX = "medseg."


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a :class:`MedsegError` that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MedsegError(f"onnxruntime is not installed ({exc}); install it with `{INSTALL_HINT}`") from exc
    return onnxruntime


def open_session(path: str | Path, threads: int | None = None, device: str = "cpu") -> Any:
    """An onnxruntime ``InferenceSession`` for ``path``; a missing or corrupt file is a :class:`DataError`.

    ``threads`` sets the intra-op threads (``None``: onnxruntime's default). On a CUDA ``device`` the
    CUDA execution provider is used when this onnxruntime build has it.
    """
    ort = import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise DataError("ONNX model not found", path)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except ort_errors() as exc:
        raise DataError(f"not a readable ONNX model ({type(exc).__name__}: {exc})", path) from exc


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types onnxruntime raises (its pybind errors derive from ``Exception`` only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented")
    found = tuple(getattr(state, n) for n in (*names, "RuntimeException") if hasattr(state, n))
    return (*found, RuntimeError, ValueError)


def session_metadata(session: Any) -> dict[str, str]:
    """The ``medseg.*`` metadata of a session's model, without the prefix."""
    props = session.get_modelmeta().custom_metadata_map
    return {k[len(METADATA_PREFIX) :]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}


def _metadata(session: Any, path: Path) -> dict[str, Any]:
    """Decoded metadata (values are JSON); a file without medseg metadata is a :class:`DataError`."""
    raw = session_metadata(session)
    if "config" not in raw:
        raise DataError("ONNX model has no medseg metadata (export it with `medseg export onnx`)", path)
    try:
        return {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as exc:
        raise DataError(f"ONNX model has unreadable medseg metadata ({exc})", path) from exc


def _run(session: Any, feeds: dict[str, Tensor]) -> list[Tensor]:
    """Run ``session`` on torch tensors (float32, via numpy); outputs on the first input's device."""
    device = next(iter(feeds.values())).device
    arrays = {k: np.ascontiguousarray(v.detach().float().cpu().numpy()) for k, v in feeds.items()}
    return [torch.from_numpy(out).to(device) for out in session.run(None, arrays)]


class OnnxSegmenter(SegmentationModel):
    """An exported segmentation network: ``forward(image)`` → logits, computed by onnxruntime.

    Declares the model contract the engine reads (``num_classes``, ``mask_channel``,
    ``spatial_dims``) from the export's metadata.
    """

    def __init__(self, session: Any, metadata: dict[str, Any], path: str | Path) -> None:
        super().__init__()
        self.session = session
        self.path = Path(path)
        self.input_name = session.get_inputs()[0].name
        self.spatial_dims = int(metadata["spatial_dims"])
        self.mask_channel = int(metadata.get("mask_channel", 0))
        if metadata.get("num_classes") is not None:
            self.num_classes = int(metadata["num_classes"])

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``B×K×spatial`` of a ``B×C×spatial`` input."""
        try:
            return _run(self.session, {self.input_name: x})[0]
        except ort_errors() as exc:
            raise DataError(
                f"onnxruntime failed on input shape {tuple(x.shape)} ({type(exc).__name__}: {exc})", self.path
            ) from exc


class OnnxPromptableSAM(SegmentationModel):
    """A SAM-style export (image encoder + prompt decoder graphs) with the promptable-model contract.

    ``encode(image)`` → embedding, ``decode(embedding, boxes)`` → ``(logits, iou)``, and
    ``forward(image, boxes)`` → logits, as :class:`~medseg.models.medsam.PromptableSAM` in eval mode.
    """

    promptable = True

    def __init__(self, encoder: Any, decoder: Any, metadata: dict[str, Any], path: str | Path) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.path = Path(path)
        self.img_size = int(metadata["img_size"])
        self.embedding_size = int(metadata["embedding_size"])
        self.encoder_channels = int(encoder.get_inputs()[0].shape[1])

    def encode(self, image: Tensor) -> Tensor:
        """Image embedding ``B×E×k×k`` of a ``B×{1,3}×S×S`` image in [0, 1] (grey is repeated to RGB)."""
        if image.ndim != 4 or tuple(image.shape[2:]) != (self.img_size,) * 2:
            raise ValueError(
                f"{self.path} takes B×C×{self.img_size}×{self.img_size} images, got {tuple(image.shape)}"
            )
        if image.shape[1] == 1 and self.encoder_channels == 3:
            image = image.expand(-1, 3, -1, -1)
        return _run(self.encoder, {"image": image})[0]

    def decode(self, embedding: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``N×1×S×S`` and IoU ``N×1`` for ``N×4`` boxes; one embedding may serve all boxes."""
        if boxes.ndim == 3 and boxes.shape[1] == 1:
            boxes = boxes[:, 0]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be N×4 (x0, y0, x1, y1), got {tuple(boxes.shape)}")
        if embedding.shape[0] == 1 and boxes.shape[0] > 1:
            embedding = embedding.expand(boxes.shape[0], -1, -1, -1)  # the graph pairs embedding i, box i
        if embedding.shape[0] != boxes.shape[0]:
            raise ValueError(f"{embedding.shape[0]} image embeddings for {boxes.shape[0]} boxes")
        logits, iou = _run(self.decoder, {"image_embedding": embedding, "boxes": boxes})
        return logits, iou

    def forward(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Mask logits ``B×1×S×S``, one box per image."""
        return self.decode(self.encode(image), boxes)[0]


def sam_graph_paths(path: str | Path) -> tuple[Path, Path]:
    """``X.encoder.onnx`` and ``X.decoder.onnx`` for ``X.onnx`` (or for either of the two)."""
    path = Path(path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    for part in (".encoder", ".decoder"):
        if stem.endswith(part):
            stem = stem[: -len(part)]
    return path.with_name(f"{stem}.encoder.onnx"), path.with_name(f"{stem}.decoder.onnx")


def load_onnx_model(
    path: str | Path, threads: int | None = None, device: str = "cpu"
) -> tuple[SegmentationModel, Config, dict[str, Any]]:
    """The model, config and ``{"config", "class_values"}`` of a medseg ONNX export.

    ``path`` is ``X.onnx``; for a SAM-style export it may be ``X.onnx`` (when only the two graphs
    exist), ``X.encoder.onnx`` or ``X.decoder.onnx``.
    """
    path = Path(path)
    encoder_path, decoder_path = sam_graph_paths(path)
    two_graphs = not path.is_file() and encoder_path.is_file()
    session = open_session(encoder_path if two_graphs else path, threads, device)
    metadata = _metadata(session, encoder_path if two_graphs else path)
    config = metadata["config"]
    try:
        cfg = config_from_dict(config)
    except (ConfigError, TypeError, KeyError) as exc:
        raise DataError(f"ONNX model metadata holds an invalid medseg config ({exc})", path) from exc
    state = {
        "config": config,
        "class_values": metadata.get("class_values"),
        "postprocessing": metadata.get("postprocessing"),
    }
    if metadata.get("graph") in ("encoder", "decoder"):
        encoder = session if metadata["graph"] == "encoder" else open_session(encoder_path, threads, device)
        decoder = session if metadata["graph"] == "decoder" else open_session(decoder_path, threads, device)
        return OnnxPromptableSAM(encoder, decoder, metadata, encoder_path).eval(), cfg, state
    return OnnxSegmenter(session, metadata, path).eval(), cfg, state


def resolve_backend(path: str | Path, backend: str = "auto") -> str:
    """``torch`` or ``onnxruntime`` for a model file: ``auto`` picks onnxruntime for ``.onnx``."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    is_onnx = str(path).endswith(".onnx")
    if backend == "auto":
        return "onnxruntime" if is_onnx else "torch"
    if backend == "torch" and is_onnx:
        raise ConfigError(f"{path}: an ONNX model runs with --backend onnxruntime, not torch")
    if backend == "onnxruntime" and not is_onnx:
        raise ConfigError(
            f"{path}: --backend onnxruntime needs an .onnx file; export the checkpoint first with "
            "`medseg export onnx CHECKPOINT -o model.onnx`"
        )
    return backend


def load_predictor(
    path: str | Path, device: torch.device | str = "cpu", backend: str = "auto"
) -> tuple[SegmentationModel, Config, dict[str, Any]]:
    """``(model, config, state)`` of a checkpoint (PyTorch) or an ONNX export (onnxruntime), in eval mode."""
    if resolve_backend(path, backend) == "onnxruntime":
        return load_onnx_model(path, device=str(device))
    state = load_checkpoint(path)
    model, cfg = model_from_state(state, device)
    return model, cfg, state
