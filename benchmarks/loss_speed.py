"""Loss speed: forward + backward time of every registered loss that takes binary logits.

Usage::

    .venv/bin/python benchmarks/loss_speed.py                       # 8×1×256×256, 20 calls each
    .venv/bin/python benchmarks/loss_speed.py --shape 2x1x64x128x128  # 3D
    .venv/bin/python benchmarks/loss_speed.py --quick               # smoke test (2×1×64×64, 3 calls)
    .venv/bin/python benchmarks/loss_speed.py --device cpu          # default: cuda if available, else cpu
    .venv/bin/python benchmarks/loss_speed.py --threads 1 --clock cpu  # CPU time, 1 thread (shared machine)

Inputs: a batch of binary targets (one disc, or ball in 3D, of random centre and radius per
sample) and logits that roughly agree with them (±2 on the target plus N(0, 1) noise), with
``requires_grad``. Every loss is built by name with its default options (``medseg.losses.build``)
and called as ``loss(logits, target, batch)``; ``batch["masks"]`` holds the target as ``expert``
and a shifted copy as ``non_expert``, so the annotation-guided losses find a second annotator.
Losses with ``accepts_multiscale`` (they take a list of outputs) are left out.

Timed per call: forward and backward, the batch already on the device; median over ``--repeats``
calls after ``--warmup`` calls. The boundary-based losses (shape_aware, hausdorff_dt, boundary)
include their scipy distance transforms on the CPU, one per sample (and channel).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from bench_results import publish

import medseg.losses as losses
from medseg.report.tables import markdown_table


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8x1x256x256"`` or ``"8,1,256,256"`` → (8, 1, 256, 256); B×1×H×W or B×1×D×H×W."""
    shape = tuple(int(part) for part in text.replace(",", "x").split("x"))
    if len(shape) not in (4, 5) or shape[1] != 1:
        raise argparse.ArgumentTypeError(f"--shape must be B×1×H×W or B×1×D×H×W, got {text!r}")
    return shape


def make_batch(shape: tuple[int, ...], device: torch.device, seed: int = 0):  # noqa: ANN201
    """Logits (requires_grad), target and a shifted second annotation, all of ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    spatial = shape[2:]
    grids = torch.meshgrid(*(torch.arange(float(s)) for s in spatial), indexing="ij")
    targets, others = [], []
    for _ in range(shape[0]):
        centre = [(torch.rand(1, generator=gen).item() * 0.4 + 0.3) * s for s in spatial]
        radius = (torch.rand(1, generator=gen).item() * 0.15 + 0.15) * min(spatial)
        shift = 0.03 * min(spatial)
        targets.append(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) < radius**2)
        moved = [c + shift for c in centre]
        others.append(sum((g - c) ** 2 for g, c in zip(grids, moved, strict=True)) < radius**2)
    target = torch.stack(targets)[:, None].float().to(device)
    other = torch.stack(others)[:, None].float().to(device)
    noise = torch.randn(shape, generator=gen).to(device)
    logits = ((target * 2 - 1) * 2 + noise).requires_grad_()
    return logits, target, other


def time_per_call(
    fn: Callable[[], object], warmup: int, repeats: int, device: torch.device, clock: str = "wall"
) -> float:
    """Median seconds per call over ``repeats`` calls, after ``warmup`` calls.

    ``clock="wall"`` is ``time.perf_counter``; ``clock="cpu"`` is ``time.process_time``, the CPU
    time of this process, which other processes on a shared machine do not inflate (CPU only).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = now()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(now() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=parse_shape, default=(8, 1, 256, 256), help="B×1×H×W[×D], e.g. 8x1x256x256"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time (shared CPU machines)"
    )
    parser.add_argument("--quick", action="store_true", help="2×1×64×64, 1 warm-up, 3 calls")
    args = parser.parse_args()
    if args.quick:
        args.shape, args.warmup, args.repeats = (2, 1, 64, 64), 1, 3
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures CPU time; use it with --device cpu")
    logits, target, other = make_batch(args.shape, device)
    batch = {"target": target, "masks": {"expert": target, "non_expert": other}}

    timings: dict[str, float] = {}
    left_out: list[str] = []
    for name in losses.available():
        loss = losses.build(name).to(device)
        if getattr(loss, "accepts_multiscale", False):
            left_out.append(f"{name} (takes a list of outputs)")
            continue
        if getattr(loss, "logit_channels", 1) != args.shape[1]:
            left_out.append(f"{name} (takes {loss.logit_channels} logit channels)")
            continue

        def step(loss: torch.nn.Module = loss) -> None:
            logits.grad = None
            loss(logits, target, batch).backward()

        timings[name] = time_per_call(step, args.warmup, args.repeats, device, args.clock)

    reference = timings["bce"]
    rows = [
        {"loss": name, "ms/iter": seconds * 1e3, "relative to bce": f"{seconds / reference:.1f}×"}
        for name, seconds in sorted(timings.items(), key=lambda item: item[1])
    ]
    shape = "×".join(str(s) for s in args.shape)
    text = (
        f"Loss forward + backward, logits {shape}, device {device} (torch threads "
        f"{torch.get_num_threads()}), {args.clock} clock, median of {args.repeats} calls after "
        f"{args.warmup} warm-up\n\n" + markdown_table(rows, floatfmt={"ms/iter": ".2f"})
    )
    if left_out:
        text += f"\n\nleft out: {', '.join(left_out)}"
    print(text)
    publish("loss_speed", text, args.quick)


if __name__ == "__main__":
    main()
