"""Streaming sliding-window blending: MONAI's windows, weights and output; slabs; batching; memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from torch import Tensor, nn

from medseg.engine.inference import (
    SlidingWindow,
    argmax_and_foreground,
    evaluation_mode,
    sliding_window_classes,
    sliding_window_predict,
    window_predictor,
)
from medseg.engine.sliding_window import WindowBlender, importance_map, scan_starts, window_grid

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


class Channels(nn.Module):
    """Three pointwise channels of the first input channel: x, sin x, x²; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batch_sizes.append(x.shape[0])
        first = x[:, :1]
        return torch.cat([first, first.sin(), first * first], 1)


def monai_starts(size: int, roi: int, overlap: float) -> list[int]:
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    return sorted({s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))})


def test_scan_starts_match_monai() -> None:
    for size in range(1, 70):
        for roi in range(1, size + 1, 3):
            for overlap in (0.0, 0.25, 0.5, 0.7, 0.9):
                assert scan_starts(size, roi, overlap) == monai_starts(size, roi, overlap), (
                    size,
                    roi,
                    overlap,
                )


def test_scan_starts_by_hand() -> None:
    assert scan_starts(300, 64, 0.5) == [0, 32, 64, 96, 128, 160, 192, 224, 236]  # last pulled back
    assert scan_starts(512, 128, 0.5) == [0, 64, 128, 192, 256, 320, 384]
    assert scan_starts(16, 16, 0.5) == [0]
    assert scan_starts(10, 4, 0.0) == [0, 4, 6]
    with pytest.raises(ValueError, match="pad it first"):
        scan_starts(8, 16, 0.5)


@pytest.mark.parametrize("roi", [(16, 16), (7, 9, 12), (64, 128, 128)])
@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_importance_map_matches_monai(roi: tuple[int, ...], mode: str) -> None:
    assert torch.equal(importance_map(roi, mode), compute_importance_map(roi, mode=mode))


def test_importance_map_by_hand() -> None:
    # 3 voxels, σ = 0.5 × 3 = 1.5: exp(−1/4.5) at ±1, 1 at the centre; the floor is the minimum
    weights = importance_map((3,), sigma_scale=0.5)
    np.testing.assert_allclose(weights.numpy(), [np.exp(-1 / 4.5), 1.0, np.exp(-1 / 4.5)], rtol=1e-6)
    # a 3D Gaussian's corners fall below 1e-3: raised to 1e-3 (MONAI's floor)
    assert importance_map((16, 16, 16)).min().item() == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="blend mode"):
        importance_map((4, 4), "cosine")


def test_window_grid_pads_small_axes_evenly() -> None:
    grid = window_grid((10, 40, 5), (16, 16, 8), 0.5)
    assert grid.pad == ((3, 3), (0, 0), (1, 2))
    assert grid.padded_shape == (16, 40, 8)
    assert grid.starts == ((0,), (0, 8, 16, 24), (0,))
    assert len(grid) == 4 and grid.corners()[1] == (0, 8, 0)
    with pytest.raises(ValueError, match="overlap"):
        window_grid((10, 10), (4, 4), 1.0)
    with pytest.raises(ValueError, match="2D window"):
        window_grid((10, 10, 10), (4, 4), 0.5)


CASES = [
    ((2, 2, 37, 41, 29), (16, 16, 16), 3, 0.5, "gaussian"),
    ((1, 1, 10, 50, 12), (16, 24, 16), 5, 0.5, "gaussian"),  # padded along two axes
    ((1, 2, 100, 77), (32, 32), 4, 0.7, "gaussian"),  # 2D
    ((1, 1, 40, 40, 40), (16, 16, 16), 64, 0.5, "gaussian"),  # a batch spans several window rows
    ((1, 1, 33, 20, 24), (8, 16, 16), 2, 0.25, "constant"),
]


@pytest.mark.parametrize(("shape", "roi", "batch", "overlap", "mode"), CASES)
def test_equals_monai_sliding_window_inference(
    shape: tuple[int, ...], roi: tuple[int, ...], batch: int, overlap: float, mode: str
) -> None:
    torch.manual_seed(0)
    volume = torch.randn(shape)
    conv = (nn.Conv3d if len(roi) == 3 else nn.Conv2d)(shape[1], 3, 3, padding=1)
    with torch.no_grad():
        expected = sliding_window_inference(volume, roi, batch, conv, overlap=overlap, mode=mode)
    out = sliding_window_predict(conv, volume, roi, overlap=overlap, mode=mode, sw_batch_size=batch)
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() < 1e-5  # rounding: the products are fused here


def test_windows_are_batched_through_the_model() -> None:
    model = Channels()
    volume = torch.randn(1, 1, 24, 40, 40)  # 5 × 4 × 4 = 80 windows of 8×16×16 (overlap 0.5)
    sliding_window_predict(model, volume, (8, 16, 16), sw_batch_size=7)
    assert model.batch_sizes == [7] * 11 + [3]
    model.batch_sizes.clear()
    sliding_window_predict(model, volume, (8, 16, 16), sw_batch_size=16, tta_flips=True)
    assert model.batch_sizes == [16] * (5 * 8)  # every batch once per flip (8 in 3D)


@pytest.mark.parametrize(("shape", "roi", "batch", "overlap", "_"), CASES)
def test_streamed_slabs_cover_the_volume_once_and_equal_the_whole(
    shape: tuple[int, ...], roi: tuple[int, ...], batch: int, overlap: float, _: str
) -> None:
    volume = torch.randn(1, *shape[1:])
    grid, weights = window_grid(shape[2:], roi, overlap), importance_map(roi)
    predict = window_predictor(Channels(), [()])
    whole = WindowBlender(predict, volume, grid, weights, batch, keep_all=True)
    for _slab in whole.slabs():
        pass
    expected = whole.output()
    streamed = torch.full_like(expected, float("nan"))
    starts = []
    for start, slab in WindowBlender(predict, volume, grid, weights, batch).slabs():
        rows = slice(start, start + slab.shape[2])
        assert torch.isnan(streamed[:, :, rows]).all()  # no row twice
        streamed[:, :, rows] = slab
        starts.append(start)
    assert starts == sorted(starts) and not torch.isnan(streamed).any()
    assert torch.equal(streamed, expected)


def test_streamed_buffer_is_one_window_deep() -> None:
    grid = window_grid((300, 64, 64), (64, 32, 32), 0.5)
    blender = WindowBlender(
        lambda x: x, torch.zeros(1, 1, 300, 64, 64), grid, importance_map((64, 32, 32)), 9
    )
    assert blender.depth == 64  # a batch of 9 windows stays within one row of 3 × 3
    wide = WindowBlender(lambda x: x, torch.zeros(1, 1, 300, 64, 64), grid, importance_map((64, 32, 32)), 10)
    assert wide.depth == 96  # … 10 reach into the next row, 32 rows further down


def test_class_map_equals_argmax_of_the_logits() -> None:
    torch.manual_seed(1)
    conv = nn.Conv3d(1, 4, 3, padding=1)
    volume = torch.randn(1, 1, 30, 36, 28)
    window = SlidingWindow((8, 16, 16), overlap=0.5, sw_batch_size=3, tta_flips=True)
    logits = sliding_window_predict(conv, volume, window.roi_size, sw_batch_size=3, tta_flips=True)
    labels, foreground = sliding_window_classes(conv, volume, window, torch.device("cpu"), 3)
    expected = logits[:, :3]
    np.testing.assert_array_equal(labels, expected.argmax(1)[0].numpy())
    np.testing.assert_allclose(foreground, 1 - torch.softmax(expected, 1)[0, 0].numpy(), atol=1e-6)
    assert labels.dtype == np.uint8 and foreground.dtype == np.float32


def test_argmax_and_foreground_by_hand() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0, 30.0], [0.0, 1.0, 3.0, 0.0], [0.0, 2.0, 0.0, 0.0]])  # K×4
    labels, foreground = argmax_and_foreground(logits)
    assert labels.tolist() == [0, 0, 1, 0]  # ties go to the first class, as torch.argmax
    e = np.exp
    expected = [
        2 / 3,
        (e(-1) + 1) / (1 + e(-1) + 1),
        (1 + e(-3)) / (e(-2) + 1 + e(-3)),
        2 * e(-30) / (1 + 2 * e(-30)),
    ]
    np.testing.assert_allclose(foreground.numpy(), expected, rtol=1e-6)
    assert foreground[3].item() > 0  # 1 − softmax would round to 0 here


def test_evaluation_mode_restores_every_module_and_takes_plain_functions() -> None:
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2))
    model.train()
    model[1].eval()
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules()) and not torch.is_grad_enabled()
    assert model.training and model[0].training and not model[1].training
    with evaluation_mode(torch.relu):
        assert not torch.is_grad_enabled()


def test_wrong_output_size_is_a_clear_error() -> None:
    def halves(x: Tensor) -> Tensor:
        return x[..., ::2]

    with pytest.raises(ValueError, match="one output of the window's size"):
        sliding_window_predict(halves, torch.randn(1, 1, 20, 20), 8)


MEMORY_SCRIPT = """
import json, sys
import numpy as np, torch
from torch import nn
from medseg.data.sample import Sample
from medseg.engine.inference import SlidingWindow, predict_volume_classes

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

torch.manual_seed(0)
shape, classes = (128, 192, 192), 3
model = lambda x: torch.cat([x, -x, 0.5 * x + 0.1], 1)  # pointwise: class 2 near 0, else 0 or 1
window = SlidingWindow((32, 64, 64), overlap=0.5, sw_batch_size=2)
image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
sample = Sample(image, {{}}, "expert", (1.0, 1.0, 1.0), "ct")
small = Sample(image[:, :40, :70, :70].copy(), {{}}, "expert", (1.0, 1.0, 1.0), "warm-up")
predict_volume_classes(model, small, "zscore", torch.device("cpu"), window, classes)  # first-call set-up
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := RSS now
labels, foreground = predict_volume_classes(model, sample, "zscore", torch.device("cpu"), window, classes)
print(json.dumps({{"added": status("VmHWM") - before, "copy": classes * int(np.prod(shape)) * 4,
                   "classes": sorted(np.unique(labels).tolist())}}))
"""


def _can_reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not _can_reset_peak_rss(), reason="needs Linux /proc/self/clear_refs to reset the peak RSS"
)
def test_class_map_prediction_stays_within_two_logit_copies() -> None:
    """128×192×192, K = 3 (one logit copy = 54 MiB): the peak RSS the call adds, in a fresh process.

    It holds the normalised image (1/3 copy), the label map (1/12), the foreground probability
    (1/3) and buffers 1.5 windows deep (~0.45): measured 1.35 copies, where MONAI's logits and
    weights, their softmax and an int64 argmax take 3. Allocations from 1 MiB are mapped
    (``MALLOC_MMAP_THRESHOLD_``), so that glibc returns what is freed and the RSS is what is alive.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_SRC),
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": str(2**20),
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT.format())],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["classes"] == [0, 1, 2]  # the prediction is not trivial
    assert result["added"] < 2 * result["copy"], result
