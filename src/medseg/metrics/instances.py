"""COCO-style average precision (AP) of 2D/3D instance label volumes, as the MitoEM evaluator computes it.

Inputs are label arrays of the same shape (``H×W`` or ``D×H×W``): 0 is background and every other
value is one instance. Each voxel belongs to at most one instance, as in a label volume.

Algorithm (COCO ``COCOeval.evaluate`` + ``accumulate`` for one image and one category)
-------------------------------------------------------------------------------------
1. **IoU** of every (prediction, ground truth) pair that overlaps, from the joint label histogram
   of the voxels where both are foreground: ``IoU = |P∩G| / (|P| + |G| − |P∩G|)``. Pairs that do not
   overlap have IoU 0 and are never matched. No per-instance masks are built, so the cost is a few
   passes over the volume whatever the number of instances (the volume is processed in slabs along
   the first axis to bound the temporaries).
2. **Ranking**: by ``scores`` (descending) or, when ``scores`` is None, by size in voxels
   (descending), the MitoEM default (``demo.py``: the size is the score). Ties go to the lower id
   first, i.e. a stable sort of the predictions in ascending id order, as COCO's
   ``argsort(..., kind="mergesort")``. MitoEM sorts with NumPy's default (unstable) quicksort, so its
   tie order is unspecified; the Lucchi pair has no tied sizes.
3. **Greedy matching** at each IoU threshold ``t``: predictions in rank order each take the
   unmatched ground-truth instance of highest IoU with ``IoU ≥ t`` (ties: lower GT id); each GT is
   matched at most once. A matched prediction is a true positive, the others false positives.
   For ``t > 0.5`` this is the same as MitoEM's "best IoU of each prediction ≥ t", because two
   disjoint predictions cannot both overlap one GT with IoU above 0.5; below 0.5 MitoEM can count
   one GT twice and this implementation does not.
4. **AP**: precision ``TP/(TP+FP)`` and recall ``TP/n_gt`` along the ranking; precision is made
   monotone (running maximum from the end) and read at the 101 recall points ``0, 0.01, …, 1``
   (the first rank whose recall reaches each point; 0 past the last recall reached); AP is their
   mean. ``map`` is the mean AP over the IoU thresholds (default 0.50:0.05:0.95).

IoU thresholds are rounded to 10 decimals (``np.arange(0.5, 0.96, 0.05)`` holds 0.6000000000000001,
which would turn an IoU of exactly 3/5 into a miss), and the recall points are ``k / 100``, so both
comparisons are exact for IoUs and recalls that equal a decimal threshold.

Empty volumes (documented policy, never NaN, always flagged)
------------------------------------------------------------
* no GT and no prediction: every AP is 1 (nothing to find, nothing found wrongly);
* no GT, some predictions: every AP is 0 (all predictions are false positives);
* GT, no prediction: every AP is 0 (recall 0).
COCO leaves AP undefined (-1) when there is no GT; ``empty_gt``/``empty_pred`` in the result say
which case applied.

Errors
------
Shape mismatch, NaN/inf, negative or non-integer labels, missing or non-finite scores raise
:class:`~medseg.errors.DataError` (a ``ValueError``) that names the problem. The MitoEM evaluator
hides an array-to-scalar error under NumPy 2 in a bare ``except`` and reports AP ≈ 0.01; nothing is
caught here.

Reference: Wei et al., "MitoEM Dataset: Large-scale 3D Mitochondria Instance Segmentation from EM
Images", MICCAI 2020 (evaluator ``mAP_3Dvolume``); Lin et al., "Microsoft COCO", ECCV 2014.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medseg.data.io import IMAGE_2D_EXTS, read_image
from medseg.errors import DataError
from medseg.io_utils import write_csv_atomic, write_text_atomic

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "HDF5_EXTS",
    "RECALL_POINTS",
    "InstanceAPResult",
    "evaluate_instance_files",
    "instance_ap",
    "instance_overlaps",
    "read_instance_scores",
    "read_instance_volume",
]

#: COCO / MitoEM IoU thresholds 0.50, 0.55, …, 0.95 (exact decimals, see the module docstring)
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(float(k) / 100 for k in range(50, 100, 5))
#: the 101 recall points at which the monotone precision is read
RECALL_POINTS: np.ndarray = np.arange(101) / 100
#: extensions read with h5py
HDF5_EXTS = (".h5", ".hdf5", ".hdf")

_SLAB_VOXELS = 1 << 24  # voxels per slab: bounds the int64 temporaries to ~128 MB
_DENSE_BINS = 1 << 22  # largest label (or id-pair count) histogrammed with a dense bincount


@dataclass(frozen=True)
class InstanceAPResult:
    """Result of :func:`instance_ap`.

    ``table`` has one row per prediction in rank order (``kind == "pred"``) and one row per GT
    instance not matched at IoU 0.5 (``kind == "missed_gt"``). Columns:

    * ``pred_id``, ``pred_size``, ``score`` (the value the ranking used: the given score, or the
      size), ``rank`` (1 = first);
    * ``gt_id``, ``gt_size``, ``iou``: for a prediction, the GT instance it overlaps with the highest
      IoU (its match whenever ``tp50`` is true); for a missed GT, the prediction it overlaps best.
      0 (and ``score`` NaN, ``rank`` 0) when nothing overlaps;
    * ``tp50``, ``tp75``: matched at IoU 0.5 / 0.75.
    """

    ap50: float
    ap75: float
    map: float
    ap_per_threshold: dict[float, float]
    iou_thresholds: tuple[float, ...]
    n_gt: int
    n_pred: int
    tp50: int
    tp75: int
    ranking: str
    empty_gt: bool
    empty_pred: bool
    table: pd.DataFrame

    @property
    def fp50(self) -> int:
        return self.n_pred - self.tp50

    @property
    def fn50(self) -> int:
        return self.n_gt - self.tp50

    @property
    def fp75(self) -> int:
        return self.n_pred - self.tp75

    @property
    def fn75(self) -> int:
        return self.n_gt - self.tp75

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers (everything but the table)."""
        rule = "given scores" if self.ranking == "score" else "size in voxels"
        return {
            "ap50": self.ap50,
            "ap75": self.ap75,
            "map": self.map,
            "ap_per_threshold": {f"{t:g}": v for t, v in self.ap_per_threshold.items()},
            "iou_thresholds": list(self.iou_thresholds),
            "recall_points": len(RECALL_POINTS),
            "n_gt": self.n_gt,
            "n_pred": self.n_pred,
            "tp50": self.tp50,
            "fp50": self.fp50,
            "fn50": self.fn50,
            "tp75": self.tp75,
            "fp75": self.fp75,
            "fn75": self.fn75,
            "ranking": self.ranking,
            "ranking_rule": f"{rule}, descending; ties by ascending prediction id",
            "empty_gt": self.empty_gt,
            "empty_pred": self.empty_pred,
        }


# ----------------------------------------------------------------------------------------------
# label checks, sizes and overlaps
# ----------------------------------------------------------------------------------------------


def _as_labels(volume: Any, name: str, path: str | Path | None = None) -> np.ndarray:
    """``volume`` as an array of non-negative integer labels; DataError naming the problem."""
    arr = np.asarray(volume)
    if arr.ndim not in (2, 3):
        raise DataError(f"{name}: expected a 2D or 3D label array, got shape {arr.shape}", path)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    kind = arr.dtype.kind
    if kind == "f":
        if arr.size and np.isnan(arr).any():
            raise DataError(f"{name}: labels contain NaN ({int(np.isnan(arr).sum())} voxels)", path)
        if arr.size and not np.isfinite(arr).all():
            raise DataError(f"{name}: labels contain inf", path)
        frac = arr != np.floor(arr)
        if frac.any():
            raise DataError(
                f"{name}: non-integer label values (e.g. {arr[frac].flat[0]!r}); instance labels "
                "must be integers (was a probability map passed?)",
                path,
            )
        if arr.size and arr.min() < 0:
            raise DataError(f"{name}: negative labels (min {arr.min()!r}); 0 is background", path)
        if arr.size and arr.max() >= 2**53:
            raise DataError(f"{name}: float labels above 2**53 cannot be exact integers", path)
        return arr.astype(np.int64)
    if kind == "i":
        if arr.size and arr.min() < 0:
            raise DataError(f"{name}: negative labels (min {int(arr.min())}); 0 is background", path)
        return arr
    if kind == "u":
        if arr.dtype.itemsize == 8 and arr.size and int(arr.max()) >= 2**63:
            raise DataError(f"{name}: labels above 2**63 - 1 are not supported", path)
        return arr
    raise DataError(f"{name}: labels must be integers, got dtype {arr.dtype}", path)


def _slabs(shape: tuple[int, ...]) -> list[slice]:
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, _SLAB_VOXELS // per_row)
    return [slice(z, z + step) for z in range(0, shape[0], step)]


def _as_index(values: np.ndarray) -> np.ndarray:
    # np.bincount refuses uint64 (no safe cast to intp); labels were checked to be < 2**63
    return values.astype(np.int64, copy=False) if values.dtype == np.uint64 else values


def _label_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted non-zero ids and their sizes in voxels (int64)."""
    if labels.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(labels.max())
    if top < _DENSE_BINS:
        counts = np.zeros(top + 1, np.int64)
        for sl in _slabs(labels.shape):
            slab = labels[sl]
            # only the foreground: bincount casts to int64, and most voxels are background
            counts += np.bincount(_as_index(slab[slab != 0]), minlength=top + 1)
        ids = np.flatnonzero(counts[1:]) + 1
        return ids.astype(np.int64), counts[ids]
    found: dict[int, int] = {}
    for sl in _slabs(labels.shape):
        slab = labels[sl]
        u, c = np.unique(slab[slab != 0], return_counts=True)
        for i, n in zip(u.tolist(), c.tolist(), strict=True):
            found[i] = found.get(i, 0) + n
    ids = np.array(sorted(found), dtype=np.int64)
    return ids, np.array([found[i] for i in ids.tolist()], dtype=np.int64)


def _compact(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each value (all present in the sorted ``ids``) in ``ids``."""
    if ids.size and ids[-1] < _DENSE_BINS:
        lut = np.zeros(int(ids[-1]) + 1, np.int64)
        lut[ids] = np.arange(ids.size)
        return lut[values]
    return np.searchsorted(ids, _as_index(values))


def instance_overlaps(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Sizes and pairwise intersections of the instances of two label arrays of the same shape.

    Returns ``pred_ids``, ``pred_sizes``, ``gt_ids``, ``gt_sizes`` (sorted ids > 0) and, for every
    overlapping pair, ``pair_pred`` / ``pair_gt`` (indices into the id arrays), ``intersection``
    (voxels) and ``iou``. Inputs must already be valid labels (see :func:`instance_ap`).
    """
    pred_ids, pred_sizes = _label_sizes(pred)
    gt_ids, gt_sizes = _label_sizes(gt)
    n_gt = gt_ids.size
    n_pairs = pred_ids.size * n_gt
    dense = np.zeros(n_pairs, np.int64) if n_pairs <= _DENSE_BINS else None
    keys, counts = [], []
    for sl in _slabs(pred.shape):
        p, g = pred[sl], gt[sl]
        both = (p != 0) & (g != 0)
        if not both.any():
            continue
        key = _compact(p[both], pred_ids) * n_gt + _compact(g[both], gt_ids)
        if dense is not None:
            dense += np.bincount(key, minlength=n_pairs)
        else:
            k, c = np.unique(key, return_counts=True)
            keys.append(k)
            counts.append(c)
    if dense is not None:
        key = np.flatnonzero(dense)
        inter = dense[key]
    elif keys:
        key, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        inter = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
    else:
        key, inter = np.zeros(0, np.int64), np.zeros(0, np.int64)
    pair_pred, pair_gt = np.divmod(key, max(n_gt, 1))
    union = pred_sizes[pair_pred] + gt_sizes[pair_gt] - inter
    return {
        "pred_ids": pred_ids,
        "pred_sizes": pred_sizes,
        "gt_ids": gt_ids,
        "gt_sizes": gt_sizes,
        "pair_pred": pair_pred,
        "pair_gt": pair_gt,
        "intersection": inter,
        "iou": inter / np.maximum(union, 1),
    }


# ----------------------------------------------------------------------------------------------
# AP
# ----------------------------------------------------------------------------------------------


def _thresholds(iou_thresholds: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    values = [float(t) for t in np.asarray(iou_thresholds, dtype=np.float64).ravel()]
    if not values:
        raise ValueError("iou_thresholds is empty")
    bad = [t for t in values if not (math.isfinite(t) and 0 < t <= 1)]
    if bad:
        raise ValueError(f"IoU thresholds must be in (0, 1], got {bad}")
    return tuple(sorted({round(t, 10) for t in values}))


def _ranking_scores(
    scores: Mapping[int, float] | None, pred_ids: np.ndarray, pred_sizes: np.ndarray
) -> tuple[np.ndarray, str]:
    if scores is None:
        return pred_sizes.astype(np.float64), "size"
    given: dict[int, float] = {}
    for key, value in scores.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise DataError(f"scores: ids must be integers, got {key!r}")
        given[int(key)] = float(value)
    ids = pred_ids.tolist()
    missing = [i for i in ids if i not in given]
    if missing:
        raise DataError(f"scores: no score for {len(missing)} predicted instance(s), e.g. ids {missing[:10]}")
    extra = sorted(set(given) - set(ids))
    if extra:
        raise DataError(
            f"scores: {len(extra)} id(s) are not instances of the prediction, e.g. {extra[:10]} "
            "(scores for another volume?)"
        )
    values = np.array([given[i] for i in ids], dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        bad = [i for i, v in zip(ids, values.tolist(), strict=True) if not math.isfinite(v)]
        raise DataError(f"scores: NaN or inf score for ids {bad[:10]}")
    return values, "score"


def _average_precision(tp: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP of a ranked list of true-positive flags."""
    if n_gt == 0:
        return 1.0 if tp.size == 0 else 0.0
    if tp.size == 0:
        return 0.0
    tps = np.cumsum(tp, dtype=np.float64)
    fps = np.cumsum(~tp, dtype=np.float64)
    recall = tps / n_gt
    precision = np.maximum.accumulate((tps / (tps + fps))[::-1])[::-1]
    at = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.zeros(RECALL_POINTS.size)
    reached = at < precision.size
    sampled[reached] = precision[at[reached]]
    return float(sampled.mean())


def _greedy_match(
    threshold: float, starts: list[int], cand_gt: list[int], cand_iou: list[float], n_gt: int
) -> np.ndarray:
    """Matched GT index per ranked prediction (-1 = false positive) at one IoU threshold."""
    taken = [False] * n_gt
    matched = np.full(len(starts) - 1, -1, np.int64)
    for r in range(len(starts) - 1):
        for k in range(starts[r], starts[r + 1]):
            if cand_iou[k] < threshold:
                break  # candidates are sorted by decreasing IoU
            if not taken[cand_gt[k]]:
                taken[cand_gt[k]] = True
                matched[r] = cand_gt[k]
                break
    return matched


def instance_ap(
    pred: np.ndarray,
    gt: np.ndarray,
    scores: Mapping[int, float] | None = None,
    iou_thresholds: Sequence[float] | np.ndarray = COCO_IOU_THRESHOLDS,
) -> InstanceAPResult:
    """COCO-style AP of predicted instances against true instances (see the module docstring).

    Args:
        pred: predicted instance labels, ``H×W`` or ``D×H×W``, 0 = background.
        gt: true instance labels, same shape.
        scores: confidence per predicted id (every predicted instance, and only those). None ranks
            the predictions by size, descending (the MitoEM default).
        iou_thresholds: thresholds averaged into ``map`` (default 0.50:0.05:0.95). AP at 0.5 and
            0.75 is always computed for ``ap50``/``ap75``.

    Returns:
        :class:`InstanceAPResult`.

    Raises:
        DataError (a ValueError): shape mismatch; NaN, inf, negative or non-integer labels; scores
            missing, extra or not finite.
    """
    pred = _as_labels(pred, "pred")
    gt = _as_labels(gt, "gt")
    if pred.shape != gt.shape:
        raise DataError(f"shape mismatch: pred {pred.shape} vs gt {gt.shape}")
    thresholds = _thresholds(iou_thresholds)
    ov = instance_overlaps(pred, gt)
    pred_ids, pred_sizes, gt_ids = ov["pred_ids"], ov["pred_sizes"], ov["gt_ids"]
    n_pred, n_gt = pred_ids.size, gt_ids.size
    score, ranking = _ranking_scores(scores, pred_ids, pred_sizes)

    order = np.lexsort((pred_ids, -score))  # descending score, ties by ascending id
    rank_of = np.empty(n_pred, np.int64)
    rank_of[order] = np.arange(n_pred)

    # candidate GTs of each ranked prediction, best IoU first (ties: lower GT id)
    pair_rank = rank_of[ov["pair_pred"]]
    by_pred = np.lexsort((ov["pair_gt"], -ov["iou"], pair_rank))
    cand_gt = ov["pair_gt"][by_pred]
    cand_iou = ov["iou"][by_pred]
    starts = np.searchsorted(pair_rank[by_pred], np.arange(n_pred + 1)).tolist()

    matches: dict[float, np.ndarray] = {}
    ap: dict[float, float] = {}
    for t in sorted(set(thresholds) | {0.5, 0.75}):
        matches[t] = _greedy_match(t, starts, cand_gt.tolist(), cand_iou.tolist(), n_gt)
        ap[t] = _average_precision(matches[t] >= 0, n_gt)

    table = _match_table(ov, order, score, starts, cand_gt, cand_iou, matches[0.5], matches[0.75])
    return InstanceAPResult(
        ap50=ap[0.5],
        ap75=ap[0.75],
        map=float(np.mean([ap[t] for t in thresholds])),
        ap_per_threshold={t: ap[t] for t in thresholds},
        iou_thresholds=thresholds,
        n_gt=int(n_gt),
        n_pred=int(n_pred),
        tp50=int((matches[0.5] >= 0).sum()),
        tp75=int((matches[0.75] >= 0).sum()),
        ranking=ranking,
        empty_gt=n_gt == 0,
        empty_pred=n_pred == 0,
        table=table,
    )


_TABLE_COLUMNS = ["kind", "rank", "pred_id", "pred_size", "score", "gt_id", "gt_size", "iou", "tp50", "tp75"]


def _match_table(
    ov: Mapping[str, np.ndarray],
    order: np.ndarray,
    score: np.ndarray,
    starts: list[int],
    cand_gt: np.ndarray,
    cand_iou: np.ndarray,
    match50: np.ndarray,
    match75: np.ndarray,
) -> pd.DataFrame:
    pred_ids, pred_sizes, gt_ids, gt_sizes = ov["pred_ids"], ov["pred_sizes"], ov["gt_ids"], ov["gt_sizes"]
    rows: list[dict[str, Any]] = []
    for r, p in enumerate(order.tolist()):
        best = starts[r] if starts[r] < starts[r + 1] else None  # first candidate = highest IoU
        g = int(cand_gt[best]) if best is not None else -1
        rows.append(
            {
                "kind": "pred",
                "rank": r + 1,
                "pred_id": int(pred_ids[p]),
                "pred_size": int(pred_sizes[p]),
                "score": float(score[p]),
                "gt_id": int(gt_ids[g]) if g >= 0 else 0,
                "gt_size": int(gt_sizes[g]) if g >= 0 else 0,
                "iou": float(cand_iou[best]) if best is not None else 0.0,
                "tp50": bool(match50[r] >= 0),
                "tp75": bool(match75[r] >= 0),
            }
        )
    matched = np.zeros(gt_ids.size, bool)
    matched[match50[match50 >= 0]] = True
    missed = np.flatnonzero(~matched)
    if missed.size:
        rank_of = np.empty(order.size, np.int64)
        rank_of[order] = np.arange(order.size)
        # best prediction of each GT: highest IoU, ties by rank
        by_gt = np.lexsort((rank_of[ov["pair_pred"]], -ov["iou"], ov["pair_gt"]))
        first = np.searchsorted(ov["pair_gt"][by_gt], missed)
        for g, k in zip(missed.tolist(), first.tolist(), strict=True):
            hit = k < by_gt.size and ov["pair_gt"][by_gt[k]] == g
            p = int(ov["pair_pred"][by_gt[k]]) if hit else -1
            rows.append(
                {
                    "kind": "missed_gt",
                    "rank": int(rank_of[p]) + 1 if hit else 0,
                    "pred_id": int(pred_ids[p]) if hit else 0,
                    "pred_size": int(pred_sizes[p]) if hit else 0,
                    "score": float(score[p]) if hit else float("nan"),
                    "gt_id": int(gt_ids[g]),
                    "gt_size": int(gt_sizes[g]),
                    "iou": float(ov["iou"][by_gt[k]]) if hit else 0.0,
                    "tp50": False,
                    "tp75": False,
                }
            )
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def read_instance_volume(path: str | Path, key: str = "main") -> np.ndarray:
    """Read an instance label volume as stored (no binarisation, no dtype change).

    * HDF5 (``.h5``, ``.hdf5``, ``.hdf``): dataset ``key`` (``"main"`` by default, the MitoEM and
      pytorch_connectomics convention), as stored.
    * NIfTI, NRRD/MHA, TIFF (a multi-page TIFF is a stack) and 2D formats: through
      :func:`medseg.data.io.read_image`, in medseg's ``D×H×W`` order.
    * a directory: its 2D images (TIFF/PNG/…) sorted by name and stacked along the first axis.

    Raises:
        DataError naming the file: missing, empty, corrupt, unknown extension, no dataset ``key``.
    """
    path = Path(path)
    if path.is_dir():
        return _read_slice_stack(path)
    if path.name.lower().endswith(HDF5_EXTS):
        return _read_hdf5(path, key)
    return np.asarray(read_image(path)[0])


def _read_hdf5(path: Path, key: str) -> np.ndarray:
    import h5py

    if not path.is_file():
        raise DataError("file does not exist" if not path.exists() else "not a regular file", path)
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                names: list[str] = []
                f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
                raise DataError(f"no dataset {key!r} in the HDF5 file (datasets: {names})", path)
            node = f[key]
            if not isinstance(node, h5py.Dataset):
                raise DataError(f"{key!r} is an HDF5 group, not a dataset", path)
            return np.asarray(node[()])
    except OSError as e:
        raise DataError(f"cannot read HDF5, corrupt or truncated ({type(e).__name__}: {e})", path) from e


def _read_slice_stack(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_2D_EXTS))
    if not files:
        raise DataError(f"no 2D image slices ({', '.join(IMAGE_2D_EXTS)}) in the folder", folder)
    slices = []
    for f in files:
        arr = np.asarray(read_image(f)[0])
        if slices and arr.shape != slices[0].shape:
            raise DataError(f"slice shape {arr.shape} differs from {files[0].name}'s {slices[0].shape}", f)
        slices.append(arr)
    return np.stack(slices)


def read_instance_scores(path: str | Path) -> dict[int, float]:
    """Confidence per predicted id from a file.

    ``.json``: an object ``{"id": score}`` or a list of ``[id, score]`` pairs. Any other extension
    (``.csv``, ``.txt``, ``.tsv``): two columns ``id, score`` separated by commas, tabs or spaces,
    one instance per line (MitoEM's ``N×2`` text file); ``#`` comments and one header line are skipped.

    Raises:
        DataError naming the file: missing, unparsable, duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file does not exist" if not path.exists() else "not a regular file", path)
    pairs: list[tuple[Any, Any]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read JSON scores ({type(e).__name__}: {e})", path) from e
        if isinstance(data, dict):
            pairs = list(data.items())
        elif isinstance(data, list) and all(isinstance(x, list) and len(x) == 2 for x in data):
            pairs = [(x[0], x[1]) for x in data]
        else:
            raise DataError('scores JSON must be {"id": score} or [[id, score], ...]', path)
    else:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read scores ({type(e).__name__}: {e})", path) from e
        rows = [ln.split("#", 1)[0].replace(",", " ").split() for ln in lines]
        rows = [r for r in rows if r]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]  # header
        for n, r in enumerate(rows, 1):
            if len(r) != 2:
                raise DataError(f"scores: row {n} has {len(r)} columns, expected 2 (id, score): {r}", path)
            pairs.append((r[0], r[1]))
    out: dict[int, float] = {}
    for raw_id, raw_score in pairs:
        try:
            as_float = float(raw_id)
            score = float(raw_score)
        except (TypeError, ValueError) as e:
            raise DataError(f"scores: cannot parse id {raw_id!r} / score {raw_score!r}", path) from e
        if not as_float.is_integer():
            raise DataError(f"scores: id {raw_id!r} is not an integer", path)
        if int(as_float) in out:
            raise DataError(f"scores: id {int(as_float)} appears twice", path)
        out[int(as_float)] = score
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def evaluate_instance_files(
    pred_path: str | Path,
    gt_path: str | Path,
    out_dir: str | Path,
    scores_path: str | Path | None = None,
    *,
    key: str = "main",
    iou_thresholds: Sequence[float] | np.ndarray = COCO_IOU_THRESHOLDS,
) -> dict[str, Any]:
    """AP of a predicted instance volume file against a GT file; writes ``ap.json`` and ``instances.csv``.

    ``out_dir/ap.json`` holds :meth:`InstanceAPResult.summary` (``ap50``, ``ap75``, ``map``, the counts,
    the IoU thresholds, the ranking used) plus the input paths; ``out_dir/instances.csv`` holds the
    per-instance table (see :class:`InstanceAPResult`; ``score`` is empty where nothing overlaps).
    ``key`` is the HDF5 dataset of both files. Returns the ``ap.json`` content.

    Raises:
        DataError: naming the file for unreadable files and invalid labels, and naming both files
            for a shape mismatch.
    """
    pred = _as_labels(read_instance_volume(pred_path, key), "pred", pred_path)
    gt = _as_labels(read_instance_volume(gt_path, key), "gt", gt_path)
    if pred.shape != gt.shape:
        raise DataError(f"shape mismatch: pred {pred.shape} ({pred_path}) vs gt {gt.shape} ({gt_path})")
    scores = read_instance_scores(scores_path) if scores_path is not None else None
    try:
        result = instance_ap(pred, gt, scores, iou_thresholds)
    except DataError as e:
        if scores_path is None or not e.problem.startswith("scores:"):
            raise
        raise DataError(f"{e.problem} (prediction {pred_path})", scores_path) from e
    summary = {
        **result.summary(),
        "pred_path": str(pred_path),
        "gt_path": str(gt_path),
        "scores_path": None if scores_path is None else str(scores_path),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ap.json", json.dumps(summary, indent=2) + "\n")
    write_csv_atomic(out / "instances.csv", result.table, index=False, float_format="%.6f")
    return summary
