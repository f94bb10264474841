"""The base every medseg model derives from (after segmentation_models_pytorch's ``SegmentationModel``).

What the engine and the exporter need to know about a model is declared here once, as
attributes with defaults, and overridden by the architectures that differ:

* ``spatial_dims``: 2 (``B×C×H×W``) or 3 (``B×C×D×H×W``);
* ``size_multiple``: every spatial input size must be a multiple of it (1: any size);
* ``export_spatial_divisor``: ONNX export keeps the spatial axes dynamic in multiples of it;
  ``None`` is a fixed input grid (a position embedding, a prompt grid). Default: ``size_multiple``;
* ``mask_channel``: the logit channel that holds the foreground mask (Res-UNet adds a boundary
  channel after it); the loss sees every channel, Dice, evaluation and prediction this one only;
* ``num_classes``: K of a multi-class model (softmax over its first K channels), ``None`` for a
  binary one; :func:`~medseg.models.registry.build_from_config` sets it from ``data.num_classes``;
* ``deep_supervision``: in training mode ``forward`` returns ``[main, aux...]`` (highest resolution
  first), in eval mode ``main`` only;
* ``promptable``: ``forward(image, boxes)``; training mode returns ``{"logits", "iou"}``.

:meth:`SegmentationModel.check_input` raises a ``ValueError`` that names the shape for an input
the model cannot take.
"""

from __future__ import annotations

from torch import Tensor, nn


def check_spatial_input(x: Tensor, name: str, spatial_dims: int, size_multiple: int = 1) -> None:
    """Raise ``ValueError`` for a rank other than ``spatial_dims + 2`` or a size not a multiple."""
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name}(spatial_dims={spatial_dims}) expects a {spatial_dims + 2}-D input "
            f"B×C×{'D×' if spatial_dims == 3 else ''}H×W, got shape {tuple(x.shape)}"
        )
    spatial = tuple(x.shape[2:])
    if size_multiple > 1 and any(s % size_multiple for s in spatial):
        raise ValueError(
            f"{name} needs every spatial size to be a multiple of {size_multiple}; got spatial shape "
            f"{spatial}. Pad or crop the input."
        )


class SegmentationModel(nn.Module):
    """A segmentation network returning logits, with its input contract declared (module docstring)."""

    spatial_dims: int = 2
    size_multiple: int = 1
    mask_channel: int = 0
    num_classes: int | None = None
    deep_supervision: bool = False
    promptable: bool = False

    @property
    def export_spatial_divisor(self) -> int | None:
        """ONNX export: spatial axes stay dynamic in multiples of this (``None``: a fixed grid)."""
        return self.size_multiple

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank or a spatial size not a multiple of ``size_multiple``."""
        check_spatial_input(x, type(self).__name__, self.spatial_dims, self.size_multiple)
