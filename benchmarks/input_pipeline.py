"""Input pipeline vs model: does the data path keep the device busy?

Usage::

    .venv/bin/python benchmarks/input_pipeline.py --quick    # tiny sizes, a few steps (smoke test)
    .venv/bin/python benchmarks/input_pipeline.py            # 2D 256², 3D 128³, CPU (+ CUDA if present)
    .venv/bin/python benchmarks/input_pipeline.py --dims 2 --steps 5 --warmup 1   # 2D only (a CPU)
    .venv/bin/python benchmarks/input_pipeline.py --device cuda --workers 8

For each case (2D 256² with ``resenc_unet`` and ``unet``; 3D 128³ with ``resenc_unet`` at a small
batch) and device, three training loops run the same model, loss (deep-supervised Dice + BCE),
SGD step and (on CUDA) float16 AMP:

* **model only**: one random batch already on the device, reused every step (the ceiling);
* **(a) dataset + DataLoader**: today's path: :class:`~medseg.data.dataset.SegmentationDataset`
  (2D) or :class:`~medseg.data.volumes.VolumeDataset` (3D) with MONAI augmentation per sample in a
  ``DataLoader`` (``--workers``), the batch copied to the device;
* **(b) cache + device augment**: :class:`~medseg.data.cache.CachedDataset` read by whole batches
  chosen by :class:`~medseg.data.sampling.ForegroundBatchSampler`, pinned and copied
  ``non_blocking``, augmented on the device by :class:`~medseg.data.device_augment.DeviceAugment`.

It prints img/s, the ratio loop / model-only, and the loader share of the step time (the time
spent waiting for the next batch, including its augmentation in (b), over the whole step). The data
are synthetic (smooth noise images with blob masks), generated once before timing; 3D volumes have
the patch size, so neither 3D path crops. The three loops take turns step by step (one model), so a
busy machine slows them alike; timings are medians over the timed steps after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from bench_results import publish
from torch.utils.data import DataLoader

import medseg.losses as losses
import medseg.models as models
from medseg.config import AugmentConfig, load_config
from medseg.data.cache import CachedDataset
from medseg.data.dataset import SegmentationDataset
from medseg.data.device_augment import DeviceAugment
from medseg.data.sample import Sample
from medseg.data.sampling import ForegroundBatchSampler
from medseg.data.transforms import augment_transform
from medseg.data.volumes import VolumeDataset
from medseg.engine.batches import TrainBatches
from medseg.losses.deep_supervision import DeepSupervisionLoss
from medseg.report.tables import markdown_table


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    options: dict[str, Any]
    shape: tuple[int, ...]
    batch: int
    n_samples: int


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("2D 64²", "resenc_unet", {"features": [8, 16, 32, 64]}, (64, 64), 8, 32),
            Case("2D 64²", "unet", {"features": [8, 16, 32, 64]}, (64, 64), 8, 32),
            Case("3D 32³", "resenc_unet", {"spatial_dims": 3, "features": [8, 16, 32]}, (32, 32, 32), 2, 4),
        ]
    return [
        Case("2D 256²", "resenc_unet", {}, (256, 256), 16, 128),
        Case("2D 256²", "unet", {"features": [16, 32, 64, 128, 256]}, (256, 256), 16, 128),
        Case("3D 128³", "resenc_unet", {"spatial_dims": 3}, (128, 128, 128), 2, 4),
    ]


def synthetic_samples(shape: tuple[int, ...], n: int, seed: int = 0) -> list[Sample]:
    """Smooth noise images; the mask is a blob where the smoothed noise is high (≈ 30 % of images empty)."""
    rng = np.random.default_rng(seed)
    coarse = tuple(max(s // 8, 2) for s in shape)
    out = []
    for i in range(n):
        field = torch.from_numpy(rng.normal(size=(1, 1, *coarse)).astype(np.float32))
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        smooth = torch.nn.functional.interpolate(field, size=shape, mode=mode, align_corners=False)[
            0, 0
        ].numpy()
        threshold = np.inf if i % 3 == 0 else 1.0
        mask = (smooth > threshold).astype(np.uint8)
        image = (smooth + 0.3 * rng.normal(size=shape)).astype(np.float32)[None]
        spacing = (1.0,) * len(shape)
        out.append(Sample(image, {"expert": mask}, "expert", spacing, f"case{i}", None))
    return out


def make_step(case: Case, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step of the case's model on (image, target), AMP float16 on CUDA."""
    dims = len(case.shape)
    options = {"in_channels": 1, "out_channels": 1, "spatial_dims": dims, **case.options}
    if case.model == "unet":
        options["deep_supervision"] = True
    model = models.build(case.model, **options).to(device).train()
    loss_fn = DeepSupervisionLoss(losses.build("dice_bce"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def step(image: torch.Tensor, target: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            outputs = model(image)
        loss = loss_fn([o.float() for o in outputs] if isinstance(outputs, list) else outputs.float(), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loops(
    loops: dict[str, Iterator[tuple[torch.Tensor, torch.Tensor]]],
    step: Callable[[torch.Tensor, torch.Tensor], None],
    device: torch.device,
    warmup: int,
    steps: int,
) -> dict[str, tuple[float, float]]:
    """Per loop: median step seconds and median share of the step spent getting the batch.

    The loops take turns, one step each, so a busy machine slows them alike and the ratios stay fair.
    """
    totals: dict[str, list[float]] = {name: [] for name in loops}
    shares: dict[str, list[float]] = {name: [] for name in loops}
    for i in range(warmup + steps):
        for name, batches in loops.items():
            _sync(device)
            start = time.perf_counter()
            image, target = next(batches)
            _sync(device)
            got = time.perf_counter()
            step(image, target)
            _sync(device)
            end = time.perf_counter()
            if i >= warmup:
                totals[name].append(end - start)
                shares[name].append((got - start) / (end - start))
    return {name: (statistics.median(totals[name]), statistics.median(shares[name])) for name in loops}


def model_only(case: Case, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    image = torch.randn(case.batch, 1, *case.shape, device=device)
    target = (torch.rand(case.batch, 1, *case.shape, device=device) > 0.7).float()
    while True:
        yield image, target


def dataloader_path(
    case: Case, samples: list[Sample], device: torch.device, workers: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Today's path: per-sample MONAI augmentation in a DataLoader, then a copy to the device."""
    if len(case.shape) == 2:
        dataset = SegmentationDataset(samples, case.shape, in_channels=1)
        dataset.augment = augment_transform(dataset.annotators, 2, AugmentConfig())
    else:
        dataset = VolumeDataset(samples, 1, patch_size=case.shape, augment=AugmentConfig())
    epoch = 0
    while True:
        loader = DataLoader(
            dataset,
            batch_size=case.batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(epoch),
        )
        for batch in loader:
            yield (
                batch["image"].to(device, non_blocking=True),
                batch["target"].to(device, non_blocking=True),
            )
        epoch += 1


def cached_path(
    case: Case, samples: list[Sample], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Cache + foreground-oversampled whole-batch reads + augmentation on the device.

    2D is the training loop's own path (``train.augment_on: device``,
    :class:`~medseg.engine.batches.TrainBatches`: the cache lives on the device when it fits);
    3D (which the loop does not cache: its patches are random crops) reads host batches.
    """
    dims = len(case.shape)
    if dims == 2:
        cfg = load_config(None, ["train.augment_on=device", "data.foreground_share=0.3333333"])
        dataset = SegmentationDataset(samples, case.shape, in_channels=1)
        batches = TrainBatches(cfg, dataset, case.batch, max(1, len(samples) // case.batch), device)
        epoch = 0
        while True:
            for batch in batches.epoch(epoch):
                yield batch["image"], batch["target"]
            epoch += 1
    cached = CachedDataset(VolumeDataset(samples, 1, patch_size=None), storage="memory")
    flags = [bool(s.target_mask.any()) for s in samples]
    sampler = ForegroundBatchSampler(flags, case.batch, seed=0)
    augment = DeviceAugment(dims)
    generator = torch.Generator().manual_seed(0)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for indices in sampler:
            batch = cached.batch(indices, device=device)
            image, target = augment(batch["image"], batch["target"], generator)
            yield image, target
        epoch += 1


def run(case: Case, device: torch.device, workers: int, warmup: int, steps: int) -> list[dict[str, Any]]:
    samples = synthetic_samples(case.shape, case.n_samples)
    loops = {
        "model only": model_only(case, device),
        f"(a) dataset + DataLoader ({workers} workers)": dataloader_path(case, samples, device, workers),
        "(b) cache + device augment": cached_path(case, samples, device),
    }
    results = timed_loops(loops, make_step(case, device), device, warmup, steps)
    base = case.batch / results["model only"][0]
    return [
        {
            "device": device.type,
            "case": case.name,
            "model": case.model,
            "batch": case.batch,
            "path": name,
            "img_s": case.batch / seconds,
            "ratio": case.batch / seconds / base,
            "loader_share": share,
        }
        for name, (seconds, share) in results.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (smoke test)")
    parser.add_argument(
        "--device", action="append", help="cpu / cuda (repeatable; default cpu, + cuda if present)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers of path (a) (default 0, as train)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per loop (default 5 quick, 20 full)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default 2 quick, 5 full)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--dims",
        type=int,
        choices=(2, 3),
        action="append",
        help="only the 2D or 3D cases (repeatable; default both): 3D 128³ takes minutes a step on a CPU",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    steps = args.steps or (5 if args.quick else 20)
    warmup = args.warmup or (2 if args.quick else 5)
    rows = []
    for name in devices:
        device = torch.device(name)
        for case in cases(args.quick):
            if args.dims and len(case.shape) not in args.dims:
                continue
            torch.manual_seed(0)
            rows.extend(run(case, device, args.workers, warmup, steps))
    table = markdown_table(
        rows,
        {
            "device": "device",
            "case": "case",
            "model": "model",
            "batch": "batch",
            "path": "path",
            "img_s": "img/s",
            "ratio": "loop / model-only",
            "loader_share": "loader share of step",
        },
        floatfmt={"img_s": ".1f", "ratio": ".2f", "loader_share": ".1%"},
    )
    text = (
        f"{table}\n\n{steps} timed steps after {warmup} warm-up, medians; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(text)
    publish("input_pipeline", text, args.quick)


if __name__ == "__main__":
    main()
