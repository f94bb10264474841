"""Load real MedSAM / LiteMedSAM / SAM checkpoints into :mod:`medseg.models.medsam` models.

The official files come in three layouts, all read by :func:`read_sam_state_dict`:

* a flat state dict (``medsam_vit_b.pth``, ``lite_medsam.pth``, SAM's ``sam_vit_b_01ec64.pth``):
  ``{"image_encoder.…": tensor, "prompt_encoder.…": …, "mask_decoder.…": …}``;
* a training checkpoint, ``{"model": state_dict, "epoch": …, "optimizer": …}`` (MedSAM's and
  LiteMedSAM's training scripts);
* either of them saved from a ``DistributedDataParallel`` model, with ``module.``-prefixed keys.

Files are read with ``torch.load(map_location="cpu", weights_only=True)``: no pickled code runs.
A key or shape mismatch is one :class:`~medseg.errors.DataError` naming the file and listing the
first missing, unexpected and mis-shaped keys with their counts, so a ViT-B file given to
``litemedsam`` (or the reverse) says so at once.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from medseg.errors import DataError

#: keys of a training checkpoint that hold the model's state dict, tried in this order
STATE_DICT_KEYS = ("model", "state_dict")
#: how many keys of each kind an error message lists
MAX_LISTED = 10


def _listed(kind: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    more = f", … ({len(keys) - MAX_LISTED} more)" if len(keys) > MAX_LISTED else ""
    return f"{len(keys)} {kind}: {shown}{more}"


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, Tensor]:
    """The state dict in a loaded object: flat, under ``model``/``state_dict``, ``module.``-prefixed."""
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
        raise DataError(f"not a state dict: {_listed('non-tensor value(s)', bad)}", path)
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_sam_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a MedSAM/LiteMedSAM/SAM file in any of the three official layouts (module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint file not found", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(f"cannot read as a torch checkpoint ({type(err).__name__}: {err})", path) from err
    return unwrap_state_dict(obj, path)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], path: str | Path) -> None:
    """Raise :class:`DataError` listing missing, unexpected and mis-shaped keys (first few of each)."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(_listed("missing key(s)", missing))
    if unexpected:
        parts.append(_listed("unexpected key(s)", unexpected))
    if mismatched:
        parts.append(_listed("shape mismatch(es)", mismatched))
    if parts:
        raise DataError(f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts), path)


def load_sam_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a MedSAM/LiteMedSAM/SAM checkpoint into ``model`` strictly (every key, every shape)."""
    state = read_sam_state_dict(path)
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
