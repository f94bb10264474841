"""Pretrained weights for TransUNet/MicroSegNet: Google ``.npz`` round trip, safetensors, torch, errors.

The ``.npz`` test writes a tiny backbone in the layout of Google's ``R50+ViT-B_16.npz`` with
:func:`export_google_npz` (the inverse of timm's mapping), loads it into a fresh model through
timm's loader and checks every parameter. No downloads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import medseg.models as models
from medseg.errors import DataError
from medseg.models.pretrained import (
    export_google_npz,
    google_npz_state,
    load_pretrained,
)
from medseg.models.transunet import TransUNet

pytest.importorskip("timm")

SIZE = 64


def _tiny(**options: object) -> TransUNet:
    return TransUNet(in_channels=1, out_channels=1, img_size=SIZE, variant="tiny", **options)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert unequal == []


@pytest.fixture(scope="module")
def source() -> TransUNet:
    torch.manual_seed(1)
    return _tiny()


@pytest.fixture(scope="module")
def npz_path(source: TransUNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_google_npz(source.encoder.vit, tmp_path_factory.mktemp("w") / "R-tiny+ViT-Ti_16.npz")


def test_export_uses_google_layout(source: TransUNet, npz_path: Path) -> None:
    with np.load(npz_path) as npz:
        files = set(npz.files)
        assert {
            "conv_root/kernel",
            "gn_root/scale",
            "block1/unit1/conv1/kernel",
            "block1/unit1/gn1/scale",
            "block1/unit1/conv_proj/kernel",
            "block1/unit1/gn_proj/scale",
            "embedding/kernel",
            "cls",
            "Transformer/posembed_input/pos_embedding",
            "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
            "Transformer/encoderblock_3/MlpBlock_3/Dense_1/bias",
            "Transformer/encoder_norm/scale",
        } <= files
        assert npz["conv_root/kernel"].shape == (7, 7, 3, 32)  # HWIO
        assert npz["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"].shape == (
            192,
            3,
            64,
        )
        assert npz["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"].shape == (
            3,
            64,
            192,
        )
        assert npz["Transformer/posembed_input/pos_embedding"].shape == (1, 1 + 16, 192)  # cls + 4×4


def test_npz_round_trip_restores_every_parameter(source: TransUNet, npz_path: Path) -> None:
    fresh = _tiny()
    assert not torch.equal(
        fresh.encoder.vit.blocks[0].attn.qkv.weight, source.encoder.vit.blocks[0].attn.qkv.weight
    )
    load_pretrained(fresh, npz_path)
    _assert_same(fresh.encoder.vit.state_dict(), source.encoder.vit.state_dict())


def test_npz_through_factory_and_into_other_grid(source: TransUNet, npz_path: Path) -> None:
    from timm.layers import resample_abs_pos_embed

    net = models.build(
        "microsegnet", in_channels=1, out_channels=1, img_size=96, variant="tiny", pretrained=str(npz_path)
    )
    got, want = net.encoder.vit.state_dict(), source.encoder.vit.state_dict()
    expected_pos = resample_abs_pos_embed(want.pop("pos_embed"), new_size=[6, 6], num_prefix_tokens=0)
    assert torch.allclose(got.pop("pos_embed"), expected_pos)
    _assert_same(got, want)


def test_npz_missing_keys_and_shapes_are_listed(source: TransUNet, tmp_path: Path) -> None:
    state = google_npz_state(source.encoder.vit)
    del state["block1/unit1/gn_proj/scale"], state["Transformer/encoderblock_2/LayerNorm_0/bias"]
    state["embedding/bias"] = np.zeros(7, np.float32)
    bad = tmp_path / "broken.npz"
    np.savez(bad, **state)
    with pytest.raises(DataError) as err:
        load_pretrained(_tiny(), bad)
    message = str(err.value)
    assert str(bad) in message
    assert "2 missing key(s)" in message
    assert (
        "block1/unit1/gn_proj/scale" in message and "Transformer/encoderblock_2/LayerNorm_0/bias" in message
    )
    assert "embedding/bias: file (7,) vs model (192,)" in message


def test_npz_of_a_shallower_model_lists_missing_blocks(tmp_path: Path) -> None:
    shallow = _tiny(backbone_kwargs={"depth": 2})
    path = export_google_npz(shallow.encoder.vit, tmp_path / "depth2.npz")
    with pytest.raises(DataError, match=r"depth2\.npz.*Transformer/encoderblock_2/"):
        load_pretrained(_tiny(), path)


def test_safetensors_round_trip_backbone_and_whole_model(source: TransUNet, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    backbone = tmp_path / "backbone.safetensors"
    save_file(source.encoder.vit.state_dict(), str(backbone))
    fresh = _tiny(pretrained=str(backbone))
    _assert_same(fresh.encoder.vit.state_dict(), source.encoder.vit.state_dict())

    whole = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(whole))
    fresh = _tiny(pretrained=whole)
    _assert_same(fresh.state_dict(), source.state_dict())


def test_timm_layout_with_class_token_and_medseg_checkpoint(source: TransUNet, tmp_path: Path) -> None:
    timm_like = source.encoder.make_vit(class_token=True, img_size=SIZE)  # timm's default layout
    timm_like.load_state_dict(
        {
            **source.encoder.vit.state_dict(),
            "cls_token": torch.zeros(1, 1, 192),
            "pos_embed": torch.cat([torch.zeros(1, 1, 192), source.encoder.vit.pos_embed], dim=1),
        }
    )
    path = tmp_path / "timm.pth"
    torch.save(timm_like.state_dict(), path)
    fresh = _tiny(pretrained=path)
    _assert_same(fresh.encoder.vit.state_dict(), source.encoder.vit.state_dict())

    ckpt = tmp_path / "last.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, ckpt)
    _assert_same(_tiny(pretrained=ckpt).state_dict(), source.state_dict())


def test_state_dict_mismatch_and_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "depth2.safetensors"
    save_file(_tiny(backbone_kwargs={"depth": 2}).encoder.vit.state_dict(), str(path))
    with pytest.raises(DataError, match=r"depth2\.safetensors.*missing key\(s\): blocks\.2\."):
        _tiny(pretrained=path)
    with pytest.raises(DataError, match="not found"):
        _tiny(pretrained=tmp_path / "absent.npz")
    odd = tmp_path / "weights.h5"
    odd.write_bytes(b"")
    with pytest.raises(DataError, match="unknown checkpoint type"):
        _tiny(pretrained=odd)
