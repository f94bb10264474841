import pandas as pd
import pytest

from medseg.report.tables import markdown_table


def test_rows_with_renamed_columns() -> None:
    text = markdown_table([{"a": 1, "b": 0.123456}, {"a": 2, "b": 1.0}], {"a": "run", "b": "Dice"})
    assert text.splitlines() == ["| run | Dice |", "|---|---|", "| 1 | 0.1235 |", "| 2 | 1.0000 |"]


def test_dataframe_with_index_and_missing_column() -> None:
    frame = pd.DataFrame({"x": [0.5]}, index=pd.Index(["mean"], name="patient"))
    assert markdown_table(frame, index=True, floatfmt=".2f").splitlines()[-1] == "| mean | 0.50 |"
    with pytest.raises(KeyError, match="nope"):
        markdown_table(frame, ["nope"])


def test_per_column_formats() -> None:
    text = markdown_table([{"a": 1.23456, "b": 2.5}], floatfmt={"a": ".1f"})
    assert text.splitlines()[-1] == "| 1.2 | 2.5000 |"
