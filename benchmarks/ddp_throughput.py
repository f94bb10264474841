"""DDP training throughput: images/s of ``medseg.engine.train.train`` on 1 and N processes.

Usage::

    .venv/bin/python benchmarks/ddp_throughput.py --nproc 2            # phantom, 2D U-Net
    .venv/bin/python benchmarks/ddp_throughput.py --nproc 2 --quick    # smoke test (small images)
    .venv/bin/python benchmarks/ddp_throughput.py --nproc 4 --set train.batch_size=32

Each world size runs the real training loop (``torch.multiprocessing`` spawns the ranks with
torchrun's environment variables; gloo on the CPU, nccl on CUDA, one GPU per rank) for 2 epochs
on the phantom. The optimiser steps of epoch 2 are timed through ``train``'s ``on_step`` hook on
rank 0 (epoch 1 warms up; validation falls between epochs and is not timed): images/s = global
batch / the median time between consecutive steps (robust to a busy machine). On the CPU each rank gets
``cores // N`` threads (``--threads`` fixes it), so N processes share the same cores as one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from bench_results import publish

from medseg.report.tables import markdown_table

QUICK = [
    "data.options={n_patients: 10, seed: 0, shape: [8, 64, 64]}",
    "data.image_size=[64, 64]",
    "model.options={features: [8, 16, 32]}",
    "train.batch_size=8",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world: int, port: int, overrides: list[str], threads: int, out: str) -> None:
    from rich.console import Console

    from medseg.config import load_config
    from medseg.engine.train import train

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(threads)
    cfg = load_config(None, [*overrides, "train.epochs=2", "train.progress=false", "train.tensorboard=false"])
    cfg.output_dir = str(Path(out) / f"world{world}")
    stamps: list[float] = []

    def on_step(epoch: int, step: int) -> None:
        if epoch == 1:
            stamps.append(time.perf_counter())

    train(cfg, console=Console(quiet=True), on_step=on_step)
    if rank == 0:
        gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
        result = {"steps": len(gaps), "seconds": gaps[len(gaps) // 2], "batch": cfg.train.batch_size}
        (Path(out) / f"world{world}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed run")
    parser.add_argument("--quick", action="store_true", help="64×64 phantom slices, a tiny U-Net")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per rank (default cores // N)")
    parser.add_argument(
        "--set", action="append", default=[], help="config override, e.g. train.batch_size=32"
    )
    args = parser.parse_args()
    overrides = [*(QUICK if args.quick else []), *args.set]
    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for world in sorted({1, args.nproc}):
            threads = args.threads or max(1, cores // world)
            mp.spawn(_worker, args=(world, _free_port(), overrides, threads, out), nprocs=world, join=True)
            timing = json.loads((Path(out) / f"world{world}.json").read_text())
            rows.append(
                {
                    "processes": world,
                    "backend": ("nccl" if cuda else "gloo") if world > 1 else "-",
                    "threads/rank": "-" if cuda else threads,
                    "global batch": timing["batch"],
                    "timed steps": timing["steps"],
                    "s/step (median)": timing["seconds"],
                    "images/s": timing["batch"] / timing["seconds"],
                }
            )
    base = rows[0]["images/s"]
    for row in rows:
        row["speed-up"] = row["images/s"] / base
    device = torch.cuda.get_device_name(0) if cuda else f"CPU, {cores} cores"
    setup = "quick" if args.quick else "default"
    table = markdown_table(rows, floatfmt={"s/step (median)": ".3f", "images/s": ".1f", "speed-up": ".2f"})
    text = f"DDP throughput on {device} (epoch 2 optimiser steps; {setup} setup)\n\n{table}"
    print(text)
    publish("ddp_throughput", text, args.quick)


if __name__ == "__main__":
    main()
