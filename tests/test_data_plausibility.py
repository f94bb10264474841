"""medseg.data.plausibility: warnings for valid input that is probably not what was meant."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from medseg.data.plausibility import (
    check_case_count,
    check_labels_present,
    check_spacing_plausible,
    implausible_spacing,
)
from medseg.errors import DataWarning


def test_implausible_spacing_skips_singleton_axes() -> None:
    assert implausible_spacing((1.0, 0.5, 0.5)) == []
    assert implausible_spacing((500.0, 0.5, 0.5)) == [500.0]
    assert implausible_spacing((0.5, 1e-4)) == [1e-4]
    assert implausible_spacing((100.0, 1e-3)) == []  # the bounds themselves are plausible
    # a 2D image exported as a one-slice volume carries 999 mm along its single slice
    assert implausible_spacing((999.0, 0.25, 0.25), shape=(1, 8, 8)) == []
    assert implausible_spacing((999.0, 0.25, 0.25), shape=(2, 8, 8)) == [999.0]


def test_check_spacing_plausible_warns_once_with_the_file() -> None:
    with pytest.warns(DataWarning, match=r"scan\.nii: voxel spacing \(500, 1, 1\) mm is above 100 mm"):
        check_spacing_plausible((500.0, 1.0, 1.0), "scan.nii")
    with pytest.warns(DataWarning, match=r"spacing option \(0\.0001\) mm is below 1 µm"):
        check_spacing_plausible((1e-4,), "root", what="spacing option")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_spacing_plausible((0.8, 0.8, 3.0), "fine.nii")


def test_check_case_count() -> None:
    where = Path("dataset.json")
    with pytest.warns(DataWarning, match=r"dataset\.json: numTraining says 5 cases but 3 were found"):
        check_case_count(5, 3, where)
    with pytest.warns(DataWarning, match=r"numTraining is 'five', not a count; 3 cases found"):
        check_case_count("five", 3, where)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_case_count(3, 3, where)
        check_case_count(None, 3, where)


def test_check_labels_present() -> None:
    with pytest.warns(DataWarning, match=r"label 7 occurs in no prediction \(p\) and no ground truth \(g\)"):
        check_labels_present([7], {1, 2}, "p", "g")
    with pytest.warns(DataWarning, match=r"labels 7, 9 occur in no prediction"):
        check_labels_present([1, 7, 9], {1}, "p", "g")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_labels_present([1, 2], {1, 2}, "p", "g")
