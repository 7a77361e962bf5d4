"""results.render: display formats, and damaged cells that are never shown as numbers."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from ssl_bench.results.columns import COLUMN_FORMATS_ATTR, DAMAGED_CELLS_ATTR, KNN_COL, LINEAR_COL, NLL_COL
from ssl_bench.results.render import fmt_sig4, render


def _frame() -> pd.DataFrame:
    """A table as build_leaderboard leaves it (plugin metrics already rounded to 4 significant digits)."""
    df = pd.DataFrame({"method": ["mae", "ldae"], LINEAR_COL: [80.0, float("nan")], KNN_COL: [float("nan"), 61.25],
                       NLL_COL: [3.45678, 3.0], "miou": [0.456789, 123500.0], "labels": [True, False]})
    df.attrs[COLUMN_FORMATS_ATTR] = {"miou": "sig4"}
    df.attrs[DAMAGED_CELLS_ATTR] = [(1, LINEAR_COL)]
    return df


def _rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()]


def test_markdown_cells() -> None:
    rows = _rows(render(_frame(), "md"))
    assert rows[0] == ["method", LINEAR_COL, KNN_COL, NLL_COL, "miou", "labels"]
    assert rows[2] == ["mae", "80.0", "", "3.457", "0.4568", "yes"]
    assert rows[3] == ["ldae", "damaged", "61.2", "3.000", "123500", ""]  # 61.25 -> 61.2 (round half to even)


def test_html_says_damaged_and_csv_leaves_it_empty() -> None:
    html = render(_frame(), "html")
    assert "<td>damaged</td>" in html and "<td>80.0</td>" in html
    back = pd.read_csv(io.StringIO(render(_frame(), "csv")))
    assert back[LINEAR_COL].tolist()[0] == 80.0 and pd.isna(back[LINEAR_COL].tolist()[1])
    assert "damaged" not in render(_frame(), "csv")


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="choose one of md, csv, html"):
        render(_frame(), "latex")


@pytest.mark.parametrize("value, text", [(3.45678, "3.457"), (0.0123456, "0.01235"), (12350.0, "12350"),
                                         (0.0, "0"), (1.5e-7, "1.5e-07"), (123456789.0, "1.235e+08")])
def test_four_significant_digits(value: float, text: str) -> None:
    assert fmt_sig4(value) == text
