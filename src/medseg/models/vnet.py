"""V-Net (Milletari, Navab & Ahmadi, 3DV 2016, arXiv:1606.04797) on MONAI's implementation.

MONAI's ``monai.networks.nets.VNet`` follows the paper: five resolution stages with 1, 2, 3, 3, 3
residual 5×5×5 convolutions (16 → 256 channels), 2×2×2 stride-2 convolutions down and 2×2×2
stride-2 transposed convolutions up, skips concatenated in the expanding path, and a 5×5×5 +
1×1×1 output stage. medseg subclasses it (so state dicts stay MONAI's) and changes three things:

* **Dropout is explicit** (``dropout``, default 0). MONAI's ``dropout_prob_up`` only reaches the two
  deepest up-stages; the two highest keep ``UpTransition``'s default ``Dropout3d(0.5)`` on their
  skip input, which stays on in training whatever the constructor says (MONAI 1.6.1). Here every
  dropout layer gets ``p=dropout``, and ``dropout=0`` removes them.
* **PReLU** is the default activation, as in the paper (MONAI defaults to ELU).
* **Input sizes**: four stride-2 stages need every spatial size to be a multiple of 16. With
  ``pad=True`` (default) the input is zero-padded (split evenly before/after) up to the next
  multiple and the logits are cropped back; with ``pad=False`` a ``ValueError`` names the shape.

The output is logits: a sigmoid for ``out_channels=1``, a softmax over channels otherwise (the
paper's two-channel softmax head is ``out_channels=2``).
"""

from __future__ import annotations

import torch.nn.functional as F
from monai.networks.nets import VNet as MonaiVNet
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from medseg.errors import ConfigError
from medseg.models.base import SegmentationModel
from medseg.models.registry import MODELS

#: Four stride-2 stages: every spatial size must be a multiple of 2**4.
VNET_SIZE_MULTIPLE = 16
ACTIVATIONS = ("prelu", "elu", "relu")


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[slice, ...]]:
    """Zero-pad every spatial dim of ``x`` up to a multiple; return it and the slices that undo it."""
    pad: list[int] = []
    crop: list[slice] = [slice(None), slice(None)]
    for size in x.shape[2:]:
        extra = -size % multiple
        before = extra // 2
        crop.append(slice(before, before + size))
        # F.pad lists the last dimension first.
        pad = [before, extra - before, *pad]
    if not any(pad):
        return x, tuple(crop)
    return F.pad(x, pad), tuple(crop)


@MODELS.register(
    "vnet",
    doc="V-Net (Milletari et al. 2016) on MONAI's VNet: residual 5³ convs, PReLU, dropout off by default.",
)
class VNet(MonaiVNet, SegmentationModel):
    """V-Net returning logits (``B×out_channels×spatial``), 2D or 3D.

    Args:
        in_channels: image channels; must divide 16 (the input stage adds the input repeated
            to 16 channels as its residual, MONAI's and the paper's design).
        out_channels: logit channels (1 for sigmoid, K for softmax).
        spatial_dims: 3 (``B×C×D×H×W``, the paper) or 2.
        dropout: channel dropout everywhere MONAI places it (the two deepest down-stages, the
            inputs of the two deepest up-stages and the skips of all four up-stages); 0 removes
            every dropout layer.
        act: ``prelu`` (the paper), ``elu`` (MONAI's default) or ``relu``.
        pad: pad inputs to a multiple of 16 and crop the logits back (else a ``ValueError``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        spatial_dims: int = 3,
        dropout: float = 0.0,
        act: str = "prelu",
        pad: bool = True,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels <= 0 or out_channels <= 0 or 16 % in_channels:
            raise ConfigError(
                f"VNet needs in_channels dividing 16 and out_channels > 0; got in={in_channels}, "
                f"out={out_channels}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if act not in ACTIVATIONS:
            raise ConfigError(f"unknown act '{act}'. Available: {', '.join(ACTIVATIONS)}")
        p = dropout if dropout > 0 else None
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            act=act if act == "prelu" else (act, {"inplace": True}),
            dropout_prob_down=p,
            dropout_prob_up=(p, dropout),
            dropout_dim=spatial_dims,
            bias=False,
        )
        # The two highest up-stages ignore dropout_prob_up (see the module docstring).
        dropouts = [
            (module, name, child)
            for module in self.modules()
            for name, child in module.named_children()
            if isinstance(child, _DropoutNd)
        ]
        for module, name, child in dropouts:
            if dropout > 0:
                child.p = dropout
            else:
                setattr(module, name, nn.Identity())
        self.spatial_dims = spatial_dims
        self.pad = pad

    # ONNX export (medseg.export): spatial axes stay dynamic in multiples of 16 (four stride-2 stages)
    export_spatial_divisor = VNET_SIZE_MULTIPLE

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` for a wrong rank, or (``pad=False``) a size that is not a multiple of 16."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"VNet(spatial_dims={self.spatial_dims}) expects a {self.spatial_dims + 2}-D input "
                f"B×C×{'D×' if self.spatial_dims == 3 else ''}H×W, got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if not self.pad and any(s % VNET_SIZE_MULTIPLE for s in spatial):
            raise ValueError(
                f"VNet needs every spatial size to be a multiple of {VNET_SIZE_MULTIPLE} (four stride-2 "
                f"stages); got spatial shape {spatial} (input {tuple(x.shape)}). Pad or crop the input, "
                "or build the model with pad=True."
            )

    def forward(self, x: Tensor) -> Tensor:
        """Logits at the input's spatial size."""
        self.check_input(x)
        if not self.pad:
            return super().forward(x)
        padded, crop = pad_to_multiple(x, VNET_SIZE_MULTIPLE)
        logits = super().forward(padded)
        return logits if padded is x else logits[crop]
