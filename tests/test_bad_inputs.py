"""The bad-input catalogue (issues 17 and 25): small files written by hand, the CLI run on them, the outcome.

Every case is a row of :data:`CASES`: a function that writes its files and returns the command
line, and the expected outcome:

* ``error``: exit code 2 and a one-line message matching ``expect`` (it names the file and says
  the problem), no traceback;
* ``score``: exit code 0 and ``check`` confirms the number (a hand-computed value, or the
  documented value of the policy);
* ``warn``: as ``score``, and a ``warning:`` line matching ``expect`` (a result that is right but
  probably not what was meant).

A case may also have ``keep``: the files that must survive the command (earlier results, no
0-byte output); and ``skip``: the reason it cannot run on this machine (no root for a tmpfs).

Each run is classified as a clear error, a correct result, a silent wrong result (exit 0 with a
wrong or unchecked number, or exit 0 where an error was expected), a lost file (``keep`` fails),
an internal error (exit 1), an unclear error or a traceback; the catalogue must have none of the
last five. ``python tests/test_bad_inputs.py`` (or ``pytest tests/test_bad_inputs.py -s``) prints
the table (each case's message) and the counts.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image
from typer.testing import CliRunner, Result

from medseg.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

# --- small files ------------------------------------------------------------------------------


def nii(
    path: Path, zyx: np.ndarray, spacing_xyz=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), affine=None
) -> Path:
    """A NIfTI of a ``[D×]H×W`` array (medseg order) with the given voxel size and origin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(zyx).T
    if affine is None:
        affine = np.diag([*spacing_xyz[: data.ndim], *([1.0] * (4 - data.ndim))])
        affine[: len(origin), 3] = origin
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def png(path: Path, array: np.ndarray, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path, **save)
    return path


def mha(path: Path, yx: np.ndarray, spacing_xy=(0.5, 0.25)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(yx))
    image.SetSpacing(spacing_xy)
    sitk.WriteImage(image, str(path))
    return path


def cube(shift: int = 0) -> np.ndarray:
    m = np.zeros((4, 16, 16), np.uint8)
    m[1:3, 4 + shift : 10 + shift, 4:10] = 1
    return m


def square(shift: int = 0, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[8 + shift : 20 + shift, 8:20] = 1
    return m


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Hand formula 2|A∩B| / (|A| + |B|)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def evaluate_args(pred: Path, gt: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), *extra]


def metrics(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "metrics.csv")


def dice_is(expected: float) -> Callable[[Path, Result], bool]:
    def check(tmp: Path, result: Result) -> bool:
        table = metrics(tmp / "eval")
        return len(table) == 1 and abs(float(table["dice"].iloc[0]) - expected) < 1e-6

    return check


# --- the cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[str]]  # writes the files, returns the CLI arguments
    outcome: str  # "error", "score" or "warn"
    expect: str = ""  # error / warn: regex the message must match (file name and problem)
    check: Callable[[Path, Result], bool] | None = None  # score / warn: the number is right
    keep: Callable[[Path], bool] | None = None  # the files that must survive the command
    skip: Callable[[Path], str | None] | None = None  # why the case cannot run here (or None)


CASES: list[Case] = []


def case(  # noqa: ANN201
    name: str,
    outcome: str,
    expect: str = "",
    check: Callable[[Path, Result], bool] | None = None,
    keep: Callable[[Path], bool] | None = None,
    skip: Callable[[Path], str | None] | None = None,
):
    def register(make: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(name, make, outcome, expect, check, keep, skip))
        return make

    return register


def _gt_pred_nii(tmp: Path, pred_array: np.ndarray, **pred_geometry: object) -> list[str]:
    gt = nii(tmp / "gt.nii.gz", cube())
    pred = nii(tmp / "pred.nii.gz", pred_array, **pred_geometry)  # type: ignore[arg-type]
    return evaluate_args(pred, gt, tmp / "eval")


# 1. mask values
for label, value in (("nan", np.nan), ("inf", np.inf)):

    @case(f"mask value {label} in a NIfTI prediction", "error", r"pred\.nii\.gz: mask holds \d+ NaN/inf")
    def _(tmp: Path, value: float = value) -> list[str]:
        arr = cube(1).astype(np.float32)
        arr[0, 0, 0] = value
        return _gt_pred_nii(tmp, arr)


@case("mask value NaN in a NIfTI ground truth", "error", r"gt\.nii\.gz: mask holds 1 NaN/inf")
def _(tmp: Path) -> list[str]:
    arr = cube().astype(np.float32)
    arr[0, 0, 0] = np.nan
    gt = nii(tmp / "gt.nii.gz", arr)
    return evaluate_args(nii(tmp / "pred.nii.gz", cube()), gt, tmp / "eval")


@case(
    "mask value -1 in a NIfTI prediction", "error", r"pred\.nii\.gz: mask holds negative values \{-1, 0, 1\}"
)
def _(tmp: Path) -> list[str]:
    arr = cube(1).astype(np.int16)
    arr[0, 0, 0] = -1
    return _gt_pred_nii(tmp, arr)


@case(
    "mask value 0.3 in a NIfTI prediction",
    "error",
    r"pred\.nii\.gz: mask holds non-integer values \{0, 0\.3, 1\}",
)
def _(tmp: Path) -> list[str]:
    arr = cube(1).astype(np.float32)
    arr[0, 0, 0] = 0.3
    return _gt_pred_nii(tmp, arr)


@case("probability map as a prediction", "error", r"pred\.nii\.gz: mask holds non-integer values")
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1) * np.float32(0.8) + np.float32(0.1))


@case("JPEG copy of a PNG prediction", "error", r"pred\.jpg: JPEG is refused for masks: its lossy")
def _(tmp: Path) -> list[str]:
    gt = png(tmp / "gt.png", square() * 255)
    pred = png(tmp / "pred.jpg", square(2) * 255, quality=75)
    return evaluate_args(pred, gt, tmp / "eval", "--spacing", "1,1")


@case("JPEG ground truth", "error", r"gt\.jpeg: JPEG is refused for masks")
def _(tmp: Path) -> list[str]:
    gt = png(tmp / "gt.jpeg", square() * 255)
    pred = png(tmp / "pred.png", square(2) * 255)
    return evaluate_args(pred, gt, tmp / "eval", "--spacing", "1,1")


@case("PNG masks 0/255", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    return evaluate_args(
        png(tmp / "p.png", square(2) * 255),
        png(tmp / "g.png", square() * 255),
        tmp / "eval",
        "--spacing",
        "1,1",
    )


@case("PNG masks 0/1", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    return evaluate_args(
        png(tmp / "p.png", square(2)), png(tmp / "g.png", square()), tmp / "eval", "--spacing", "1,1"
    )


@case("PNG prediction 0/1 against ground truth 0/255", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    return evaluate_args(
        png(tmp / "p.png", square(2)), png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1"
    )


@case("NIfTI single label {0, 3}", "score", check=dice_is(dice(cube(1), cube())))
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1) * 3)


@case("NIfTI float mask {0.0, 1.0}", "score", check=dice_is(dice(cube(1), cube())))
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1).astype(np.float32))


@case("RGB prediction drawn in green", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 1] = square(2) * 255
    return evaluate_args(
        png(tmp / "p.png", rgb), png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1"
    )


@case("RGB ground truth drawn in blue", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 2] = square() * 200
    return evaluate_args(
        png(tmp / "p.png", square(2) * 255), png(tmp / "g.png", rgb), tmp / "eval", "--spacing", "1,1"
    )


@case(
    "RGBA prediction, opaque alpha everywhere (alpha ignored)",
    "score",
    check=dice_is(dice(square(2), square())),
)
def _(tmp: Path) -> list[str]:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = square(2) * 255
    rgba[..., 3] = 255
    return evaluate_args(
        png(tmp / "p.png", rgba), png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1"
    )


@case("grey+alpha (LA) prediction", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    la = np.zeros((32, 32, 2), np.uint8)
    la[..., 0] = square(2) * 255
    la[..., 1] = 255
    p = tmp / "p.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(la, mode="LA").save(p)
    return evaluate_args(p, png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1")


@case(
    "anti-aliased RGB prediction (edge values 0..255)", "error", r"p\.png: colour mask channel 0 holds values"
)
def _(tmp: Path) -> list[str]:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = square(2) * 255
    rgb[7, 8:20, 0] = 128
    return evaluate_args(
        png(tmp / "p.png", rgb), png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1"
    )


@case(
    "anti-aliased grey PNG prediction {0, 128, 255}",
    "error",
    r"p\.png: mask holds several labels \{0, 128, 255\}.*--label K",
)
def _(tmp: Path) -> list[str]:
    grey = square(2) * 255
    grey[7, 8:20] = 128
    return evaluate_args(
        png(tmp / "p.png", grey), png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1"
    )


@case("palette PNG 0/1 (DRIVE 2nd_manual style)", "score", check=dice_is(dice(square(2), square())))
def _(tmp: Path) -> list[str]:
    image = Image.fromarray(square(2), mode="P")
    image.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    p = tmp / "p.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    image.save(p)
    return evaluate_args(p, png(tmp / "g.png", square() * 255), tmp / "eval", "--spacing", "1,1")


def _multi_label() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((4, 16, 16), np.uint8)
    gt[1:3, 2:6, 2:6] = 1
    gt[1:3, 9:14, 9:14] = 2
    pred = np.zeros_like(gt)
    pred[1:3, 2:6, 3:7] = 1
    pred[1:3, 9:14, 9:13] = 2
    return gt, pred


@case(
    "multi-label maps without --label",
    "error",
    r"gt\.nii\.gz: mask holds several labels \{0, 1, 2\}.*--label K.*--labels all",
)
def _(tmp: Path) -> list[str]:
    gt, pred = _multi_label()
    return evaluate_args(nii(tmp / "pred.nii.gz", pred), nii(tmp / "gt.nii.gz", gt), tmp / "eval")


def _label_dice(label: int) -> float:
    gt, pred = _multi_label()
    return dice(pred == label, gt == label)


@case("multi-label maps with --label 2", "score", check=dice_is(_label_dice(2)))
def _(tmp: Path) -> list[str]:
    gt, pred = _multi_label()
    return evaluate_args(
        nii(tmp / "pred.nii.gz", pred), nii(tmp / "gt.nii.gz", gt), tmp / "eval", "--label", "2"
    )


def _per_label_rows(tmp: Path, result: Result) -> bool:
    table = pd.read_csv(tmp / "eval" / "metrics_per_class.csv").set_index("class_value")
    mean = (_label_dice(1) + _label_dice(2)) / 2  # metrics.csv: the case's mean over the labels
    return (
        sorted(table.index) == [1, 2]
        and all(abs(float(table.loc[k, "dice"]) - _label_dice(k)) < 1e-6 for k in (1, 2))
        and abs(float(metrics(tmp / "eval")["dice"].iloc[0]) - mean) < 1e-6
    )


@case("multi-label maps with --labels all", "score", check=_per_label_rows)
def _(tmp: Path) -> list[str]:
    gt, pred = _multi_label()
    return evaluate_args(
        nii(tmp / "pred.nii.gz", pred), nii(tmp / "gt.nii.gz", gt), tmp / "eval", "--labels", "all"
    )


@case("--labels with a value other than all", "error", r"--labels 'two': expected 'all'")
def _(tmp: Path) -> list[str]:
    return [*_gt_pred_nii(tmp, cube(1)), "--labels", "two"]


@case("--label 0", "error", r"--label 0: expected a positive label value")
def _(tmp: Path) -> list[str]:
    return [*_gt_pred_nii(tmp, cube(1)), "--label", "0"]


@case(
    "--labels all with a checkpoint instead of --pred/--gt",
    "error",
    r"--label, --labels and --resample-pred apply",
)
def _(tmp: Path) -> list[str]:
    return ["evaluate", str(_random_checkpoint(tmp)), "--labels", "all", "--out", str(tmp / "eval")]


# 2. geometry
@case(
    "prediction spacing (0.5, 0.5, 5) against (1, 1, 2)",
    "error",
    r"pred\.nii\.gz: prediction and ground truth are on different grids \(spacing differ\)"
    r".*gt\.nii\.gz.*spacing \(1, 1, 2\)",
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1), spacing_xyz=(0.5, 0.5, 5.0))


@case(
    "prediction origin 100 mm away",
    "error",
    r"pred\.nii\.gz: .*different grids \(origin differ\).*origin \(-100, 0, 0\).*gt\.nii\.gz",
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1), origin=(100.0, 0.0, 0.0))


@case("prediction direction flipped", "error", r"pred\.nii\.gz: .*different grids \(direction differ\)")
def _(tmp: Path) -> list[str]:
    affine = np.diag([-1.0, 1.0, 2.0, 1.0])
    return _gt_pred_nii(tmp, cube(1), affine=affine)


@case(
    "prediction shape differs",
    "error",
    r"pred\.nii\.gz: .*different grids \(shape differ\).*shape \(4, 16, 18\).*shape \(4, 16, 16\)",
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, np.pad(cube(1), ((0, 0), (0, 0), (0, 2))))


@case("PNG prediction of another size", "error", r"p\.png: .*different grids \(shape differ\)")
def _(tmp: Path) -> list[str]:
    return evaluate_args(
        png(tmp / "p.png", square(2, 40) * 255),
        png(tmp / "g.png", square() * 255),
        tmp / "eval",
        "--spacing",
        "1,1",
    )


@case("origin off by 1e-5 mm (float32 header noise)", "score", check=dice_is(dice(cube(1), cube())))
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, cube(1), origin=(1e-5, 0.0, 0.0))


def _resampled(tmp: Path, result: Result) -> bool:
    table = metrics(tmp / "eval")
    return (
        bool(table["pred_resampled"].iloc[0])
        and abs(float(table["dice"].iloc[0]) - dice(cube(1), cube())) < 1e-6
    )


@case("--resample-pred onto the ground-truth grid", "score", check=_resampled)
def _(tmp: Path) -> list[str]:
    fine = np.repeat(np.repeat(cube(1), 2, axis=1), 2, axis=2)  # the same object at 0.5 mm in-plane
    gt = nii(tmp / "gt.nii.gz", cube())
    pred = nii(tmp / "pred.nii.gz", fine, spacing_xyz=(0.5, 0.5, 2.0), origin=(-0.25, -0.25, 0.0))
    return [*evaluate_args(pred, gt, tmp / "eval"), "--resample-pred"]


@case("--resample-pred on PNG files", "error", r"\.png: 2D image files carry no geometry to resample")
def _(tmp: Path) -> list[str]:
    return [
        *evaluate_args(
            png(tmp / "p.png", square(2) * 255),
            png(tmp / "g.png", square() * 255),
            tmp / "eval",
            "--spacing",
            "1,1",
        ),
        "--resample-pred",
    ]


# 3. 2D NIfTI / NRRD / MHA
def _hd_mm(expected_dice: float, expected_hd: float) -> Callable[[Path, Result], bool]:
    def check(tmp: Path, result: Result) -> bool:
        row = metrics(tmp / "eval").iloc[0]
        return abs(row["dice"] - expected_dice) < 1e-6 and abs(row["hd_mm"] - expected_hd) < 1e-6

    return check


@case(
    "2D NIfTI pair (H×W), spacing from the header", "score", check=_hd_mm(dice(square(2), square()), 2 * 0.5)
)
def _(tmp: Path) -> list[str]:
    # a 2-row shift along y at 0.5 mm per row: HD = 1.0 mm
    pred = nii(tmp / "pred.nii.gz", square(2), spacing_xyz=(0.25, 0.5))
    gt = nii(tmp / "gt.nii.gz", square(), spacing_xyz=(0.25, 0.5))
    return evaluate_args(pred, gt, tmp / "eval")


@case("2D MHA pair", "score", check=_hd_mm(dice(square(2), square()), 2 * 0.25))
def _(tmp: Path) -> list[str]:
    pred = mha(tmp / "pred.mha", square(2), spacing_xy=(0.5, 0.25))
    gt = mha(tmp / "gt.mha", square(), spacing_xy=(0.5, 0.25))
    return evaluate_args(pred, gt, tmp / "eval")


@case("2D NRRD pair", "score", check=_hd_mm(dice(square(2), square()), 2 * 0.25))
def _(tmp: Path) -> list[str]:
    pred = mha(tmp / "pred.nrrd", square(2), spacing_xy=(0.5, 0.25))
    gt = mha(tmp / "gt.nrrd", square(), spacing_xy=(0.5, 0.25))
    return evaluate_args(pred, gt, tmp / "eval")


@case(
    "2D NIfTI prediction against a 3D ground truth",
    "error",
    r"pred\.nii\.gz: .*different grids \(shape differ\)",
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii(tmp, square(2, 16))


# 4. files the loaders refuse
@case("ground-truth file missing", "error", r"missing\.nii\.gz: prediction/ground-truth path not found")
def _(tmp: Path) -> list[str]:
    return evaluate_args(nii(tmp / "pred.nii.gz", cube()), tmp / "missing.nii.gz", tmp / "eval")


@case("empty (0-byte) prediction file", "error", r"pred\.nii\.gz: file is empty")
def _(tmp: Path) -> list[str]:
    gt = nii(tmp / "gt.nii.gz", cube())
    (tmp / "pred.nii.gz").write_bytes(b"")
    return evaluate_args(tmp / "pred.nii.gz", gt, tmp / "eval")


@case("truncated NIfTI prediction", "error", r"pred\.nii\.gz: cannot read NIfTI")
def _(tmp: Path) -> list[str]:
    gt = nii(tmp / "gt.nii.gz", cube())
    data = nii(tmp / "full.nii.gz", cube()).read_bytes()
    (tmp / "pred.nii.gz").write_bytes(data[: len(data) // 2])
    return evaluate_args(tmp / "pred.nii.gz", gt, tmp / "eval")


@case("prediction with an unknown extension", "error", r"pred\.txt: unknown image file extension")
def _(tmp: Path) -> list[str]:
    (tmp / "pred.txt").write_text("0 1")
    return evaluate_args(tmp / "pred.txt", nii(tmp / "gt.nii.gz", cube()), tmp / "eval")


@case("PNG scored without --spacing", "error", r"g\.png: the file carries no spacing; pass --spacing")
def _(tmp: Path) -> list[str]:
    return evaluate_args(
        png(tmp / "p.png", square(2) * 255), png(tmp / "g.png", square() * 255), tmp / "eval"
    )


@case(
    "prediction without a ground truth of the same name",
    "error",
    r"preds: predictions without a ground truth of the same name: \['extra'\]",
)
def _(tmp: Path) -> list[str]:
    nii(tmp / "preds" / "a.nii.gz", cube(1))
    nii(tmp / "preds" / "extra.nii.gz", cube(1))
    nii(tmp / "gts" / "a.nii.gz", cube())
    return evaluate_args(tmp / "preds", tmp / "gts", tmp / "eval")


def _warned_all_missing(tmp: Path, result: Result) -> bool:
    table = metrics(tmp / "eval")
    return (
        "warning: 2 of 2 ground-truth cases have no prediction" in result.output
        and "holds no prediction files" in result.output
        and bool(table["missing_pred"].all())
        and (table["dice"] == 0).all()  # the documented policy: one mask empty → Dice 0
    )


@case("empty prediction folder", "score", check=_warned_all_missing)
def _(tmp: Path) -> list[str]:
    (tmp / "preds").mkdir()
    nii(tmp / "gts" / "a.nii.gz", cube())
    nii(tmp / "gts" / "b.nii.gz", cube(1))
    return evaluate_args(tmp / "preds", tmp / "gts", tmp / "eval")


def _warned_one_missing(tmp: Path, result: Result) -> bool:
    table = metrics(tmp / "eval").set_index("case")
    return (
        "warning: 1 of 2 ground-truth cases have no prediction" in result.output
        and bool(table.loc["b", "missing_pred"])
        and abs(float(table.loc["a", "dice"]) - dice(cube(1), cube())) < 1e-6
    )


@case("one prediction missing from a folder", "score", check=_warned_one_missing)
def _(tmp: Path) -> list[str]:
    nii(tmp / "preds" / "a.nii.gz", cube(1))
    nii(tmp / "gts" / "a.nii.gz", cube())
    nii(tmp / "gts" / "b.nii.gz", cube(1))
    return evaluate_args(tmp / "preds", tmp / "gts", tmp / "eval")


# 5. CLI options
for text in ("-1,-1", "0,0", "nan,1", "abc", "1,,1"):

    @case(f"--spacing {text}", "error", rf"--spacing '{re.escape(text)}': expected positive numbers in mm")
    def _(tmp: Path, text: str = text) -> list[str]:
        return [
            *evaluate_args(
                png(tmp / "p.png", square(2) * 255), png(tmp / "g.png", square() * 255), tmp / "eval"
            ),
            "--spacing",
            text,
        ]


@case(
    "--spacing with 3 values for a 2D mask",
    "error",
    r"g\.png: spacing \(1\.0, 1\.0, 1\.0\) does not match a 2D mask",
)
def _(tmp: Path) -> list[str]:
    return [
        *evaluate_args(png(tmp / "p.png", square(2) * 255), png(tmp / "g.png", square() * 255), tmp / "eval"),
        "--spacing",
        "1,1,1",
    ]


@case("--hd95 with an unknown mode", "error", r"--hd95 must be 'pooled' or 'max', got 'mean'")
def _(tmp: Path) -> list[str]:
    return [*_gt_pred_nii(tmp, cube(1)), "--hd95", "mean"]


def _folder_root(tmp: Path) -> Path:
    png(tmp / "root" / "images" / "a.png", (square() * 100).astype(np.uint8))
    png(tmp / "root" / "masks" / "a.png", square() * 255)
    return tmp / "root"


@case("data inspect -o spacing=abc", "error", r"spacing option must be positive numbers in mm, got 'abc'")
def _(tmp: Path) -> list[str]:
    return ["data", "inspect", "--source", "folder", "--root", str(_folder_root(tmp)), "-o", "spacing=abc"]


@case("data inspect -o spacing=-1", "error", r"spacing option must be positive, one value per axis")
def _(tmp: Path) -> list[str]:
    return ["data", "inspect", "--source", "folder", "--root", str(_folder_root(tmp)), "-o", "spacing=-1"]


@case("data inspect -o without =", "error", r"override 'spacing' is not of the form key=value")
def _(tmp: Path) -> list[str]:
    return ["data", "inspect", "--source", "folder", "--root", str(_folder_root(tmp)), "-o", "spacing"]


@case("data inspect with an unknown source", "error", r"unknown data source 'nosuch'\. Available: busi")
def _(tmp: Path) -> list[str]:
    return ["data", "inspect", "--source", "nosuch", "--root", str(tmp)]


@case("data inspect, folder of JPEG masks", "error", r"a\.jpg: JPEG is refused for masks")
def _(tmp: Path) -> list[str]:
    png(tmp / "root" / "images" / "a.png", (square() * 100).astype(np.uint8))
    png(tmp / "root" / "masks" / "a.jpg", square() * 255)
    return ["data", "inspect", "--source", "folder", "--root", str(tmp / "root"), "-o", "masks=masks/*.jpg"]


@case("data inspect, folder with a NaN NIfTI mask", "error", r"m\.nii\.gz: mask holds 1 NaN/inf")
def _(tmp: Path) -> list[str]:
    arr = cube().astype(np.float32)
    arr[0, 0, 0] = np.nan
    nii(tmp / "root" / "i.nii.gz", cube().astype(np.float32))
    nii(tmp / "root" / "m.nii.gz", arr)
    return [
        "data",
        "inspect",
        "--source",
        "folder",
        "--root",
        str(tmp / "root"),
        "-o",
        "images=i.nii.gz",
        "-o",
        "masks=m.nii.gz",
    ]


# 6. config values (train fails before anything runs)
CONFIG_ERRORS = {
    "train.epochs=abc": r"config key train\.epochs = 'abc': expected an integer",
    "optim.lr=fast": r"config key optim\.lr = 'fast': expected a number",
    "train.batch_size=abc": r"config key train\.batch_size = 'abc': expected an integer",
    "data.image_size=abc": r"config key data\.image_size = 'abc': expected a list of an integer",
    "data.image_size=[32, x]": r"config key data\.image_size\[1\] = 'x': expected an integer",
    "train.epochs=1.5": r"config key train\.epochs = 1\.5: expected an integer",
    "train.deterministic=maybe": r"config key train\.deterministic = 'maybe': expected true or false",
    "data.intensity=loud": r"config key data\.intensity = 'loud': expected one of zscore, minmax, none",
    "eval.hd95_mode=mean": r"config key eval\.hd95_mode = 'mean': expected one of pooled, max",
    "model.name=nosuch": r"config key model\.name = 'nosuch': unknown model; available: .*unet",
    "loss.name=nosuch": r"config key loss\.name = 'nosuch': unknown loss; available: .*dice_bce",
    "optim.name=nosuch": r"config key optim\.name = 'nosuch': unknown optim; available: adam, adamw, sam",
    "optim.scheduler=nosuch": r"config key optim\.scheduler = 'nosuch': unknown scheduler; available: budget",
    "data.source=nosuch": r"config key data\.source = 'nosuch': unknown source; available: busi",
    "model.options=3": r"config key model\.options = 3: expected a mapping",
    "train.nosuch=1": r"unknown key\(s\) \['nosuch'\] in train",
    "train.epochs": r"override 'train\.epochs' is not of the form key=value",
}
for override, message in CONFIG_ERRORS.items():

    @case(f"train --set {override}", "error", message)
    def _(tmp: Path, override: str = override) -> list[str]:
        return ["train", "--set", override, "--out", str(tmp / "run"), "--no-progress"]


@case(
    "train with a config file holding epochs: abc",
    "error",
    r"config key train\.epochs = 'abc': expected an integer",
)
def _(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_text("train:\n  epochs: abc\n")
    return ["train", str(tmp / "c.yaml"), "--out", str(tmp / "run"), "--no-progress"]


# 7. checkpoints, resume, predict (a tiny random or 1-epoch model)
TINY = [
    "data.options={n_patients: 3, seed: 0, shape: [4, 32, 32]}",
    "data.image_size=[32, 32]",
    "model.options={features: [4, 8]}",
    "train.epochs=1",
    "train.batch_size=4",
    "train.tensorboard=false",
]


def _random_checkpoint(tmp: Path) -> Path:
    from medseg.config import load_config
    from medseg.engine.checkpoint import save_checkpoint
    from medseg.models import build_from_config

    cfg = load_config(None, TINY)
    model = build_from_config(cfg)
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp / "model.pt")


@case(
    "evaluate a file that is not a checkpoint",
    "error",
    r"notes\.pt: not a medseg checkpoint, or a truncated one",
)
def _(tmp: Path) -> list[str]:
    (tmp / "notes.pt").write_text("not a checkpoint at all")
    return ["evaluate", str(tmp / "notes.pt"), "--out", str(tmp / "eval")]


def _no_unsafe_hint(pattern: str) -> str:
    return pattern + r"(?!.*weights_only=False)"


@case(
    "evaluate a pickle of other Python objects",
    "error",
    _no_unsafe_hint(r"obj\.pt: not a medseg checkpoint: the file holds Python objects"),
)
def _(tmp: Path) -> list[str]:
    import torch

    torch.save({"model": datetime.datetime(2020, 1, 1)}, tmp / "obj.pt")  # a pickled class
    return ["evaluate", str(tmp / "obj.pt"), "--out", str(tmp / "eval")]


@case(
    "predict with a truncated checkpoint", "error", r"model\.pt: not a medseg checkpoint, or a truncated one"
)
def _(tmp: Path) -> list[str]:
    data = _random_checkpoint(tmp).read_bytes()
    (tmp / "model.pt").write_bytes(data[: len(data) // 2])
    png(tmp / "img.png", (square() * 100).astype(np.uint8))
    return ["predict", str(tmp / "model.pt"), str(tmp / "img.png"), "--out", str(tmp / "out")]


def _two_outputs(tmp: Path, result: Result) -> bool:
    a, b = tmp / "out" / "a" / "scan_mask.png", tmp / "out" / "b" / "scan_mask.png"
    return a.is_file() and b.is_file() and not (tmp / "out" / "scan_mask.png").exists()


@case("predict a/scan.png b/scan.png (same file name)", "score", check=_two_outputs)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "a" / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "b" / "scan.png", (square(3) * 100).astype(np.uint8))
    return [
        "predict",
        str(ckpt),
        str(tmp / "a" / "scan.png"),
        str(tmp / "b" / "scan.png"),
        "--out",
        str(tmp / "out"),
    ]


@case("predict folders a/ and b/ holding files of the same name", "score", check=_two_outputs)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "a" / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "b" / "scan.png", (square(3) * 100).astype(np.uint8))
    return ["predict", str(ckpt), str(tmp / "a"), str(tmp / "b"), "--out", str(tmp / "out")]


def _two_segmentations(tmp: Path, result: Result) -> bool:
    return (tmp / "out" / "a" / "scan_seg.png").is_file() and (tmp / "out" / "b" / "scan_seg.png").is_file()


@case("predict --model litemedsam --box on a/scan.png b/scan.png", "score", check=_two_segmentations)
def _(tmp: Path) -> list[str]:
    png(tmp / "a" / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "b" / "scan.png", (square(3) * 100).astype(np.uint8))
    return [
        "predict",
        "--model",
        "litemedsam",
        "--box",
        "4,4,20,20",
        str(tmp / "a" / "scan.png"),
        str(tmp / "b" / "scan.png"),
        "--out",
        str(tmp / "out"),
    ]


@case(
    "predict --model litemedsam into a folder with an earlier output",
    "error",
    r"scan_seg\.png: output already exists; pass --overwrite",
)
def _(tmp: Path) -> list[str]:
    png(tmp / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "out" / "scan_seg.png", square())
    return [
        "predict",
        "--model",
        "litemedsam",
        "--box",
        "4,4,20,20",
        str(tmp / "scan.png"),
        "--out",
        str(tmp / "out"),
    ]


def _numbered(tmp: Path, result: Result) -> bool:
    # inputs in name order: x.nii.gz keeps the plain name, x.png gets the suffix
    return (tmp / "out" / "x_mask.nii.gz").is_file() and (tmp / "out" / "x_2_mask.png").is_file()


@case("predict x.png and x.nii.gz side by side", "score", check=_numbered)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "in" / "x.png", (square() * 100).astype(np.uint8))
    nii(tmp / "in" / "x.nii.gz", (square() * 100).astype(np.float32), spacing_xyz=(0.5, 0.5))
    return ["predict", str(ckpt), str(tmp / "in"), "--out", str(tmp / "out")]


@case(
    "predict into a folder that holds an earlier output",
    "error",
    r"scan_mask\.png: output already exists; pass --overwrite",
)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "out" / "scan_mask.png", square() * 255)
    return ["predict", str(ckpt), str(tmp / "scan.png"), "--out", str(tmp / "out")]


def _replaced(tmp: Path, result: Result) -> bool:
    written = np.asarray(Image.open(tmp / "out" / "scan_mask.png"))
    return written.shape == (32, 32) and not np.array_equal(written, np.full((32, 32), 7, np.uint8))


@case("predict --overwrite replaces an earlier output", "score", check=_replaced)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "scan.png", (square() * 100).astype(np.uint8))
    png(tmp / "out" / "scan_mask.png", np.full((32, 32), 7, np.uint8))
    return ["predict", str(ckpt), str(tmp / "scan.png"), "--out", str(tmp / "out"), "--overwrite"]


def _2d_nifti_prediction(tmp: Path, result: Result) -> bool:
    from medseg.data.io import read_image

    mask, spacing, _ = read_image(tmp / "out" / "img_mask.nii.gz")
    return mask.shape == (20, 24) and spacing == pytest.approx((0.5, 0.25)) and set(np.unique(mask)) <= {0, 1}


@case("predict a 2D NIfTI (H×W)", "score", check=_2d_nifti_prediction)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    image = np.random.default_rng(0).normal(size=(20, 24)).astype(np.float32)
    nii(tmp / "img.nii.gz", image, spacing_xyz=(0.25, 0.5))
    return ["predict", str(ckpt), str(tmp / "img.nii.gz"), "--out", str(tmp / "out")]


@case("predict an input that does not exist", "error", r"nothere\.png: input file not found")
def _(tmp: Path) -> list[str]:
    return ["predict", str(_random_checkpoint(tmp)), str(tmp / "nothere.png"), "--out", str(tmp / "out")]


def _trained_run(tmp: Path) -> Path:
    from medseg.config import load_config
    from medseg.engine.train import train

    cfg = load_config(None, [*TINY, "train.progress=false"])
    cfg.output_dir = str(tmp / "run")
    train(cfg)
    return tmp / "run"


@case(
    "--resume with a config that differs from the stored one",
    "error",
    r"--resume: the given config differs from the stored run's config "
    r"\(optim\.lr: stored 0\.003 → given 0\.01\)",
)
def _(tmp: Path) -> list[str]:
    run = _trained_run(tmp)
    (tmp / "other.yaml").write_text(
        "data:\n  options: {n_patients: 3, seed: 0, shape: [4, 32, 32]}\n  image_size: [32, 32]\n"
        "model:\n  options: {features: [4, 8]}\noptim:\n  lr: 0.01\n"
        "train:\n  epochs: 1\n  batch_size: 4\n  tensorboard: false\n"
    )
    return ["train", str(tmp / "other.yaml"), "--resume", "--out", str(run), "--no-progress"]


def _resumed_two_epochs(tmp: Path, result: Result) -> bool:
    from medseg.engine.checkpoint import load_checkpoint

    state = load_checkpoint(tmp / "run" / "last.pt")
    return state["epoch"] == 2 and state["config"]["optim"]["lr"] == pytest.approx(0.003)


@case("--resume without a config, --set train.epochs=2 on purpose", "score", check=_resumed_two_epochs)
def _(tmp: Path) -> list[str]:
    run = _trained_run(tmp)
    return ["train", "--resume", "--out", str(run), "--set", "train.epochs=2", "--no-progress"]


@case("--resume where nothing was trained", "error", r"last\.pt: nothing to resume")
def _(tmp: Path) -> list[str]:
    return ["train", "--resume", "--out", str(tmp / "empty"), "--no-progress"]


# 8. data sources: the reader contract (every source × every bad label: tests/test_source_contract.py)
def _msd_root(
    tmp: Path,
    label: np.ndarray | None = None,
    labels: object = None,
    image_geometry: dict | None = None,
    label_geometry: dict | None = None,
) -> Path:
    """A one-case Decathlon task: 16×16×4 MR volume, its label (default: the cube, 0/1)."""
    root = tmp / "Task99_Test"
    image = np.random.default_rng(0).normal(100, 20, size=(4, 16, 16)).astype(np.float32)
    nii(root / "imagesTr" / "case_001.nii.gz", image, **(image_geometry or {}))
    nii(root / "labelsTr" / "case_001.nii.gz", cube() if label is None else label, **(label_geometry or {}))
    spec = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "organ"} if labels is None else labels,
        "numTraining": 1,
        "training": [{"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def _nnunet_root(
    tmp: Path, labels: object = None, label_geometry: dict | None = None, **spec_extra: object
) -> Path:
    """A one-case nnU-Net v2 data set (one MR channel, labels background/organ)."""
    root = tmp / "Dataset099_Test"
    image = np.random.default_rng(0).normal(100, 20, size=(4, 16, 16)).astype(np.float32)
    nii(root / "imagesTr" / "case_001_0000.nii.gz", image)
    nii(root / "labelsTr" / "case_001.nii.gz", cube(), **(label_geometry or {}))
    spec = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "organ": 1} if labels is None else labels,
        "numTraining": 1,
        "file_ending": ".nii.gz",
        **spec_extra,
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def inspect_args(source: str, root: Path, *options: str) -> list[str]:
    return ["data", "inspect", "--source", source, "--root", str(root), *options]


def _float_cube(value: float) -> np.ndarray:
    return cube().astype(np.float32) * np.float32(value)


@case(
    "msd label with values {0, 0.5}", "error", r"case_001\.nii\.gz: mask holds non-integer values \{0, 0\.5\}"
)
def _(tmp: Path) -> list[str]:
    return inspect_args("msd", _msd_root(tmp, _float_cube(0.5)))


@case(
    "msd label with values {0, 1.5}", "error", r"case_001\.nii\.gz: mask holds non-integer values \{0, 1\.5\}"
)
def _(tmp: Path) -> list[str]:
    return inspect_args("msd", _msd_root(tmp, _float_cube(1.5)))


@case(
    "msd label map stored as float32 with values 0/1/2 (Hippocampus)",
    "score",
    check=lambda tmp, result: "1/1 cases" in result.output,
)
def _(tmp: Path) -> list[str]:
    label = cube().astype(np.float32)
    label[1:3, 12:15, 2:5] = 2
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    return inspect_args("msd", _msd_root(tmp, label, labels))


@case("msd image with a zero pixdim", "error", r"case_001\.nii\.gz: missing or invalid voxel spacing")
def _(tmp: Path) -> list[str]:
    root = _msd_root(tmp)
    path = root / "imagesTr" / "case_001.nii.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
    path.write_bytes(gzip.compress(bytes(raw)))
    return inspect_args("msd", root)


@case(
    "msd label at another spacing than its image",
    "error",
    r"labelsTr/case_001\.nii\.gz: label and image are on different grids \(spacing differ\).*"
    r"imagesTr/case_001\.nii\.gz",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("msd", _msd_root(tmp, label_geometry={"spacing_xyz": (0.5, 0.5, 2.0)}))


@case("msd dataset.json label key 1.7", "error", r"dataset\.json: label 'organ' has the value '1\.7'")
def _(tmp: Path) -> list[str]:
    return inspect_args("msd", _msd_root(tmp, labels={"0": "background", "1.7": "organ"}))


@case(
    "msd dataset.json labels as a list",
    "error",
    r"dataset\.json: dataset\.json key 'labels' must be a mapping",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("msd", _msd_root(tmp, labels=["background", "organ"]))


@case("nnunet dataset.json label value 1.7", "error", r"dataset\.json: label 'organ' has the value 1\.7")
def _(tmp: Path) -> list[str]:
    return inspect_args("nnunet", _nnunet_root(tmp, labels={"background": 0, "organ": 1.7}))


@case(
    "nnunet dataset.json labels as a list",
    "error",
    r"dataset\.json: dataset\.json key 'labels' must be a mapping",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("nnunet", _nnunet_root(tmp, labels=["background", "organ"]))


@case(
    "nnunet dataset.json channel_names as a list",
    "error",
    r"dataset\.json: dataset\.json key 'channel_names' must be a mapping",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("nnunet", _nnunet_root(tmp, channel_names=["MRI"]))


@case(
    "nnunet label 50 mm away from its image",
    "error",
    r"labelsTr/case_001\.nii\.gz: label and image are on different grids \(origin differ\).*"
    r"imagesTr/case_001_0000\.nii\.gz",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("nnunet", _nnunet_root(tmp, label_geometry={"origin": (50.0, 0.0, 0.0)}))


@case(
    "nnunet label at another spacing than its image",
    "error",
    r"case_001\.nii\.gz: label and image are on different grids \(spacing differ\)",
)
def _(tmp: Path) -> list[str]:
    return inspect_args("nnunet", _nnunet_root(tmp, label_geometry={"spacing_xyz": (0.5, 0.5, 2.0)}))


@case(
    "nnunet dataset.json numTraining 5 with 1 case found",
    "warn",
    r"warning: .*dataset\.json: numTraining says 5 cases but 1 were found",
    check=lambda tmp, result: "1/1 cases" in result.output,
)
def _(tmp: Path) -> list[str]:
    root = _nnunet_root(tmp)
    spec = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**spec, "numTraining": 5}))
    return inspect_args("nnunet", root)


# 9. options, checked where they are parsed
def _phantom_plan(*extra: str) -> list[str]:
    return ["plan", "--source", "phantom", "-o", "n_patients=3", "-o", "shape=[4,32,32]", *extra]


for command, text in (("plan", "inf"), ("plan", "nan"), ("fit", "inf"), ("train", "inf"), ("train", "-1")):

    @case(
        f"{command} --minutes {text}",
        "error",
        rf"--minutes {text}: expected a positive, finite number of minutes",
    )
    def _(tmp: Path, command: str = command, text: str = text) -> list[str]:
        if command == "train":
            return ["train", "--minutes", text, "--out", str(tmp / "run"), "--no-progress"]
        if command == "fit":
            return ["fit", "--source", "phantom", "--minutes", text, "--out", str(tmp / "fit")]
        return _phantom_plan("--minutes", text, "--out", str(tmp / "plan.yaml"))


@case("plan --memory-gb 0", "error", r"--memory-gb 0: expected a positive, finite number of GiB")
def _(tmp: Path) -> list[str]:
    return _phantom_plan("--memory-gb", "0", "--out", str(tmp / "plan.yaml"))


@case(
    "plan --memory-gb 1e-05 (no batch fits)",
    "error",
    r"--memory-gb 1e-05: the memory budget \(0\.00 GiB\) does not fit",
)
def _(tmp: Path) -> list[str]:
    return _phantom_plan("--memory-gb", "0.00001", "--device", "cpu", "--out", str(tmp / "plan.yaml"))


@case(
    "plan --minutes 1e-06 (not a single step)",
    "error",
    r"--minutes 1e-06: the budget leaves .* s for training.*not a single step fits; give at least --minutes",
)
def _(tmp: Path) -> list[str]:
    return _phantom_plan("--minutes", "0.000001", "--device", "cpu", "--out", str(tmp / "plan.yaml"))


@case("plan --device tpu", "error", r"--device tpu: not a device medseg can use; expected auto, cpu, cuda")
def _(tmp: Path) -> list[str]:
    return _phantom_plan("--device", "tpu", "--out", str(tmp / "plan.yaml"))


@case("predict --device tpu", "error", r"--device tpu: not a device medseg can use")
def _(tmp: Path) -> list[str]:
    png(tmp / "img.png", (square() * 100).astype(np.uint8))
    return [
        "predict",
        str(tmp / "model.pt"),
        str(tmp / "img.png"),
        "--device",
        "tpu",
        "--out",
        str(tmp / "o"),
    ]


def _no_gpu(tmp: Path) -> str | None:
    import torch

    return "this machine has a CUDA GPU: --device cuda is valid here" if torch.cuda.is_available() else None


@case(
    "evaluate --device cuda without a GPU", "error", r"--device cuda: no CUDA GPU is available", skip=_no_gpu
)
def _(tmp: Path) -> list[str]:
    return ["evaluate", str(tmp / "model.pt"), "--device", "cuda", "--out", str(tmp / "eval")]


@case(
    "plan with an unknown -o option",
    "error",
    r"unknown option 'nosuch' for the phantom source .*its options are: root, n_patients, seed, shape",
)
def _(tmp: Path) -> list[str]:
    return _phantom_plan("-o", "nosuch=1", "--out", str(tmp / "plan.yaml"))


@case("plan --source msd without --root", "error", r"the msd source needs its data folder: give --root PATH")
def _(tmp: Path) -> list[str]:
    return ["plan", "--source", "msd", "--out", str(tmp / "plan.yaml")]


@case("data inspect --source nnunet without --root", "error", r"the nnunet source needs its data folder")
def _(tmp: Path) -> list[str]:
    return ["data", "inspect", "--source", "nnunet"]


@case(
    "data inspect -o spacing=0.5,0.5 (as --spacing takes it)",
    "score",
    check=lambda t, r: "0.5×0.5" in r.output,
)
def _(tmp: Path) -> list[str]:
    return [
        "data",
        "inspect",
        "--source",
        "folder",
        "--root",
        str(_folder_root(tmp)),
        "-o",
        "spacing=0.5,0.5",
    ]


@case(
    "data inspect -o masks=*_lab.nii.gz (a glob is not YAML)",
    "score",
    check=lambda t, r: "1/1 cases" in r.output,
)
def _(tmp: Path) -> list[str]:
    nii(tmp / "root" / "a_img.nii.gz", cube().astype(np.float32))
    nii(tmp / "root" / "a_lab.nii.gz", cube())
    return inspect_args("folder", tmp / "root", "-o", "images=*_img.nii.gz", "-o", "masks=*_lab.nii.gz")


@case("plan on 2×2×1 volumes", "error", r"root: the images are 1×2×2 voxels \(median\): too small to train")
def _(tmp: Path) -> list[str]:
    for i in range(4):
        nii(tmp / "root" / f"c{i}_img.nii.gz", np.ones((1, 2, 2), np.float32), spacing_xyz=(1.0, 1.0, 1.0))
        nii(tmp / "root" / f"c{i}_lab.nii.gz", np.eye(2, dtype=np.uint8)[None], spacing_xyz=(1.0, 1.0, 1.0))
    return [
        "plan",
        "--source",
        "folder",
        "--root",
        str(tmp / "root"),
        "-o",
        "images=*_img.nii.gz",
        "-o",
        "masks=*_lab.nii.gz",
        "--out",
        str(tmp / "plan.yaml"),
    ]


def _honoured_minutes(tmp: Path, result: Result) -> bool:
    import yaml

    stored = yaml.safe_load((tmp / "run" / "config.yaml").read_text())
    history = pd.read_csv(tmp / "run" / "history.csv")
    return stored["train"]["max_time_minutes"] == pytest.approx(0.02) and len(history) < 200


@case("train CONFIG --minutes 0.02 without --plan", "score", check=_honoured_minutes)
def _(tmp: Path) -> list[str]:
    config = tmp / "c.yaml"
    config.write_text(
        "data:\n  options: {n_patients: 3, seed: 0, shape: [4, 32, 32]}\n  image_size: [32, 32]\n"
        "model:\n  options: {features: [4, 8]}\n"
        "train:\n  epochs: 200\n  batch_size: 4\n  tensorboard: false\n"
    )
    return ["train", str(config), "--minutes", "0.02", "--out", str(tmp / "run"), "--no-progress"]


# 10. outputs: written atomically, never replaced silently, replaced as a whole on purpose
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _unchanged(folder_name: str) -> Callable[[Path], bool]:
    """``keep``: the files of ``tmp/folder_name`` as the case's ``make`` left them (see SNAPSHOTS)."""

    def keep(tmp: Path) -> bool:
        return _files(tmp / folder_name) == SNAPSHOTS.get(str(tmp / folder_name))

    return keep


SNAPSHOTS: dict[str, dict[str, bytes]] = {}


def _snapshot(folder: Path) -> None:
    SNAPSHOTS[str(folder)] = _files(folder)


def _both_measured(tmp: Path, result: Result) -> bool:
    table = pd.read_csv(tmp / "out" / "measurements.csv")
    return {"a_mask", "b_mask"} <= {f"{c}_mask" for c in table["case"].astype(str)} and (
        tmp / "out" / "a_mask.png"
    ).is_file()


@case("predict twice into one --out keeps the first run's measurements", "score", check=_both_measured)
def _(tmp: Path) -> list[str]:
    ckpt = _random_checkpoint(tmp)
    png(tmp / "a.png", (square() * 100).astype(np.uint8))
    png(tmp / "b.png", (square(3) * 100).astype(np.uint8))
    first = runner.invoke(app, ["predict", str(ckpt), str(tmp / "a.png"), "--out", str(tmp / "out")])
    assert first.exit_code == 0, first.output
    return ["predict", str(ckpt), str(tmp / "b.png"), "--out", str(tmp / "out")]


@case("predict --out naming an existing file", "error", r"--out .*taken: is a file, not a folder")
def _(tmp: Path) -> list[str]:
    png(tmp / "img.png", (square() * 100).astype(np.uint8))
    (tmp / "taken").write_text("a file")
    return ["predict", str(_random_checkpoint(tmp)), str(tmp / "img.png"), "--out", str(tmp / "taken")]


@case("evaluate --out naming an existing file", "error", r"--out .*taken: is a file, not a folder")
def _(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file")
    return _gt_pred_nii(tmp, cube(1))[:-2] + ["--out", str(tmp / "taken")]


CLEANUPS: dict[str, list[Callable[[], None]]] = {}


def _read_only_folder(tmp: Path) -> Path:
    """An empty folder nobody may write to: a read-only tmpfs as root, else mode 0o555."""
    folder = tmp / "readonly"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        CLEANUPS.setdefault(str(tmp), []).append(lambda: folder.chmod(0o755))
        return folder
    _mount_tmpfs(tmp, folder, "ro,size=64k")
    return folder


def _mount_tmpfs(tmp: Path, folder: Path, options: str) -> None:
    """Mount a tmpfs at ``folder`` (root only), unmounted when the case ends (lazily: a failed
    write's traceback may still hold a file open there)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    CLEANUPS.setdefault(str(tmp), []).append(
        lambda: subprocess.run(["umount", "-l", str(folder)], check=False)
    )


def _can_make_read_only(tmp: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    probe = tmp / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(probe)], capture_output=True
    )
    if done.returncode != 0:
        return (
            f"running as root and mount is refused here ({done.stderr.decode().strip()}): no read-only folder"
        )
    subprocess.run(["umount", str(probe)], check=False)
    return None


@case(
    "predict into a read-only --out",
    "error",
    r"readonly: --out folder (is on a read-only file system|is not writable \(permission denied\))",
    skip=_can_make_read_only,
)
def _(tmp: Path) -> list[str]:
    png(tmp / "img.png", (square() * 100).astype(np.uint8))
    return [
        "predict",
        str(_random_checkpoint(tmp)),
        str(tmp / "img.png"),
        "--out",
        str(_read_only_folder(tmp)),
    ]


def _earlier_run(tmp: Path) -> Path:
    """A folder with earlier results (a medseg run's files and one of the user's)."""
    run = tmp / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"earlier weights")
    (run / "plan.yaml").write_text("earlier: plan\n")
    (run / "notes.txt").write_text("the user's notes\n")
    _snapshot(run)
    return run


@case(
    "fit into an existing non-empty folder",
    "error",
    r"run: the --out folder exists and is not empty; pass --overwrite",
    keep=_unchanged("run"),
)
def _(tmp: Path) -> list[str]:
    return ["fit", "--source", "phantom", "--minutes", "0.1", "--out", str(_earlier_run(tmp))]


@case(
    "train --out into an existing non-empty folder",
    "error",
    r"run: the --out folder exists and is not empty; pass --overwrite",
    keep=_unchanged("run"),
)
def _(tmp: Path) -> list[str]:
    return ["train", "--out", str(_earlier_run(tmp)), "--no-progress"]


@case(
    "train --overwrite on a folder medseg did not make",
    "error",
    r"run: --overwrite empties only a folder that medseg made",
    keep=_unchanged("run"),
)
def _(tmp: Path) -> list[str]:
    return ["train", "--out", str(_earlier_run(tmp)), "--overwrite", "--no-progress"]


def _replaced_whole(tmp: Path, result: Result) -> bool:
    run = tmp / "run"
    return (run / "best.pt").is_file() and not (run / "stale_metrics.csv").exists()


@case("train --overwrite replaces an earlier run as a whole", "score", check=_replaced_whole)
def _(tmp: Path) -> list[str]:
    args = ["train", *[a for s in TINY for a in ("--set", s)], "--out", str(tmp / "run"), "--no-progress"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    (tmp / "run" / "stale_metrics.csv").write_text("case,dice\nold,1.0\n")
    return [*args, "--overwrite"]


def _evaluation(tmp: Path) -> Path:
    result = runner.invoke(app, _gt_pred_nii(tmp, cube(1)))
    assert result.exit_code == 0, result.output
    return tmp / "eval"


@case(
    "report twice into one file",
    "error",
    r"report\.html: -o file exists; pass --overwrite",
    keep=lambda tmp: (tmp / "out" / "report.html").read_text() == "the first report",
)
def _(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "report.html").write_text("the first report")
    return ["report", str(_evaluation(tmp)), "-o", str(tmp / "out" / "report.html")]


@case(
    "report --overwrite replaces the file",
    "score",
    check=lambda tmp, result: "<html" in (tmp / "out" / "report.html").read_text().lower(),
)
def _(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "report.html").write_text("the first report")
    return ["report", str(_evaluation(tmp)), "-o", str(tmp / "out" / "report.html"), "--overwrite"]


def _export_args(tmp: Path, n_patients: int, name: str = "first", *extra: str) -> list[str]:
    return [
        "data",
        "export",
        "--to",
        "nnunet",
        "--source",
        "phantom",
        "--option",
        f"n_patients={n_patients}",
        "--option",
        "shape=[4,16,16]",
        "-o",
        str(tmp / "raw"),
        "--name",
        name,
        *extra,
    ]


def _one_case_left(tmp: Path, result: Result) -> bool:
    (folder,) = (tmp / "raw").glob("Dataset501_*")
    spec = json.loads((folder / "dataset.json").read_text())
    return spec["numTraining"] == 1 and len(list((folder / "labelsTr").iterdir())) == 1


@case("data export --to nnunet --overwrite from a smaller source", "score", check=_one_case_left)
def _(tmp: Path) -> list[str]:
    first = runner.invoke(app, _export_args(tmp, 5))
    assert first.exit_code == 0, first.output
    return _export_args(tmp, 1, "first", "--overwrite")


@case(
    "data export --to nnunet: another --name with the same id",
    "error",
    r"raw: dataset id 501 is taken by \['Dataset501_first'\]",
    keep=_unchanged("raw"),
)
def _(tmp: Path) -> list[str]:
    first = runner.invoke(app, _export_args(tmp, 2))
    assert first.exit_code == 0, first.output
    _snapshot(tmp / "raw")
    return _export_args(tmp, 1, "second")


@case(
    "data export --to nnunet --overwrite: another --name with the same id",
    "score",
    check=lambda tmp, result: [p.name for p in (tmp / "raw").iterdir()] == ["Dataset501_second"],
)
def _(tmp: Path) -> list[str]:
    first = runner.invoke(app, _export_args(tmp, 2))
    assert first.exit_code == 0, first.output
    return _export_args(tmp, 1, "second", "--overwrite")


@case(
    "data export --to dicom into a non-empty folder",
    "error",
    r"dicom: the --out folder exists and is not empty; pass --overwrite",
    keep=_unchanged("dicom"),
)
def _(tmp: Path) -> list[str]:
    (tmp / "dicom").mkdir()
    (tmp / "dicom" / "notes.txt").write_text("keep me")
    _snapshot(tmp / "dicom")
    return [
        "data",
        "export",
        "--to",
        "dicom",
        "--source",
        "phantom",
        "--option",
        "n_patients=1",
        "--option",
        "shape=[4,16,16]",
        "-o",
        str(tmp / "dicom"),
    ]


# 11. warnings: valid input that is probably not what was meant
@case(
    "evaluate --label 7 with a label in neither file",
    "warn",
    r"warning: label 7 occurs in no prediction .* and no ground truth .*Dice 1",
    check=dice_is(1.0),
)
def _(tmp: Path) -> list[str]:
    gt, pred = _multi_label()
    return evaluate_args(
        nii(tmp / "pred.nii.gz", pred), nii(tmp / "gt.nii.gz", gt), tmp / "eval", "--label", "7"
    )


@case(
    "evaluate a NIfTI pair at 500 mm spacing",
    "warn",
    r"warning: .*gt\.nii\.gz: voxel spacing \(500, 500, 500\) mm is above 100 mm per voxel",
    check=dice_is(dice(cube(1), cube())),
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii_at(tmp, (500.0, 500.0, 500.0))


@case(
    "evaluate a NIfTI pair at 0.0001 mm spacing",
    "warn",
    r"warning: .*gt\.nii\.gz: voxel spacing \(0\.0001, 0\.0001, 0\.0001\) mm is below 1 µm per voxel",
    check=dice_is(dice(cube(1), cube())),
)
def _(tmp: Path) -> list[str]:
    return _gt_pred_nii_at(tmp, (1e-4, 1e-4, 1e-4))


def _gt_pred_nii_at(tmp: Path, spacing_xyz: tuple[float, float, float]) -> list[str]:
    gt = nii(tmp / "gt.nii.gz", cube(), spacing_xyz=spacing_xyz)
    pred = nii(tmp / "pred.nii.gz", cube(1), spacing_xyz=spacing_xyz)
    return evaluate_args(pred, gt, tmp / "eval")


# 12. a full disk (a 256 kB tmpfs, as root): an error naming the file, and no 0-byte output left
def _full_disk(tmp: Path) -> str | None:
    return _can_make_read_only(tmp) or (None if os.geteuid() == 0 else "a tmpfs needs root to mount")


def _no_zero_byte_files(tmp: Path) -> bool:
    return not [p for p in (tmp / "full").rglob("*") if p.is_file() and p.stat().st_size == 0]


@case(
    "predict a volume into a full disk",
    "error",
    r"full/.*: cannot write \(no space left on device\)",
    keep=_no_zero_byte_files,
    skip=_full_disk,
)
def _(tmp: Path) -> list[str]:
    folder = tmp / "full"
    folder.mkdir()
    _mount_tmpfs(tmp, folder, "size=256k")
    big = np.random.default_rng(0).normal(size=(8, 128, 128)).astype(np.float32)  # 512 kB, incompressible
    image = nii(tmp / "scan.nii", big)
    return ["predict", str(_random_checkpoint(tmp)), str(image), "--probs", "--out", str(folder)]


# --- running and counting -------------------------------------------------------------------


VERDICTS = (
    "clear_error",
    "correct",
    "silent_wrong",
    "lost_file",
    "internal_error",
    "traceback",
    "unclear_error",
)


def classify(case: Case, tmp: Path, result: Result) -> str:
    """One of :data:`VERDICTS`: a lost file outranks every other outcome."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    if case.keep is not None and not case.keep(tmp):
        return "lost_file"
    if crashed or "Traceback" in result.output:
        return "traceback"
    one_line = " ".join(result.output.split())
    if result.exit_code == 0:
        checked = case.outcome in ("score", "warn") and case.check is not None and case.check(tmp, result)
        warned = case.outcome == "score" or re.search(case.expect, one_line)
        return "correct" if checked and warned else "silent_wrong"
    if result.exit_code == 1 and "internal error" in result.output:
        return "internal_error"
    if result.exit_code == 2 and case.outcome == "error" and re.search(case.expect, one_line):
        return "clear_error"
    return "unclear_error"


def run_case(case: Case, tmp: Path) -> tuple[str, Result | str]:
    """The verdict and the CLI result, or ``"skipped"`` and the reason."""
    tmp.mkdir(parents=True, exist_ok=True)
    reason = case.skip(tmp) if case.skip is not None else None
    if reason:
        return "skipped", reason
    try:
        args = case.make(tmp)
        result = runner.invoke(app, args)
        return classify(case, tmp, result), result
    finally:
        for cleanup in CLEANUPS.pop(str(tmp), []):
            cleanup()


COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_counts() -> object:
    yield
    if COUNTS:
        print("\n" + summary_line(COUNTS))


def summary_line(counts: Counter[str]) -> str:
    total = sum(counts.values())
    return (
        f"bad-input catalogue: {total} cases, {counts['clear_error']} clear errors (exit 2, file and "
        f"problem named), {counts['correct']} correct results, {counts['silent_wrong']} silent wrong "
        f"results, {counts['lost_file']} lost files, {counts['internal_error']} internal errors, "
        f"{counts['traceback']} tracebacks, {counts['unclear_error']} unclear errors, "
        f"{counts['skipped']} skipped"
    )


def message(result: Result | str) -> str:
    """A case's output on one line (or the reason it was skipped)."""
    return result if isinstance(result, str) else " ".join(result.output.split())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    verdict, result = run_case(case, tmp_path)
    COUNTS[verdict] += 1
    if verdict == "skipped":
        pytest.skip(str(result))
    assert isinstance(result, Result)
    expected = "clear_error" if case.outcome == "error" else "correct"
    assert verdict == expected, f"{case.name}: {verdict} (exit {result.exit_code})\n{result.output}"


def test_catalogue_covers_the_issue() -> None:
    names = " ".join(c.name for c in CASES)
    for needle in (
        "NaN",
        "inf",
        "-1",
        "0.3",
        "JPEG",
        "green",
        "spacing (0.5, 0.5, 5)",
        "origin 100 mm",
        "a/scan.png b/scan.png",
        "folders a/ and b/",
        "litemedsam --box",
        "2D NIfTI",
        "train.epochs=abc",
        "optim.lr=fast",
        "train.batch_size=abc",
        "data.image_size=abc",
        "train.epochs=1.5",
        "train.deterministic=maybe",
        "model.name=nosuch",
        "loss.name=nosuch",
        "optim.name=nosuch",
        "optim.scheduler=nosuch",
        "data.source=nosuch",
        "--spacing -1,-1",
        "--spacing 0,0",
        "--spacing nan,1",
        "-o spacing=abc",
        "--resume with a config",
        "not a checkpoint",
        "empty prediction folder",
        "--label 2",
        "--labels all",
        "--resample-pred",
        # the newer commands and the places where output is written
        "msd label with values {0, 0.5}",
        "msd label with values {0, 1.5}",
        "label value 1.7",
        "labels as a list",
        "channel_names as a list",
        "zero pixdim",
        "50 mm away",
        "at another spacing",
        "--memory-gb 0",
        "--minutes 0.02 without --plan",
        "--overwrite from a smaller source",
        "another --name with the same id",
        "--label 7 with a label in neither file",
        "predict twice into one --out",
        "fit into an existing non-empty folder",
        "train --out into an existing non-empty folder",
        "report twice",
        "--minutes inf",
        "--minutes nan",
        "--device tpu",
        "--device cuda without a GPU",
        "read-only --out",
        "--out naming an existing file",
        "full disk",
        "--memory-gb 1e-05",
        "not a single step",
        "without --root",
        "unknown -o option",
        "2×2×1",
        "-o spacing=0.5,0.5",
        "500 mm spacing",
        "0.0001 mm spacing",
        "numTraining",
    ):
        assert needle in names, needle


if __name__ == "__main__":  # python tests/test_bad_inputs.py: the table and the counts
    import tempfile

    counts: Counter[str] = Counter()
    print("| case | expected | verdict | exit | message |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for i, c in enumerate(CASES):
            verdict, res = run_case(c, Path(root) / f"case{i}")
            counts[verdict] += 1
            code = "-" if isinstance(res, str) else res.exit_code
            text = message(res)[:220].replace("|", "\\|")
            print(f"| {c.name} | {c.outcome} | {verdict} | {code} | {text} |", flush=True)
    print(summary_line(counts))
    bad = ("silent_wrong", "lost_file", "internal_error", "traceback", "unclear_error")
    sys.exit(1 if any(counts[v] for v in bad) else 0)
