"""AG-BCE (MicroSegNet), focal and adaptive focal losses: hand-computed values, the dilation anchor,
annotator handling, multi-scale supervision, stability, gradients, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

import medseg.losses as losses
from medseg.errors import ConfigError
from medseg.losses import AdaptiveFocalLoss, AGBCELoss, DeepSupervisionLoss, FocalLoss, ModelOutputsLoss
from medseg.losses.annotation_guided import ag_bce_ds_loss
from medseg.losses.deep_supervision import downsample_mask
from medseg.losses.functional import (
    adaptive_focal,
    adaptive_focal_gamma,
    ag_bce,
    dilate_mask,
    focal,
    hard_region,
)

# One row of 4 pixels (B=1, C=1, H=1, W=4) used throughout.
LN3 = math.log(3.0)
# Logits whose sigmoids are p = [0.5, 0.75, 0.25, 0.25].
X = torch.tensor([0.0, LN3, -LN3, -LN3]).view(1, 1, 1, 4)
EXPERT = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
# Disagrees with the expert on pixel 1 only → hard = [0, 1, 0, 0] before dilation.
NON_EXPERT = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 4)
# β = 0.5 per-pixel terms ℓ = −0.5·y·ln p − 0.5·(1−y)·ln(1−p):
#   pixel 0: y=1, p=0.5  → 0.5·ln 2
#   pixel 1: y=0, p=0.75 → 0.5·ln 4
#   pixel 2: y=1, p=0.25 → 0.5·ln 4
#   pixel 3: y=0, p=0.25 → 0.5·ln(4/3)
ELL = [0.5 * math.log(2), 0.5 * math.log(4), 0.5 * math.log(4), 0.5 * math.log(4 / 3)]


def point(shape: tuple[int, ...], index: tuple[int, ...]) -> torch.Tensor:
    m = torch.zeros(shape)
    m[index] = 1.0
    return m


# ----------------------------------------------------------------------------- dilation


def test_dilation_anchor_by_hand() -> None:
    # OpenCV anchor = kernel centre ks//2: out[i] = max(in[i - ks//2 … i + ks-1-ks//2]).
    # A single pixel at p therefore spreads to rows/cols p-(ks-1-ks//2) … p+ks//2.
    m = point((1, 1, 7, 7), (0, 0, 3, 3))
    expected = {1: (3, 3), 2: (3, 4), 3: (2, 4), 4: (2, 5), 5: (1, 5)}  # first, last index covered
    for ks, (lo, hi) in expected.items():
        out = dilate_mask(m, ks)[0, 0]
        rows = out.sum(1).nonzero().flatten().tolist()
        cols = out.sum(0).nonzero().flatten().tolist()
        assert rows == list(range(lo, hi + 1)), ks
        assert cols == list(range(lo, hi + 1)), ks
        assert out.sum().item() == ks * ks
    # Borders: ks = 4, pixels at (0, 0) and (4, 4) of a 5×5 image (what cv2.dilate gives).
    m = point((1, 5, 5), (0, 0, 0)) + point((1, 5, 5), (0, 4, 4))
    expected_map = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(dilate_mask(m, 4)[0], expected_map)  # B×H×W input keeps its shape


def test_dilation_3d_and_dtypes() -> None:
    # 3D: a cube with the same anchor on every axis; ks = 2 covers offsets −1…0 → indices 2, 3.
    m = point((1, 1, 5, 5, 5), (0, 0, 2, 2, 2))
    out = dilate_mask(m, 2)[0, 0]
    assert out.sum().item() == 8 and out[2:4, 2:4, 2:4].sum().item() == 8
    # bool / integer masks come back as float32; float keeps its dtype.
    assert dilate_mask(m.bool(), 3).dtype == torch.float32
    assert dilate_mask(m.long(), 3).dtype == torch.float32
    assert dilate_mask(m.double(), 3).dtype == torch.float64
    with pytest.raises(ValueError):
        dilate_mask(m, 0)
    with pytest.raises(ValueError):
        dilate_mask(torch.zeros(4, 4), 3)


def test_dilation_matches_cv2() -> None:
    cv2 = pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(3, 1, 19, 14, generator=gen) > 0.9).float()
    for ks in range(1, 8):
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (ks, ks))
        ref = np.stack([cv2.dilate(m[0].numpy().astype(np.uint8), kernel) for m in masks])
        ours = dilate_mask(masks, ks)[:, 0].numpy()
        assert np.array_equal(ours, ref.astype(np.float32)), ks


# ----------------------------------------------------------------------------- hard region


def test_hard_region_two_and_three_annotators() -> None:
    ref = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 5)
    a1 = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 5)
    a2 = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 5)
    # Two annotators: XOR.
    assert hard_region(ref, a1).flatten().tolist() == [0, 1, 0, 0, 0]
    # Three: hard wherever not all agree = OR of the XORs with the reference.
    assert hard_region(ref, [a1, a2]).flatten().tolist() == [0, 1, 1, 0, 0]
    # Two others that agree with each other but not with the expert still count.
    assert hard_region(ref, [a1, a1]).flatten().tolist() == [0, 1, 0, 0, 0]
    # None / empty → no hard pixels.
    assert hard_region(ref, None).sum().item() == 0
    assert hard_region(ref, []).sum().item() == 0
    # Soft values are binarised at 0.5.
    assert hard_region(ref, ref * 0.6).sum().item() == 0
    with pytest.raises(ValueError, match=r"\(1, 1, 1, 5\).*\(1, 1, 5\)"):
        hard_region(ref, a1.view(1, 1, 5))


# ----------------------------------------------------------------------------- AG-BCE


def test_ag_bce_by_hand_no_dilation() -> None:
    # ks = 1: hard = [0, 1, 0, 0]. L = (Σ_easy ℓ + W·Σ_hard ℓ) / ((1 + W)·N), N = 4.
    easy = ELL[0] + ELL[2] + ELL[3]
    hard = ELL[1]
    for w in (4.0, 12.0):
        expected = (easy + w * hard) / ((1 + w) * 4)
        got = ag_bce(X, EXPERT, NON_EXPERT, w_hard=w, ks=1, eps=0.0)
        assert got.item() == pytest.approx(expected, rel=1e-6)
    # W = 1 is plain β-weighted BCE: mean ℓ / 2.
    assert ag_bce(X, EXPERT, NON_EXPERT, w_hard=1.0, ks=1, eps=0.0).item() == pytest.approx(sum(ELL) / 8)


def test_ag_bce_by_hand_with_dilation_and_beta() -> None:
    # ks = 2 on a 1×4 row: along W out[i] = max(hard[i-1], hard[i]) → [0, 1, 1, 0]; along H
    # (one row) nothing changes. Hard sum = ℓ1 + ℓ2, easy sum = ℓ0 + ℓ3.
    expected = (ELL[0] + ELL[3] + 4 * (ELL[1] + ELL[2])) / (5 * 4)
    assert ag_bce(X, EXPERT, NON_EXPERT, ks=2, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # ks = 3 (offsets −1…1): [1, 1, 1, 0] → only pixel 3 is easy.
    expected = (ELL[3] + 4 * (ELL[0] + ELL[1] + ELL[2])) / (5 * 4)
    assert ag_bce(X, EXPERT, NON_EXPERT, ks=3, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # β = 0.8: foreground terms ×0.8/0.5, background terms ×0.2/0.5 (pixels 0, 2 are foreground).
    ell = [ELL[0] * 1.6, ELL[1] * 0.4, ELL[2] * 1.6, ELL[3] * 0.4]
    expected = (ell[0] + ell[2] + ell[3] + 4 * ell[1]) / 20
    assert ag_bce(X, EXPERT, NON_EXPERT, ks=1, beta=0.8, eps=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_ag_bce_official_epsilon_by_hand() -> None:
    # Official per-pixel term: −0.5·y·ln(p + 1e-6) − 0.5·(1−y)·ln(1 − p + 1e-6).
    eps = 1e-6
    ell = [
        0.5 * -math.log(0.5 + eps),
        0.5 * -math.log(0.25 + eps),
        0.5 * -math.log(0.25 + eps),
        0.5 * -math.log(0.75 + eps),
    ]
    expected = (ell[0] + ell[2] + ell[3] + 4 * ell[1]) / 20
    x64 = torch.tensor([0.0, LN3, -LN3, -LN3], dtype=torch.float64).view(1, 1, 1, 4)
    got = ag_bce(x64, EXPERT.double(), NON_EXPERT.double(), ks=1)  # eps = 1e-6 by default
    assert got.item() == pytest.approx(expected, rel=1e-12)


def _official_attention_bce(h_w: float, y_true, y_pred, y_std, ks: int):  # noqa: ANN001, ANN202
    """MicroSegNet's utils.attention_BCE_loss (numpy/cv2 hard region), minus the .cuda() calls."""
    cv2 = pytest.importorskip("cv2")
    number_of_pixels = y_true.shape[0] * y_true.shape[1] * y_true.shape[2]
    hard = cv2.bitwise_xor(y_true.numpy(), y_std.numpy()).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (ks, ks))
    for i in range(hard.shape[0]):
        hard[i] = cv2.dilate(hard[i], kernel)
    hard = hard.astype(np.float32)
    easy = abs(hard - 1)
    hard, easy = torch.tensor(hard), torch.tensor(easy)
    epsilon, beta = 0.000001, 0.5
    loss = -beta * torch.mul(y_true, torch.log(y_pred + epsilon)) - (1.0 - beta) * torch.mul(
        1.0 - y_true, torch.log(1.0 - y_pred + epsilon)
    )
    hard_loss = torch.sum(torch.mul(loss, hard))
    easy_loss = torch.sum(torch.mul(loss, easy))
    return ((1 / (1 + h_w)) * easy_loss + (h_w / (1 + h_w)) * hard_loss) / number_of_pixels


def test_ag_bce_matches_official_code() -> None:
    pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 24, 20, generator=gen) * 3
    expert = (torch.rand(3, 1, 24, 20, generator=gen) > 0.5).long()
    other = (torch.rand(3, 1, 24, 20, generator=gen) > 0.5).long()
    for ks in (1, 2, 3, 4, 5):
        for w in (4.0, 12.0):
            ref = _official_attention_bce(w, expert[:, 0], torch.sigmoid(logits)[:, 0], other[:, 0], ks)
            ours = ag_bce(logits, expert.float(), other.float(), w_hard=w, ks=ks)
            assert ours.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7), (ks, w)
            # B×H×W inputs give the same value.
            ours_3d = ag_bce(logits[:, 0], expert[:, 0].float(), other[:, 0].float(), w_hard=w, ks=ks)
            assert ours_3d.item() == pytest.approx(ours.item(), rel=1e-6)


def test_ag_bce_pools_over_the_batch() -> None:
    # Same N per sample → the batch loss is the mean of the per-sample losses.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 6, 6, generator=gen)
    y = (torch.rand(2, 1, 6, 6, generator=gen) > 0.5).float()
    o = (torch.rand(2, 1, 6, 6, generator=gen) > 0.5).float()
    per_sample = [ag_bce(x[i : i + 1], y[i : i + 1], o[i : i + 1]).item() for i in range(2)]
    assert ag_bce(x, y, o).item() == pytest.approx(sum(per_sample) / 2, rel=1e-6)


def test_ag_bce_class_reads_annotators_from_batch() -> None:
    batch = {"masks": {"expert": EXPERT, "non_expert": NON_EXPERT}}
    loss = AGBCELoss(ks=1, eps=0.0)
    expected = (ELL[0] + ELL[2] + ELL[3] + 4 * ELL[1]) / 20
    assert loss(X, EXPERT, batch).item() == pytest.approx(expected, rel=1e-6)
    # Explicit names, and a differently named expert.
    batch = {"masks": {"a": EXPERT, "b": NON_EXPERT}}
    assert AGBCELoss(ks=1, eps=0.0, expert="a", others=["b"])(X, EXPERT, batch).item() == pytest.approx(
        expected, rel=1e-6
    )
    with pytest.raises(ValueError, match="not in batch"):
        AGBCELoss(others=["nobody"])(X, EXPERT, batch)
    # expert missing from the masks: warned, every mask counts as another annotator.
    with pytest.warns(UserWarning, match="expert 'expert' is not among"):
        assert AGBCELoss(ks=1, eps=0.0)(X, EXPERT, batch).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError):
        AGBCELoss(expert="a", others=["a"])


def test_ag_bce_three_annotators() -> None:
    # expert [1, 0, 1, 0]; a2 [1, 0, 0, 0] disagrees on pixel 2; non_expert on pixel 1.
    a2 = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    batch = {"masks": {"expert": EXPERT, "non_expert": NON_EXPERT, "annotator_2": a2}}
    # hard = [0, 1, 1, 0] → easy ℓ0 + ℓ3, hard ℓ1 + ℓ2.
    expected = (ELL[0] + ELL[3] + 4 * (ELL[1] + ELL[2])) / 20
    assert AGBCELoss(ks=1, eps=0.0)(X, EXPERT, batch).item() == pytest.approx(expected, rel=1e-6)
    assert ag_bce(X, EXPERT, [NON_EXPERT, a2], ks=1, eps=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_ag_bce_fallback_without_second_annotator() -> None:
    # No hard pixels: L = mean(ℓ) / (1 + W) = Σℓ / (5·4), the β-weighted BCE scaled by 1/(1+W).
    expected = sum(ELL) / 20
    loss = AGBCELoss(ks=4, eps=0.0)
    with pytest.warns(UserWarning, match="no annotator besides 'expert'"):
        assert loss(X, EXPERT, {"masks": {"expert": EXPERT}}).item() == pytest.approx(expected, rel=1e-6)
    # Warns once per instance; batch=None works too.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loss(X, EXPERT, None).item() == pytest.approx(expected, rel=1e-6)
    assert ag_bce(X, EXPERT, None, eps=0.0).item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- multi-scale


def test_downsample_modes_and_official_shrinks_foreground() -> None:
    # 4×4 target, foreground = top-left 3×3. 2×2 blocks: TL mean 1, TR 0.5, BL 0.5, BR 0.25.
    t = torch.zeros(1, 1, 4, 4)
    t[0, 0, :3, :3] = 1.0
    area = downsample_mask(t, (2, 2), "area")  # mean ≥ 0.5
    nearest = downsample_mask(t, (2, 2), "nearest")  # picks pixels (0,0), (0,2), (2,0), (2,2)
    official = downsample_mask(t, (2, 2), "official")  # bilinear = block mean here, then floor
    assert area[0, 0].tolist() == [[1, 1], [1, 0]]
    assert nearest[0, 0].tolist() == [[1, 1], [1, 1]]
    assert official[0, 0].tolist() == [[1, 0], [0, 0]]
    # The full-resolution foreground fraction is 9/16; official keeps 1/4 of the pixels, area 3/4.
    assert official.mean() < t.mean() < area.mean()
    assert downsample_mask(t, (4, 4), "official") is t


def test_official_downsample_matches_cv2_resize() -> None:
    cv2 = pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(3)
    # A blob (smooth enough that bilinear sees whole-foreground neighbourhoods).
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = (((yy - 15) ** 2 + (xx - 13) ** 2) < 100).float()
    masks = torch.stack([blob, (torch.rand(32, 32, generator=gen) > 0.3).float()])[:, None]
    for size in (16, 8, 4):
        ref = np.stack([cv2.resize(m[0].numpy().astype(np.float64), (size, size)) for m in masks])
        ref = torch.from_numpy(ref.astype(np.float32)).long()  # the dataset's .long()
        ours = downsample_mask(masks, (size, size), "official")[:, 0]
        assert torch.equal(ours.long(), ref), size


def _ds_inputs(size: int = 16):  # noqa: ANN202
    gen = torch.Generator().manual_seed(4)
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    expert = (((yy - 7) ** 2 + (xx - 8) ** 2) < 25).float()[None, None].repeat(2, 1, 1, 1)
    other = (((yy - 8) ** 2 + (xx - 7) ** 2) < 30).float()[None, None].repeat(2, 1, 1, 1)
    outputs = [torch.randn(2, 1, size // 2**i, size // 2**i, generator=gen) for i in range(4)]
    return outputs, expert, {"masks": {"expert": expert, "non_expert": other}}


def test_multiscale_ag_bce_per_scale_kernels() -> None:
    outputs, target, batch = _ds_inputs()
    loss = ag_bce_ds_loss()  # ks 4, 3, 2, 1; weights 1; area downsampling
    assert isinstance(loss, ModelOutputsLoss)  # the training loop passes it the whole list
    terms = loss.components(outputs, target, batch)
    for out, ks, term in zip(outputs, (4, 3, 2, 1), terms, strict=True):
        size = out.shape[2:]
        t = downsample_mask(target, size, "area")
        o = downsample_mask(batch["masks"]["non_expert"], size, "area")
        assert term.item() == pytest.approx(ag_bce(out, t, o, ks=ks).item(), rel=1e-6)
    # The full-scale term uses ks = 4, not 1 (the dilation changes the value here).
    assert terms[0].item() != pytest.approx(
        ag_bce(outputs[0], target, batch["masks"]["non_expert"], ks=1).item()
    )
    assert loss(outputs, target, batch).item() == pytest.approx(sum(t.item() for t in terms), rel=1e-6)
    # Weights are used as given.
    weighted = ag_bce_ds_loss(weights=(1.0, 0.5, 0.25, 0.0))(outputs, target, batch)
    assert weighted.item() == pytest.approx(
        terms[0].item() + 0.5 * terms[1].item() + 0.25 * terms[2].item(), rel=1e-6
    )
    # A single tensor (evaluation) gets the full-scale AG-BCE.
    assert loss(outputs[0], target, batch).item() == pytest.approx(terms[0].item(), rel=1e-6)


def test_multiscale_intermediate_bce_and_downsample_modes() -> None:
    outputs, target, batch = _ds_inputs()
    loss = ag_bce_ds_loss(intermediate="bce", target_downsample="nearest")
    terms = loss.components(outputs, target, batch)
    assert terms[0].item() == pytest.approx(
        ag_bce(outputs[0], target, batch["masks"]["non_expert"], ks=4).item(), rel=1e-6
    )
    for out, term in zip(outputs[1:], terms[1:], strict=True):
        t = downsample_mask(target, out.shape[2:], "nearest")
        assert term.item() == pytest.approx(F.binary_cross_entropy_with_logits(out, t).item(), rel=1e-6)
    # official downsampling: the expert disc shrinks at 1/2 (13 pixels vs 19 with area; the masks
    # are resized the same way).
    official = ag_bce_ds_loss(target_downsample="official")
    assert torch.isfinite(official(outputs, target, batch))
    t2 = downsample_mask(target, (8, 8), "official")
    assert 0 < t2.sum() < downsample_mask(target, (8, 8), "area").sum()
    terms = official.components(outputs, target, batch)
    o2 = downsample_mask(batch["masks"]["non_expert"], (8, 8), "official")
    assert terms[1].item() == pytest.approx(ag_bce(outputs[1], t2, o2, ks=3).item(), rel=1e-6)
    with pytest.raises(ValueError, match="outputs"):
        loss(outputs[:3], target, batch)
    with pytest.raises(ConfigError):
        ag_bce_ds_loss(intermediate="dice")
    with pytest.raises(ConfigError):
        ag_bce_ds_loss(target_downsample="bicubic")
    with pytest.raises(ConfigError):
        ag_bce_ds_loss(ks_per_scale=(4, 3), weights=(1.0,))


# ----------------------------------------------------------------------------- focal


def test_focal_by_hand_and_torchvision() -> None:
    # Pixel 0: x=0, y=1: p_t = 0.5, BCE = ln 2, (1−p_t)² = 0.25, α_t = 0.25.
    # Pixel 1: x=ln3, y=0: p = 0.75, p_t = 0.25, BCE = ln 4, (1−p_t)² = 0.5625, α_t = 0.75.
    x = torch.tensor([0.0, LN3]).view(1, 1, 1, 2)
    y = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    balanced = (0.25 * 0.25 * math.log(2) + 0.75 * 0.5625 * math.log(4)) / 2
    assert focal(x, y).item() == pytest.approx(balanced, rel=1e-6)
    # Thesis §3.3.3 pseudocode: α = 0.25 on every pixel.
    uniform = 0.25 * (0.25 * math.log(2) + 0.5625 * math.log(4)) / 2
    assert focal(x, y, alpha_mode="uniform").item() == pytest.approx(uniform, rel=1e-6)
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 1, 8, 8, generator=gen) * 4
    target = (torch.rand(3, 1, 8, 8, generator=gen) > 0.5).float()
    for alpha, gamma in ((0.25, 2.0), (0.5, 1.0), (0.9, 0.0)):
        ref = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="mean")
        assert FocalLoss(alpha=alpha, gamma=gamma)(logits, target).item() == pytest.approx(
            ref.item(), rel=1e-6
        )
    # Uniform mode = the thesis' pyT_focal_loss.
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ref = (0.25 * (1 - p_t) ** 2.0 * bce).mean()
    assert focal(logits, target, alpha_mode="uniform").item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ConfigError):
        FocalLoss(alpha_mode="other")


# ----------------------------------------------------------------------------- adaptive focal


def test_adaptive_focal_by_hand() -> None:
    # p = [0.5, 0.75, 0.25, 0.25], y_true = [1, 0, 1, 0], y_std = [1, 1, 1, 0], ks = 1, θ = 0.5, ε = 0.
    # difficulty = 1 − mean p = 1 − 1.75/4 = 0.5625; variability = mean y_std = 0.75 → γ = 1.3125.
    gamma = 1.3125
    assert adaptive_focal_gamma(X, NON_EXPERT).item() == pytest.approx(gamma)
    # p_t = [0.5, 0.25, 0.25, 0.75]; FL = −0.5·(1 − p_t)^γ·ln p_t.
    p_t = [0.5, 0.25, 0.25, 0.75]
    fl = [-0.5 * (1 - q) ** gamma * math.log(q) for q in p_t]
    # hard = [0, 1, 0, 0]: LOSS = (γ·FL1 + (FL0 + FL2 + FL3)/γ) / 4.
    expected = (gamma * fl[1] + (fl[0] + fl[2] + fl[3]) / gamma) / 4
    got = adaptive_focal(X, EXPERT, NON_EXPERT, ks=1, eps=0.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # ks = 2 dilates the hard pixel to [0, 1, 1, 0].
    expected = (gamma * (fl[1] + fl[2]) + (fl[0] + fl[3]) / gamma) / 4
    assert adaptive_focal(X, EXPERT, NON_EXPERT, ks=2, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # The class reads the second annotation from the batch.
    batch = {"masks": {"expert": EXPERT, "non_expert": NON_EXPERT}}
    assert AdaptiveFocalLoss(ks=2, eps=0.0)(X, EXPERT, batch).item() == pytest.approx(expected, rel=1e-6)


def _thesis_adaptive_focal(y_true, y_pred, y_std):  # noqa: ANN001, ANN202
    """The thesis' adaptive_focal_loss (ks = 1, so no cv2), probabilities in, B×H×W."""
    n = y_true.shape[0] * y_true.shape[1] * y_true.shape[2]
    hard = (y_true != y_std).float()
    easy = 1 - hard
    epsilon, beta = 0.000001, 0.5
    gamma = (1.0 - torch.mean(y_pred.float()).item()) + torch.mean(y_std.float()).item()
    y_pred = torch.clamp(y_pred, min=epsilon, max=1.0 - epsilon)
    p_t = torch.where(y_true == 1, y_pred, 1 - y_pred)
    focal_loss = -beta * torch.mul((1 - p_t) ** gamma, torch.log(p_t + epsilon))
    return (gamma * (focal_loss * hard).sum() + (focal_loss * easy).sum() / gamma) / n


def test_adaptive_focal_matches_thesis_algorithm() -> None:
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 1, 10, 10, generator=gen) * 3
    y = (torch.rand(3, 1, 10, 10, generator=gen) > 0.5).float()
    s = (torch.rand(3, 1, 10, 10, generator=gen) > 0.5).float()
    ref = _thesis_adaptive_focal(y[:, 0], torch.sigmoid(logits)[:, 0], s[:, 0])
    assert adaptive_focal(logits, y, s, ks=1).item() == pytest.approx(ref.item(), rel=1e-5)


def test_adaptive_focal_three_annotators_and_fallback() -> None:
    a2 = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    # variability = mean(mean(NON_EXPERT), mean(a2)) = (0.75 + 0.25)/2 = 0.5 → γ = 0.5625 + 0.5.
    assert adaptive_focal_gamma(X, [NON_EXPERT, a2]).item() == pytest.approx(1.0625)
    batch = {"masks": {"expert": EXPERT, "non_expert": NON_EXPERT, "annotator_2": a2}}
    got = AdaptiveFocalLoss(ks=1, eps=0.0)(X, EXPERT, batch)
    gamma = 1.0625
    fl = [-0.5 * (1 - q) ** gamma * math.log(q) for q in (0.5, 0.25, 0.25, 0.75)]
    # hard = [0, 1, 1, 0].
    assert got.item() == pytest.approx((gamma * (fl[1] + fl[2]) + (fl[0] + fl[3]) / gamma) / 4, rel=1e-6)
    # Fallback: y_std := y_true → no hard pixels, variability = mean(y_true) = 0.5, γ = 1.0625.
    with pytest.warns(UserWarning, match="no annotator"):
        fallback = AdaptiveFocalLoss(ks=1, eps=0.0)(X, EXPERT, {"masks": {"expert": EXPERT}})
    assert fallback.item() == pytest.approx(sum(fl) / gamma / 4, rel=1e-6)
    assert adaptive_focal(X, EXPERT, None, ks=1, eps=0.0).item() == pytest.approx(fallback.item())


def test_adaptive_focal_gamma_gradient_option() -> None:
    x1 = X.clone().requires_grad_()
    adaptive_focal(x1, EXPERT, NON_EXPERT, ks=1).backward()
    x2 = X.clone().requires_grad_()
    adaptive_focal(x2, EXPERT, NON_EXPERT, ks=1, detach_gamma=False).backward()
    assert not torch.allclose(x1.grad, x2.grad)


# ----------------------------------------------------------------------------- all losses


def _all_losses(eps: float):  # noqa: ANN202
    return {
        "ag_bce": lambda x, y, o: ag_bce(x, y, o, eps=eps),
        "focal": lambda x, y, o: focal(x, y),
        "adaptive_focal": lambda x, y, o: adaptive_focal(x, y, o, eps=eps),
        "adaptive_focal_g": lambda x, y, o: adaptive_focal(x, y, o, eps=eps, detach_gamma=False),
    }


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_stable_at_extreme_logits(eps: float) -> None:
    # Confidently right and confidently wrong pixels, inside and outside the hard region.
    x = torch.tensor([[100.0, -100.0, 100.0, -100.0], [100.0, -100.0, -100.0, 100.0]]).view(2, 1, 1, 4)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0]]).view(2, 1, 1, 4)
    o = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]).view(2, 1, 1, 4)
    for name, fn in _all_losses(eps).items():
        xx = x.clone().requires_grad_()
        value = fn(xx, y, o)
        value.backward()
        assert torch.isfinite(value), name
        assert torch.isfinite(xx.grad).all(), name
    ds = ag_bce_ds_loss(ks_per_scale=(4,), weights=(1.0,), eps=eps)
    xx = x.clone().requires_grad_()
    value = ds([xx], y, {"masks": {"expert": y, "non_expert": o}})
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(xx.grad).all()


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_gradcheck_float64(eps: float) -> None:
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(2, 1, 4, 4, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    y = (torch.rand(2, 1, 4, 4, generator=gen) > 0.5).double()
    o = (torch.rand(2, 1, 4, 4, generator=gen) > 0.5).double()
    for name, fn in _all_losses(eps).items():
        if name == "adaptive_focal":
            continue  # γ is a constant for autograd but moves under finite differences
        assert torch.autograd.gradcheck(lambda z, fn=fn: fn(z, y, o), (x,)), name
    ds = ag_bce_ds_loss(ks_per_scale=(2, 1), weights=(1.0, 0.5), eps=eps)
    x2 = (torch.randn(2, 1, 2, 2, generator=gen, dtype=torch.float64)).requires_grad_()
    batch = {"masks": {"expert": y, "non_expert": o}}
    assert torch.autograd.gradcheck(lambda a, b: ds([a, b], y, batch), (x, x2))


def test_shape_mismatch_names_both_shapes() -> None:
    x = torch.zeros(2, 1, 4, 4)
    bad = torch.zeros(2, 4, 4)
    for fn in (
        lambda: ag_bce(x, bad, None),
        lambda: ag_bce(x, x, bad),
        lambda: focal(x, bad),
        lambda: adaptive_focal(x, bad, x),
        lambda: adaptive_focal(x, x, bad),
        lambda: AGBCELoss()(x, bad),
        lambda: AdaptiveFocalLoss()(x, bad),
        lambda: FocalLoss()(x, bad),
        lambda: AGBCELoss()(x, x, {"masks": {"expert": x, "non_expert": bad}}),
    ):
        with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\).*\(2, 4, 4\)|\(2, 4, 4\).*\(2, 1, 4, 4\)"):
            fn()


def test_half_precision_logits_computed_in_float32() -> None:
    x = X.half()
    assert ag_bce(x, EXPERT, NON_EXPERT).dtype == torch.float32
    assert adaptive_focal(x, EXPERT, NON_EXPERT).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_logits_device() -> None:
    dev = torch.device("cuda")
    args = (X.to(dev), EXPERT.to(dev), NON_EXPERT.to(dev))
    assert ag_bce(*args).device.type == "cuda"
    assert adaptive_focal(*args).device.type == "cuda"
    assert ag_bce(*args).item() == pytest.approx(ag_bce(X, EXPERT, NON_EXPERT).item(), rel=1e-5)


def test_registry() -> None:
    names = {"ag_bce", "ag_bce_ds", "focal", "adaptive_focal"}
    assert names <= set(losses.available())
    assert names <= set(losses.describe())
    assert isinstance(losses.build("ag_bce", w_hard=12.0), AGBCELoss)
    assert losses.build("ag_bce", w_hard=12.0).w_hard == 12.0
    ds = losses.build("ag_bce_ds", intermediate="bce", target_downsample="official")
    assert isinstance(ds, DeepSupervisionLoss) and ds.mode == "official"
    assert [type(loss).__name__ for loss in ds.losses] == ["AGBCELoss", "BCELoss", "BCELoss", "BCELoss"]
    assert isinstance(losses.build("focal", gamma=1.0), FocalLoss)
    assert isinstance(losses.build("adaptive_focal", ks=3), AdaptiveFocalLoss)
    # Sums work with the batch-reading losses too.
    combo = losses.build("dice+ag_bce", ag_bce={"ks": 1, "eps": 0.0})
    batch = {"masks": {"expert": EXPERT, "non_expert": NON_EXPERT}}
    assert torch.isfinite(combo(X, EXPERT, batch))
