"""MicroSegNet (TransUNet + deep supervision, arXiv:2305.19956) training-step throughput and peak memory.

For each variant (``base`` = R50+ViT-B/16, ``tiny`` = the CPU size), builds ``microsegnet`` with
random weights, runs a few warm-up and timed training steps (forward in training mode → four
deep-supervision outputs → BCE at each scale → backward) on random 224² one-channel images, and
prints a markdown table: parameters (M), images/s, peak memory.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during the timed steps; on the CPU each
variant runs in its own subprocess and the table shows the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) minus the RSS after building the model, i.e. what
the training steps add (activations, gradients, workspace), plus the absolute peak.

    python benchmarks/microsegnet_throughput.py                      # base + tiny, batch 4, 224²
    python benchmarks/microsegnet_throughput.py --variants tiny --batch-size 8 --steps 10
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from bench_results import publish

import medseg.models as models


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(variant: str, batch_size: int, size: int, warmup: int, steps: int, device: str) -> dict:
    """Time ``steps`` training steps of one variant; returns params, images/s and memory."""
    torch.manual_seed(0)
    model = models.build(
        "microsegnet", in_channels=1, out_channels=1, img_size=size, variant=variant, pretrained=False
    ).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(batch_size, 1, size, size, device=device)
    target = (torch.rand(batch_size, 1, size, size, device=device) > 0.5).float()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        outputs = model(x)
        loss = sum(
            F.binary_cross_entropy_with_logits(o, F.interpolate(target, size=o.shape[2:], mode="nearest"))
            for o in outputs
        )
        loss.backward()

    rss_built = _rss_mib()
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "variant": variant,
        "params_m": params / 1e6,
        "images_per_s": batch_size * steps / seconds,
        "seconds_per_step": seconds / steps,
    }
    if device == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mib"] = _peak_rss_mib() - rss_built
        result["peak_rss_mib"] = _peak_rss_mib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["base", "tiny"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny variant, batch 1, 64², 1 step")
    args = parser.parse_args()
    if args.quick and not args.worker:
        args.variants, args.batch_size, args.size, args.warmup, args.steps = ["tiny"], 1, 64, 0, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.worker:  # one variant in a fresh process, so ru_maxrss belongs to it alone
        print(
            json.dumps(
                measure(args.variants[0], args.batch_size, args.size, args.warmup, args.steps, args.device)
            )
        )
        return

    rows = []
    for variant in args.variants:
        if args.device == "cuda":
            rows.append(measure(variant, args.batch_size, args.size, args.warmup, args.steps, args.device))
            continue
        cmd = [sys.executable, __file__, "--worker", "--variants", variant]
        for flag in ("batch_size", "size", "warmup", "steps", "device", "threads"):
            cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    where = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    memory = "peak CUDA alloc (MiB)" if args.device == "cuda" else "peak RSS added by training (MiB)"
    lines = [
        f"MicroSegNet training step (forward + 4-scale BCE + backward), batch {args.batch_size}, "
        f"{args.size}², {where}, {args.warmup} warm-up + {args.steps} timed steps",
        "",
        f"| variant | params (M) | images/s | s/step | {memory} |"
        + (" peak RSS (MiB) |" if args.device != "cuda" else ""),
        "|---|---|---|---|---|" + ("---|" if args.device != "cuda" else ""),
    ]
    for r in rows:
        line = (
            f"| {r['variant']} | {r['params_m']:.1f} | {r['images_per_s']:.2f} | "
            f"{r['seconds_per_step']:.2f} | {r['peak_mib']:.0f} |"
        )
        if "peak_rss_mib" in r:
            line += f" {r['peak_rss_mib']:.0f} |"
        lines.append(line)
    text = "\n".join(lines)
    print("\n" + text)
    publish("microsegnet_throughput", text, args.quick)


if __name__ == "__main__":
    main()
