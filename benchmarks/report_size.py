"""Size and build time of the HTML report (``medseg report``) for 100 and 1000 synthetic 2D cases.

Usage::

    .venv/bin/python benchmarks/report_size.py              # 100 and 1000 cases, single and compare
    .venv/bin/python benchmarks/report_size.py --cases 100  # one size only
    .venv/bin/python benchmarks/report_size.py --size 512   # larger images

Inputs, written like ``medseg evaluate`` does (``metrics.csv``, ``summary.json``,
``case_slices.npz``) plus ``config.yaml`` and ``history.csv``: per case a ``size``×``size`` image
(smoothed Gaussian noise with a bright ellipse, 0.8 × 0.6 mm pixels), the ellipse as ground truth
and a shifted, resized ellipse as prediction, scored by ``compute_segmentation_metrics``. A second
run (other shifts) is the ``--compare`` folder. The default overlays apply: worst 20, median 5,
best 5 (+ 10 side by side in compare mode). Budget: 100 2D cases ≤ 5 MB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from bench_results import publish
from scipy.ndimage import gaussian_filter

from medseg.config import Config
from medseg.metrics import compute_segmentation_metrics
from medseg.report.html import build_report
from medseg.report.slices import case_slice, write_case_slices
from medseg.report.tables import markdown_table

SPACING = (0.8, 0.6)


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.uint8)


def write_run(out: Path, n_cases: int, size: int, seed: int) -> Path:
    """A synthetic evaluation folder of ``n_cases`` 2D cases (see the module docstring)."""
    rng = np.random.default_rng(seed)
    shapes = np.random.default_rng(1234)  # the same ground truth in every run
    out.mkdir(parents=True, exist_ok=True)
    rows, slices = [], {}
    for i in range(n_cases):
        cy, cx = shapes.uniform(0.3, 0.7, size=2) * size
        ry, rx = shapes.uniform(0.06, 0.15, size=2) * size
        gt = _ellipse(size, cy, cx, ry, rx)
        pred = _ellipse(size, cy + rng.normal(0, 4), cx + rng.normal(0, 4), ry * rng.uniform(0.8, 1.2), rx)
        noise = shapes.normal(size=(2, size, size))
        texture = gaussian_filter(noise[0], 2.0) * 4 + noise[1]
        image = texture + 3.0 * gaussian_filter(gt.astype(float), 1.5)
        name = f"case_{i:04d}"
        metrics = compute_segmentation_metrics(pred, gt, SPACING)
        rows.append({"level": "image", "case": name, "patient": name, "slice_index": -1, **metrics})
        slices[name] = case_slice(image[None], gt, pred, SPACING)
    table = pd.DataFrame(rows)
    patients = table.assign(level="patient")
    pd.concat([patients, table]).to_csv(out / "metrics.csv", index=False, float_format="%.6f")
    (out / "summary.json").write_text(json.dumps({"hd95_mode": "pooled", "nsd_tolerance_mm": 1.0}))
    write_case_slices(slices, out / "case_slices.npz")
    config = Config().to_dict()
    config["train"]["seed"] = seed
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    epochs = np.arange(1, 21)
    pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 1 / epochs,
            "val_loss": 1.1 / epochs,
            "val_dice": 1 - 1 / (1 + epochs),
            "lr": 1e-3 * 0.9**epochs,
            "epoch_time_s": 10 + rng.uniform(0, 1, epochs.size),
            "elapsed_s": np.cumsum(10 + rng.uniform(0, 1, epochs.size)),
        }
    ).to_csv(out / "history.csv", index=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--quick", action="store_true", help="smoke test: 5 cases of 64² px")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.size = [5], 64
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.cases:
            a = write_run(Path(tmp) / f"a{n}", n, args.size, seed=0)
            b = write_run(Path(tmp) / f"b{n}", n, args.size, seed=1)
            for mode, dirs in (("single", [a]), ("compare", [a, b])):
                start = time.perf_counter()
                out = build_report(dirs, Path(tmp) / f"{mode}{n}.html")
                seconds = time.perf_counter() - start
                html = out.read_text()
                rows.append(
                    {
                        "cases": n,
                        "mode": mode,
                        "size_MB": out.stat().st_size / 1e6,
                        "build_s": seconds,
                        "images": html.count("<img "),
                        "budget": "ok" if n > 100 or out.stat().st_size <= 5e6 else "OVER 5 MB",
                    }
                )
    table = markdown_table(rows, floatfmt={"size_MB": ".2f", "build_s": ".1f"})
    text = f"HTML report, synthetic 2D cases of {args.size}×{args.size} px\n\n{table}"
    print(text)
    publish("report_size", text, args.quick)


if __name__ == "__main__":
    main()
