"""CPU speed and memory of box-prompted inference: litemedsam (TinyViT, 256) vs medsam (ViT-B, 1024).

Usage::

    .venv/bin/python benchmarks/medsam_speed.py              # 2D: 512×512, 3 runs; 3D: 32 slices, 1 run
    .venv/bin/python benchmarks/medsam_speed.py --quick      # LiteMedSAM only; 2D: 1 run; 3D: 2 slices
    .venv/bin/python benchmarks/medsam_speed.py --models litemedsam --slices 64 --threads 1

Random weights (the speed does not depend on them). Each model runs in its own child process, so
the memory columns of one model are not masked by the other's peak.

Timed, after one warm-up image:

* 2D image: :func:`medseg.engine.promptable.segment_2d` on a 512×512 grey image with one box
  (preprocessing + image encoder + prompt encoder/mask decoder + resizing back + threshold);
  median of ``--repeats`` runs. ``encode`` and ``decode`` are the model calls alone.
* 3D case: :func:`medseg.engine.promptable.segment_3d` on a ``--slices``×512×512 volume with a box
  spanning every slice, ``stop_on_empty=False`` so every slice is encoded and decoded whatever the
  random weights predict (a real case stops where the object ends); one run.
* memory: ``peak RSS Δ`` = the process's ``ru_maxrss`` (high-water mark of resident memory,
  ``resource.getrusage``) after the timed runs minus its value right after the model was built,
  i.e. the working memory of inference on top of the weights; ``weights`` = parameter bytes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from bench_results import publish

from medseg.report.tables import markdown_table

IMAGE_SIDE = 512


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _image(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE] / IMAGE_SIDE
    disc = ((yy - 0.5) ** 2 + (xx - 0.45) ** 2 < 0.05).astype(np.float32)
    return (disc * 200 + rng.normal(0, 20, (IMAGE_SIDE, IMAGE_SIDE))).astype(np.float32)


def measure(name: str, repeats: int, slices: int, threads: int | None = None) -> dict[str, Any]:
    """Time one model in this process (called in a child process by :func:`main`)."""
    import medseg.models as models
    from medseg.engine.promptable import segment_2d, segment_3d

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.build(name).eval()
    rss_built = _maxrss_mib()
    params = sum(p.numel() for p in model.parameters())
    image = _image(rng)
    box = [120, 110, 360, 350]
    size = model.img_size

    segment_2d(model, image, [box])  # warm-up
    t_2d = _median_seconds(lambda: segment_2d(model, image, [box]), repeats)
    with torch.inference_mode():
        tensor = torch.rand(1, 3, size, size)
        embedding = model.encode(tensor)
        boxes = torch.tensor([[30.0, 30.0, size * 0.6, size * 0.6]])
        t_encode = _median_seconds(lambda: model.encode(tensor), repeats)
        t_decode = _median_seconds(lambda: model.decode(embedding, boxes), max(repeats, 5))

    volume = np.stack([_image(rng) for _ in range(slices)])
    start = time.perf_counter()
    segment_3d(model, volume, [box[0], box[1], 0, box[2], box[3], slices - 1], stop_on_empty=False)
    t_3d = time.perf_counter() - start
    return {
        "model": name,
        "threads": torch.get_num_threads(),
        "input (px)": size,
        "params (M)": params / 1e6,
        "weights (MiB)": params * 4 / 2**20,
        "2D image (s)": t_2d,
        "encode (s)": t_encode,
        "decode 1 box (ms)": t_decode * 1e3,
        f"3D case, {slices} slices (s)": t_3d,
        "per slice (s)": t_3d / slices,
        "peak RSS Δ (MiB)": _maxrss_mib() - rss_built,
    }


def _child(name: str, repeats: int, slices: int, threads: int | None, queue: mp.Queue) -> None:
    queue.put(measure(name, repeats, slices, threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["litemedsam", "medsam"])
    parser.add_argument("--repeats", type=int, default=3, help="timed 2D runs (median)")
    parser.add_argument("--slices", type=int, default=32, help="slices of the 3D case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="LiteMedSAM only, 1 timed 2D run, 2 slices")
    args = parser.parse_args()
    if args.quick:  # MedSAM's ViT-B at 1024² takes minutes per image on a small CPU
        args.models, args.repeats, args.slices = ["litemedsam"], 1, 2
    context = mp.get_context("spawn")
    rows = []
    for name in args.models:
        queue: mp.Queue = context.Queue()
        worker = context.Process(target=_child, args=(name, args.repeats, args.slices, args.threads, queue))
        worker.start()
        rows.append(queue.get())
        worker.join()
        if worker.exitcode:
            raise SystemExit(f"{name}: the benchmark process failed with exit code {worker.exitcode}")
    text = (
        f"CPU ({os.cpu_count()} cores), torch {torch.__version__}; 2D: {IMAGE_SIDE}×{IMAGE_SIDE} "
        f"image, one box, median of {args.repeats}; 3D: {args.slices}×{IMAGE_SIDE}×{IMAGE_SIDE}, one run; "
        "random weights\n\n" + markdown_table(rows, floatfmt=".2f")
    )
    print(text)
    publish("medsam_speed", text, args.quick)


if __name__ == "__main__":
    main()
