"""Pretrained weights for the hybrid-ViT encoders of TransUNet/MicroSegNet, from local files or timm.

Sources accepted by :func:`load_pretrained` (``pretrained=`` on the model factories):

* ``*.npz`` — an original Google checkpoint, e.g. ImageNet-21k ``R50+ViT-B_16.npz`` (Dosovitskiy
  et al. 2021, arXiv:2010.11929), the file TransUNet (Chen et al. 2021) and MicroSegNet start from.
  Keys look like ``conv_root/kernel``, ``gn_root/scale``, ``block1/unit1/conv1/kernel``,
  ``block1/unit1/gn_proj/scale``, ``embedding/kernel``, ``cls``,
  ``Transformer/posembed_input/pos_embedding``,
  ``Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel``,
  ``Transformer/encoder_norm/scale`` (convolutions HWIO, ResNet = StdConv + GroupNorm).
  The key mapping is timm's own: ``VisionTransformer.load_pretrained`` (``_load_weights`` in
  ``timm/models/vision_transformer.py``, which handles the hybrid ResNet-v2 part too). Because the
  checkpoint has a class token and TransUNet has none, the file is first checked against the
  expected keys and shapes, loaded into a timm model of the same architecture *with* a class
  token and the file's token grid, and that state dict is then adapted (class token dropped,
  position embedding resized with timm's ``resample_abs_pos_embed``) — see
  :func:`adapt_timm_vit_state_dict`.
* ``*.safetensors`` / ``*.pt`` / ``*.pth`` / ``*.bin`` / ``*.ckpt`` — a state dict of the timm
  backbone (``patch_embed.backbone.stem.conv.weight``, ``blocks.0.attn.qkv.weight``, ...; with or
  without class token) or of the whole medseg model (``encoder.vit....``, ``decoder....``); a
  torch file may wrap it in ``{"model": ...}`` (medseg checkpoints) or ``{"state_dict": ...}``.
* ``True`` — timm's online weights for the variant's timm name (needs network access).

:func:`google_npz_state` / :func:`export_google_npz` write a model in the Google layout (the
inverse mapping), for round-trip tests and for sharing weights with the JAX/TransUNet code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medseg.errors import ConfigError, DataError
from medseg.io_utils import atomic_write
from medseg.models.state_dict import listed, load_strict, read_torch_state_dict

POS_EMBED_KEY = "Transformer/posembed_input/pos_embedding"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _hwio(w: Tensor) -> np.ndarray:
    """OIHW conv weight → HWIO array (the inverse of timm's ``_n2p`` transpose ``[3, 2, 0, 1]``)."""
    return w.detach().cpu().numpy().transpose(2, 3, 1, 0)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def google_npz_state(vit: nn.Module, class_token: bool = True) -> dict[str, np.ndarray]:
    """The Google/JAX ``.npz`` layout of a timm hybrid ``VisionTransformer`` (inverse of timm's loader).

    ``class_token=True`` writes ``cls`` and a position row for it (zeros when the model has no
    class token), like the original checkpoints.
    """
    out: dict[str, np.ndarray] = {}
    pe = vit.patch_embed
    backbone = pe.backbone
    stem = getattr(backbone, "stem", backbone)
    out["conv_root/kernel"] = _hwio(stem.conv.weight)
    out["gn_root/scale"] = _np(stem.norm.weight)
    out["gn_root/bias"] = _np(stem.norm.bias)
    for i, stage in enumerate(getattr(backbone, "stages", [])):
        for j, block in enumerate(stage.blocks):
            bp = f"block{i + 1}/unit{j + 1}/"
            for r in range(1, 4):
                out[f"{bp}conv{r}/kernel"] = _hwio(getattr(block, f"conv{r}").weight)
                out[f"{bp}gn{r}/scale"] = _np(getattr(block, f"norm{r}").weight)
                out[f"{bp}gn{r}/bias"] = _np(getattr(block, f"norm{r}").bias)
            if block.downsample is not None:
                out[f"{bp}conv_proj/kernel"] = _hwio(block.downsample.conv.weight)
                out[f"{bp}gn_proj/scale"] = _np(block.downsample.norm.weight)
                out[f"{bp}gn_proj/bias"] = _np(block.downsample.norm.bias)
    out["embedding/kernel"] = _hwio(pe.proj.weight)
    out["embedding/bias"] = _np(pe.proj.bias)
    dim = int(vit.embed_dim)
    pos = _np(vit.pos_embed)
    model_cls = getattr(vit, "cls_token", None)
    if class_token:
        out["cls"] = np.zeros((1, 1, dim), pos.dtype) if model_cls is None else _np(model_cls)
        if vit.num_prefix_tokens == 0:
            pos = np.concatenate([np.zeros((1, 1, dim), pos.dtype), pos], axis=1)
    elif vit.num_prefix_tokens:
        pos = pos[:, vit.num_prefix_tokens :]
    out[POS_EMBED_KEY] = pos
    out["Transformer/encoder_norm/scale"] = _np(vit.norm.weight)
    out["Transformer/encoder_norm/bias"] = _np(vit.norm.bias)
    for i, block in enumerate(vit.blocks):
        bp = f"Transformer/encoderblock_{i}/"
        heads = block.attn.num_heads
        mha = f"{bp}MultiHeadDotProductAttention_1/"
        out[f"{bp}LayerNorm_0/scale"] = _np(block.norm1.weight)
        out[f"{bp}LayerNorm_0/bias"] = _np(block.norm1.bias)
        qkv_w = block.attn.qkv.weight.chunk(3, dim=0)  # each (D_out, D_in)
        qkv_b = block.attn.qkv.bias.chunk(3, dim=0)
        for name, w, b in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
            out[f"{mha}{name}/kernel"] = _np(w.T.reshape(dim, heads, -1))  # (D, heads, head_dim)
            out[f"{mha}{name}/bias"] = _np(b.reshape(heads, -1))
        out[f"{mha}out/kernel"] = _np(block.attn.proj.weight.reshape(dim, heads, -1).permute(1, 2, 0))
        out[f"{mha}out/bias"] = _np(block.attn.proj.bias)
        out[f"{bp}LayerNorm_2/scale"] = _np(block.norm2.weight)
        out[f"{bp}LayerNorm_2/bias"] = _np(block.norm2.bias)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            out[f"{bp}MlpBlock_3/Dense_{r}/kernel"] = _np(fc.weight.T)
            out[f"{bp}MlpBlock_3/Dense_{r}/bias"] = _np(fc.bias)
    return out


def export_google_npz(vit: nn.Module, path: str | Path, class_token: bool = True) -> Path:
    """Write :func:`google_npz_state` of ``vit`` to ``path`` (``np.savez``)."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **google_npz_state(vit, class_token))
    return path


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape without size-1 axes (GroupNorm scales are ``(C,)`` or ``(1, 1, 1, C)`` in the wild)."""
    return tuple(d for d in shape if d != 1)


def _check_npz(expected: dict[str, np.ndarray], found: Any, path: Path, what: str) -> None:
    """Missing keys and shape mismatches between the file and the model, all listed in one error."""
    missing = sorted(k for k in expected if k not in found.files)
    mismatched = []
    for key in sorted(set(expected) & set(found.files)):
        want, got = expected[key].shape, found[key].shape
        if key == "conv_root/kernel":  # input channels are adapted by timm (adapt_input_conv)
            want, got = want[:2] + want[3:], got[:2] + got[3:]
        if _squeezed(want) != _squeezed(got):
            mismatched.append(f"{key}: file {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}")
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(listed("missing key(s)", missing))
        if mismatched:
            parts.append(listed("shape mismatch(es)", mismatched))
        raise DataError(f"Google .npz checkpoint does not fit {what}: " + "; ".join(parts), path)


def adapt_timm_vit_state_dict(state: dict[str, Tensor], vit: nn.Module) -> dict[str, Tensor]:
    """Fit a timm hybrid-ViT state dict to ``vit``: drop the class token/classifier, resize the grid.

    The position embedding loses its prefix (class-token) rows when ``vit`` has none and is
    resampled to ``vit``'s grid with timm's ``resample_abs_pos_embed`` (bicubic, square source).
    """
    from timm.layers import resample_abs_pos_embed

    own = vit.state_dict()
    out = {}
    for key, value in state.items():
        if key.startswith(("head.", "fc_norm.", "attn_pool.")) and key not in own:
            continue
        if key in ("cls_token", "reg_token") and key not in own:
            continue
        out[key] = value
    if "pos_embed" in out:
        pos = out["pos_embed"]
        prefix = int(vit.num_prefix_tokens)
        grid = tuple(vit.patch_embed.grid_size)
        src_prefix = (1 if "cls_token" in state else 0) + (
            state["reg_token"].shape[1] if "reg_token" in state else 0
        )
        pos = torch.cat([pos[:, : min(prefix, src_prefix)], pos[:, src_prefix:]], dim=1)
        if pos.shape[1] - prefix != grid[0] * grid[1]:
            pos = resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=prefix)
        out["pos_embed"] = pos
    return out


def _encoder(model: nn.Module) -> nn.Module:
    """The hybrid-ViT encoder of a TransUNet (``model.encoder``, which has ``vit``)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not hasattr(encoder, "vit"):
        raise ConfigError(f"{type(model).__name__} has no hybrid-ViT encoder to load weights into")
    return encoder


def load_google_npz(model: nn.Module, path: str | Path) -> None:
    """Load an original Google ``.npz`` (e.g. ``R50+ViT-B_16.npz``) into ``model.encoder.vit``.

    Checks keys and shapes first (one error lists every problem), then maps the file with timm's
    ``VisionTransformer.load_pretrained`` into a same-architecture timm model laid out like the
    file (class token, token grid), then adapts that state dict to the encoder.
    """
    path = Path(path)
    encoder = _encoder(model)
    what = f"the '{encoder.variant.timm_name}' encoder"
    if not path.is_file():
        raise DataError("pretrained checkpoint not found", path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read as .npz: {err}", path) from err
    with npz:
        if POS_EMBED_KEY not in npz.files:
            raise DataError(f"not a Google ViT checkpoint (no '{POS_EMBED_KEY}')", path)
        has_cls = "cls" in npz.files
        tokens = npz[POS_EMBED_KEY].shape[1] - (1 if has_cls else 0)
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise DataError(f"position embedding of {tokens} tokens is not a square grid", path)
        source = encoder.make_vit(class_token=has_cls, img_size=side * encoder.stride)
        _check_npz(google_npz_state(source, class_token=has_cls), npz, path, what)
    source.load_pretrained(str(path))  # timm's own Google-layout mapping (vision_transformer._load_weights)
    state = adapt_timm_vit_state_dict(source.state_dict(), encoder.vit)
    load_strict(encoder.vit, state, path, what)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a torch file (unwrapping ``model``/``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("pretrained checkpoint not found", path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in TORCH_SUFFIXES:
        raise DataError(
            f"unknown checkpoint type '{path.suffix}' (use .npz, .safetensors or {TORCH_SUFFIXES})", path
        )
    return read_torch_state_dict(path)


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a whole-model (``encoder.vit.…``) or timm-backbone state dict from ``path``."""
    state = read_state_dict(path)
    if any(k.startswith("encoder.vit.") for k in state):
        load_strict(model, state, path, type(model).__name__)
        return
    encoder = _encoder(model)
    if any(k.startswith("vit.") for k in state):  # an encoder state dict
        state = {k.removeprefix("vit."): v for k, v in state.items()}
    state = adapt_timm_vit_state_dict(state, encoder.vit)
    load_strict(encoder.vit, state, path, f"the '{encoder.variant.timm_name}' encoder")


def load_timm_pretrained(model: nn.Module) -> None:
    """timm's online weights for the encoder's timm name (class token dropped, grid resized)."""
    encoder = _encoder(model)
    if not encoder.variant.timm_weights or encoder.overrides:
        raise ConfigError(f"timm's '{encoder.variant.timm_name}' weights do not fit this custom encoder")
    source = encoder.make_vit(class_token=True, img_size=224, pretrained=True)
    state = adapt_timm_vit_state_dict(source.state_dict(), encoder.vit)
    load_strict(encoder.vit, state, f"timm:{encoder.variant.timm_name}", "the encoder")


def load_pretrained(model: nn.Module, source: str | Path | bool | None) -> None:
    """Load ``source`` into a TransUNet/MicroSegNet: a ``.npz``/``.safetensors``/torch path or ``True``."""
    if source is None or source is False:
        return
    if source is True:
        load_timm_pretrained(model)
        return
    path = Path(source)
    if path.suffix == ".npz":
        load_google_npz(model, path)
    else:
        load_state_dict_file(model, path)
