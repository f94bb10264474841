"""Reading weight files into models: one torch-file reader and one strict key/shape check.

Used by :mod:`medseg.models.pretrained` (ViT/ResNet backbones) and
:mod:`medseg.models.sam_checkpoint` (MedSAM/LiteMedSAM). Files are read with
``torch.load(map_location="cpu", weights_only=True)``: no pickled code runs. A key or shape
mismatch is one :class:`~medseg.errors.DataError` naming the file and listing the first missing,
unexpected and mis-shaped keys with their counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from medseg.errors import DataError
from medseg.io_utils import load_torch_file

#: keys of a training checkpoint that hold the model's state dict, tried in this order
STATE_DICT_KEYS = ("model", "state_dict", "model_state")
#: how many keys of each kind an error message lists
MAX_LISTED = 10


def listed(kind: str, keys: list[str]) -> str:
    """``"N kind: a, b, … (M more)"`` with at most :data:`MAX_LISTED` keys shown."""
    shown = ", ".join(keys[:MAX_LISTED])
    more = f", … ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return f"{len(keys)} {kind}: {shown}{more}"


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, Tensor]:
    """The state dict in a loaded object: flat, under ``model``/``state_dict``/``model_state``, and
    without the ``module.`` prefix of a ``DistributedDataParallel`` save."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise DataError(
            f"not a state dict (expected a dict of tensors, or one under {' / '.join(STATE_DICT_KEYS)})", path
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise DataError(f"not a state dict: {listed('non-tensor value(s)', bad)}", path)
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_torch_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a torch weight file in any layout :func:`unwrap_state_dict` knows."""
    return unwrap_state_dict(load_torch_file(path, "checkpoint"), path)


def check_state_dict(
    module: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str | None = None
) -> None:
    """Raise :class:`DataError` listing missing, unexpected and mis-shaped keys (first few of each)."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(listed("missing key(s)", missing))
    if unexpected:
        parts.append(listed("unexpected key(s)", unexpected))
    if mismatched:
        parts.append(listed("shape mismatch(es)", mismatched))
    if parts:
        raise DataError(f"checkpoint does not fit {what or type(module).__name__}: " + "; ".join(parts), path)


def load_strict(
    module: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str | None = None
) -> None:
    """:func:`check_state_dict`, then ``load_state_dict(strict=True)``."""
    check_state_dict(module, state, path, what)
    module.load_state_dict(dict(state), strict=True)
