"""The nnU-Net v2 arm of the budget benchmarks: nnU-Net through its own CLI, same clock.

:func:`run_nnunet` takes medseg's train / val samples and a budget in minutes and:

1. writes all of them (train AND val) to ``imagesTr``/``labelsTr`` of an nnU-Net raw data set with
   medseg's own exporter (:func:`medseg.data.export_nnunet.export_nnunet_samples`);
2. runs ``nnUNetv2_plan_and_preprocess`` (nnU-Net's own plans; only ``configuration`` is
   preprocessed);
3. writes ``splits_final.json`` so that fold 0 is exactly medseg's train / val split;
4. runs ``nnUNetv2_train ID CONF 0 -tr nnUNetTrainer_WallClock`` (``nnunet_wallclock_trainer.py``:
   nnU-Net's default trainer whose poly lr follows elapsed time / budget and which stops after the
   epoch in which the budget is spent; 50 train / 10 val iterations per epoch by default);
5. runs ``nnUNetv2_predict`` on the val images alone with ``checkpoint_final.pth`` (the final
   weights, as medseg's budget runs are scored; nnU-Net's default mirroring test-time augmentation
   is kept unless ``tta=False``: it is part of nnU-Net's default inference, and on the CPU it costs
   seconds to a minute per case, outside the training budget);
6. reads the predicted NIfTIs back into each val sample's ``target_mask`` shape.

Only the ``nnUNetv2_train`` call is the training budget; preprocessing and prediction are timed
separately (``preprocess_minutes``, ``predict_minutes``). nnU-Net's folders live under
``work_dir`` (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``); this data set id's
folders there are replaced on every run. The commands' output goes to ``work_dir/nnunet.log``
(and to ``console`` when one is given).

Needs the ``bench`` extra (``pip install -e .[bench]``, which brings ``nnunetv2``); the budget
scripts check :func:`nnunet_available` first.
"""

from __future__ import annotations

import copy
import filecmp
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.export_nnunet import (
    FILE_ENDING,
    case_identifiers,
    dataset_folder_name,
    export_nnunet_samples,
)
from medseg.data.io import read_image
from medseg.data.sample import Sample, assign_keys

TRAINER_FILE = Path(__file__).resolve().parent / "nnunet_wallclock_trainer.py"
TRAINER_NAME = "nnUNetTrainer_WallClock"
COMMANDS = ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict")
TAIL_LINES = 40  # lines of a failed command's output quoted in the error
# the trainer's last log line (nnunet_wallclock_trainer.py)
BUDGET_LINE = re.compile(r"budget spent: (\d+) epochs, (\d+) iterations, last step ended at ([0-9.]+) min")


@dataclass
class NNUNetResult:
    """What one nnU-Net budget run gives back.

    Attributes:
        predictions: each val sample's key (:attr:`Sample.key`: the case id for a case with one
            image, ``case/image`` for a case with several) → uint8 mask (binary, or class indices
            for a multi-class target) with that sample's ``target_mask`` shape.
        train_minutes: wall-clock minutes of the whole ``nnUNetv2_train`` process (its set-up, the
            budgeted epochs, checkpoint writing).
        epochs: epochs trained (the last one cut short when the budget ran out in it).
        iterations: training iterations (optimizer steps) in those epochs.
        step_minutes: minutes from the first epoch's start to the end of the last optimizer step
            (about the budget: the weights are final from there; the last epoch's validation and
            the checkpoint writing follow).
        curve: (minutes since the first epoch began, nnU-Net's EMA pseudo Dice) at each epoch's end,
            from ``checkpoint_final.pth``'s log.
        plan_summary: nnU-Net's plan for the configuration, e.g. ``"2d, patch 256x256, batch 12,
            spacing 1x1"``.
        preprocess_minutes: wall-clock minutes of ``nnUNetv2_plan_and_preprocess``.
        predict_minutes: wall-clock minutes of ``nnUNetv2_predict`` on the val cases.
        work_dir: the run's folder (data, plans, checkpoints, ``nnunet.log``).
    """

    predictions: dict[str, np.ndarray]
    train_minutes: float
    epochs: int
    curve: list[tuple[float, float]]
    plan_summary: str
    iterations: int = 0
    step_minutes: float = 0.0
    preprocess_minutes: float = 0.0
    predict_minutes: float = 0.0
    work_dir: Path = field(default_factory=Path)


class NNUNetError(RuntimeError):
    """An nnU-Net command failed (the message names it and quotes its last lines)."""


# --------------------------------------------------------------------------- environment


def _bin_dir() -> Path:
    return Path(sys.executable).parent  # the venv's bin, where pip put nnU-Net's entry points


def _command(name: str) -> str:
    """Full path of an nnU-Net entry point: the venv's bin first, then PATH."""
    local = _bin_dir() / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise NNUNetError(f"{name} not found in {_bin_dir()} or on PATH (pip install -e .[bench])")
    return found


def nnunet_available() -> bool:
    """nnunetv2 is importable and its CLI entry points are in the venv's bin (or on PATH)."""
    if importlib.util.find_spec("nnunetv2") is None:
        return False
    return all((_bin_dir() / c).is_file() or shutil.which(c) is not None for c in COMMANDS)


def nnunet_environment(
    work_dir: Path,
    minutes: float,
    iterations_per_epoch: int = 50,
    val_iterations_per_epoch: int = 10,
    n_proc_da: int | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The subprocess environment: nnU-Net's three folders under ``work_dir``, the budget, no
    ``torch.compile`` (on the CPU it would eat the budget) and ``nnUNet_n_proc_DA`` augmentation
    workers (default: half the cores, at least 1, so that the training process keeps the rest)."""
    env = dict(os.environ if base is None else base)
    cores = os.cpu_count() or 1
    env.update(
        {
            "nnUNet_raw": str(work_dir / "nnUNet_raw"),
            "nnUNet_preprocessed": str(work_dir / "nnUNet_preprocessed"),
            "nnUNet_results": str(work_dir / "nnUNet_results"),
            "nnUNet_compile": "f",
            "nnUNet_n_proc_DA": str(n_proc_da if n_proc_da is not None else max(1, cores // 2)),
            "MEDSEG_NNUNET_MINUTES": repr(float(minutes)),
            "MEDSEG_NNUNET_ITERS": str(int(iterations_per_epoch)),
            "MEDSEG_NNUNET_VAL_ITERS": str(int(val_iterations_per_epoch)),
        }
    )
    # the entry points' own interpreter, whatever PATH the caller has
    env["PATH"] = os.pathsep.join([str(_bin_dir()), env.get("PATH", "")])
    return env


def install_trainer() -> Path:
    """Copy ``nnunet_wallclock_trainer.py`` into nnU-Net's trainer folder (the only place
    ``nnUNetv2_train``/``_predict`` look for ``-tr`` classes); a no-op when it is already there."""
    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise NNUNetError("nnunetv2 is not installed (pip install -e .[bench])")
    target = (
        Path(next(iter(spec.submodule_search_locations))) / "training" / "nnUNetTrainer" / TRAINER_FILE.name
    )
    if not (target.is_file() and filecmp.cmp(TRAINER_FILE, target, shallow=False)):
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(TRAINER_FILE, tmp)
        tmp.replace(target)  # atomic: a concurrent nnU-Net import never sees half a file
    return target


# --------------------------------------------------------------------------- running commands


def run_command(cmd: Sequence[str], env: Mapping[str, str], log_path: Path, console: Any = None) -> float:
    """Run ``cmd``, appending its output to ``log_path`` (and printing it on ``console``); the
    wall-clock seconds it took. A non-zero exit raises :class:`NNUNetError` with the command and
    its last lines."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail.append(line.rstrip("\n"))
            if console is not None:
                console.print(line.rstrip("\n"), markup=False, highlight=False)
        rc = proc.wait()
    seconds = time.perf_counter() - start
    if rc != 0:
        quoted = "\n".join(tail)
        raise NNUNetError(
            f"{' '.join(cmd)} failed (exit {rc}); its last lines (all in {log_path}):\n{quoted}"
        )
    return seconds


# --------------------------------------------------------------------------- data in and out


def sample_keys(samples: Sequence[Sample]) -> list[str]:
    """The samples' keys: their own when set and unique, else :func:`assign_keys` on copies (the
    caller's samples are not modified)."""
    keys = [s.key for s in samples]
    if all(keys) and len(set(keys)) == len(keys):
        return keys
    return assign_keys([copy.copy(s) for s in samples])


def split_identifiers(train: Sequence[Sample], val: Sequence[Sample]) -> tuple[list[str], list[str]]:
    """nnU-Net case ids of the train and val samples, as :func:`export_nnunet_samples` names them
    when given ``[*train, *val]``."""
    ids = case_identifiers([*train, *val])
    return ids[: len(train)], ids[len(train) :]


def write_splits(preprocessed_dataset: Path, train_ids: Sequence[str], val_ids: Sequence[str]) -> Path:
    """``splits_final.json`` with one fold (fold 0) = this train / val split."""
    overlap = sorted(set(train_ids) & set(val_ids))
    if overlap:
        raise ValueError(f"cases on both sides of the split: {overlap[:5]}")
    path = preprocessed_dataset / "splits_final.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps([{"train": list(train_ids), "val": list(val_ids)}], indent=2), encoding="utf-8"
    )
    return path


def read_prediction(path: Path, sample: Sample) -> np.ndarray:
    """nnU-Net's predicted label file → a uint8 mask with ``sample.target_mask``'s shape.

    The exporter wrote a 2D sample as a one-slice ``1×H×W`` volume and a 3D one as ``D×H×W``;
    nnU-Net writes its prediction with the input's geometry, so medseg's reader gives those shapes
    back. A binary target comes back as {0, 1}, a multi-class one as class indices.
    """
    array, _, _ = read_image(path)
    if sample.ndim == 2 and array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    shape = sample.spatial_shape
    if array.shape != shape:
        raise NNUNetError(f"{path}: prediction has shape {array.shape}, the sample {shape}")
    if sample.meta.get("num_classes") is None:
        return (array != 0).astype(np.uint8)
    return array.astype(np.uint8)


def curve_from_logging(logging: Mapping[str, Sequence[float]]) -> list[tuple[float, float]]:
    """(minutes since the first epoch began, EMA pseudo Dice) per epoch from nnU-Net's logger state
    (``checkpoint["logging"]``: ``epoch_start_timestamps``, ``epoch_end_timestamps``,
    ``ema_fg_dice``)."""
    starts = list(logging.get("epoch_start_timestamps", []))
    ends = list(logging.get("epoch_end_timestamps", []))
    ema = list(logging.get("ema_fg_dice", []))
    if not starts:
        return []
    n = min(len(ends), len(ema))
    return [(float(ends[i] - starts[0]) / 60.0, float(ema[i])) for i in range(n)]


def parse_budget_line(log_text: str) -> tuple[int, int, float] | None:
    """(epochs, iterations, minutes to the last step's end) from the wall-clock trainer's last log
    line, if there is one."""
    found = BUDGET_LINE.findall(log_text)
    return (int(found[-1][0]), int(found[-1][1]), float(found[-1][2])) if found else None


def read_curve(checkpoint: Path) -> list[tuple[float, float]]:
    """:func:`curve_from_logging` of an nnU-Net checkpoint."""
    import torch

    # nnU-Net's own checkpoint (plans, init args): not loadable with weights_only
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return curve_from_logging(state["logging"])


def summarize_plan(plans: Mapping[str, Any], configuration: str) -> str:
    """``"2d, patch 256x256, batch 12, spacing 1x1"`` from ``nnUNetPlans.json``."""
    conf = plans["configurations"][configuration]

    def fmt(values: Sequence[float]) -> str:
        return "x".join(f"{v:g}" for v in values)

    return (
        f"{configuration}, patch {fmt(conf['patch_size'])}, batch {conf['batch_size']}, "
        f"spacing {fmt(conf['spacing'])}"
    )


# --------------------------------------------------------------------------- the run


def run_nnunet(
    train: list[Sample],
    val: list[Sample],
    minutes: float,
    work_dir: Path,
    configuration: str = "2d",
    dataset_id: int = 990,
    name: str = "medsegbench",
    device: str = "cpu",
    console: Any = None,
    iterations_per_epoch: int = 50,
    val_iterations_per_epoch: int = 10,
    tta: bool = True,
    n_proc: int | None = None,
) -> NNUNetResult:
    """Train nnU-Net v2 on ``train`` for ``minutes`` of wall-clock time (validating on ``val``, as
    its fold 0) and predict ``val`` with the final weights. See the module docstring.

    Args:
        train, val: medseg samples (whole images / volumes) with masks.
        minutes: the training budget (``nnUNetTrainer_WallClock``'s lr schedule and stop).
        work_dir: the run's folder (created; this data set id's nnU-Net folders are replaced).
        configuration: nnU-Net configuration (``2d``, ``3d_fullres``, ...).
        dataset_id, name: nnU-Net's ``DatasetXXX_name``.
        device: ``cpu``, ``cuda`` or ``mps`` (nnU-Net's ``-device``).
        console: a ``rich`` console to echo nnU-Net's output on (it always goes to
            ``work_dir/nnunet.log``).
        iterations_per_epoch, val_iterations_per_epoch: the trainer's epoch length.
        tta: nnU-Net's mirroring test-time augmentation at prediction (its default).
        n_proc: processes for preprocessing, augmentation and prediction export (default: half the
            cores, at least 1).
    """
    if not nnunet_available():
        raise NNUNetError("nnU-Net v2 is not installed (pip install -e .[bench])")
    if not train or not val:
        raise ValueError("run_nnunet needs train and val samples")
    work_dir = Path(work_dir).resolve()
    folder = dataset_folder_name(dataset_id, name)
    env = nnunet_environment(
        work_dir, minutes, iterations_per_epoch, val_iterations_per_epoch, n_proc_da=n_proc
    )
    procs = env["nnUNet_n_proc_DA"]
    raw, preprocessed, results = (
        Path(env[k]) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
    )
    for root in (raw, preprocessed, results):
        shutil.rmtree(root / folder, ignore_errors=True)  # a stale plan or checkpoint would be reused
    log = work_dir / "nnunet.log"
    log.unlink(missing_ok=True)

    dataset = export_nnunet_samples(
        [*train, *val],
        raw,
        dataset_id,
        name,
        description=f"medseg budget benchmark: {len(train)} train + {len(val)} val cases",
    )
    train_ids, val_ids = split_identifiers(train, val)

    preprocess_s = run_command(
        [
            _command("nnUNetv2_plan_and_preprocess"),
            "-d",
            str(dataset_id),
            "-c",
            configuration,
            "--verify_dataset_integrity",
            "-npfp",
            procs,
            "-np",
            procs,
        ],
        env,
        log,
        console,
    )
    plans = json.loads((preprocessed / folder / "nnUNetPlans.json").read_text(encoding="utf-8"))
    write_splits(preprocessed / folder, train_ids, val_ids)

    install_trainer()
    train_s = run_command(
        [
            _command("nnUNetv2_train"),
            str(dataset_id),
            configuration,
            "0",
            "-tr",
            TRAINER_NAME,
            "-device",
            device,
        ],
        env,
        log,
        console,
    )
    model_dir = results / folder / f"{TRAINER_NAME}__nnUNetPlans__{configuration}" / "fold_0"
    checkpoint = model_dir / "checkpoint_final.pth"
    curve = read_curve(checkpoint)
    logs = sorted(model_dir.glob("training_log_*.txt"))
    counts = parse_budget_line(logs[-1].read_text(encoding="utf-8", errors="replace")) if logs else None

    # nnUNetv2_predict takes a folder: give it the val images alone
    pred_in, pred_out = work_dir / "predict_input", work_dir / "predict_output"
    for d in (pred_in, pred_out):
        shutil.rmtree(d, ignore_errors=True)
    pred_in.mkdir(parents=True)
    for identifier in val_ids:
        for image in sorted((dataset / "imagesTr").glob(f"{identifier}_[0-9][0-9][0-9][0-9]{FILE_ENDING}")):
            shutil.copyfile(image, pred_in / image.name)
    predict_cmd = [
        _command("nnUNetv2_predict"),
        "-i",
        str(pred_in),
        "-o",
        str(pred_out),
        "-d",
        str(dataset_id),
        "-c",
        configuration,
        "-f",
        "0",
        "-tr",
        TRAINER_NAME,
        "-chk",
        checkpoint.name,
        "-device",
        device,
        "-npp",
        procs,
        "-nps",
        procs,
        "--disable_progress_bar",
    ]
    if not tta:
        predict_cmd.append("--disable_tta")
    predict_s = run_command(predict_cmd, env, log, console)

    predictions = {
        key: read_prediction(pred_out / f"{identifier}{FILE_ENDING}", sample)
        for key, identifier, sample in zip(sample_keys(val), val_ids, val, strict=True)
    }
    return NNUNetResult(
        predictions=predictions,
        train_minutes=train_s / 60.0,
        epochs=counts[0] if counts else len(curve),
        curve=curve,
        plan_summary=summarize_plan(plans, configuration),
        iterations=counts[1] if counts else 0,
        step_minutes=counts[2] if counts else 0.0,
        preprocess_minutes=preprocess_s / 60.0,
        predict_minutes=predict_s / 60.0,
        work_dir=work_dir,
    )
