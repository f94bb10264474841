"""CPU latency of onnxruntime vs PyTorch for exported medseg models, with the export's parity numbers.

Usage::

    .venv/bin/python benchmarks/onnx_speed.py                      # unet 256², microsegnet tiny+base 224²
    .venv/bin/python benchmarks/onnx_speed.py --models unet microsegnet_tiny --repeats 20
    .venv/bin/python benchmarks/onnx_speed.py --threads 1          # only the 1-thread rows

Random weights (BatchNorm statistics perturbed so eval mode is not the identity); the latency does
not depend on them. Each model is saved as a medseg checkpoint and exported with
:func:`medseg.export.export_onnx` (``check=True``), whose parity report gives max/mean |Δlogit|
and the Dice between the two masks over every checked shape (batch 1 and 2, two sizes per dynamic
axis). Latency: one ``1×1×S×S`` image, median of ``--repeats`` runs after two warm-up runs, with
PyTorch (``torch.no_grad``, eval) and onnxruntime (CPU provider) both limited to the same number of
intra-op threads: 1 (fair, single core) and the default (PyTorch's ``get_num_threads()``,
onnxruntime's own default).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_results import publish

from medseg.config import load_config
from medseg.engine.checkpoint import save_checkpoint
from medseg.export import export_onnx
from medseg.export.runtime import open_session
from medseg.models import build_from_config
from medseg.report.tables import markdown_table

MODELS: dict[str, list[str]] = {
    "unet": [
        "data.image_size=[256, 256]",
        "model.name=unet",
        "model.options={features: [32, 64, 128, 256, 512]}",
    ],
    "microsegnet_tiny": [
        "data.image_size=[224, 224]",
        "model.name=microsegnet",
        "model.options={variant: tiny}",
    ],
    "microsegnet_base": [
        "data.image_size=[224, 224]",
        "model.name=microsegnet",
        "model.options={variant: base}",
    ],
}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _checkpoint(name: str, folder: Path) -> tuple[Path, torch.nn.Module, list[int]]:
    cfg = load_config(None, MODELS[name])
    torch.manual_seed(0)
    model = build_from_config(cfg)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, folder / f"{name}.pt")
    return path, model.eval(), [int(s) for s in cfg.data.image_size]


def bench_model(name: str, folder: Path, threads: list[int | None], repeats: int) -> list[dict[str, Any]]:
    """One row per thread setting: latencies and the export's parity summary."""
    default_threads = torch.get_num_threads()
    ckpt, model, size = _checkpoint(name, folder)
    start = time.perf_counter()
    result = export_onnx(ckpt, folder / f"{name}.onnx", check=True)
    export_s = time.perf_counter() - start
    assert result.parity is not None
    parity = result.parity.to_dict()
    image = torch.randn(1, 1, *size)
    feed = {"image": image.numpy()}
    rows = []
    for n in threads:
        torch.set_num_threads(n or default_threads)
        session = open_session(result.paths[0], threads=n)
        with torch.no_grad():
            torch_ms = _median_ms(lambda: model(image), repeats)
        ort_ms = _median_ms(lambda s=session: s.run(None, feed), repeats)
        rows.append(
            {
                "model": name,
                "input": "×".join(str(s) for s in image.shape),
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "threads": str(n) if n else f"default ({default_threads})",
                "torch_ms": torch_ms,
                "ort_ms": ort_ms,
                "speedup": torch_ms / ort_ms,
                "max_abs_diff": parity["max_abs_diff"],
                "mean_abs_diff": parity["mean_abs_diff"],
                "min_dice": parity["min_dice"],
                "min_agreement": parity["min_label_agreement"],
                "shapes": len(parity["cases"]),
                "export_s": export_s,
            }
        )
    torch.set_num_threads(default_threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="only this thread count (default: 1 and default)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke: small U-Net, 64², 1 thread")
    args = parser.parse_args()
    if args.quick:  # a small U-Net at 64²: the export, the parity check and both runtimes, in seconds
        args.models, args.repeats, args.threads = args.models[:1], 1, 1
        MODELS["unet"] = [
            "data.image_size=[64, 64]",
            "model.name=unet",
            "model.options={features: [8, 16, 32]}",
        ]
    threads: list[int | None] = [args.threads] if args.threads else [1, None]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += bench_model(name, Path(tmp), threads, args.repeats)
            print(f"done {name}", flush=True)
    table = markdown_table(
        rows,
        {
            "model": "model",
            "input": "input",
            "params_M": "params (M)",
            "threads": "threads",
            "torch_ms": "PyTorch ms",
            "ort_ms": "onnxruntime ms",
            "speedup": "speed-up",
            "max_abs_diff": "max abs Δlogit",
            "mean_abs_diff": "mean abs Δlogit",
            "min_dice": "Dice (min)",
            "min_agreement": "label agreement (min)",
            "shapes": "checked shapes",
            "export_s": "export + check s",
        },
        floatfmt={
            "params_M": ".2f",
            "torch_ms": ".1f",
            "ort_ms": ".1f",
            "speedup": ".2f",
            "max_abs_diff": ".2e",
            "mean_abs_diff": ".2e",
            "min_dice": ".4f",
            "min_agreement": ".6f",
            "export_s": ".0f",
        },
    )
    import onnxruntime

    versions = f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    text = f"{table}\n\n{versions}"
    print(text)
    publish("onnx_speed", text, args.quick)


if __name__ == "__main__":
    main()
