"""Volumetric models: parameters, training-step time, inference time and peak memory per patch.

Usage::

    .venv/bin/python benchmarks/volumetric_speed.py              # infer 64×128×128, train 32×64×64
    .venv/bin/python benchmarks/volumetric_speed.py --infer-patch 32 64 64 --patch 16 64 64
    .venv/bin/python benchmarks/volumetric_speed.py --models vnet monai_vnet --repeats 3
    .venv/bin/python benchmarks/volumetric_speed.py --quick      # smoke: V-Net, tiny patches, no memory

Models (random weights, 1 input channel, 1 output channel; Res-UNet-R/H add the boundary channel):

* ``vnet``: medseg's V-Net (``medseg.models.vnet``: MONAI's VNet with PReLU, no dropout);
* ``monai_vnet``: the reference, ``monai.networks.nets.VNet(spatial_dims=3, in_channels=1,
  out_channels=1)`` with MONAI's defaults (ELU, dropout 0.5);
* ``resunet_r``, ``resunet_h``, ``pdvnet``: medseg's defaults;
* ``monai_unet``: ``medseg.models.monai_unet`` in 3D (features 32–512, two residual units).

Timed (median over ``--repeats`` after ``--warmup`` untimed runs, batch 1, random input; all
models are built in one process and take turns within each repeat, so a load that drifts on a
shared machine hits them alike):

* train step: forward in training mode, BCE-with-logits against a random binary target,
  backward, ``torch.optim.AdamW`` step, at ``--patch``;
* inference: one forward in eval mode under ``torch.no_grad``, at ``--infer-patch``.

Peak memory (measured apart from the timing, one call after the warm-up): on CUDA
``torch.cuda.max_memory_allocated``. On the CPU (tracemalloc does not see torch's allocations)
every model and phase runs in a fresh subprocess, and the table shows its peak resident set size
(``VmHWM`` in ``/proc/self/status``, which is ``ru_maxrss`` without the value a child inherits from
its parent) minus the resident set size after building the model (and optimizer): what the phase
adds (activations, gradients, optimizer state, workspace). CPU timings on a shared machine are
noisy; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from bench_results import publish
from torch import nn

import medseg.models as models
from medseg.models import monai_unet, pdvnet, resunet, vnet  # noqa: F401  (registers the models)
from medseg.report.tables import markdown_table

MODELS = ("vnet", "monai_vnet", "resunet_r", "resunet_h", "pdvnet", "monai_unet")


def build(name: str) -> nn.Module:
    """One of :data:`MODELS`, 3D, one input and one output channel."""
    if name == "monai_vnet":
        from monai.networks.nets import VNet

        return VNet(spatial_dims=3, in_channels=1, out_channels=1)
    return models.build(name, in_channels=1, out_channels=1, spatial_dims=3)


def _rss_mib() -> float:
    """Current resident set size in MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: ``VmHWM`` from ``/proc/self/status``.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` would be the same number, except that a child process
    inherits its parent's value across fork and exec, so a worker started by a parent that holds
    every model would report the parent's peak.
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_runner(name: str, phase: str, patch: list[int], device: torch.device) -> tuple[nn.Module, Callable]:
    """The model and a closure that runs one ``train`` step or one ``infer`` forward on a random patch."""
    torch.manual_seed(0)
    model = build(name).to(device)
    x = torch.randn(1, 1, *patch, device=device)
    if phase == "infer":
        model.eval()

        def infer() -> None:
            with torch.no_grad():
                model(x)

        return model, infer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    channels = getattr(model, "out_channels", 1)  # 2 for Res-UNet-R/H (mask + boundary)
    target = (torch.rand(1, channels, *patch, device=device) > 0.5).float()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), target).backward()
        optimizer.step()

    return model, train_step


def time_round_robin(
    names: list[str], phase: str, patch: list[int], warmup: int, repeats: int, device: torch.device
) -> dict[str, dict]:
    """Median seconds per call of every model, the models taking turns within each repeat.

    Taking turns keeps the ratios between models fair when the load on a shared machine drifts
    during the run.
    """
    runners = {name: make_runner(name, phase, patch, device) for name in names}
    for _, run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, (_, run) in runners.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "seconds": float(np.median(times[name])),
            "params_m": sum(p.numel() for p in runners[name][0].parameters()) / 1e6,
        }
        for name in names
    }


def peak_memory_mib(name: str, phase: str, patch: list[int], warmup: int, device: torch.device) -> float:
    """What the calls add: CUDA max allocated in the call after ``warmup``, or peak RSS − RSS once built.

    On the CPU, call it in a fresh process (the peak RSS is the process's high-water mark).
    """
    _, run = make_runner(name, phase, patch, device)
    rss_built = _rss_mib()
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _peak_rss_mib() - rss_built


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--patch", nargs=3, type=int, default=[32, 64, 64], help="training patch D H W")
    parser.add_argument(
        "--infer-patch", nargs=3, type=int, default=[64, 128, 128], help="inference volume D H W"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--quick", action="store_true", help="V-Net only, 16×32×32, no warm-up, 1 repeat, no memory runs"
    )
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and not args.worker:  # a memory run starts a process per model and phase
        args.patch, args.infer_patch, args.warmup, args.repeats = [16, 32, 32], [16, 32, 32], 0, 1
        args.models, args.no_memory = ["vnet"], True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    patches = {"train": args.patch, "infer": args.infer_patch}

    if args.worker:  # one model and phase in a fresh process, so ru_maxrss belongs to it alone
        name, phase = args.worker
        print(json.dumps({"peak_mib": peak_memory_mib(name, phase, patches[phase], args.warmup, device)}))
        return

    results: dict[str, dict[str, dict]] = {name: {} for name in args.models}
    for phase in ("train", "infer"):
        timed = time_round_robin(args.models, phase, patches[phase], args.warmup, args.repeats, device)
        for name in args.models:
            results[name][phase] = timed[name]
            print(f"{name} {phase}: {timed[name]['seconds']:.2f} s", file=sys.stderr)
    for name in [] if args.no_memory else args.models:
        for phase in ("train", "infer"):
            if device.type == "cuda":
                peak = peak_memory_mib(name, phase, patches[phase], args.warmup, device)
                torch.cuda.empty_cache()
            else:
                cmd = [sys.executable, __file__, "--worker", name, phase, "--device", args.device]
                cmd += ["--patch", *map(str, args.patch), "--infer-patch", *map(str, args.infer_patch)]
                cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
            results[name][phase]["peak_mib"] = peak
            print(f"{name} {phase}: {peak:.0f} MiB", file=sys.stderr)

    reference = results.get("monai_vnet")
    memory = "CUDA max allocated" if device.type == "cuda" else "peak RSS added"
    rows = []
    for name, r in results.items():
        row: dict[str, object] = {
            "model": name,
            "params (M)": r["infer"]["params_m"],
            "train step (s)": r["train"]["seconds"],
            "inference (s/volume)": r["infer"]["seconds"],
        }
        if not args.no_memory:
            row[f"train {memory} (MiB)"] = f"{r['train']['peak_mib']:.0f}"
            row[f"inference {memory} (MiB)"] = f"{r['infer']['peak_mib']:.0f}"
        if reference:
            row["train × MONAI VNet"] = f"{r['train']['seconds'] / reference['train']['seconds']:.2f}"
            row["inference × MONAI VNet"] = f"{r['infer']['seconds'] / reference['infer']['seconds']:.2f}"
        rows.append(row)

    where = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    text = (
        f"Volumetric models, batch 1, {where}; train step (forward + BCE + backward + AdamW) at "
        f"{'×'.join(map(str, args.patch))}, inference (eval, no_grad) at "
        f"{'×'.join(map(str, args.infer_patch))}; median of {args.repeats} round-robin repeats after "
        f"{args.warmup} warm-up\n\n" + markdown_table(rows, floatfmt=".2f")
    )
    if reference and "vnet" in results:
        ratio = results["vnet"]["infer"]["seconds"] / reference["infer"]["seconds"]
        text += f"\n\nvnet / MONAI VNet inference time: {ratio:.2f}×"
    print("\n" + text)
    publish("volumetric_speed", text, args.quick)


if __name__ == "__main__":
    main()
