"""Command line: a thin layer over the Python API (``medseg --help``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from medseg.cli_errors import UserErrorGroup, device_option, parse_spacing_option, positive_number
from medseg.errors import ConfigError, MedsegError

# Each command imports what it runs inside its function: `medseg --help` and a mistyped option
# answer without importing torch, MONAI and timm. These imports close no cycle
# (tests/test_architecture.py counts them).
if TYPE_CHECKING:
    from medseg.config import Config

app = typer.Typer(
    cls=UserErrorGroup, add_completion=False, no_args_is_help=True, help="medseg: medical image segmentation."
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect data sources and write the phantom.")
app.add_typer(data_app, name="data")
export_app = typer.Typer(no_args_is_help=True, help="Export a checkpoint for deployment (ONNX).")
app.add_typer(export_app, name="export")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from medseg.about import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="show the full traceback of an error")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_print_version,
            help="print the version (and the git commit of a checkout) and exit",
        ),
    ] = False,
) -> None:
    """medseg: medical image segmentation."""


def _fail(exc: Exception) -> None:
    """Raise ``exc`` to the root group (:class:`UserErrorGroup`): one line and exit code 2, or the
    traceback under ``--debug``."""
    raise exc


MINUTES = positive_number("--minutes", "minutes")
MEMORY_GB = positive_number("--memory-gb", "GiB", " (leave it out to use the free memory)")


def _parse_options(options: list[str] | None) -> dict:
    from medseg.config import parse_override

    return dict(parse_override(o) for o in options or [])


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Argument(help="YAML config (defaults: the phantom demo recipe)")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.epochs=5")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory (overrides output_dir)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/last.pt")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="start from a plan.yaml (medseg plan) instead of a config")
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help="training budget in minutes (default: the plan's, or the config's)", callback=MINUTES
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an existing non-empty output folder as a whole")
    ] = False,
) -> None:
    """Train a model from a YAML config or a plan; writes best.pt, last.pt, history.csv, curves.png.

    Several processes: ``torchrun --nproc_per_node=N -m medseg train CONFIG`` (train.batch_size is
    the global batch); rank 0 writes every file.
    """
    from medseg.config import load_config
    from medseg.config_validation import check_registry_names
    from medseg.engine.budget_checks import with_minutes
    from medseg.engine.distributed import is_main_process
    from medseg.engine.train import train as run_train
    from medseg.output_dirs import prepare_output_dir
    from medseg.report.figures import save_training_curves

    try:
        if plan_file is not None:
            if config is not None:
                raise ConfigError("give a CONFIG or --plan, not both")
            cfg = _config_from_plan(plan_file, out, minutes, set_ or [])
        else:
            cfg = load_config(config, set_)
            if minutes is not None:
                cfg = with_minutes(cfg, minutes)
        if out is not None:
            cfg.output_dir = str(out)
        allowed: set[str] = set()
        if resume:
            cfg, allowed = _resume_config(config, cfg, set_ or [])
        elif is_main_process():
            prepare_output_dir(cfg.output_dir, "--out", overwrite, "medseg train")
        cfg.train.progress = progress
        check_registry_names(cfg)
        result = run_train(cfg, resume=resume, console=console, allowed_changes=sorted(allowed))
        if not is_main_process():
            return
        save_training_curves(result.history, result.output_dir / "curves.png")
    except MedsegError as exc:
        _fail(exc)
    console.print(
        f"best validation Dice {result.best_dice:.4f} at epoch {result.best_epoch}; "
        f"checkpoints in {result.output_dir}"
    )


def _config_from_plan(
    plan_file: Path, out: Path | None, minutes: float | None, overrides: list[str]
) -> Config:
    from medseg.config import apply_overrides
    from medseg.engine.budget_checks import check_plan_affordable
    from medseg.plan import load_plan, plan_to_config

    plan = load_plan(plan_file)
    if minutes is not None:
        check_plan_affordable(plan, minutes)
    cfg = plan_to_config(plan, out or Path("runs/plan"), minutes=minutes)
    return apply_overrides(cfg, overrides) if overrides else cfg


def _resume_config(config: Path | None, cfg: Config, overrides: list[str]) -> tuple[Config, set[str]]:
    """The config to resume with, and the keys changed on purpose (``--set``).

    Without a config file the stored run's config is used (with the ``--set`` overrides); with
    one, every difference from the stored config must be a ``--set`` key (checked by ``train``).
    """
    from medseg.config import apply_overrides, config_from_dict
    from medseg.config_validation import override_keys
    from medseg.engine.checkpoint import load_checkpoint

    last = Path(cfg.output_dir) / "last.pt"
    if not last.is_file():
        raise ConfigError(f"{last}: nothing to resume (no last.pt in {cfg.output_dir})")
    if config is None:
        stored = config_from_dict(load_checkpoint(last)["config"])
        resumed = apply_overrides(stored, overrides)
        resumed.output_dir = cfg.output_dir
        cfg = resumed
    return cfg, override_keys(overrides)


@app.command()
def evaluate(
    checkpoint: Annotated[Path | None, typer.Argument(help="medseg checkpoint to evaluate")] = None,
    out: Annotated[Path, typer.Option(help="output directory for metrics.csv and summary.json")] = Path(
        "runs/evaluation"
    ),
    split: Annotated[str, typer.Option(help="with a checkpoint: 'test' or 'val'")] = "test",
    pred: Annotated[Path | None, typer.Option(help="prediction file or folder (any tool)")] = None,
    gt: Annotated[Path | None, typer.Option(help="ground-truth file or folder, matched by name")] = None,
    spacing: Annotated[str | None, typer.Option(help="mm per axis for PNG/TIFF, e.g. '0.5,0.5'")] = None,
    hd95: Annotated[str, typer.Option(help="'pooled' (medpy, the papers) or 'max' (MONAI)")] = "pooled",
    nsd_tol: Annotated[float, typer.Option("--nsd-tol", help="NSD tolerance in mm")] = 1.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda", callback=device_option)] = "auto",
    instances: Annotated[
        bool, typer.Option(help="--pred/--gt are instance-label volumes: COCO-style AP-50/AP-75/mAP")
    ] = False,
    scores: Annotated[Path | None, typer.Option(help="with --instances: CSV/JSON of id → score")] = None,
    key: Annotated[str, typer.Option(help="with --instances: HDF5 dataset key")] = "main",
    format_: Annotated[
        str,
        typer.Option("--format", help="'medseg', or 'cvpr24': --pred/--gt are MedSAM-on-laptop npz folders"),
    ] = "medseg",
    calibration: Annotated[
        bool, typer.Option(help="with a checkpoint: ECE/MCE/ACE/Brier/NLL, reliability bins, AURC")
    ] = False,
    bins: Annotated[int, typer.Option(help="with --calibration: equal-width bins over [0, 1]")] = 15,
    region_margin: Annotated[
        float, typer.Option(help="with --calibration: region = (pred | gt) dilated by this many voxels")
    ] = 5.0,
    uncertainty: Annotated[
        str | None, typer.Option(help="tta, mcdropout or both: sampled prediction (implies --calibration)")
    ] = None,
    samples: Annotated[int, typer.Option(help="MC-dropout samples")] = 20,
    tta_merge: Annotated[str, typer.Option(help="merge samples: 'probs' or 'logits' (nnU-Net)")] = "probs",
    label: Annotated[
        int | None, typer.Option("--label", help="--pred/--gt multi-label maps: score label value K only")
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="'all': --pred/--gt multi-label maps, one row per label")
    ] = None,
    resample_pred: Annotated[
        bool,
        typer.Option(
            "--resample-pred", help="resample --pred onto the --gt grid (nearest neighbour) when they differ"
        ),
    ] = False,
    mirror: Annotated[
        bool | None,
        typer.Option(
            "--mirror/--no-mirror",
            help="with a checkpoint: mirroring test-time augmentation (default: its inference.tta_flips)",
        ),
    ] = None,
    postprocess: Annotated[
        bool, typer.Option(help="with a checkpoint: apply its postprocessing (largest components)")
    ] = True,
) -> None:
    """Score a checkpoint on its test/val data, or score --pred against --gt made by any tool.

    Masks are read by the mask policy (docs: "Your data"): {0,1}, {0,255} or {0,k}; a
    multi-label map needs --label K or --labels all; the prediction must lie on the ground
    truth's grid (shape, spacing, origin, direction) unless --resample-pred.
    """
    from medseg.config import EvalConfig
    from medseg.engine.demo import results_table
    from medseg.engine.evaluate import evaluate_checkpoint, evaluate_files, write_evaluation
    from medseg.output_dirs import check_output_dir

    if hd95 not in ("pooled", "max"):
        _fail(ValueError(f"--hd95 must be 'pooled' or 'max', got '{hd95}'"))
    cfg = EvalConfig(hd95_mode=hd95, nsd_tolerance_mm=nsd_tol)
    try:
        check_output_dir(out, "--out")
        if mirror is not None and checkpoint is None:
            _fail(ConfigError("--mirror/--no-mirror apply to a checkpoint"))
        if format_ not in ("medseg", "cvpr24"):
            _fail(ValueError(f"--format must be 'medseg' or 'cvpr24', got '{format_}'"))
        if format_ == "cvpr24":
            if pred is None or gt is None:
                _fail(ValueError("--format cvpr24 needs --pred and --gt folders of npz files"))
            from medseg.metrics.cvpr24 import score_cases

            out.mkdir(parents=True, exist_ok=True)
            table = score_cases(pred, gt, out / "metrics.csv")
            console.print(
                f"{len(table)} cases: DSC {table['dsc'].mean():.4f}, NSD {table['nsd'].mean():.4f} "
                f"(challenge rules); wrote {out}/metrics.csv"
            )
            return
        if instances:
            if pred is None or gt is None:
                _fail(ValueError("--instances needs --pred and --gt (instance-label volumes)"))
            from medseg.metrics.instances import evaluate_instance_files

            summary = evaluate_instance_files(pred, gt, out, scores, key=key)
            console.print(
                f"AP-50 {summary['ap50']:.6f}  AP-75 {summary['ap75']:.6f}  mAP {summary['map']:.6f}  "
                f"({summary['n_gt']} true, {summary['n_pred']} predicted instances); "
                f"wrote {out}/ap.json and {out}/instances.csv"
            )
            return
        if pred is not None or gt is not None:
            if pred is None or gt is None:
                _fail(ValueError("--pred and --gt go together"))
            spacing_mm = parse_spacing_option(spacing) if spacing else None
            chosen = _evaluate_labels(label, labels)
            result = evaluate_files(pred, gt, cfg, spacing_mm, labels=chosen, resample_pred=resample_pred)
            csv_path, _ = write_evaluation(result, out)
            n_cases = int(result.per_case["gt_path"].nunique())
            _warn_missing_predictions(pred, result.summary["n_missing_pred"], n_cases)
            summary = result.summary["per_case"]
            console.print(
                f"{summary['n']} cases: Dice {summary['dice']['mean']:.4f} (median "
                f"{summary['dice']['median']:.4f}), HD95 {summary['hd95_mm']['mean']:.2f} mm; "
                f"wrote {csv_path}"
            )
            _print_classes(result.summary)
            return
        if checkpoint is None:
            _fail(ValueError("give a CHECKPOINT, or --pred and --gt"))
        if label is not None or labels is not None or resample_pred:
            _fail(ConfigError("--label, --labels and --resample-pred apply to --pred/--gt files"))
        from medseg.engine.calibrate import calibration_options

        calib = calibration_options(calibration, bins, region_margin, uncertainty, samples, tta_merge)
        result = evaluate_checkpoint(
            checkpoint,
            out,
            split=split,
            device=device,
            eval_cfg=cfg,
            calibration=calib,
            tta_flips=mirror,
            postprocess=postprocess,
        )
        console.print(results_table(result, title=f"{checkpoint} on {split}"))
        _print_classes(result.summary)
        console.print(f"wrote {out}/metrics.csv and summary.json")
        if calib is not None:
            console.print(f"wrote {out}/reliability.csv, calibration_cases.csv and calibration.json")
    except MedsegError as exc:
        _fail(exc)


def _print_classes(summary: dict) -> None:
    """Multi-class: each class's mean Dice and HD95 over their usable values (metrics_per_class.csv)."""
    for name, item in (summary.get("per_class") or {}).items():
        dice, hd95 = item["dice"].get("mean"), item["hd95_mm"].get("mean")
        shown = "—" if hd95 is None else f"{hd95:.2f} mm"
        console.print(
            f"  {name}: Dice {'—' if dice is None else f'{dice:.4f}'} (n {item['dice']['n']}), HD95 {shown}",
            highlight=False,
        )


def _evaluate_labels(label: int | None, labels: str | None) -> list[int] | str | None:
    """``--label K`` / ``--labels all`` → what :func:`evaluate_files` scores (None: binary masks)."""
    if label is not None and labels is not None:
        raise ConfigError("give --label K or --labels all, not both")
    if labels is not None and labels != "all":
        raise ConfigError(f"--labels {labels!r}: expected 'all' (or use --label K for one label)")
    if label is not None:
        if label <= 0:
            raise ConfigError(f"--label {label}: expected a positive label value (0 is the background)")
        return [label]
    return labels


def _warn_missing_predictions(pred: Path, n_missing: int, n_cases: int) -> None:
    """A console warning when ground-truth cases have no prediction (scored as empty masks)."""
    if n_missing == 0:
        return
    empty = " (the prediction folder holds no prediction files)" if n_missing == n_cases else ""
    console.print(
        f"[yellow]warning:[/] {n_missing} of {n_cases} ground-truth cases have no prediction in "
        f"{pred}{empty}; they are scored as empty predictions (missing_pred in metrics.csv)",
        soft_wrap=True,
        highlight=False,
    )


@app.command()
def predict(
    args: Annotated[
        list[Path],
        typer.Argument(
            help="CHECKPOINT then inputs (images, NIfTI/NRRD volumes, folders); with --model: inputs only"
        ),
    ],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/predictions"),
    probs: Annotated[bool, typer.Option(help="also write probability maps")] = False,
    overlays: Annotated[bool, typer.Option(help="also write overlay PNGs")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda", callback=device_option)] = "auto",
    model: Annotated[
        str | None, typer.Option(help="a promptable model from official weights: medsam or litemedsam")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="with --model: the MedSAM/LiteMedSAM weight file")
    ] = None,
    box: Annotated[
        list[str] | None, typer.Option(help="box prompt x0,y0,x1,y1 (3D: x0,y0,z0,x1,y1,z1); repeatable")
    ] = None,
    boxes: Annotated[Path | None, typer.Option(help="JSON/CSV of boxes per image file")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="with --model: model option, e.g. variant=tiny")
    ] = None,
    uncertainty: Annotated[
        str | None, typer.Option(help="tta, mcdropout or both: write _prob/_entropy/_expected_entropy/_mi")
    ] = None,
    samples: Annotated[int, typer.Option(help="MC-dropout samples")] = 20,
    tta_merge: Annotated[str, typer.Option(help="merge samples: 'probs' or 'logits' (nnU-Net)")] = "probs",
    backend: Annotated[
        str, typer.Option(help="torch, onnxruntime (an exported .onnx), or auto: by the file suffix")
    ] = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace outputs that already exist in OUT")] = False,
    format_: Annotated[
        str,
        typer.Option("--format", help="mask format: 'auto' (the input's; NIfTI for DICOM) or 'dicom-seg'"),
    ] = "auto",
    dicomweb: Annotated[
        str | None, typer.Option(help="DICOMweb base URL of a PACS: segment --study there, store the SEG")
    ] = None,
    study: Annotated[str | None, typer.Option(help="with --dicomweb: the StudyInstanceUID")] = None,
    series: Annotated[str | None, typer.Option(help="with --dicomweb: only this SeriesInstanceUID")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="with --dicomweb: write the SEG to --out, store nothing")
    ] = False,
    postprocess: Annotated[
        bool, typer.Option(help="apply the checkpoint's postprocessing (largest connected components)")
    ] = True,
    mirror: Annotated[
        bool | None,
        typer.Option(
            "--mirror/--no-mirror", help="mirroring test-time augmentation (default: the checkpoint's)"
        ),
    ] = None,
) -> None:
    """Segment images or volumes; masks keep the input geometry (NIfTI affine preserved).

    Outputs never overwrite each other (inputs sharing a name keep their relative folders) nor
    earlier outputs in OUT (pass --overwrite to replace them). A DICOM series is a folder of
    slices; `--format dicom-seg` writes a DICOM Segmentation that references it.
    `measurements.csv` lists each mask's volume (mL), diameter (mm) and components; a later
    predict into the same OUT adds its rows to it.

    `--uncertainty` writes float maps next to each mask: volumes in the input's format and
    geometry, 2D images as `.npy` arrays in the image's pixel grid.

    Promptable models (MedSAM, LiteMedSAM) take boxes: `--model litemedsam --checkpoint W --box
    x0,y0,x1,y1 image.png`, or a medseg checkpoint of a fine-tuned one followed by inputs and boxes.

    `--dicomweb URL --study UID` segments a study's image series on a PACS and stores each DICOM-SEG
    back (docs/pacs.md; credentials from MEDSEG_DICOMWEB_USER/PASSWORD, MEDSEG_DICOMWEB_TOKEN or
    netrc).
    """
    import numpy as np

    if dicomweb is not None or study is not None or series is not None or dry_run:
        _predict_dicomweb(args, dicomweb, study, series, dry_run, out, device)
        return

    from medseg.engine.predict import predict_files
    from medseg.export.runtime import load_predictor

    try:
        prompted = model is not None or box or boxes is not None
        if not prompted:
            if len(args) < 2:
                _fail(ValueError("give a CHECKPOINT and at least one input"))
            from medseg.engine.uncertainty import uncertainty_options

            sampled = uncertainty_options(uncertainty, samples, tta_merge)
            results = predict_files(
                args[0],
                args[1:],
                out,
                probs,
                overlays,
                device,
                uncertainty=sampled,
                backend=backend,
                overwrite=overwrite,
                output_format=format_,
                postprocess=postprocess,
                tta_flips=mirror,
            )
            for item in results:
                console.print(f"{item.input} → {item.mask}")
            return
        if uncertainty is not None:
            _fail(ValueError("--uncertainty needs a medseg checkpoint of a non-promptable model"))
        from medseg import models
        from medseg.data.prompts import parse_box, read_box_file
        from medseg.engine.inference import resolve_device
        from medseg.engine.promptable import predict_files_with_boxes

        if model is not None:
            options = _parse_options(option)
            if checkpoint is not None:
                options["checkpoint"] = str(checkpoint)
            if checkpoint is None:
                console.print("[yellow]warning:[/] no --checkpoint: the model has random weights")
            net = models.build(model, **options).to(resolve_device(device))
            inputs = list(args)
        else:
            net, _, _ = load_predictor(args[0], resolve_device(device), backend)
            inputs = list(args[1:])
        if not inputs:
            _fail(ValueError("no input images given"))
        box_array = np.stack([parse_box(b) for b in box]) if box else None
        table = read_box_file(boxes) if boxes is not None else None
        for source, target in predict_files_with_boxes(net, inputs, out, box_array, table, overwrite):
            console.print(f"{source} → {target}")
    except MedsegError as exc:
        _fail(exc)


def _predict_dicomweb(
    args: list[Path],
    url: str | None,
    study: str | None,
    series: str | None,
    dry_run: bool,
    out: Path,
    device: str,
) -> None:
    """``medseg predict CHECKPOINT --dicomweb URL --study UID``: one summary line per series."""
    from medseg.data.dicomweb import DicomwebServer
    from medseg.engine.pacs import load_pacs_model, predict_study

    if url is None or study is None:
        raise ConfigError("--study, --series and --dry-run go with --dicomweb URL --study UID")
    if len(args) != 1:
        raise ConfigError("with --dicomweb give only the CHECKPOINT: the images come from the server")
    model = load_pacs_model(args[0], device)
    outcomes = predict_study(DicomwebServer(url), model, study, out, series, dry_run, log=_log)
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        more = f" (and {len(failed) - 1} more series failed)" if len(failed) > 1 else ""
        raise MedsegError(f"{failed[0].error}{more}")


def _log(line: str) -> None:
    console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def watch(
    checkpoint: Annotated[Path, typer.Argument(help="medseg checkpoint (or ONNX export)")],
    dicomweb: Annotated[str, typer.Option(help="DICOMweb base URL of the PACS")],
    modality: Annotated[str | None, typer.Option(help="only series of this modality (CT, MR, ...)")] = None,
    series_description: Annotated[
        str | None, typer.Option(help="only series whose description matches (* and ? wildcards)")
    ] = None,
    body_part: Annotated[str | None, typer.Option(help="only series of this BodyPartExamined")] = None,
    once: Annotated[bool, typer.Option(help="one pass, then exit (cron jobs)")] = False,
    poll: Annotated[float, typer.Option(help="seconds between two searches")] = 60.0,
    retry: Annotated[
        float, typer.Option(help="seconds before a failed series is tried again (doubles)")
    ] = 30.0,
    out: Annotated[Path, typer.Option(help="where each series' SEG and report.json are kept")] = Path(
        "runs/watch"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Segment every new series on a PACS that matches the filters, once, and store its DICOM-SEG.

    A series that already has a SEG from this checkpoint is skipped (the server is asked, so a
    restart repeats nothing); a failed series is retried later, the others go on; Ctrl-C stops.
    Credentials: MEDSEG_DICOMWEB_USER/PASSWORD, MEDSEG_DICOMWEB_TOKEN or netrc (docs/pacs.md).
    """
    from medseg.data.dicomweb import DicomwebServer
    from medseg.engine.pacs import SeriesFilter, load_pacs_model
    from medseg.engine.pacs import watch as watch_series

    if poll <= 0 or retry <= 0:
        _fail(ValueError(f"--poll and --retry must be positive seconds, got {poll} and {retry}"))
    model = load_pacs_model(checkpoint, device)
    server = DicomwebServer(dicomweb)
    summary = watch_series(
        server,
        model,
        SeriesFilter(modality, series_description, body_part),
        out,
        once=once,
        poll_seconds=poll,
        retry_seconds=retry,
        log=_log,
    )
    if once and summary.failed:
        _fail(
            MedsegError(
                f"{summary.failed} series failed in this pass (see above); the next pass retries them"
            )
        )


@app.command()
def compare(
    grid_file: Annotated[Path, typer.Argument(help="grid YAML (see configs/compare_*.yaml)")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override for every run, e.g. train.epochs=2")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output directory (overrides the grid's output_dir)")
    ] = None,
    only: Annotated[list[str] | None, typer.Option(help="run only this run (repeatable)")] = None,
    dry_run: Annotated[bool, typer.Option(help="list the runs and exit")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run a grid (model × loss × optimizer × ...) on one split, resumably; paper-004 tables and plots."""
    from medseg.engine.compare import load_grid, run_grid
    from medseg.report.tables import markdown_table

    try:
        grid = load_grid(grid_file, set_ or [], out)
        if dry_run:
            for run in grid.runs:
                console.print(f"{run.name}: {run.overrides}")
            console.print(f"{len(grid.runs)} runs → {grid.output_dir}")
            return
        table = run_grid(grid, console=console, progress=progress, only=only)
    except MedsegError as exc:
        _fail(exc)
    console.print(
        markdown_table(
            table.sort_values("best_val_dice", ascending=False),
            {
                "run": "run",
                "best_val_dice": "best val DSC",
                "dice_mean": "DSC mean",
                "dice_median": "DSC median",
            },
        )
    )


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="run or evaluation folder (has metrics.csv)")],
    compare_dirs: Annotated[
        list[Path] | None,
        typer.Option("--compare", help="another folder scored on the same cases (repeatable)"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    worst: Annotated[int, typer.Option(help="overlays of the worst cases by Dice")] = 20,
    median: Annotated[int, typer.Option(help="overlays of the cases around the median Dice")] = 5,
    best: Annotated[int, typer.Option(help="overlays of the best cases by Dice")] = 5,
    level: Annotated[
        str | None, typer.Option(help="metrics.csv level to report (default: volumes, else images)")
    ] = None,
    tie: Annotated[float, typer.Option(help="compare: |Δ| counted as a tie")] = 1e-3,
    seed: Annotated[int, typer.Option(help="seed of the bootstrap CI and the strip-plot jitter")] = 0,
    overwrite: Annotated[bool, typer.Option(help="replace the HTML file if it exists")] = False,
) -> None:
    """A self-contained HTML report of a run or evaluation (provenance, summary, cases, overlays)."""
    import shlex

    from medseg.output_dirs import check_output_file
    from medseg.report.html import build_report

    dirs = [run_dir, *(compare_dirs or [])]
    command = "medseg report " + shlex.join(
        [str(run_dir), *[a for d in compare_dirs or [] for a in ("--compare", str(d))], "-o", str(out)]
    )
    try:
        check_output_file(out, "-o", overwrite)
        path = build_report(
            dirs,
            out,
            n_worst=worst,
            n_median=median,
            n_best=best,
            level=level,
            tie_tolerance=tie,
            seed=seed,
            command=command,
        )
    except (MedsegError, ValueError) as exc:
        _fail(exc)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/demo"),
    epochs: Annotated[int | None, typer.Option(help="override the number of epochs")] = None,
    n_train: Annotated[int, typer.Option(help="phantom training patients")] = 8,
    n_test: Annotated[int, typer.Option(help="phantom test patients")] = 4,
    seed: Annotated[int, typer.Option(help="seed for the phantom and training")] = 0,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    model: Annotated[str, typer.Option(help="'microsegnet' (tiny, AG-BCE) or 'unet'")] = "microsegnet",
) -> None:
    """Phantom (micro-US layout) → train MicroSegNet-tiny with AG-BCE on the CPU → both protocols, figures."""
    from medseg.engine.demo import run_demo

    try:
        run_demo(
            out,
            n_train=n_train,
            n_test=n_test,
            epochs=epochs,
            seed=seed,
            progress=progress,
            console=console,
            model=model,
        )
    except (MedsegError, ValueError) as exc:
        _fail(exc)


def _source_options(root: Path | None, option: list[str] | None) -> dict:
    options = _parse_options(option)
    if root is not None:
        options["root"] = str(root)
    return options


@app.command()
def plan(
    config: Annotated[
        Path | None, typer.Argument(help="a YAML config whose data section to plan for (or --source)")
    ] = None,
    source: Annotated[str | None, typer.Option(help="registered source name (medseg data sources)")] = None,
    root: Annotated[Path | None, typer.Option(help="data root in the source's published layout")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="source option key=value")
    ] = None,
    minutes: Annotated[float, typer.Option(help="wall-clock training budget", callback=MINUTES)] = 15.0,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda: the device the plan is for", callback=device_option)
    ] = "auto",
    memory_gb: Annotated[
        float | None,
        typer.Option(
            help="memory budget (default: free device memory, or available RAM)", callback=MEMORY_GB
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="the plan file to write")] = Path("plan.yaml"),
    modality: Annotated[
        str | None, typer.Option(help="ct, mr, us, ... when the files do not say (ct: a fixed HU window)")
    ] = None,
) -> None:
    """Fingerprint a data set's training cases and write an editable plan (plan.yaml) with reasons."""
    from medseg.config import load_config
    from medseg.engine.fit import data_config, plan_source
    from medseg.output_dirs import check_output_file

    try:
        check_output_file(out, "--out", overwrite=True)  # a plan is rewritten on purpose
        if (config is None) == (source is None):
            raise ConfigError("give either a CONFIG file or --source (with --root / -o options)")
        data = (
            load_config(config).data
            if config is not None
            else data_config(source, _source_options(root, option))  # type: ignore[arg-type]
        )
        memory = None if memory_gb is None else max(1, int(memory_gb * 2**30))
        plan_source(data, minutes, device, memory, out, console, modality)
    except (MedsegError, KeyError, TypeError) as exc:
        _fail(exc)


@app.command()
def fit(
    source: Annotated[str, typer.Option(help="registered source name (medseg data sources)")],
    root: Annotated[Path | None, typer.Option(help="data root in the source's published layout")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="source option key=value")
    ] = None,
    minutes: Annotated[
        float, typer.Option(help="wall-clock training budget (validation included)", callback=MINUTES)
    ] = 15.0,
    out: Annotated[Path, typer.Option(help="output folder: plan.yaml, best.pt, report.html")] = Path(
        "runs/fit"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda", callback=device_option)] = "auto",
    seed: Annotated[int, typer.Option(help="seed of the patient split and of training")] = 0,
    val_fraction: Annotated[float, typer.Option(help="share of the patients kept for validation")] = 0.2,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="edit the planned config, e.g. optim.lr=0.005")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    modality: Annotated[
        str | None, typer.Option(help="ct, mr, us, ... when the files do not say (ct: a fixed HU window)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace an existing non-empty OUT folder as a whole")
    ] = False,
) -> None:
    """Plan → train for --minutes → validate → OUT/report.html; OUT/best.pt is for medseg predict."""
    from medseg.engine.fit import fit as run_fit
    from medseg.provenance import command_line

    try:
        run_fit(
            source,
            _source_options(root, option),
            minutes,
            out,
            device=device,
            seed=seed,
            val_fraction=val_fraction,
            progress=progress,
            console=console,
            config_overrides=set_,
            modality=modality,
            overwrite=overwrite,
            command=command_line(),  # the report quotes the command as typed
        )
    except (MedsegError, KeyError, TypeError) as exc:
        _fail(exc)


def _print_registry(title: str, described: dict[str, str]) -> None:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("description")
    for name, doc in described.items():
        table.add_row(name, doc)
    console.print(table)


@app.command()
def models() -> None:
    """List the registered models."""
    from medseg import models as registry

    _print_registry("models", registry.describe())


@app.command()
def losses() -> None:
    """List the registered losses."""
    from medseg import losses as registry

    _print_registry("losses", registry.describe())


@app.command()
def optimizers() -> None:
    """List the registered optimizers and LR schedules."""
    from medseg import optim

    _print_registry("optimizers", optim.describe())
    _print_registry("schedulers", optim.describe_schedulers())


@export_app.command("onnx")
def export_onnx(
    checkpoint: Annotated[Path, typer.Argument(help="medseg checkpoint (.pt)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="ONNX file (default: the checkpoint's name, .onnx)")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="compare onnxruntime with PyTorch; write X.parity.json; fail if off")
    ] = False,
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's)")] = None,
    dynamic: Annotated[
        bool | None,
        typer.Option(
            "--dynamic/--static",
            help="spatial axes dynamic or fixed (default: dynamic when the model allows); batch is dynamic",
        ),
    ] = None,
    atol: Annotated[float, typer.Option(help="--check: absolute tolerance on logits")] = 1e-4,
    rtol: Annotated[float, typer.Option(help="--check: relative tolerance on logits")] = 1e-3,
) -> None:
    """Export a checkpoint to ONNX (SAM-style models: X.encoder.onnx + X.decoder.onnx), with metadata."""
    from medseg.export.onnx import export_onnx as run_export

    target = output if output is not None else checkpoint.with_suffix(".onnx")
    try:
        result = run_export(
            checkpoint, target, dynamic=dynamic, opset=opset, check=check, atol=atol, rtol=rtol
        )
    except MedsegError as exc:
        _fail(exc)
    axes = "dynamic batch and spatial axes" if result.dynamic_spatial else "dynamic batch, fixed spatial size"
    for path in result.paths:
        console.print(f"wrote {path} ({axes})")
    if result.parity is not None:
        summary = result.parity.to_dict()
        console.print(
            f"parity passed: max |Δlogit| {summary['max_abs_diff']:.3g}, "
            f"mean {summary['mean_abs_diff']:.3g}, "
            f"label agreement ≥ {summary['min_label_agreement']}, Dice ≥ {summary['min_dice']} "
            f"({len(result.parity.cases)} inputs); wrote {result.parity_path}"
        )
        console.print(f"real-image inputs: {result.parity.data_inputs}")


@data_app.command("sources")
def data_sources() -> None:
    """List the registered data sources."""
    from medseg.data.sources import SOURCES

    _print_registry("data sources", SOURCES.describe())


@data_app.command("inspect")
def data_inspect(
    source: Annotated[str, typer.Option(help="registered source name (medseg data sources)")],
    root: Annotated[Path | None, typer.Option(help="data root in the source's published layout")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="source option key=value")
    ] = None,
) -> None:
    """Cases, slices, sizes, spacing, mask coverage and annotator agreement of a data source."""
    from medseg.data.inspect import inspect_source, render_inspect
    from medseg.data.sources import build

    try:
        options = _parse_options(option)
        if root is not None:
            options["root"] = str(root)
        report = inspect_source(build(source, **options))
    except (MedsegError, KeyError, TypeError) as exc:
        _fail(exc)
    console.print(render_inspect(report))


@data_app.command("export")
def data_export(
    to: Annotated[str, typer.Option(help="layout to write: nnunet (nnU-Net v2 raw) or dicom (series)")],
    source: Annotated[str, typer.Option(help="registered source name (medseg data sources)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder that gets DatasetXXX_Name/ (nnUNet_raw)")],
    root: Annotated[Path | None, typer.Option(help="data root in the source's published layout")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="source option key=value")] = None,
    dataset_id: Annotated[int, typer.Option(help="nnU-Net dataset id (1..999)")] = 501,
    name: Annotated[str, typer.Option(help="dataset name (DatasetXXX_<name>)")] = "medseg",
    overwrite: Annotated[
        bool, typer.Option(help="replace an existing data set folder (or one with the same id) as a whole")
    ] = False,
) -> None:
    """Write a data source in another tool's layout: nnU-Net v2 (imagesTr, labelsTr, dataset.json),
    or DICOM (one CT-like series folder per volume, the mask as NIfTI beside it)."""
    from medseg.data.export_dicom import export_dicom
    from medseg.data.export_nnunet import export_nnunet
    from medseg.data.sources import build

    if to not in ("nnunet", "dicom"):
        _fail(ValueError(f"--to must be 'nnunet' or 'dicom', got '{to}'"))
    try:
        options = _parse_options(option)
        if root is not None:
            options["root"] = str(root)
        if to == "dicom":
            folders = export_dicom(build(source, **options), out, overwrite=overwrite)
            console.print(f"wrote {len(folders)} DICOM series to {out}")
            return
        folder = export_nnunet(build(source, **options), out, dataset_id, name, overwrite=overwrite)
    except (MedsegError, KeyError, TypeError) as exc:
        _fail(exc)
    console.print(f"wrote {folder} (dataset.json, imagesTr, labelsTr)")


@data_app.command("phantom")
def data_phantom(
    out: Annotated[Path, typer.Option(help="output root (micro-US Zenodo layout)")],
    n_train: Annotated[int, typer.Option(help="training patients")] = 8,
    n_test: Annotated[int, typer.Option(help="test patients")] = 4,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Write the built-in phantom to disk in the exact micro-US (Zenodo 10475293) layout."""
    from medseg.data.phantom import write_phantom_microus

    root = write_phantom_microus(out, n_train=n_train, n_test=n_test, seed=seed)
    console.print(f"wrote {n_train} train and {n_test} test phantom patients to {root}")


if __name__ == "__main__":
    app()
