"""How the CLI reports errors (medseg.cli_errors): one line, exit 2; --debug shows the traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from medseg.cli import app
from medseg.cli_errors import error_message, parse_spacing_option, report_error
from medseg.errors import ConfigError, DataError

runner = CliRunner()


def test_parse_spacing_option() -> None:
    assert parse_spacing_option("0.5,0.25") == (0.5, 0.25)
    assert parse_spacing_option(" 2 , 1,1") == (2.0, 1.0, 1.0)
    for bad in ("-1,-1", "0,0", "nan,1", "inf", "a,b", ""):
        with pytest.raises(ConfigError, match=rf"--spacing '{bad}': expected positive numbers in mm"):
            parse_spacing_option(bad)
    with pytest.raises(ConfigError, match=r"^-o spacing '0': "):
        parse_spacing_option("0", option="-o spacing")


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
