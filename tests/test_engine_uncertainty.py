"""Tests for medseg.engine.uncertainty (sampled maps) and medseg.engine.calibrate (calibration files)."""

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from medseg.config import load_config
from medseg.data.sample import Sample
from medseg.engine.calibrate import (
    CASES_FILE,
    JSON_FILE,
    RELIABILITY_COLUMNS,
    RELIABILITY_FILE,
    CalibrationOptions,
    calibration_options,
    case_columns,
)
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.evaluate import evaluate_checkpoint
from medseg.engine.inference import SlidingWindow, sliding_window_predict
from medseg.engine.predict import predict_files, predict_probabilities
from medseg.engine.uncertainty import (
    SampleStatistics,
    UncertaintyOptions,
    binary_entropy,
    categorical_entropy,
    dropout_modules,
    inference_modes,
    maps_from_statistics,
    predict_logits,
    predict_uncertainty,
    tta_flips,
    uncertainty_options,
)
from medseg.errors import ConfigError
from medseg.metrics.calibration import aurc, spearman
from medseg.models import SegmentationModel, build_from_config

CPU = torch.device("cpu")


class Wrapped(SegmentationModel):
    """A bare network under the model contract (``spatial_dims``, ``num_classes``)."""

    def __init__(self, net: nn.Module, spatial_dims: int = 2, num_classes: int | None = None) -> None:
        super().__init__()
        self.net, self.spatial_dims, self.num_classes = net, spatial_dims, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _h(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


class PositionBias(SegmentationModel):
    """Logits that depend on the position only (not flip-equivariant): a learned bias map."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0 + self.bias


class DropoutNet(SegmentationModel):
    """Conv → BatchNorm → Dropout → 1×1 conv (2D)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout2d(p)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.norm(self.conv(x)))))


def _sample2d(h: int = 8, w: int = 6, seed: int = 0) -> Sample:
    image = np.random.default_rng(seed).random((1, h, w)).astype(np.float32)
    return Sample(image, {}, "expert", (1.0, 1.0), "img")


# --- maps by hand ---------------------------------------------------------------------------------


def test_entropy_and_mi_by_hand_for_two_samples() -> None:
    # two TTA samples (identity, W flip) of a position-only model on a 1×2 image give every pixel
    # the probabilities {0.2, 0.6}
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    model = PositionBias(torch.tensor([[[[logit(0.2), logit(0.6)]]]]))
    stats = SampleStatistics(model, tta_flips(2, axes=[1]), 1, None)(torch.zeros(1, 1, 1, 2))
    assert stats.shape == (1, 3, 1, 2)
    maps = maps_from_statistics(stats[0], None, "probs", 2)
    # E p = 0.4; H[E p] = H(0.4) = 0.673012; E[H p] = (H(0.2) + H(0.6)) / 2 = 0.586707; MI = 0.086305
    np.testing.assert_allclose(maps.probability, [[0.4, 0.4]], atol=1e-6)
    np.testing.assert_allclose(maps.entropy, [[_h(0.4)] * 2], atol=1e-6)
    np.testing.assert_allclose(maps.expected_entropy, [[(_h(0.2) + _h(0.6)) / 2] * 2], atol=1e-6)
    np.testing.assert_allclose(maps.mutual_information, [[0.0863053] * 2], atol=1e-6)
    # logit merge: sigmoid of the mean logit = odds sqrt(0.25 * 1.5) → p = 0.379796; entropies unchanged
    merged = maps_from_statistics(stats[0], None, "logits", 2)
    np.testing.assert_allclose(merged.probability, [[0.3797959] * 2], atol=1e-6)
    np.testing.assert_allclose(merged.mutual_information, maps.mutual_information)


def test_multiclass_entropy_and_mi_by_hand() -> None:
    # two samples of 3 classes: (0.7, 0.2, 0.1) and (0.1, 0.2, 0.7)
    p1, p2 = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.2, 0.7])
    mean = (p1 + p2) / 2  # 0.4, 0.2, 0.4
    h = lambda p: float(-(p * np.log(p)).sum())  # noqa: E731
    stats = torch.tensor(np.concatenate([mean, [(h(p1) + h(p2)) / 2], np.log(mean)]))[:, None, None]
    maps = maps_from_statistics(stats, 3, "probs", 2)
    # H(0.4, 0.2, 0.4) = 1.054920; H(p1) = H(p2) = 0.801819; MI = 0.253102
    assert maps.entropy[0, 0] == pytest.approx(1.0549201, abs=1e-6)
    assert maps.expected_entropy[0, 0] == pytest.approx(0.8018185, abs=1e-6)
    assert maps.mutual_information[0, 0] == pytest.approx(1.0549201 - 0.8018185, abs=1e-6)
    assert maps.probability[0, 0] == pytest.approx(0.6) and maps.classes is not None
    assert categorical_entropy(torch.tensor([[1.0, 0.0]])).item() == 0.0
    assert binary_entropy(torch.tensor([0.0, 1.0, 0.5])).tolist() == pytest.approx([0, 0, math.log(2)])
    with pytest.raises(ValueError, match="statistics channels"):
        maps_from_statistics(stats, None, "probs", 2)


def test_tta_flips_and_options() -> None:
    assert tta_flips(2) == [(), (2,), (3,), (2, 3)]
    assert len(tta_flips(3)) == 8
    assert tta_flips(3, axes=[1, 2]) == [(), (3,), (4,), (3, 4)]
    assert tta_flips(3, axes=[]) == [()]
    with pytest.raises(ConfigError, match="tta_axes"):
        tta_flips(2, axes=[2])
    for kwargs, match in (
        ({"method": "dropout"}, "unknown uncertainty method"),
        ({"merge": "mean"}, "unknown TTA merge"),
        ({"samples": 0}, "samples"),
    ):
        with pytest.raises(ConfigError, match=match):
            UncertaintyOptions(**kwargs)
    assert uncertainty_options(None) is None
    assert uncertainty_options("both", 3, "logits") == UncertaintyOptions("both", 3, "logits")


# --- flip-equivariant models: no TTA disagreement --------------------------------------------------


@pytest.mark.parametrize("kind", ["1x1", "symmetric"])
def test_flip_equivariant_net_has_zero_tta_mi(kind: str) -> None:
    if kind == "1x1":
        net = Wrapped(nn.Conv2d(1, 1, 1))
    else:  # a kernel symmetric under both flips, zero padding: flip-equivariant
        net = Wrapped(nn.Conv2d(1, 1, 3, padding=1))
        with torch.no_grad():
            net.net.weight.copy_(torch.tensor([[[[0.5, -1.0, 0.5], [2.0, 1.0, 2.0], [0.5, -1.0, 0.5]]]]))
    sample = _sample2d(8, 8)
    maps = predict_uncertainty(net, sample, (8, 8), "zscore", CPU, UncertaintyOptions("tta"))
    assert maps.n_samples == 4
    assert np.abs(maps.mutual_information).max() < 1e-6
    np.testing.assert_allclose(maps.entropy, maps.expected_entropy, atol=1e-6)
    plain = predict_probabilities(net, sample, (8, 8), "zscore", CPU)
    np.testing.assert_allclose(maps.probability, plain, atol=1e-6)
    assert maps.mutual_information.min() >= 0


def test_3d_sliding_window_tta_with_a_1x1x1_conv() -> None:
    net = Wrapped(nn.Conv3d(1, 1, 1), spatial_dims=3)
    volume = np.random.default_rng(3).random((1, 6, 20, 18)).astype(np.float32)
    sample = Sample(volume, {}, "expert", (2.0, 1.0, 1.0), "vol")
    window = SlidingWindow(roi_size=(4, 8, 8))
    maps = predict_uncertainty(net, sample, (8, 8), "zscore", CPU, UncertaintyOptions("tta"), window=window)
    assert maps.n_samples == 8 and maps.probability.shape == (6, 20, 18)
    assert np.abs(maps.mutual_information).max() < 1e-6
    image = torch.from_numpy((volume - volume.mean()) / volume.std())[None]
    expected = torch.sigmoid(sliding_window_predict(net, image, (4, 8, 8)))[0, 0].numpy()
    np.testing.assert_allclose(maps.probability, expected, atol=1e-5)
    in_plane = predict_uncertainty(
        net, sample, (8, 8), "zscore", CPU, UncertaintyOptions("tta"), window=window, tta_axes=[1, 2]
    )
    assert in_plane.n_samples == 4


def test_multiclass_3d_gives_classes_and_foreground() -> None:
    net = Wrapped(nn.Conv3d(1, 3, 1), spatial_dims=3, num_classes=3)
    volume = np.random.default_rng(4).random((1, 5, 12, 10)).astype(np.float32)
    sample = Sample(volume, {}, "expert", (1.0, 1.0, 1.0), "vol")
    window = SlidingWindow(roi_size=(4, 8, 8))
    maps = predict_uncertainty(net, sample, (8, 8), "zscore", CPU, UncertaintyOptions("tta"), window=window)
    image = torch.from_numpy((volume - volume.mean()) / volume.std())[None]
    probs = torch.softmax(sliding_window_predict(net, image, (4, 8, 8)), dim=1)[0].numpy()
    assert maps.classes is not None and maps.classes.dtype == np.uint8
    np.testing.assert_array_equal(maps.classes, probs.argmax(0))
    np.testing.assert_allclose(maps.probability, 1 - probs[0], atol=1e-5)
    assert np.abs(maps.mutual_information).max() < 1e-6 and maps.entropy.max() <= math.log(3) + 1e-6


def test_position_dependent_model_has_positive_tta_mi() -> None:
    bias = torch.linspace(-3, 3, 8).reshape(1, 1, 1, 8).expand(1, 1, 8, 8).clone()
    maps = predict_uncertainty(
        PositionBias(bias), _sample2d(8, 8), (8, 8), "none", CPU, UncertaintyOptions("tta")
    )
    assert maps.mutual_information.max() > 0.1
    assert (maps.mutual_information >= 0).all()
    np.testing.assert_allclose(maps.entropy - maps.expected_entropy, maps.mutual_information, atol=1e-6)


# --- MC-dropout -----------------------------------------------------------------------------------


def test_mc_dropout_touches_only_dropout_and_restores_modes() -> None:
    net = DropoutNet()
    net.train()
    for _ in range(3):  # give the batch norm some running statistics
        net(torch.randn(4, 1, 8, 8))
    stats_before = {k: v.clone() for k, v in net.norm.state_dict().items()}
    seen: dict[str, list[bool]] = {"norm": [], "drop": [], "conv": []}
    for name in seen:
        getattr(net, name).register_forward_hook(
            lambda module, _i, _o, name=name: seen[name].append(module.training)
        )
    rng_before = torch.get_rng_state()
    for start_training in (True, False):
        net.train(start_training)
        maps = predict_uncertainty(
            net, _sample2d(), (8, 8), "zscore", CPU, UncertaintyOptions("mcdropout", samples=6)
        )
        assert all(m.training == start_training for m in net.modules())  # restored
    assert seen["drop"] and all(seen["drop"])  # dropout sampled ...
    assert not any(seen["norm"]) and not any(seen["conv"])  # ... everything else in eval mode
    for key, value in net.norm.state_dict().items():
        torch.testing.assert_close(value, stats_before[key])  # running stats unchanged
    assert maps.n_samples == 6 and maps.mutual_information.max() > 0
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded inside, global state untouched
    again = predict_uncertainty(
        net, _sample2d(), (8, 8), "zscore", CPU, UncertaintyOptions("mcdropout", samples=6)
    )
    np.testing.assert_array_equal(again.mutual_information, maps.mutual_information)
    both = predict_uncertainty(net, _sample2d(), (8, 8), "zscore", CPU, UncertaintyOptions("both", 3))
    assert both.n_samples == 12


def test_no_dropout_model_is_an_error() -> None:
    for net in (Wrapped(nn.Conv2d(1, 1, 1)), Wrapped(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Dropout(0.0)))):
        assert dropout_modules(net) == []
        with pytest.raises(ConfigError, match="has no Dropout modules; MC-dropout needs dropout"):
            predict_uncertainty(net, _sample2d(), (8, 8), "zscore", CPU, UncertaintyOptions("mcdropout"))
    with (
        pytest.raises(ConfigError, match="model unet has no Dropout"),
        inference_modes(nn.Conv2d(1, 1, 1), dropout=True, name="unet"),
    ):
        pass


def test_unet_dropout_option_enables_mc_dropout() -> None:
    cfg = load_config(None, ["model.options={features: [4, 8], dropout: 0.3}"])
    model = build_from_config(cfg).eval()
    assert len(dropout_modules(model)) == 1
    maps = predict_uncertainty(
        model, _sample2d(16, 16), (16, 16), "zscore", CPU, UncertaintyOptions("mcdropout", 4)
    )
    assert maps.mutual_information.max() > 0


def test_predict_logits_matches_probabilities_at_the_model_size() -> None:
    net = DropoutNet().eval()
    sample = _sample2d(8, 8)
    logits = predict_logits(net, sample, (8, 8), "zscore", CPU)
    plain = predict_probabilities(net, sample, (8, 8), "zscore", CPU)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), plain, atol=1e-6)
    assert not net.drop.training


# --- files ----------------------------------------------------------------------------------------


@pytest.fixture()
def checkpoint(dropout_unet_checkpoint: Path) -> Path:
    return dropout_unet_checkpoint


def test_predict_files_writes_maps_with_the_input_geometry(checkpoint: Path, tmp_path: Path) -> None:
    affine = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, 0.4, 0.0, -3.0], [0.6, 0.0, 0.0, 7.0], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((30, 28, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    png = tmp_path / "img.png"
    Image.fromarray((np.random.rand(20, 24) * 255).astype(np.uint8)).save(png)
    options = UncertaintyOptions("both", samples=2)
    vol, img = predict_files(
        checkpoint, [tmp_path / "scan.nii.gz", png], tmp_path / "out", device="cpu", uncertainty=options
    )
    assert vol.uncertainty is not None and img.uncertainty is not None
    for name, suffix in (("probability", "prob"), ("entropy", "entropy"), ("mutual_information", "mi")):
        assert vol.uncertainty[name].name == f"scan_{suffix}.nii.gz"
    assert vol.uncertainty["expected_entropy"].name == "scan_expected_entropy.nii.gz"
    for path in vol.uncertainty.values():
        written = nib.load(path)
        np.testing.assert_allclose(written.affine, affine)
        assert written.shape == data.shape and written.get_data_dtype() == np.float32
    prob = np.asarray(nib.load(vol.uncertainty["probability"]).dataobj)
    mask = np.asarray(nib.load(vol.mask).dataobj)
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert vol.probabilities == vol.uncertainty["probability"]
    entropy = np.asarray(nib.load(vol.uncertainty["entropy"]).dataobj)
    mi = np.asarray(nib.load(vol.uncertainty["mutual_information"]).dataobj)
    assert (mi >= 0).all() and (mi <= entropy + 1e-6).all() and entropy.max() <= math.log(2) + 1e-6
    assert sorted(p.name for p in img.uncertainty.values()) == [
        "img_entropy.npy",
        "img_expected_entropy.npy",
        "img_mi.npy",
        "img_prob.npy",
    ]
    assert np.load(img.uncertainty["mutual_information"]).shape == (20, 24)


def _read_outputs(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    return (
        pd.read_csv(out / RELIABILITY_FILE),
        pd.read_csv(out / CASES_FILE),
        json.loads((out / JSON_FILE).read_text()),
    )


def test_evaluate_checkpoint_writes_calibration_files(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    options = CalibrationOptions(n_bins=10, region_margin_voxels=2)
    result = evaluate_checkpoint(
        checkpoint, out, split="val", device="cpu", progress=False, calibration=options
    )
    reliability, cases, summary = _read_outputs(out)
    assert list(reliability.columns) == RELIABILITY_COLUMNS
    assert list(cases.columns) == case_columns(with_mi=False)
    assert set(reliability["region"]) == {"whole", "region"} and len(reliability) == 20
    whole = reliability[reliability["region"] == "whole"]
    assert whole["lower"].iloc[0] == 0.0 and whole["upper"].iloc[-1] == 1.0
    n_val = len(result.per_patient)
    assert len(cases) == n_val and whole["count"].sum() == n_val * 4 * 32 * 32
    assert summary["pooled"]["n_voxels_whole"] == n_val * 4 * 32 * 32
    assert (
        summary["pooled"]["n_voxels_region"] == reliability[reliability["region"] == "region"]["count"].sum()
    )
    dice = dict(zip(result.per_patient["case"], result.per_patient["dice"], strict=True))
    for case, value in zip(cases["case"], cases["dice"], strict=True):
        assert value == pytest.approx(dice[case], abs=1e-6)
    assert summary["n_bins"] == 10 and summary["region_margin_voxels"] == 2
    assert "mean((p - y)^2)" in summary["brier_variant"]
    assert summary["mean_of_cases"]["ece_whole"] == pytest.approx(cases["ece_whole"].mean(), abs=1e-6)
    u, d = cases["mean_entropy_region"].to_numpy(), cases["dice"].to_numpy()
    keep = np.isfinite(u)
    assert summary["aurc"] == pytest.approx(aurc(u[keep], 1 - d[keep]), abs=1e-5)
    rho = spearman(u, d)[0]
    assert (summary["spearman_rho"] is None and math.isnan(rho)) or summary["spearman_rho"] == pytest.approx(
        rho
    )
    assert (out / "metrics.csv").is_file()


def test_evaluate_checkpoint_with_sampling_adds_mi(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    options = CalibrationOptions(uncertainty=UncertaintyOptions("both", samples=2))
    evaluate_checkpoint(checkpoint, out, split="val", device="cpu", progress=False, calibration=options)
    _, cases, summary = _read_outputs(out)
    assert list(cases.columns) == case_columns(with_mi=True)
    assert summary["uncertainty"] == {"method": "both", "merge": "probs", "n_samples": 8, "unit": "nats"}
    assert (cases["mean_mi_region"].dropna() >= 0).all()


def test_calibration_options_and_errors(tmp_path: Path) -> None:
    assert calibration_options(False) is None
    assert calibration_options(True) == CalibrationOptions()
    implied = calibration_options(False, 10, 3.0, "tta", 5, "logits")
    assert implied == CalibrationOptions(10, 3.0, UncertaintyOptions("tta", 5, "logits"))
    with pytest.raises(ConfigError, match="bins"):
        CalibrationOptions(n_bins=0)
    with pytest.raises(ConfigError, match="margin"):
        CalibrationOptions(region_margin_voxels=-1)
    cfg = load_config(
        None,
        [
            "data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}",
            "data.image_size=[32, 32]",
            "model.options={features: [4, 8]}",
        ],
    )
    model = build_from_config(cfg)
    ckpt = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "nodrop.pt")
    options = CalibrationOptions(uncertainty=UncertaintyOptions("mcdropout"))
    with pytest.raises(ConfigError, match="model unet has no Dropout modules"):
        evaluate_checkpoint(
            ckpt, tmp_path / "e", split="val", device="cpu", progress=False, calibration=options
        )
