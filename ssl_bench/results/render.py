"""Rendering a leaderboard / Table-4 frame as markdown, CSV or HTML.

md and html are for reading: fixed decimals (80.0, not 80), blanks for missing values, "damaged" for
a stored value that failed its checks. csv is for loading back: the numeric frame as it is (a damaged
value is an empty cell, never a number). A leaderboard's metric shows as ``mean ± sd`` with its 95%
interval in a column of its own (see :func:`readable`).
"""

from __future__ import annotations

import base64
import html as html_text
import math
from typing import Any

import pandas as pd

from .columns import (
    COLUMN_FORMATS_ATTR, DAMAGED_CELLS_ATTR, DAMAGED_TEXT, HEADLINE_METRICS, KNN_COL, LINEAR_COL, METRIC_COLUMNS_ATTR,
    NLL_COL, THROUGHPUT_COL, WALL_COL,
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


#: Companion columns of a metric column C (``C sd`` ...) folded into readable cells by :func:`readable`.
SPREAD_SUFFIXES: tuple[str, ...] = (" sd", " lo", " hi", " best")
#: Leaderboard columns kept out of the markdown table (csv and html carry them); the row label
#: names the method already.
MD_HIDDEN: tuple[str, ...] = ("method", "settings", "seeds", "run_ids", "baseline")
#: Appended to a mean that cannot be told apart from its column's best.
BEST_MARK = " *"


def readable(df: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """A leaderboard frame (one with ``metric_columns``) for reading: each metric cell as
    ``mean ± sd`` (the sd where n >= 2), marked ``*`` when it cannot be told apart from the column's
    best, then a ``C 95% CI`` column ``[lo, hi]`` and a signed ``C gain``; md also leaves out the
    settings / seeds / run ids, which csv and html keep. Other frames are returned as they are."""
    metric_cols = df.attrs.get(METRIC_COLUMNS_ATTR)
    if not metric_cols:
        return fold_sd(df, display(df))
    shown = display(df)
    formats = df.attrs.get(COLUMN_FORMATS_ATTR) or {}
    damaged = set(df.attrs.get(DAMAGED_CELLS_ATTR) or ())
    out: dict[str, list[str]] = {}
    for col in df.columns:
        base = next((c for c in metric_cols if col.startswith(c) and col[len(c):] in SPREAD_SUFFIXES), None)
        if base is not None or (fmt == "md" and col in MD_HIDDEN):
            continue
        if col not in metric_cols:
            out[col] = shown[col].tolist()
            if col.endswith(" gain"):
                out[col] = ["" if pd.isna(v) else f"{v:+.1f}" for v in df[col].tolist()]
            continue
        fmt_hint = formats.get(col)
        dec: int | str | None = 1 if fmt_hint == "pct" else "sig4" if fmt_hint == "sig4" else decimals(str(col))
        cells, cis = [], []
        for i, (mean, sd, lo, hi, best) in enumerate(zip(df[col], df[f"{col} sd"], df[f"{col} lo"], df[f"{col} hi"], df[f"{col} best"])):
            if (i, col) in damaged:
                cells.append(DAMAGED_TEXT)
                cis.append("")
                continue
            cell = fmt_cell(mean, dec, False)
            if cell and none_if_na(sd) is not None:
                cell += f" ± {fmt_cell(sd, dec, False)}"
            cells.append(cell + (BEST_MARK if cell and bool(best) else ""))
            known = none_if_na(lo) is not None and none_if_na(hi) is not None
            cis.append(f"[{fmt_cell(lo, dec, False)}, {fmt_cell(hi, dec, False)}]" if cell and known else "")
        out[col] = cells
        out[f"{col} 95% CI"] = cis
    return pd.DataFrame(out, dtype=object)


def fold_sd(df: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """Fold every ``C sd`` column into ``C`` as ``mean ± sd`` (the Table-4 layout's seeds)."""
    for col in [c for c in df.columns if f"{c} sd" in df.columns]:
        sds = df[f"{col} sd"].tolist()
        shown[col] = [cell + (f" ± {float(sd):.1f}" if cell and cell != DAMAGED_TEXT and none_if_na(sd) is not None else "")
                      for cell, sd in zip(shown[col].tolist(), sds)]
        shown = shown.drop(columns=[f"{col} sd"])
    return shown


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
    shown = readable(df, fmt)
    if fmt == "html":
        table = shown.to_html(index=False, na_rep="")
        return table if figure is None else render_html_with_figure(table, figure)
    colalign = [
        "right" if c not in df.columns or (pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))
        else "left"
        for c in shown.columns
    ]
    # disable_numparse: cells are already formatted; tabulate would turn "80.0" into "80".
    return shown.to_markdown(index=False, disable_numparse=True, colalign=colalign)
