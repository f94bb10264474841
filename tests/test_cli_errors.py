"""How the CLI reports errors (medseg.cli_errors): one line, exit 2; --debug shows the traceback."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from medseg.cli import app
from medseg.cli_errors import (
    MAX_WARNINGS,
    WarningPrinter,
    device_option,
    error_message,
    is_user_os_error,
    parse_spacing_option,
    positive_number,
    report_error,
)
from medseg.errors import ConfigError, DataError, DataWarning

runner = CliRunner()


def test_parse_spacing_option() -> None:
    assert parse_spacing_option("0.5,0.25") == (0.5, 0.25)
    assert parse_spacing_option(" 2 , 1,1") == (2.0, 1.0, 1.0)
    for bad in ("-1,-1", "0,0", "nan,1", "inf", "a,b", ""):
        with pytest.raises(ConfigError, match=rf"--spacing '{bad}': expected positive numbers in mm"):
            parse_spacing_option(bad)
    with pytest.raises(ConfigError, match=r"^-o spacing '0': "):
        parse_spacing_option("0", option="-o spacing")
    with pytest.warns(DataWarning, match=r"--spacing: spacing \(500, 500\) mm is above 100 mm"):
        assert parse_spacing_option("500,500") == (500.0, 500.0)


def test_error_message_and_exit_codes() -> None:
    console = Console(record=True, width=40, soft_wrap=True)
    assert report_error(DataError("bad mask", "m.png"), console) == 2
    assert report_error(KeyError("unknown model 'x'"), console) == 2
    assert error_message(KeyError("unknown model 'x'")) == "unknown model 'x'"
    assert report_error(ZeroDivisionError("division by zero"), console) == 1
    text = console.export_text()
    assert "error: m.png: bad mask" in text and "error: unknown model 'x'" in text
    assert "internal error: ZeroDivisionError: division by zero (run `medseg --debug" in text


def _pngs(tmp_path: Path) -> list[str]:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    for name in ("p.png", "g.png"):
        Image.fromarray(mask).save(tmp_path / name)
    return ["--pred", str(tmp_path / "p.png"), "--gt", str(tmp_path / "g.png"), "--out", str(tmp_path / "e")]


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", *_pngs(tmp_path), "--spacing", "nan,1"])
    assert result.exit_code == 2
    expected = "--spacing 'nan,1': expected positive numbers in mm, one per axis, separated by commas"
    assert result.output.strip() == f"error: {expected} (e.g. 0.5,0.5)"


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "evaluate", *_pngs(tmp_path), "--spacing", "nan,1"])
    assert isinstance(result.exception, ConfigError)  # raised through, so the traceback prints


def test_error_escaping_a_command_is_caught(tmp_path: Path) -> None:
    # a config key typo inside train: the unknown-key ConfigError comes from load_config
    result = runner.invoke(app, ["train", "--set", "train.epohcs=2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown key(s) ['epohcs'] in train" in result.output
    assert "Traceback" not in result.output


def test_os_errors_of_the_machine_are_user_errors_naming_the_path() -> None:
    console = Console(record=True, width=200, soft_wrap=True)
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/out/metrics.csv")
    assert is_user_os_error(denied) and report_error(denied, console) == 2
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out/mask.nii.gz")
    assert report_error(full, console) == 2
    assert report_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/f/x"), console) == 2
    assert not is_user_os_error(OSError(errno.EIO, "Input/output error")) and not is_user_os_error(
        ValueError()
    )
    text = console.export_text()
    assert "error: /data/out/metrics.csv: permission denied" in text
    assert "error: /data/out/mask.nii.gz: no space left on device" in text
    assert "error: /data/f/x: not a directory" in text


def test_positive_number_and_device_callbacks() -> None:
    minutes = positive_number("--minutes", "minutes")
    assert minutes(2.5) == 2.5 and minutes(None) is None
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(
            ConfigError, match=r"^--minutes .*: expected a positive, finite number of minutes"
        ):
            minutes(bad)
    assert device_option("cpu") == "cpu" and device_option("auto") == "auto"
    with pytest.raises(ConfigError, match=r"^--device tpu: not a device medseg can use"):
        device_option("tpu")


def test_warning_printer_prints_each_data_warning_once() -> None:
    console = Console(record=True, width=200, soft_wrap=True)
    others: list[str] = []
    printer = WarningPrinter(lambda message, *args, **kwargs: others.append(str(message)), console)
    for text in ("a.nii: odd spacing", "a.nii: odd spacing", *(f"w{i}" for i in range(MAX_WARNINGS + 2))):
        printer(text, DataWarning, "x.py", 1)
    printer("a library's warning", UserWarning, "x.py", 1)
    printer.close()
    lines = console.export_text().splitlines()
    assert lines[0] == "warning: a.nii: odd spacing" and len(lines) == MAX_WARNINGS + 1
    assert lines[-1] == "warning: … and 3 more warnings not shown"
    assert others == ["a library's warning"]


def test_a_data_warning_in_a_command_is_a_warning_line(tmp_path: Path) -> None:
    import nibabel as nib

    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    for name in ("p", "g"):
        nib.save(
            nib.Nifti1Image(mask.T, np.diag([500.0, 500.0, 500.0, 1.0])), str(tmp_path / f"{name}.nii.gz")
        )
    args = ["evaluate", "--pred", str(tmp_path / "p.nii.gz"), "--gt", str(tmp_path / "g.nii.gz")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert (
        "warning: " in result.output
        and "g.nii.gz: voxel spacing (500, 500, 500) mm is above 100 mm" in result.output
    )
