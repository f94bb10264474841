"""MedSAM/LiteMedSAM: registry, forward contract, LiteMedSAM keys, checkpoints, ViT-B conformance."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import medseg.models as models
from medseg.errors import ConfigError, DataError
from medseg.models.litemedsam import Attention, LiteMedSAM
from medseg.models.medsam import MedSAM
from medseg.models.sam_checkpoint import load_sam_checkpoint, read_sam_state_dict

LITEMEDSAM_KEYS = (
    "image_encoder.patch_embed.seq.0.c.weight",
    "image_encoder.patch_embed.seq.2.bn.running_var",
    "image_encoder.layers.0.blocks.1.conv2.c.weight",
    "image_encoder.layers.0.downsample.conv1.c.weight",
    "image_encoder.layers.1.blocks.0.attn.attention_biases",
    "image_encoder.layers.2.blocks.5.attn.qkv.weight",
    "image_encoder.layers.2.blocks.5.local_conv.bn.running_mean",
    "image_encoder.layers.2.downsample.conv2.c.weight",
    "image_encoder.layers.3.blocks.1.mlp.norm.weight",
    "image_encoder.neck.3.bias",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.iou_prediction_head.layers.2.weight",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> LiteMedSAM:
    torch.manual_seed(0)
    return models.build("litemedsam", variant="tiny", img_size=64)


def boxes_for(batch: int, size: int) -> torch.Tensor:
    return torch.tensor([[4.0, 6.0, size - 10.0, size - 4.0], [0.0, 0.0, size - 1.0, size - 1.0]])[:batch]


def test_registered_and_promptable(tiny: LiteMedSAM) -> None:
    assert {"medsam", "litemedsam"} <= set(models.available())
    assert isinstance(tiny, LiteMedSAM) and tiny.promptable is True
    assert "LiteMedSAM" in models.describe()["litemedsam"]
    with pytest.raises(ConfigError, match="out_channels must be 1"):
        models.build("litemedsam", variant="tiny", out_channels=2)
    with pytest.raises(ConfigError, match="2D model"):
        models.build("litemedsam", variant="tiny", spatial_dims=3)
    with pytest.raises(ConfigError, match="unknown litemedsam variant"):
        models.build("litemedsam", variant="huge")


def test_forward_train_and_eval(tiny: LiteMedSAM) -> None:
    image = torch.rand(2, 3, 64, 64)
    tiny.train()
    out = tiny(image, boxes_for(2, 64))
    assert set(out) == {"logits", "iou"}
    assert out["logits"].shape == (2, 1, 64, 64) and out["iou"].shape == (2, 1)
    out["logits"].mean().backward()  # trains end to end
    assert tiny.image_encoder.patch_embed.seq[0].c.weight.grad is not None
    tiny.zero_grad()
    tiny.eval()
    with torch.no_grad():
        logits = tiny(image[:, :1], boxes_for(2, 64))  # grey is repeated to RGB
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 1, 64, 64)


def test_forward_errors(tiny: LiteMedSAM) -> None:
    with pytest.raises(ValueError, match="needs one box per image"):
        tiny(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="B×3×64×64"):
        tiny(torch.rand(1, 3, 32, 32), boxes_for(1, 32))
    with pytest.raises(ValueError, match="2 images but 1 boxes"):
        tiny(torch.rand(2, 3, 64, 64), boxes_for(1, 64))


def test_batch_pairs_image_i_with_box_i(tiny: LiteMedSAM) -> None:
    """SAM's decoder would give B² masks; ours gives mask i from image i and box i."""
    tiny.eval()
    image = torch.rand(2, 3, 64, 64)
    boxes = boxes_for(2, 64)
    with torch.no_grad():
        both = tiny(image, boxes)
        first = tiny(image[:1], boxes[:1])
        second = tiny(image[1:], boxes[1:])
        shared = tiny.decode(tiny.encode(image[:1]), boxes)[0]  # one embedding, two boxes
    torch.testing.assert_close(both[0], first[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both[1], second[0], atol=1e-4, rtol=1e-4)
    assert shared.shape == (2, 1, 64, 64)
    torch.testing.assert_close(shared[0], first[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("img_size", "embedding"), [(64, 16), (128, 32)])
def test_embedding_size_derived_from_img_size(img_size: int, embedding: int) -> None:
    model = LiteMedSAM("tiny", img_size=img_size).eval()
    assert model.embedding_size == embedding
    assert model.prompt_encoder.image_embedding_size == (embedding, embedding)
    with torch.no_grad():
        assert model.encode(torch.rand(1, 3, img_size, img_size)).shape == (1, 32, embedding, embedding)
    with pytest.raises(ConfigError, match="multiple of 4"):
        LiteMedSAM("tiny", img_size=img_size + 2)


def test_litemedsam_key_names_and_tiny_has_the_same_tree(tiny: LiteMedSAM) -> None:
    lite = LiteMedSAM("lite")
    keys = list(lite.state_dict())
    assert keys[0] == "image_encoder.patch_embed.seq.0.c.weight"
    assert set(LITEMEDSAM_KEYS) <= set(keys)
    assert {k.split(".")[0] for k in keys} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    assert list(tiny.state_dict()) == keys
    shapes = {k: tuple(v.shape) for k, v in lite.state_dict().items()}
    assert shapes["image_encoder.patch_embed.seq.0.c.weight"] == (32, 3, 1, 1)  # 1×1 patch embed
    assert shapes["image_encoder.layers.1.blocks.0.attn.attention_biases"] == (4, 49)
    assert shapes["image_encoder.layers.2.blocks.0.attn.attention_biases"] == (5, 196)
    assert shapes["image_encoder.neck.0.weight"] == (256, 320, 1, 1)
    assert lite.image_encoder.layers[2].downsample.conv2.c.stride == (1, 1)  # last merge: stride 1
    assert lite.image_encoder.layers[0].downsample.conv2.c.stride == (2, 2)
    assert sum(p.numel() for p in lite.image_encoder.parameters()) == pytest.approx(5.7e6, rel=0.02)


def test_attention_matches_tinyvit_formulation() -> None:
    """Bias column order (first appearance of each offset) and the per-head [q, k, v] layout."""
    torch.manual_seed(1)
    window, heads, dim = 3, 2, 8
    attn = Attention(dim, heads, window)
    torch.nn.init.normal_(attn.attention_biases)
    offsets: dict[tuple[int, int], int] = {}
    idxs = []
    points = list(itertools.product(range(window), range(window)))
    for p1 in points:
        for p2 in points:
            offset = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            idxs.append(offsets.setdefault(offset, len(offsets)))
    assert attn.attention_bias_idxs.flatten().tolist() == idxs
    x = torch.randn(2, window * window, dim)
    key_dim = dim // heads
    q, k, v = attn.qkv(attn.norm(x)).view(2, -1, heads, 3 * key_dim).split([key_dim] * 3, dim=3)
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) * key_dim**-0.5 + attn.attention_biases[:, attn.attention_bias_idxs]
    expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, -1, dim))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_medsam_tiny_forward_and_frozen_prompt_encoder() -> None:
    model = models.build("medsam", variant="tiny", img_size=64, in_channels=1)
    assert isinstance(model, MedSAM) and model.embedding_size == 4
    assert not any(p.requires_grad for p in model.prompt_encoder.parameters())  # MedSAM's training
    model.train()
    out = model(torch.rand(2, 1, 64, 64), boxes_for(2, 64))
    assert out["logits"].shape == (2, 1, 64, 64)  # 16×16 low-res masks upsampled to the input
    assert out["iou"].shape == (2, 1)


def test_medsam_matches_segment_anything_vit_b() -> None:
    """Conformance: medsam's keys and shapes are SAM ViT-B's (so MedSAM/SAM files load as they are)."""
    from segment_anything import sam_model_registry

    reference = {
        k: tuple(v.shape) for k, v in sam_model_registry["vit_b"](checkpoint=None).state_dict().items()
    }
    ours = {k: tuple(v.shape) for k, v in models.build("medsam").state_dict().items()}
    assert ours == reference


# ----------------------------------------------------------------------------- checkpoints


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["flat", "training", "ddp", "ddp_training"])
def test_checkpoint_round_trip_in_official_layouts(tmp_path: Path, tiny: LiteMedSAM, layout: str) -> None:
    state = tiny.state_dict()
    if layout.startswith("ddp"):
        state = {f"module.{k}": v for k, v in state.items()}
    payload = {"model": state, "epoch": 3, "best_loss": 0.25} if layout.endswith("training") else state
    path = tmp_path / "lite_medsam.pth"
    torch.save(payload, path)
    assert list(read_sam_state_dict(path)) == list(tiny.state_dict())
    torch.manual_seed(123)
    fresh = models.build("litemedsam", variant="tiny", img_size=64, checkpoint=str(path))
    _assert_same_weights(fresh, tiny)


def test_checkpoint_mismatch_lists_keys(tmp_path: Path, tiny: LiteMedSAM) -> None:
    path = tmp_path / "medsam_tiny.pth"
    torch.save(MedSAM("tiny", img_size=64).state_dict(), path)
    with pytest.raises(DataError) as err:
        load_sam_checkpoint(tiny, path)
    message = str(err.value)
    assert str(path) in message
    assert "missing key(s): image_encoder.layers.0" in message
    assert "unexpected key(s): image_encoder.blocks.0" in message
    assert "more)" in message  # only the first few of each are listed, with the counts


def test_checkpoint_shape_mismatch_and_bad_files(tmp_path: Path, tiny: LiteMedSAM) -> None:
    state = dict(tiny.state_dict())
    state["image_encoder.neck.0.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"1 shape mismatch\(es\): image_encoder.neck.0.weight"):
        load_sam_checkpoint(tiny, path)
    with pytest.raises(DataError, match="not found"):
        load_sam_checkpoint(tiny, tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read"):
        load_sam_checkpoint(tiny, garbage)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(DataError, match="not a state dict"):
        load_sam_checkpoint(tiny, listing)
