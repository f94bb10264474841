"""Sliding-window inference: medseg against MONAI's ``sliding_window_inference`` on a CT-sized volume.

Usage::

    .venv/bin/python benchmarks/sliding_window.py            # 300×512×512, window 64×128×128, K = 3
    .venv/bin/python benchmarks/sliding_window.py --quick    # 20×48×40, window 16×32×32: seconds
    .venv/bin/python benchmarks/sliding_window.py --shape 200 512 512 --features 8 16 --repeats 3

One random ``1×1×D×H×W`` float32 volume and, in turn, two models with K = ``--classes`` logit
channels, the same in every arm (seeded): a small random 3D U-Net (medseg's ``resenc_unet``,
``--features`` channels per stage, eval mode), and ``pointwise`` (K channels ``a·x + b``, which
costs nothing: what the arms cost then is the sliding window itself, and the memory is the
buffers and outputs alone). Both sides use the same windows: Gaussian blending (σ = 0.125 × window),
``--overlap``, ``--sw-batch-size`` windows per forward pass, zero padding; no mirroring. Arms:

* ``MONAI``: ``monai.inferers.sliding_window_inference`` → ``K×volume`` logits; then the label map
  (argmax) and the foreground probability (1 − softmax channel 0), as a caller would make them;
* ``medseg logits``: :func:`medseg.engine.inference.sliding_window_predict` → the same logits;
* ``medseg class map``: :func:`medseg.engine.inference.sliding_window_classes` → label map and
  foreground probability, taken slab by slab without the full logits.

Each arm runs in a fresh process: once on a volume of one window (first-call set-up), then on the
volume, timed, with its peak memory: the peak resident set size (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the call) minus the resident set size before it, with the
model built and the volume in memory (so what the call itself adds: buffers, outputs,
activations). Allocations from 1 MiB are mapped (``MALLOC_MMAP_THRESHOLD_``), so glibc gives
freed buffers back and the RSS is what is alive. The table gives the peak also in units of one
``K×volume`` float32 copy of the logits. The arms save their outputs in a temporary folder and
the parent compares them with MONAI's: max abs difference of the logits and of the foreground
probability, and the voxels whose label differs (ties broken by rounding). Throughput and the
speed ratio are per second of the process's CPU time (all its threads): on a shared machine the
wall clock of an arm depends on what else runs meanwhile, its CPU time much less (the wall clock
is in the table too). The ratios are MONAI ÷ medseg time and medseg ÷ MONAI memory for the same
output (speed > 1 and memory < 1: medseg better), from one run (``--repeats N``: N rounds, the
arms taking turns, medians reported).

The table is printed and (not with ``--quick``, unless ``--out`` is given) written to
``benchmarks/results/sliding_window.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_results import publish  # noqa: E402

from medseg.engine.inference import SlidingWindow, sliding_window_classes, sliding_window_predict  # noqa: E402
from medseg.io_utils import write_text_atomic  # noqa: E402
from medseg.models.resenc_unet import ResEncUNet  # noqa: E402
from medseg.report.tables import markdown_table  # noqa: E402

ARMS = ("monai", "medseg_logits", "medseg_classes")
MODELS = ("resenc_unet", "pointwise")
# allocations from 1 MiB are mapped, so glibc returns what is freed and the RSS is what is alive
WORKER_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
Outputs = tuple[torch.Tensor | None, np.ndarray | None, np.ndarray | None]
LABELS = {"monai": "MONAI", "medseg_logits": "medseg logits", "medseg_classes": "medseg class map"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak_rss() -> None:
    """Set this process's peak RSS (``VmHWM``) to its current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class Pointwise(torch.nn.Module):
    """K logit channels ``a_k·x + b_k`` of the input, voxel by voxel: a model that costs (almost)
    nothing, so that what the arms cost is the sliding window itself."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.linspace(-1.0, 1.0, classes).view(1, -1, 1, 1, 1))
        self.register_buffer("shift", torch.linspace(0.0, 0.5, classes).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.scale + self.shift


def build_model(name: str, classes: int, features: list[int], seed: int = 0) -> torch.nn.Module:
    """The model every arm runs: a random 3D ``resenc_unet`` (eval mode, no deep-supervision heads)
    or the :class:`Pointwise` stand-in."""
    if name == "pointwise":
        return Pointwise(classes).eval()
    torch.manual_seed(seed)
    blocks = [0] + [1] * (len(features) - 1)  # a stem at full resolution, one block per lower stage
    model = ResEncUNet(1, classes, 3, features=features, blocks=blocks, deep_supervision=False)
    return model.eval()


def build_volume(shape: list[int], seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, 1, *shape), generator=generator)


def arm_function(
    arm: str, args: argparse.Namespace, model: torch.nn.Module
) -> Callable[[torch.Tensor], Outputs]:
    """``volume → (logits, labels, foreground)`` of one arm (``None`` for what it does not make)."""
    from monai.inferers import sliding_window_inference

    roi = tuple(args.roi)
    window = SlidingWindow(roi, overlap=args.overlap, mode="gaussian", sw_batch_size=args.sw_batch_size)

    def monai(volume: torch.Tensor) -> Outputs:
        with torch.no_grad():
            logits = sliding_window_inference(
                volume,
                roi,
                args.sw_batch_size,
                model,
                overlap=args.overlap,
                mode="gaussian",
                sigma_scale=0.125,
            )
        return logits, None, None

    def medseg_logits(volume: torch.Tensor) -> Outputs:
        return (
            sliding_window_predict(model, volume, roi, args.overlap, "gaussian", args.sw_batch_size),
            None,
            None,
        )

    def medseg_classes(volume: torch.Tensor) -> Outputs:
        return None, *sliding_window_classes(model, volume, window, torch.device("cpu"), args.classes)

    return {"monai": monai, "medseg_logits": medseg_logits, "medseg_classes": medseg_classes}[arm]


def run_arm(arm: str, args: argparse.Namespace, save: Path) -> dict[str, float]:
    """One arm in this process: wall and CPU seconds and the peak RSS added (MiB), for its first
    output (``logits_…``) and for all (``…``); its outputs saved under ``save``.

    The arm first runs on a volume of one window (first-call set-up: thread pools, kernels), then
    on the volume, measured. MONAI's arm then makes the label map and the foreground probability
    from its logits.
    """
    model = build_model(args.model, args.classes, args.features)
    volume = build_volume(args.shape)
    run = arm_function(arm, args, model)
    run(build_volume(args.roi))
    rss_before = _status_kib("VmRSS")
    reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()

    def measured(prefix: str) -> dict[str, float]:
        return {
            f"{prefix}seconds": time.perf_counter() - wall,
            f"{prefix}cpu_seconds": time.process_time() - cpu,
            f"{prefix}peak_mib": (_status_kib("VmHWM") - rss_before) / 1024,
        }

    logits, labels, foreground = run(volume)
    result = measured("logits_")
    if arm == "monai":  # the label map and the probability from the full logits, as a caller would
        assert logits is not None
        labels = logits.argmax(1)[0].to(torch.uint8).numpy()
        foreground = (1.0 - torch.softmax(logits, dim=1)[0, 0]).numpy()
    result.update(measured(""))
    if logits is not None:
        np.save(save / f"{arm}_logits.npy", logits.numpy()[0])
    if labels is not None:
        np.save(save / f"{arm}_labels.npy", labels)
        np.save(save / f"{arm}_foreground.npy", foreground)
    return result


def max_abs_difference(a_path: Path, b_path: Path) -> float:
    """max |a − b| of two saved arrays, read in chunks along the first axis (memory-mapped)."""
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    if a.shape != b.shape:
        raise ValueError(f"{a_path.name} has shape {a.shape}, {b_path.name} {b.shape}")
    axis_len = a.shape[0]
    step = max(1, axis_len // 16)
    return max(float(np.abs(a[i : i + step] - b[i : i + step]).max()) for i in range(0, axis_len, step))


def differing_labels(a_path: Path, b_path: Path) -> int:
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    return int(np.count_nonzero(np.asarray(a) != np.asarray(b)))


def worker_command(arm: str, args: argparse.Namespace, save: Path) -> list[str]:
    command = [sys.executable, __file__, "--worker", arm, "--save", str(save), "--model", args.model]
    command += ["--shape", *map(str, args.shape), "--roi", *map(str, args.roi)]
    command += ["--features", *map(str, args.features), "--classes", str(args.classes)]
    command += ["--overlap", str(args.overlap), "--sw-batch-size", str(args.sw_batch_size)]
    return command + ["--threads", str(args.threads)]


def median_results(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The median of every measurement of an arm over the rounds."""
    return {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}


def table_rows(
    model: str, results: dict[str, dict[str, float]], diffs: dict[str, str], args: argparse.Namespace
) -> list[dict[str, str]]:
    """One row per method and output of one model; ratios against MONAI's row with the same output."""
    voxels = float(np.prod(args.shape))
    copy_mib = args.classes * voxels * 4 / 2**20  # one K×volume float32 copy of the logits
    monai, logits, classes = results["monai"], results["medseg_logits"], results["medseg_classes"]
    logit_keys = ("logits_seconds", "logits_cpu_seconds", "logits_peak_mib")
    all_keys = ("seconds", "cpu_seconds", "peak_mib")
    entries = [  # method, output, its measurements, their keys, max difference
        ("MONAI sliding_window_inference", "logits", monai, logit_keys, "(reference)"),
        ("medseg sliding_window_predict", "logits", logits, logit_keys, diffs["logits"]),
        ("MONAI, then argmax and softmax", "label map + foreground", monai, all_keys, "(reference)"),
        ("medseg sliding_window_classes", "label map + foreground", classes, all_keys, diffs["classes"]),
    ]
    rows = []
    for name, output, measured, keys, difference in entries:
        seconds, cpu, peak = (measured[k] for k in keys)
        _, monai_cpu, monai_peak = (monai[k] for k in keys)
        rows.append(
            {
                "model": model,
                "method": name,
                "output": output,
                "wall s": f"{seconds:.2f}",
                "CPU s": f"{cpu:.2f}",
                "Mvoxel per CPU s": f"{voxels / cpu / 1e6:.3f}",
                "speed × MONAI": f"{monai_cpu / cpu:.2f}",
                "peak RSS added (MiB)": f"{peak:.0f}",
                "in logit copies": f"{peak / copy_mib:.2f}",
                "memory × MONAI": f"{peak / monai_peak:.2f}",
                "max abs difference vs MONAI": difference,
            }
        )
    return rows


def run_model(args: argparse.Namespace) -> list[dict[str, str]]:
    """The three arms on ``args.model``, ``args.repeats`` rounds, compared: its table rows."""
    rounds: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="sliding_window_") as tmp:
        save = Path(tmp)
        for _ in range(args.repeats):  # the arms take turns, so a load that drifts hits them alike
            for arm in ARMS:
                command = worker_command(arm, args, save)
                done = subprocess.run(command, check=True, capture_output=True, text=True, env=WORKER_ENV)
                rounds[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
                last = rounds[arm][-1]
                print(
                    f"{args.model}, {LABELS[arm]}: {last['seconds']:.1f} s, {last['cpu_seconds']:.1f} CPU s",
                    file=sys.stderr,
                )
        logits_diff = max_abs_difference(save / "monai_logits.npy", save / "medseg_logits_logits.npy")
        foreground_diff = max_abs_difference(
            save / "monai_foreground.npy", save / "medseg_classes_foreground.npy"
        )
        labels_differ = differing_labels(save / "monai_labels.npy", save / "medseg_classes_labels.npy")
    diffs = {
        "logits": f"{logits_diff:.1e}",
        "classes": f"foreground {foreground_diff:.1e}; labels differ at {labels_differ} voxels",
    }
    return table_rows(args.model, {arm: median_results(rounds[arm]) for arm in ARMS}, diffs, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", nargs=3, type=int, default=[300, 512, 512], help="volume D H W")
    parser.add_argument("--roi", nargs=3, type=int, default=[64, 128, 128], help="window D H W")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--features", nargs="+", type=int, default=[4, 8], help="U-Net channels per stage")
    parser.add_argument("--classes", type=int, default=3, help="K, logit channels")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three arms (medians reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: no spin-waiting in the CPU time; 0: torch's)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="markdown table (default benchmarks/results/sliding_window.md)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20×48×40, window 16×32×32 (sliding_window_quick.md)"
    )
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, default=MODELS[0], help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and not args.worker:
        args.shape, args.roi, args.features = [20, 48, 40], [16, 32, 32], [2, 4]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:  # one arm in a fresh process: its peak RSS belongs to it alone
        print(json.dumps(run_arm(args.worker, args, args.save)))
        return

    rows = []
    for model in args.models:
        args.model = model
        rows += run_model(args)
    threads = args.threads or torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    header = (
        f"Sliding-window inference of a {'×'.join(map(str, args.shape))} float32 volume on the CPU "
        f"({cpu}, {threads} torch thread{'s' if threads > 1 else ''}): "
        f"window {'×'.join(map(str, args.roi))}, "
        f"overlap {args.overlap:g}, Gaussian blending (σ = 0.125 × window), {args.sw_batch_size} windows "
        f"per forward pass, K = {args.classes} classes. Models: `resenc_unet` (3D, features "
        f"{args.features}, random weights); `pointwise` (K channels a·x + b, no cost: the sliding window "
        "alone). Time: CPU seconds of the process (speed × MONAI from them) and wall seconds on a shared "
        "machine. Memory: the peak RSS the call adds; one K×volume float32 copy of the logits is "
        f"{args.classes * np.prod(args.shape) * 4 / 2**20:.0f} MiB. "
        f"{'Median of ' + str(args.repeats) + ' rounds.' if args.repeats > 1 else 'One round.'} "
        f"`python benchmarks/sliding_window.py{' --quick' if args.quick else ''}`"
    )
    text = header + "\n\n" + markdown_table(rows) + "\n"
    print("\n" + text)
    if args.out is not None:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}")
    else:
        publish("sliding_window", text, args.quick)  # --quick: sliding_window_quick.md


if __name__ == "__main__":
    main()
