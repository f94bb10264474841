"""Tests for medseg.metrics.calibration (hand-computed values and a cross-check against MONAI)."""

import math

import numpy as np
import pytest

from medseg.metrics.calibration import (
    CalibrationAccumulator,
    ace,
    aurc,
    binary_nll_from_logits,
    boundary_region,
    brier,
    calibration_metrics,
    ece,
    fit_temperature,
    mce,
    nll,
    reliability_bins,
    spearman,
)

# Tiny example used by the hand computations below (no value sits on a bin edge).
P = np.array([0.1, 0.3, 0.55, 0.7, 0.9, 0.95])
Y = np.array([0, 1, 1, 0, 1, 1])


def test_ece_mce_top_label_by_hand():
    # n_bins=5, edges 0, .2, .4, .6, .8, 1; bins are (left, right].
    # top-label: pred = p >= .5, conf = max(p, 1-p), hit = pred == y
    #   p=.1  -> conf .9,  pred 0, y 0 -> hit 1
    #   p=.3  -> conf .7,  pred 0, y 1 -> hit 0
    #   p=.55 -> conf .55, pred 1, y 1 -> hit 1
    #   p=.7  -> conf .7,  pred 1, y 0 -> hit 0
    #   p=.9  -> conf .9,  pred 1, y 1 -> hit 1
    #   p=.95 -> conf .95, pred 1, y 1 -> hit 1
    # bin (.4,.6]: {.55}          conf .55,            acc 1, gap .45, n=1
    # bin (.6,.8]: {.7, .7}       conf .7,             acc 0, gap .7,  n=2
    # bin (.8,1]:  {.9, .9, .95}  conf 2.75/3=.91667,  acc 1, gap 1/12, n=3
    # ECE = (1*.45 + 2*.7 + 3/12) / 6 = 2.1 / 6 = .35 ; MCE = .7
    b = reliability_bins(P, Y, n_bins=5)
    np.testing.assert_array_equal(b["count"], [0, 0, 1, 2, 3])
    np.testing.assert_allclose(b["confidence"][2:], [0.55, 0.7, 2.75 / 3])
    np.testing.assert_allclose(b["accuracy"][2:], [1.0, 0.0, 1.0])
    assert np.isnan(b["confidence"][:2]).all() and np.isnan(b["accuracy"][:2]).all()
    np.testing.assert_allclose(b["edges"], np.linspace(0, 1, 6))
    assert ece(P, Y, n_bins=5) == pytest.approx(0.35, abs=1e-12)
    assert mce(P, Y, n_bins=5) == pytest.approx(0.7, abs=1e-12)


def test_ece_mce_foreground_by_hand():
    # foreground convention: conf = p, acc = mean(y) per bin, n_bins=5
    # (0,.2]: {.1 y0} gap .1 ; (.2,.4]: {.3 y1} gap .7 ; (.4,.6]: {.55 y1} gap .45
    # (.6,.8]: {.7 y0} gap .7 ; (.8,1]: {.9, .95 ; y 1, 1} conf .925 acc 1 gap .075
    # ECE = (.1 + .7 + .45 + .7 + 2*.075) / 6 = 2.1 / 6 = .35 ; MCE = .7
    b = reliability_bins(P, Y, n_bins=5, convention="foreground")
    np.testing.assert_array_equal(b["count"], [1, 1, 1, 1, 2])
    np.testing.assert_allclose(b["accuracy"], [0, 1, 1, 0, 1])
    assert ece(P, Y, 5, convention="foreground") == pytest.approx(0.35, abs=1e-12)
    assert mce(P, Y, 5, convention="foreground") == pytest.approx(0.7, abs=1e-12)


def test_bin_edges_include_0_and_1_and_are_right_closed():
    # 0 -> first bin, 1 -> last bin, an exact interior edge 0.5 -> the bin below it: (.25, .5]
    b = reliability_bins([0.0, 0.5, 1.0], [0, 1, 1], n_bins=4, convention="foreground")
    np.testing.assert_array_equal(b["count"], [1, 1, 0, 1])


def test_ace_equal_mass_by_hand():
    # top-label confidences sorted (stable): .55(h1) .7(h0) .7(h0) .9(h1) .9(h1) .95(h1)
    # 3 bins of 2: [.55,.7] conf .625 acc .5 gap .125 ; [.7,.9] conf .8 acc .5 gap .3 ;
    #              [.9,.95] conf .925 acc 1 gap .075   -> ACE = (.125+.3+.075)/3 = .5/3
    assert ace(P, Y, n_bins=3) == pytest.approx(0.5 / 3, abs=1e-12)
    # 4 bins -> sizes 2,2,1,1 (array_split): gaps .125, .3, |1-.9|=.1, |1-.95|=.05 -> .575/4
    assert ace(P, Y, n_bins=4) == pytest.approx(0.575 / 4, abs=1e-12)
    # more bins than voxels: empty bins are skipped -> per-voxel gaps .45,.7,.7,.1,.1,.05 -> 2.1/6
    assert ace(P, Y, n_bins=10) == pytest.approx(2.1 / 6, abs=1e-12)


def test_brier_and_nll_by_hand():
    # (p-y)^2: .01, .49, .2025, .49, .01, .0025 -> sum 1.205 -> /6
    assert brier(P, Y) == pytest.approx(1.205 / 6, abs=1e-12)
    # -log of the probability given to the true class: .9, .3, .55, .3, .9, .95
    expected = -(2 * math.log(0.9) + 2 * math.log(0.3) + math.log(0.55) + math.log(0.95)) / 6
    assert nll(P, Y) == pytest.approx(expected, abs=1e-12)
    # clipping: confidently wrong voxels cost -log(eps)
    assert nll([0.0, 1.0], [1, 0]) == pytest.approx(-math.log(1e-12), rel=1e-9)
    assert nll([0.0, 1.0], [1, 0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-9)
    assert nll([0.0, 1.0], [0, 1]) == pytest.approx(0.0, abs=1e-11)


def test_mask_restricts_voxels_and_empty_mask_is_nan():
    mask = np.array([False, False, True, True, True, True])
    assert brier(P, Y, mask=mask) == pytest.approx(brier(P[2:], Y[2:]))
    assert ece(P, Y, 5, mask=mask) == pytest.approx(ece(P[2:], Y[2:], 5))
    empty = np.zeros(6, dtype=bool)
    for f in (ece, mce, ace, brier, nll):
        assert math.isnan(f(P, Y, mask=empty))


def test_perfectly_calibrated_gives_near_zero():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    for conv in ("top_label", "foreground"):
        assert ece(p, y, convention=conv) < 0.01
        assert ace(p, y, convention=conv) < 0.01
    # an overconfident model (probabilities pushed towards 0/1) is clearly miscalibrated
    p_over = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    assert ece(p_over, y) > 0.1


def test_boundary_region():
    pred = np.zeros((11, 11), dtype=bool)
    pred[5, 5] = True
    gt = np.zeros_like(pred)
    r = boundary_region(pred, gt, 2)
    # Euclidean disc of radius 2: x^2 + y^2 <= 4 -> 1 + 4 + 4 + 4 = 13 pixels
    assert r.sum() == 13 and r[5, 3] and r[6, 6] and not r[7, 6]
    gt[0, 0] = True
    np.testing.assert_array_equal(boundary_region(pred, gt, 0), pred | gt)
    assert boundary_region(pred, gt, 1).sum() == 5 + 3  # plus-shape + corner with its 2 neighbours
    assert not boundary_region(np.zeros((4, 4)), np.zeros((4, 4)), 3).any()
    with pytest.raises(ValueError, match="shape mismatch"):
        boundary_region(pred, gt[:5], 1)


def test_calibration_metrics_whole_and_region():
    rng = np.random.default_rng(1)
    y = np.zeros((40, 40), dtype=bool)
    y[15:25, 15:25] = True
    p = np.clip(np.where(y, 0.8, 0.1) + rng.normal(0, 0.1, y.shape), 0, 1)
    out = calibration_metrics(p, y, n_bins=10, region_margin=3)
    region = boundary_region(p >= 0.5, y, 3)
    assert out["n_voxels"] == 1600 and out["n_voxels_region"] == int(region.sum()) < 1600
    for name, f in (("ece", ece), ("mce", mce), ("ace", ace)):
        assert out[name] == pytest.approx(f(p, y, 10))
        assert out[f"{name}_region"] == pytest.approx(f(p, y, 10, mask=region))
    assert out["brier_region"] == pytest.approx(brier(p, y, region))
    assert out["nll"] == pytest.approx(nll(p, y))


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs", "match"),
    [
        (np.zeros(3), np.zeros(4), {}, "shape mismatch"),
        (np.array([0.2, 1.5]), np.zeros(2), {}, r"\[0, 1\]"),
        (np.array([0.2, -0.1]), np.zeros(2), {}, r"\[0, 1\]"),
        (np.array([0.2, np.nan]), np.zeros(2), {}, "NaN"),
        (np.array([0.2, np.inf]), np.zeros(2), {}, "infinite"),
        (np.array([0.2, 0.3]), np.array([0, 2]), {}, "binary"),
        (np.array([0.2, 0.3]), np.array([0, np.nan]), {}, "labels contains NaN"),
        (np.array([0.2, 0.3]), np.zeros(2), {"mask": np.ones(3, bool)}, "shape mismatch"),
        (np.array([0.2, 0.3]), np.zeros(2), {"mask": np.ones(2)}, "boolean"),
        (np.array([0.2, 0.3]), np.zeros(2), {"n_bins": 0}, "n_bins"),
        (np.array([0.2, 0.3]), np.zeros(2), {"convention": "bad"}, "convention"),
    ],
)
def test_errors(probs, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ece(probs, labels, **kwargs)


def test_errors_other_functions():
    with pytest.raises(ValueError, match="NaN"):
        brier([np.nan], [0])
    with pytest.raises(ValueError, match="shape mismatch"):
        nll([0.1, 0.2], [0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_metrics(np.full((3, 3), 2.0), np.zeros((3, 3)))


def test_cross_check_with_monai():
    torch = pytest.importorskip("torch")
    mc = pytest.importorskip("monai.metrics.calibration")
    rng = np.random.default_rng(42)
    shape = (24, 24, 12)
    # dyadic probabilities (k / 2**20) so p, 1-p and max(p, 1-p) are exact in MONAI's float32
    p = rng.integers(0, 2**20 + 1, size=shape) / 2**20
    p.flat[:3] = [0.0, 0.5, 1.0]
    y = rng.random(shape) < p**0.7  # miscalibrated on purpose, so the metrics are far from 0
    n_bins = 15

    def monai(y_pred, y_true, reduction):
        metric = mc.CalibrationErrorMetric(
            num_bins=n_bins, calibration_reduction=reduction, metric_reduction="none"
        )
        metric(
            y_pred=torch.as_tensor(y_pred, dtype=torch.float32),
            y=torch.as_tensor(y_true, dtype=torch.float32),
        )
        return metric.aggregate().double().numpy()

    # foreground convention == MONAI on the foreground channel; one-hot [1-p, p] gives it per channel
    onehot_p = np.stack([1 - p, p])[None]
    onehot_y = np.stack([~y, y]).astype(float)[None]
    for ours, red in ((ece, "expected"), (mce, "maximum")):
        val = ours(p, y, n_bins, convention="foreground")
        assert monai(p[None, None], y[None, None], red)[0, 0] == pytest.approx(val, abs=1e-6)
        np.testing.assert_allclose(monai(onehot_p, onehot_y, red)[0], [val, val], atol=1e-6)
    # top-label convention == MONAI fed conf = max(p, 1-p) and hit = (p >= .5) == y as one channel
    conf = np.maximum(p, 1 - p)
    hit = ((p >= 0.5) == y).astype(float)
    for ours, red in ((ece, "expected"), (mce, "maximum")):
        val = ours(p, y, n_bins)
        assert monai(conf[None, None], hit[None, None], red)[0, 0] == pytest.approx(val, abs=1e-6)
    # the bins themselves match calibration_binning; MONAI's "average" is the unweighted mean over
    # non-empty equal-width bins (not our equal-mass ACE)
    for conv, yp, yt in (("foreground", p, y), ("top_label", conf, hit)):
        b = reliability_bins(p, y, n_bins, convention=conv)
        mp, mg, cnt = mc.calibration_binning(
            torch.as_tensor(yp[None, None], dtype=torch.float32),
            torch.as_tensor(yt[None, None], dtype=torch.float32),
            num_bins=n_bins,
        )
        np.testing.assert_array_equal(cnt[0, 0].numpy(), b["count"])
        np.testing.assert_allclose(mp[0, 0].double().numpy(), b["confidence"], atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(mg[0, 0].double().numpy(), b["accuracy"], atol=1e-6, equal_nan=True)
        gaps = np.abs(b["accuracy"] - b["confidence"])
        assert monai(yp[None, None], yt[None, None], "average")[0, 0] == pytest.approx(
            np.nanmean(gaps), abs=1e-6
        )


def test_accumulator_pools_cases_like_the_concatenation():
    rng = np.random.default_rng(5)
    cases = [(rng.random((6, 7)), rng.random((6, 7)) < 0.4) for _ in range(3)]
    masks = [rng.random((6, 7)) < 0.5 for _ in range(3)]
    for convention in ("top_label", "foreground"):
        acc = CalibrationAccumulator(7, convention=convention)
        acc_masked = CalibrationAccumulator(7, convention=convention)
        for (p, y), m in zip(cases, masks, strict=True):
            acc.add(p, y)
            acc_masked.add(p, y, m)
        p_all = np.concatenate([p.ravel() for p, _ in cases])
        y_all = np.concatenate([y.ravel() for _, y in cases])
        m_all = np.concatenate([m.ravel() for m in masks])
        for a, mask in ((acc, None), (acc_masked, m_all)):
            out = a.metrics()
            assert out["ece"] == pytest.approx(ece(p_all, y_all, 7, mask, convention), abs=1e-12)
            assert out["mce"] == pytest.approx(mce(p_all, y_all, 7, mask, convention), abs=1e-12)
            assert out["ace"] == pytest.approx(ace(p_all, y_all, 7, mask, convention), abs=1e-12)
            assert out["brier"] == pytest.approx(brier(p_all, y_all, mask), abs=1e-12)
            assert out["nll"] == pytest.approx(nll(p_all, y_all, mask), abs=1e-12)
            assert out["n_voxels"] == (p_all.size if mask is None else mask.sum())
            expected = reliability_bins(p_all, y_all, 7, mask, convention)
            np.testing.assert_array_equal(a.reliability()["count"], expected["count"])
            np.testing.assert_allclose(a.reliability()["accuracy"], expected["accuracy"], equal_nan=True)
    empty = CalibrationAccumulator(5).metrics()
    assert empty["n_voxels"] == 0 and all(math.isnan(empty[k]) for k in ("ece", "mce", "ace", "brier", "nll"))
    with pytest.raises(ValueError, match="n_bins"):
        CalibrationAccumulator(0)


def test_pooled_and_mean_of_cases_against_monai():
    torch = pytest.importorskip("torch")
    mc = pytest.importorskip("monai.metrics.calibration")
    rng = np.random.default_rng(11)
    probs = rng.integers(0, 2**20 + 1, size=(4, 10, 12)) / 2**20  # exact in float32
    labels = rng.random(probs.shape) < probs**0.6
    acc = CalibrationAccumulator(15, convention="foreground")
    per_case = []
    for p, y in zip(probs, labels, strict=True):
        acc.add(p, y)
        per_case.append(ece(p, y, 15, convention="foreground"))

    def monai(y_pred, y_true, reduction):
        metric = mc.CalibrationErrorMetric(
            num_bins=15, calibration_reduction="expected", metric_reduction=reduction
        )
        metric(
            y_pred=torch.as_tensor(y_pred, dtype=torch.float32),
            y=torch.as_tensor(y_true, dtype=torch.float32),
        )
        return float(metric.aggregate())

    # pooled: every voxel of every case in one item; mean of cases: one batch item per case
    assert acc.metrics()["ece"] == pytest.approx(
        monai(probs.reshape(1, 1, -1), labels.reshape(1, 1, -1), "mean"), abs=1e-6
    )
    assert float(np.mean(per_case)) == pytest.approx(monai(probs[:, None], labels[:, None], "mean"), abs=1e-6)


def test_aurc_by_hand():
    # ranked by uncertainty: risks 0, .2, .5 -> selective risks 0, .1, .7/3 -> AURC = (0 + .1 + .7/3) / 3
    assert aurc([0.1, 0.4, 0.2], [0.0, 0.5, 0.2]) == pytest.approx((0.1 + 0.7 / 3) / 3, abs=1e-12)
    # worst ranking (most certain = highest risk): risks .5, .2, 0 -> .5, .35, .7/3
    assert aurc([0.4, 0.1, 0.2], [0.0, 0.5, 0.2]) == pytest.approx((0.5 + 0.35 + 0.7 / 3) / 3, abs=1e-12)
    # a tie between the two first cases: their mean risk .25 each -> .25, .25, .7/3
    assert aurc([0.1, 0.1, 0.2], [0.0, 0.5, 0.2]) == pytest.approx((0.5 + 0.7 / 3) / 3, abs=1e-12)
    assert aurc([0.3], [0.4]) == pytest.approx(0.4)
    assert math.isnan(aurc([], []))
    with pytest.raises(ValueError, match="NaN"):
        aurc([np.nan, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="shape mismatch"):
        aurc([0.1, 0.2], [0.1])


def test_spearman_by_hand():
    # ranks of y: 1, 3, 2, 4 -> d = 0, -1, 1, 0 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    rho, p, n = spearman([1, 2, 3, 4], [10, 30, 20, 40])
    assert rho == pytest.approx(0.8) and n == 4 and 0 < p < 1
    # NaN pairs are dropped; too few or constant values give NaN
    assert spearman([1, 2, np.nan, 3, 4], [10, 30, 5, 20, 40])[0] == pytest.approx(0.8)
    assert math.isnan(spearman([1, 2], [2, 1])[0])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])[0])


def test_temperature_scaling_by_hand():
    # logits all 1, labels 3 of 4 positive: NLL is minimal where sigmoid(1 / T) = 3/4 -> T = 1 / ln 3
    z, y = np.ones(4), np.array([1, 1, 1, 0])
    assert fit_temperature(z, y) == pytest.approx(1 / math.log(3), abs=1e-4)
    # NLL by hand at T = 2: sigmoid(.5) for the positives, 1 - sigmoid(.5) for the negative
    s = 1 / (1 + math.exp(-0.5))
    assert binary_nll_from_logits(z, y, 2.0) == pytest.approx(-(3 * math.log(s) + math.log(1 - s)) / 4)
    # over-confident logits (true temperature 3) are recovered
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 6, 200_000)
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-logits / 3))
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.03)
    with pytest.raises(ValueError, match="binary"):
        fit_temperature([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature([0.1], [1], bounds=(2.0, 1.0))
