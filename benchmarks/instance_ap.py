"""Instance AP on the Lucchi test pair: medseg's ``instance_ap`` next to the MitoEM evaluator.

Usage::

    .venv/bin/python benchmarks/instance_ap.py                 # $MEDSEG_SHARED_DATA/em_lucchi_instances
    .venv/bin/python benchmarks/instance_ap.py --data DIR      # a folder with the same two files
    .venv/bin/python benchmarks/instance_ap.py --repeats 3     # median time of 3 calls

Inputs: ``lucchi_gt_test.h5`` (35 true mitochondria) and ``lucchi_pred_UNet_label_test.h5``
(40 predicted instances of a U-Net), 165×768×1024 voxels, dataset ``main``; the demo pair of the
MitoEM evaluator (``mAP_3Dvolume``), which ranks the predictions by size when no scores are given.

Reference: the AP-50, AP-75 and mAP (0.50:0.95) that ``mAP_3Dvolume`` prints for this pair with
``demo.py`` (size ranking), quoted in ``REFERENCE``. Timed: one ``instance_ap`` call on the volumes
already in memory (joint label histogram, greedy matching at 10 IoU thresholds, 101-point AP), and
the reading of the two HDF5 files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_results import publish

from medseg.metrics.instances import instance_ap, read_instance_volume
from medseg.report.tables import markdown_table
from medseg.testing import require_data, shared_data_path

DEFAULT_DATA = shared_data_path("em_lucchi_instances")
#: mAP_3Dvolume on the Lucchi demo pair, size ranking
REFERENCE = {"AP-50": 0.842313, "AP-75": 0.769129, "mAP 0.50:0.95": 0.628236}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke: the first 8 sections")
    args = parser.parse_args()
    require_data(args.data, "the Lucchi instance pair (or pass --data)")

    start = time.perf_counter()
    pred = read_instance_volume(args.data / "lucchi_pred_UNet_label_test.h5")
    gt = read_instance_volume(args.data / "lucchi_gt_test.h5")
    if args.quick:  # a slab: the reference values hold for the whole volume only
        pred, gt = pred[:8], gt[:8]
    t_read = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = instance_ap(pred, gt)
        times.append(time.perf_counter() - start)

    ours = {"AP-50": result.ap50, "AP-75": result.ap75, "mAP 0.50:0.95": result.map}
    title = (
        f"Lucchi test pair {'×'.join(map(str, gt.shape))} voxels, {result.n_gt} true / {result.n_pred} "
        f"predicted instances, ranked by {result.ranking}; TP {result.tp50} at IoU 0.5, "
        f"{result.tp75} at 0.75"
    )
    rows = [
        {
            "metric": name,
            "medseg": f"{ours[name]:.9f}",
            "MitoEM mAP_3Dvolume": REFERENCE[name],
            "equal to 6 digits": "n/a (--quick slab)"
            if args.quick
            else ("yes" if round(ours[name], 6) == REFERENCE[name] else "NO"),
        }
        for name in REFERENCE
    ]
    text = (
        f"{title}\n\n{markdown_table(rows, floatfmt='.6f')}\n\n"
        f"instance_ap: {np.median(times):.2f} s (median of {args.repeats}); "
        f"reading both HDF5 files: {t_read:.2f} s"
    )
    print(text)
    publish("instance_ap", text, args.quick)


if __name__ == "__main__":
    main()
