"""Rendering a leaderboard / Table-4 frame as markdown, CSV or HTML.

md and html are for reading: fixed decimals (80.0, not 80), blanks for missing values, "damaged" for
a stored value that failed its checks. csv is for loading back: the numeric frame as it is (a damaged
value is an empty cell, never a number).
"""

from __future__ import annotations

import base64
import html as html_text
import math
from typing import Any

import pandas as pd

from .columns import (
    COLUMN_FORMATS_ATTR, DAMAGED_CELLS_ATTR, DAMAGED_TEXT, HEADLINE_METRICS, KNN_COL, LINEAR_COL, NLL_COL,
    THROUGHPUT_COL, WALL_COL,
)
from .records import none_if_na

RENDER_FORMATS: tuple[str, ...] = ("md", "csv", "html")


def decimals(col: str) -> int | None:
    """Fixed decimals per column so 80.0 prints as 80.0, not 80; None = as is."""
    if col in (KNN_COL, LINEAR_COL, WALL_COL, THROUGHPUT_COL):
        return 1
    if col.endswith(" ours") or col.endswith(" paper"):
        return 1
    if col == NLL_COL:
        return 3
    if col in HEADLINE_METRICS.values():
        return 1
    return None


def fmt_sig4(v: float) -> str:
    """4 significant digits without exponent for everyday magnitudes (3.457, 0.01235, 12350)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    mag = math.floor(math.log10(abs(v)))
    if -4 <= mag < 6:
        return f"{v:.{max(0, 3 - mag)}f}"
    return f"{v:.4g}"


def fmt_cell(v: Any, dec: int | str | None, is_bool: bool) -> str:
    """One display cell: "yes"/"" for booleans, "" for missing, ``dec`` decimals or "sig4"."""
    if is_bool:
        return "yes" if bool(v) else ""
    v = none_if_na(v)
    if v is None:
        return ""
    if dec is not None and isinstance(v, (int, float)) and not math.isnan(float(v)):
        if dec == "sig4":
            return fmt_sig4(float(v))
        return f"{float(v):.{dec}f}"
    return str(v)


def display(df: pd.DataFrame) -> pd.DataFrame:
    """All-string copy with fixed decimals, blanks for missing values and "damaged" where flagged."""
    formats = df.attrs.get(COLUMN_FORMATS_ATTR) or {}
    damaged = set(df.attrs.get(DAMAGED_CELLS_ATTR) or ())
    out = {}
    for col in df.columns:
        is_bool = pd.api.types.is_bool_dtype(df[col])
        fmt = formats.get(col)
        dec: int | str | None = 1 if fmt == "pct" else "sig4" if fmt == "sig4" else decimals(str(col))
        out[col] = [
            DAMAGED_TEXT if (i, col) in damaged else fmt_cell(v, dec, is_bool) for i, v in enumerate(df[col].tolist())
        ]
    return pd.DataFrame(out, columns=list(df.columns), dtype=object)


def render_html_with_figure(table_html: str, png: bytes, alt: str = "leaderboard: each row's mean and 95% interval") -> str:
    """The html table with ``png`` above it as an ``<img>`` whose source is a base64 data URI, so the
    page is one self-contained file (nothing to keep beside it)."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img src="{uri}" alt="{html_text.escape(alt)}"></figure>\n{table_html}'


def render(df: pd.DataFrame, fmt: str, figure: bytes | None = None) -> str:
    """Render a leaderboard/table frame as markdown, CSV or HTML (see the module docstring).

    ``figure`` (PNG bytes) is embedded above an html table; md and csv are text only, so a figure
    there is refused rather than dropped without a word.
    """
    if fmt not in RENDER_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(RENDER_FORMATS)}")
    if figure is not None and fmt != "html":
        raise ValueError(f"a figure is embedded only in html, not {fmt}; write it to a file instead (--plot FILE.png)")
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = display(df)
    if fmt == "html":
        table = shown.to_html(index=False, na_rep="")
        return table if figure is None else render_html_with_figure(table, figure)
    colalign = [
        "right" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "left"
        for c in df.columns
    ]
    # disable_numparse: cells are already formatted; tabulate would turn "80.0" into "80".
    return shown.to_markdown(index=False, disable_numparse=True, colalign=colalign)
