import numpy as np
import pytest

from medseg.metrics import MICROSEGNET_PIXEL_MM, microsegnet_protocol, volumetric_protocol


def _volume() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((3, 10, 10), bool)
    pred = np.zeros_like(gt)
    gt[0, 2:6, 2:6] = True
    pred[0, 2:6, 3:7] = True  # shifted one column: Dice 2·12/32 = 0.75, HD95 1 px
    gt[1, 2:6, 2:6] = True  # missed entirely: skipped by the official script
    return pred, gt  # slice 2 empty in both: skipped too


def test_microsegnet_protocol_hand_computed() -> None:
    pred, gt = _volume()
    out = microsegnet_protocol(pred, gt)
    assert out["dice"] == pytest.approx(0.75)
    # pooled HD95 over both borders: 12 of 24 border pixels are 1 px away → 95th percentile 1 px
    assert out["hd95_mm"] == pytest.approx(1.0 * MICROSEGNET_PIXEL_MM)
    assert out["n_slices_scored"] == 1 and out["n_slices_skipped"] == 2


def test_protocols_disagree_on_a_missed_slice() -> None:
    pred, gt = _volume()
    honest = volumetric_protocol(pred, gt, spacing=(1.0, 0.5, 0.5))
    # 3D Dice: 2·12 / (16 + 32) = 0.5 — the missed slice counts
    assert honest["dice"] == pytest.approx(0.5)
    assert honest["dice"] < microsegnet_protocol(pred, gt)["dice"]


def test_no_scorable_slice_is_flagged_not_nan() -> None:
    gt = np.zeros((2, 8, 6), bool)
    gt[0, 2:4, 2:4] = True
    out = microsegnet_protocol(np.zeros_like(gt), gt, pixel_mm=0.1)
    assert out["n_slices_scored"] == 0 and out["dice"] == 0.0
    assert out["hd95_mm"] == pytest.approx(np.hypot(8, 6) * 0.1)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        microsegnet_protocol(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError):
        microsegnet_protocol(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), pixel_mm=0)
