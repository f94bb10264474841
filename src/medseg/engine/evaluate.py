"""Evaluation: per-case and per-patient metric tables in mm, and a summary.

Two entry points:

* :func:`evaluate_model` scores a model on samples (3D volumes are predicted slice by slice by a 2D
  model, or whole by sliding window by a 3D model, and scored both per slice and as whole volumes
  at their 3D spacing, which is the per-patient value);
* :func:`evaluate_files` scores predictions made by any tool against ground-truth files.

A multi-class model (``data.num_classes`` = K ≥ 2, 2D or 3D) is scored on its argmax label map,
class by class (:mod:`medseg.metrics.per_class`): ``metrics_per_class.csv`` has one row per case and
foreground class (named after the data set's labels), ``metrics.csv`` one row per case with the
mean over the classes by the empty-class rule, and the summary ``per_class``, ``over_classes`` and
``class_values`` (class index → label value) when known. Label-map files scored with
``labels="all"`` give the same tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import track

from medseg.config import EvalConfig, save_config
from medseg.data.io import IMAGE_2D_EXTS, ITK_EXTS, NIFTI_EXTS, strip_extension
from medseg.data.loading import load_splits
from medseg.data.pairs import MaskPair, read_mask_pair
from medseg.data.plausibility import check_labels_present
from medseg.data.sample import Sample, assign_keys
from medseg.data.transforms import Intensity
from medseg.engine.calibrate import CalibrationCollector, CalibrationOptions
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import (
    SlidingWindow,
    class_index_to_value,
    model_from_state,
    resolve_device,
    sliding_window_from_config,
)
from medseg.engine.model_grid import on_model_grid, values_on_input
from medseg.engine.multiclass import evaluation_classes, predict_classes
from medseg.engine.postprocess import postprocess_labels, stored_postprocessing
from medseg.engine.predict import predict_probabilities
from medseg.errors import DataError
from medseg.io_utils import write_csv_atomic
from medseg.metrics import PROTOCOLS, microsegnet_protocol, summarize
from medseg.metrics.evaluation import MetricTables, SegmentationMetrics, summarize_table, write_metric_tables
from medseg.metrics.measurements import measurement_rows, summarize_measurements
from medseg.metrics.per_class import ClassSpec, default_name
from medseg.metrics.postprocess import PostprocessingDecision
from medseg.provenance import code_provenance, file_sha256
from medseg.report.slices import CASE_SLICES_FILE, case_slice, write_case_slices


@dataclass
class EvaluationResult(MetricTables):
    """The metric tables of an evaluation, and one slice per case for the HTML report."""

    # case name (the ``case`` of the per-volume or per-image rows) → its slice for the HTML report
    case_slices: dict[str, Any] = field(default_factory=dict)
    # one row per case and label: volume/diameter/components (and HC18's HC) of prediction vs
    # ground truth (medseg.metrics.measurements), written to measurements.csv
    measurements: pd.DataFrame | None = None


def segmentation_metrics(
    cfg: EvalConfig, num_classes: int | None = None, classes: Sequence[ClassSpec] | None = None
) -> SegmentationMetrics:
    """The metrics object of ``cfg`` (HD95 definition, NSD tolerance); every core for 3D surfaces."""
    return SegmentationMetrics(cfg.hd95_mode, cfg.nsd_tolerance_mm, num_classes, workers=-1, classes=classes)


def evaluate_model(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    image_size: Sequence[int],
    intensity: Intensity,
    cfg: EvalConfig,
    device: torch.device,
    progress: bool = True,
    window: SlidingWindow | None = None,
    predictor: Callable[[Sample], np.ndarray] | None = None,
    tta_flips: bool = False,
    target_spacing: Sequence[float] | None = None,
    crop_nonzero: bool = False,
    label_names: Sequence[str] | None = None,
    postprocessing: PostprocessingDecision | None = None,
) -> tuple[EvaluationResult, dict[str, np.ndarray]]:
    """Score ``model`` on ``samples``; also returns the predicted masks by sample key.

    ``predictor`` replaces :func:`~medseg.engine.predict.predict_probabilities` for a binary model
    (sample → foreground probability), e.g. a :class:`~medseg.engine.calibrate.CalibrationCollector`.

    A 3D model needs its sliding ``window`` (:func:`~medseg.engine.inference.sliding_window_from_config`);
    ``image_size`` is then unused and every sample must be a volume. ``tta_flips`` mirrors a 2D
    model's inputs (``inference.tta_flips``; a 3D window carries its own). A multi-class model
    (``model.num_classes``) is scored per class (module docstring); its predictions are the
    argmax class-index maps; its classes are named by the samples' ``label_names``, else by
    ``label_names`` (``data.label_names``).

    ``target_spacing`` / ``crop_nonzero`` (the training config's ``data`` keys) crop and resample
    each sample as in training (``predictor`` sees it so); the prediction is taken back onto the
    sample's own grid (:mod:`medseg.engine.model_grid`), where it is scored.
    ``postprocessing`` (a checkpoint's, :mod:`medseg.engine.postprocess`) is applied to every
    prediction before it is scored.
    """
    if not samples:
        raise DataError("nothing to evaluate: the evaluation set is empty")
    unknown = sorted(set(cfg.protocols) - set(PROTOCOLS))
    if unknown:
        raise ValueError(f"unknown evaluation protocol(s) {unknown}; choose from {PROTOCOLS}")
    num_classes = model.num_classes
    classes = None
    if num_classes is not None:
        if "microsegnet" in cfg.protocols:
            raise ValueError("the microsegnet protocol is binary; drop it for a multi-class model")
        classes = evaluation_classes(samples, num_classes, label_names)

    metrics = segmentation_metrics(cfg, num_classes, classes)
    predictions: dict[str, np.ndarray] = {}
    slices: dict[str, Any] = {}
    assign_keys(samples)
    measured: list[dict[str, Any]] = []
    iterator = track(samples, description="evaluating") if progress else samples
    for sample in iterator:
        on_grid, change = on_model_grid(sample, target_spacing, crop_nonzero)
        if num_classes is None:
            if predictor is not None:
                probs = predictor(on_grid)
            else:
                probs = predict_probabilities(
                    model, on_grid, image_size, intensity, device, window=window, tta_flips=tta_flips
                )
            pred = values_on_input(probs, change) >= cfg.threshold
            gt = sample.target_mask.astype(bool)
        else:
            pred, _ = predict_classes(
                model, on_grid, image_size, intensity, device, num_classes, window, tta_flips, change
            )
            gt = sample.target_mask
        pred = postprocess_labels(pred, postprocessing)
        key = sample.key
        predictions[key] = pred.astype(np.uint8)
        report_key = sample.case_id if sample.ndim == 3 else key  # the `case` of its report-level row
        labels = None if num_classes is None else list(range(1, num_classes))
        reference_hc = sample.meta.get("head_circumference_mm")
        measured += measurement_rows(report_key, pred, sample.spacing, gt, labels, reference_hc)
        if classes is None:
            slices[report_key] = case_slice(sample.image, gt, pred, sample.spacing)
        else:  # the report colours each class: its slice keeps the label values
            lut = [0, *(c.value for c in classes)]
            shown_gt, shown_pred = class_index_to_value(gt, lut), class_index_to_value(pred, lut)
            slices[report_key] = case_slice(sample.image, shown_gt, shown_pred, sample.spacing)
        if sample.ndim == 3:
            for z in range(gt.shape[0]):
                metrics(
                    pred[z],
                    gt[z],
                    sample.spacing[1:],
                    level="slice",
                    case=f"{sample.case_id}_{z:03d}",
                    patient=sample.case_id,
                    slice_index=z,
                )
            official = {}
            if "microsegnet" in cfg.protocols:
                pixel_mm = cfg.microsegnet_pixel_mm or float(sample.spacing[-1])
                protocol = microsegnet_protocol(pred, gt, pixel_mm=pixel_mm)
                official = {f"microsegnet_{k}": v for k, v in protocol.items()}
            metrics(
                pred,
                gt,
                sample.spacing,
                extra=official,
                level="patient",
                case=sample.case_id,
                patient=sample.case_id,
                slice_index=-1,
            )
        else:
            metrics(
                pred,
                gt,
                sample.spacing,
                level="image",
                case=key,
                patient=sample.case_id,
                slice_index=-1 if sample.slice_index is None else sample.slice_index,
            )
    tables = metrics.aggregate()  # 2D sources: a patient's value is the mean over its images
    per_patient = tables.per_patient
    summary = {
        **tables.summary,
        "threshold": cfg.threshold,
        "protocol": "volumetric: 3D per patient at header spacing, empty masks by the documented policy",
    }
    if postprocessing is not None:
        summary["postprocessing"] = postprocessing.summary()
    if num_classes is not None:
        summary["num_classes"] = num_classes
        summary["class_metric"] = (
            "per foreground class on the argmax (metrics_per_class.csv); metrics.csv: the mean over "
            "the classes by the empty-class rule"
        )
        assert classes is not None
        summary["class_values"] = [0, *(c.value for c in classes)]
    if "microsegnet_dice" in per_patient:
        summary["protocol_microsegnet"] = {
            "description": "official MicroSegNet test script: per slice, only slices where prediction and "
            "ground truth are both non-empty, HD95 (pooled) in pixels x "
            f"{cfg.microsegnet_pixel_mm or 'the header pixel size in'} mm, "
            "mean per patient then over patients",
            "dice": summarize(per_patient["microsegnet_dice"].to_numpy(dtype=float)),
            "hd95_mm": summarize(per_patient["microsegnet_hd95_mm"].to_numpy(dtype=float)),
            "n_slices_skipped": int(per_patient["microsegnet_n_slices_skipped"].sum()),
        }
    measurements = pd.DataFrame(measured)
    summary["measurements"] = summarize_measurements(measurements)
    result = EvaluationResult(
        tables.per_case,
        per_patient,
        summary,
        per_class=tables.per_class,
        case_slices=slices,
        measurements=measurements,
    )
    return result, predictions


def write_evaluation(result: EvaluationResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``metrics.csv`` (both levels, column ``level``) and ``summary.json``, plus ``case_slices.npz``
    (one slice per case for ``medseg report``) when the result has them."""
    csv_path, json_path = write_metric_tables(result, out_dir)
    if result.case_slices:
        write_case_slices(result.case_slices, Path(out_dir) / CASE_SLICES_FILE)
    if result.measurements is not None and not result.measurements.empty:
        write_csv_atomic(
            Path(out_dir) / "measurements.csv", result.measurements, index=False, float_format="%.6f"
        )
    return csv_path, json_path


# --- scoring predictions made by any tool ---------------------------------------------------------

_KNOWN_EXTENSIONS = IMAGE_2D_EXTS + NIFTI_EXTS + ITK_EXTS


def case_name(path: Path) -> str:
    """File name without its (possibly double) image extension."""
    return strip_extension(path.name)


def _collect(path: Path) -> dict[str, Path]:
    if path.is_file():
        return {case_name(path): path}
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(_KNOWN_EXTENSIONS)
        )
        return {case_name(p): p for p in files}
    raise DataError("prediction/ground-truth path not found", path)


def match_files(pred: str | Path, gt: str | Path) -> list[tuple[str, Path | None, Path]]:
    """Pair prediction and ground-truth files by case name (a single pair of files is always paired).

    A ground truth without prediction is kept with ``None`` (scored as an empty prediction and
    flagged ``missing_pred``); a prediction without ground truth is an error.
    """
    pred, gt = Path(pred), Path(gt)
    if pred.is_file() and gt.is_file():
        return [(case_name(gt), pred, gt)]
    preds, gts = _collect(pred), _collect(gt)
    if not gts:
        raise DataError("no ground-truth files found", gt)
    extra = sorted(set(preds) - set(gts))
    if extra:
        raise DataError(f"predictions without a ground truth of the same name: {extra[:10]}", pred)
    return [(name, preds.get(name), gts[name]) for name in sorted(gts)]


def evaluate_files(
    pred: str | Path,
    gt: str | Path,
    cfg: EvalConfig,
    spacing: Sequence[float] | None = None,
    console: Console | None = None,
    labels: Sequence[int] | str | None = None,
    resample_pred: bool = False,
) -> EvaluationResult:
    """Score prediction files against ground-truth files (NIfTI/NRRD spacing from the header).

    2D formats carry no spacing: pass ``spacing`` (mm); without it they are an error, never a
    silent 1 mm. Masks are read by the mask policy (:mod:`medseg.data.mask_policy`) and the
    prediction must lie on the ground truth's grid (:mod:`medseg.data.pairs`): ``labels`` picks
    the label(s) of a multi-label map: ``[K]`` scores label K as a binary mask (case ``name#K``,
    column ``label``); ``"all"`` scores every label value found in either file as a class, as a
    multi-class model evaluation does (one row per case with the mean over the classes, one row per
    case and class in ``per_class``, a class found in other cases only counting as absent from
    both). ``resample_pred`` resamples the prediction onto the ground-truth grid (nearest neighbour).
    """
    every_label = labels == "all"
    metrics = segmentation_metrics(cfg)
    slices = {}
    measured: list[dict[str, Any]] = []
    present: set[int] = set()  # the labels found in any file, for the warning below
    for name, pred_path, gt_path in match_files(pred, gt):
        read = read_mask_pair(pred_path, gt_path, labels, resample_pred)
        present |= {int(p.label) for p in read.pairs if p.label is not None and (p.gt.any() or p.pred.any())}
        missing = pred_path is None
        use_spacing = tuple(spacing) if spacing is not None else read.spacing
        if use_spacing is None:
            raise DataError("the file carries no spacing; pass --spacing (mm per axis)", gt_path)
        ndim = read.pairs[0].gt.ndim
        if len(use_spacing) != ndim:
            raise DataError(f"spacing {tuple(use_spacing)} does not match a {ndim}D mask", gt_path)
        extra: dict[str, object] = {"missing_pred": missing}
        extra["pred_path"] = "" if pred_path is None else str(pred_path)
        extra["gt_path"] = str(gt_path)
        if read.resampled:
            extra["pred_resampled"] = True
        if every_label:  # one case of classes: every label value a class (module docstring)
            scored = [p for p in read.pairs if p.label is not None]
            pairs = [(ClassSpec(None, p.label, default_name(p.label)), p.pred, p.gt) for p in scored]
            metrics.add_classes(pairs, use_spacing, case=name, extra=extra)
            gt_map, pred_map = _label_maps(scored, read.pairs[0].gt.shape)
            slices[name] = case_slice(None, gt_map, pred_map, use_spacing)  # no image: masks only
            measured += measurement_rows(name, pred_map, use_spacing, gt_map, [p.label for p in scored])
            continue
        for pair in read.pairs:
            case = name if pair.label is None or labels is None else f"{name}#{pair.label}"
            label_extra = extra if labels is None else {"missing_pred": missing, "label": pair.label, **extra}
            metrics(pair.pred, pair.gt, use_spacing, case=case, extra=label_extra)
            slices[case] = case_slice(None, pair.gt, pair.pred, use_spacing)  # no image: masks only
            measured += measurement_rows(case, pair.pred, use_spacing, pair.gt, [1])
    if labels is not None and labels != "all":
        check_labels_present(list(labels), present, pred, gt)  # asked for, found nowhere: a warning
    tables = metrics.aggregate()  # no patient column: no per-patient level
    per_case = tables.per_case
    summary = {
        "per_case": tables.summary["per_case"],
        "n_missing_pred": int(per_case.drop_duplicates("gt_path")["missing_pred"].sum()),
        "hd95_mode": tables.summary["hd95_mode"],
        "nsd_tolerance_mm": tables.summary["nsd_tolerance_mm"],
    }
    if tables.per_class is not None:
        summary.update({k: tables.summary[k] for k in ("per_class", "over_classes", "empty_class_rule")})
    elif labels is not None:
        summary["per_label"] = {
            str(int(value)): summarize_table(group)
            for value, group in per_case.dropna(subset=["label"]).groupby("label")
        }
    if resample_pred:
        summary["pred_resampled"] = "nearest neighbour onto the ground-truth grid (SimpleITK)"
    measurements = pd.DataFrame(measured)
    summary["measurements"] = summarize_measurements(measurements)
    return EvaluationResult(
        per_case=tables.per_case,
        per_patient=tables.per_patient,
        summary=summary,
        per_class=tables.per_class,
        case_slices=slices,
        measurements=measurements,
    )


def _label_maps(pairs: Sequence[MaskPair], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth and predicted label maps of per-label binary pairs (labels are disjoint)."""
    values = [int(p.label) for p in pairs if p.label is not None]
    dtype = np.uint8 if max(values, default=0) <= 255 else np.int32
    gt, pred = np.zeros(shape, dtype), np.zeros(shape, dtype)
    for pair, value in zip(pairs, values, strict=True):
        gt[pair.gt > 0] = value
        pred[pair.pred > 0] = value
    return gt, pred


def evaluate_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    split: str = "test",
    device: str = "auto",
    eval_cfg: EvalConfig | None = None,
    progress: bool = True,
    calibration: CalibrationOptions | None = None,
    tta_flips: bool | None = None,
    postprocess: bool = True,
) -> EvaluationResult:
    """Evaluate a training checkpoint on the ``test`` source of its config (or its ``val`` split).

    ``tta_flips`` overrides the checkpoint's ``inference.tta_flips`` (mirroring test-time
    augmentation) when given. The checkpoint's postprocessing (:mod:`medseg.engine.postprocess`)
    applies to the predictions unless ``postprocess`` is false.

    Writes ``metrics.csv``, ``summary.json`` (with :func:`provenance`), ``case_slices.npz``,
    ``config.yaml`` (the checkpoint's config) and ``overlays.png`` into ``out_dir``.

    ``calibration`` also writes ``reliability.csv``, ``calibration_cases.csv`` and
    ``calibration.json`` (:mod:`medseg.engine.calibrate`); with its ``uncertainty`` every metric is
    that of the sampled (TTA / MC-dropout) mean prediction.
    """
    torch_device = resolve_device(device)
    state = load_checkpoint(checkpoint)
    model, cfg = model_from_state(state, torch_device)
    postprocessing = stored_postprocessing(state, checkpoint) if postprocess else None
    if tta_flips is not None:
        cfg.inference.tta_flips = tta_flips
    eval_cfg = eval_cfg or cfg.eval
    splits = load_splits(cfg.data)
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got '{split}'")
    samples = splits.test if split == "test" else splits.val
    if not samples:
        raise DataError(f"the config defines no '{split}' data (set data.test_source)", checkpoint)
    window = sliding_window_from_config(cfg)
    collector = None
    if calibration is not None:
        collector = CalibrationCollector(model, cfg, torch_device, window, calibration, eval_cfg.threshold)
    result, predictions = evaluate_model(
        model,
        samples,
        cfg.data.image_size,
        cfg.data.intensity,
        eval_cfg,
        torch_device,
        progress,
        window=window,
        predictor=collector,
        tta_flips=cfg.inference.tta_flips,
        target_spacing=cfg.data.target_spacing,
        crop_nonzero=cfg.data.crop_nonzero,
        label_names=cfg.data.label_names,
        postprocessing=postprocessing,
    )
    result.summary["provenance"] = provenance(checkpoint, split, torch_device)
    write_evaluation(result, out_dir)
    save_config(cfg, Path(out_dir) / "config.yaml")  # the checkpoint's recipe, for the report
    if collector is not None:
        collector.write(result, out_dir)
    overlays = Path(out_dir) / "overlays.png"
    save_overlays_for(samples, predictions, overlays, eval_cfg.n_overlays, cfg.data.label_names)
    return result


def provenance(checkpoint: str | Path, split: str, device: torch.device | str) -> dict[str, Any]:
    """What an evaluation was made from: the checkpoint (path, SHA-256), the split, the device, and
    the code (:func:`medseg.provenance.code_provenance`: version, git commit, command line)."""
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "split": split,
        "device": str(device),
        **code_provenance(),
    }


def annotator_disagreement(sample: Sample) -> np.ndarray | None:
    """Where the annotators disagree (expert XOR non-expert for two), or ``None`` with one annotator."""
    if len(sample.masks) < 2:
        return None
    stacked = np.stack([m.astype(bool) for m in sample.masks.values()])
    return stacked.any(axis=0) & ~stacked.all(axis=0)


def save_overlays_for(
    samples: Sequence[Sample],
    predictions: dict[str, np.ndarray],
    path: Path,
    n_overlays: int,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Overlay grid of the slice with the largest GT area of each case (up to ``n_overlays``).

    Contours in the figures' palette (:data:`~medseg.report.figures.OVERLAY_LEGEND`; a multi-class
    case's classes each in its colour, :func:`~medseg.report.figures.class_legend`); where several
    annotators exist, the region where they disagree (the "hard" region of AG-BCE) is shaded.
    """
    from medseg.report.figures import (
        HARD_LEGEND,
        OVERLAY_LEGEND,
        OverlayPanel,
        class_legend,
        save_overlay_grid,
    )

    panels = []
    any_hard = False
    assign_keys(samples)
    num_classes = next((s.meta["num_classes"] for s in samples if s.meta.get("num_classes")), None)
    classes = None if num_classes is None else evaluation_classes(samples, int(num_classes), label_names)
    indices = None if classes is None else [c.index for c in classes]
    for sample in samples[:n_overlays]:
        key = sample.key
        pred, gt = predictions[key], sample.target_mask
        if classes is None and pred.max(initial=0) > 1:
            pred, gt = (pred > 0).astype(np.uint8), (gt > 0).astype(np.uint8)  # labels: foreground
        hard = annotator_disagreement(sample)
        any_hard = any_hard or hard is not None
        if sample.ndim == 3:
            z = int(np.argmax((gt > 0).reshape(gt.shape[0], -1).sum(1)))
            title = f"{sample.case_id} slice {z}"
            panels.append(
                OverlayPanel(
                    sample.image[:, z],
                    gt[z],
                    pred[z],
                    sample.spacing[1:],
                    title,
                    None if hard is None else hard[z],
                    indices,
                )
            )
        else:
            panels.append(OverlayPanel(sample.image, gt, pred, sample.spacing, key, hard, indices))
    legend = OVERLAY_LEGEND if classes is None else class_legend([c.name for c in classes])
    if any_hard:
        legend += f", {HARD_LEGEND}"
    return save_overlay_grid(panels, path, suptitle=legend)
