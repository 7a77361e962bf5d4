"""Pictures of the tables: the leaderboard's rows with their 95% intervals, and the deconstruction
chain beside the paper.

A table of means hides whether two rows can be told apart; a picture of the intervals shows it at a
glance. Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``: importing this module changes no global matplotlib state (backend, rcParams, open
figures), so it is safe inside a notebook or a host program that has its own backend.

The leaderboard frame follows the contract of ``build_leaderboard``: "row" (the row label),
"backbone", "dataset", "baseline" and, for each metric column C in ``df.attrs["metric_columns"]``,
C (mean), f"{C} lo" / f"{C} hi" (95% interval) and f"{C} best" (cannot be told apart from the best).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..errors import SSLBenchError
from ..files import atomic_write_bytes
from .render import render

#: ``df.attrs`` key listing the metric columns C of an aggregated leaderboard frame.
METRIC_COLUMNS_ATTR = "metric_columns"
BEST_COLOR, ROW_COLOR, BASELINE_COLOR, PAPER_COLOR = "C3", "C0", "0.35", "C1"
#: Columns that, when the frame holds more than one value, join "method" in a row's label.
LABEL_CONTEXT: tuple[str, ...] = ("dataset", "backbone")
PNG_DPI = 120


class NothingToPlotError(SSLBenchError, ValueError):
    """The frame has no value to draw (no finished run matches, or no metric column has a number)."""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _number(v: Any) -> float | None:
    """A finite float, or None for a missing / NaN / non-numeric cell."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def row_labels(df: pd.DataFrame) -> list[str]:
    """The label of each row: its "row" label (the leaderboard's; "method" in a frame without one),
    plus dataset / backbone where the frame holds more than one, e.g. "mae (digits, vit-nano)"; a
    single dataset and backbone go in the figure title instead."""
    context = [c for c in LABEL_CONTEXT if c in df.columns and df[c].dropna().nunique() > 1]
    name = "row" if "row" in df.columns else "method"
    labels = []
    for _, row in df.iterrows():
        extra = ", ".join(str(row[c]) for c in context if pd.notna(row[c]))
        labels.append(f"{row[name]} ({extra})" if extra else str(row[name]))
    return labels


def _group_key(row: pd.Series) -> tuple[str, ...]:
    """Which rows a baseline stands beside: those of its dataset and backbone."""
    return tuple(str(row[c]) if c in row.index and pd.notna(row[c]) else "" for c in LABEL_CONTEXT)


def _seeds_text(df: pd.DataFrame) -> str:
    """How many seeds each point is the mean of, from the frame's ``n`` column (a figure of means
    must say over how many runs)."""
    ns = sorted({int(n) for n in df["n"].dropna()}) if "n" in df.columns else []
    if not ns:
        return "mean"
    return f"mean over n = {ns[0]} seed{'s' if ns[0] != 1 else ''}" if len(ns) == 1 else f"mean over n = {ns[0]}-{ns[-1]} seeds per row"


def _title(df: pd.DataFrame) -> str:
    """The dataset / backbone shared by every row (they are left out of the row labels)."""
    shared = [str(df[c].dropna().iloc[0]) for c in LABEL_CONTEXT if c in df.columns and df[c].dropna().nunique() == 1]
    return ", ".join(shared)


def _interval(row: pd.Series, col: str) -> tuple[float, float] | None:
    """The row's (lo, hi) for column ``col``, or None where the frame has none."""
    lo, hi = _number(row.get(f"{col} lo")), _number(row.get(f"{col} hi"))
    return None if lo is None or hi is None else (lo, hi)


def png_bytes(fig: Figure, path: str | Path | None = None) -> bytes:
    """Render ``fig`` as PNG on its own Agg canvas; also write it atomically to ``path`` if given."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data


# ---------------------------------------------------------------------------------------------
# the leaderboard
# ---------------------------------------------------------------------------------------------


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of the frame that hold at least one value (a panel each)."""
    return [c for c in df.attrs.get(METRIC_COLUMNS_ATTR) or []
            if c in df.columns and any(_number(v) is not None for v in df[c])]


def _draw_metric_panel(ax: Any, df: pd.DataFrame, labels: list[str], col: str) -> None:
    """One panel: rows with a value as means with horizontal 95% error bars (top to bottom in frame
    order), baselines as dashed vertical lines over the rows they were scored with, their interval a
    light band, named above the panel."""
    values = [_number(v) for v in df[col]]  # a list: a Series would turn None back into NaN
    is_base = df["baseline"].fillna(False).astype(bool) if "baseline" in df.columns else pd.Series(False, index=df.index)
    best_col = f"{col} best"
    shown = [i for i in range(len(df)) if values[i] is not None and not is_base.iloc[i]]
    pos = {i: y for y, i in enumerate(shown)}
    for i in shown:
        row, mean = df.iloc[i], values[i]
        best = bool(row.get(best_col)) if pd.notna(row.get(best_col, None)) else False
        iv = _interval(row, col)
        xerr = None if iv is None else [[max(0.0, mean - iv[0])], [max(0.0, iv[1] - mean)]]
        color = BEST_COLOR if best else ROW_COLOR
        ax.errorbar([mean], [pos[i]], xerr=xerr, fmt="o", color=color, ecolor=color, capsize=3,
                    markerfacecolor=color if best else "white", label=labels[i])
    ax.set_yticks(range(len(shown)), [labels[i] for i in shown])
    for tick, i in zip(ax.get_yticklabels(), shown):
        row = df.iloc[i]
        if pd.notna(row.get(best_col, None)) and bool(row.get(best_col)):
            tick.set_fontweight("bold")
            tick.set_color(BEST_COLOR)
    n = max(1, len(shown))
    ax.set_ylim(n - 0.5, -0.5)  # first row on top
    for i in range(len(df)):
        if not is_base.iloc[i] or values[i] is None:
            continue
        row, x = df.iloc[i], values[i]
        beside = [pos[j] for j in shown if _group_key(df.iloc[j]) == _group_key(row)] or list(range(n))
        y0, y1 = min(beside) - 0.45, max(beside) + 0.45
        ax.plot([x, x], [y0, y1], linestyle="--", linewidth=1.2, color=BASELINE_COLOR, label=labels[i])
        iv = _interval(row, col)
        if iv is not None:
            ax.fill_betweenx([y0, y1], iv[0], iv[1], color=BASELINE_COLOR, alpha=0.12, linewidth=0)
        # named above the panel, where no row's bar can be under the name
        ax.annotate(labels[i], xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, color=BASELINE_COLOR)
    ax.set_xlabel(col)
    ax.grid(axis="x", alpha=0.3)


def leaderboard_figure(df: pd.DataFrame) -> Figure:
    """The leaderboard as a figure: one panel (Axes) per metric column with a value, in
    ``df.attrs["metric_columns"]`` order. Raises :class:`NothingToPlotError` on a frame without values."""
    cols = metric_columns(df)
    if df.empty or not cols:
        raise NothingToPlotError(
            "nothing to plot: the leaderboard has no metric values (no finished run matches); "
            "run `ssl-bench run METHOD` first, or drop --dataset / --backbone"
        )
    labels = row_labels(df)
    # panels stacked (long row labels get the width), each as tall as the rows it shows
    is_base = [bool(b) for b in df["baseline"].fillna(False)] if "baseline" in df.columns else [False] * len(df)
    heights = [max(1, sum(_number(v) is not None and not b for v, b in zip(df[c], is_base))) for c in cols]
    fig = Figure(figsize=(9.0, 1.2 + sum(0.9 + 0.32 * h for h in heights)), layout="constrained")
    axes = fig.subplots(len(cols), 1, squeeze=False, height_ratios=[0.9 + 0.32 * h for h in heights])[:, 0]
    for ax, col in zip(axes, cols):
        _draw_metric_panel(ax, df, labels, col)
    title = _title(df)
    fig.suptitle(f"leaderboard{': ' + title if title else ''} ({_seeds_text(df)}, 95% interval)", fontsize=11)
    fig.legend(handles=[
        Line2D([], [], marker="o", color=BEST_COLOR, label="cannot be told apart from the best"),
        Line2D([], [], marker="o", color=ROW_COLOR, markerfacecolor="white", label="other rows"),
        Line2D([], [], linestyle="--", color=BASELINE_COLOR, label="baseline"),
    ], loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    return fig


def plot_leaderboard(df: pd.DataFrame, path: str | Path | None = None) -> bytes:
    """The leaderboard figure as PNG bytes, also written atomically to ``path`` if given."""
    return png_bytes(leaderboard_figure(df), path)


def leaderboard_outputs(df: pd.DataFrame, fmt: str, plot_path: str | Path | None = None) -> tuple[str, bytes | None]:
    """What ``ssl-bench leaderboard`` prints and draws: (the rendered table, the PNG or None).

    The figure is drawn when ``plot_path`` is given (then a frame without values is an error) and for
    html, which embeds it (there a frame without values just renders its table). md and csv are
    rendered exactly as :func:`render` does.
    """
    png = None
    if plot_path is not None:
        png = plot_leaderboard(df, plot_path)
    elif fmt == "html" and metric_columns(df):
        png = plot_leaderboard(df)
    return render(df, fmt, figure=png if fmt == "html" else None), png


# ---------------------------------------------------------------------------------------------
# the deconstruction chain
# ---------------------------------------------------------------------------------------------


def chain_figure(
    ours: pd.DataFrame, paper: pd.DataFrame, *, row_col: str = "row", metric: str = "linear top-1",
    paper_col: str = "paper linear", title: str = "",
) -> Figure:
    """The chain's steps top to bottom (``ours`` row order): left panel ours (mean, 95% interval),
    right panel the paper's number for the same step, on a y axis they share.

    Two panels rather than one axis: ours is a small dataset and backbone, the paper ImageNet with
    DiT-L, so the values are not comparable, only the direction of each step. A step without a value
    keeps its place on the axis, with no point.
    """
    steps = [str(s) for s in ours[row_col]]
    if not any(_number(v) is not None for v in ours[metric]):
        raise NothingToPlotError(f"nothing to plot: no chain row has a {metric!r} value; run `ssl-bench deconstruct` first")
    paper_by_row = {str(r): _number(v) for r, v in zip(paper[row_col], paper[paper_col])}
    fig = Figure(figsize=(9.0, 1.4 + 0.38 * len(steps)), layout="constrained")
    ax_ours, ax_paper = fig.subplots(1, 2, sharey=True)
    ys = list(range(len(steps)))
    means = [_number(v) for v in ours[metric]]
    pts = [(y, m) for y, m in zip(ys, means) if m is not None]
    ax_ours.plot([m for _, m in pts], [y for y, _ in pts], color=ROW_COLOR, alpha=0.35, linewidth=1)
    for y, (_, row) in zip(ys, ours.iterrows()):
        m = _number(row[metric])
        if m is None:
            continue
        iv = _interval(row, metric)
        xerr = None if iv is None else [[max(0.0, m - iv[0])], [max(0.0, iv[1] - m)]]
        ax_ours.errorbar([m], [y], xerr=xerr, fmt="o", color=ROW_COLOR, capsize=3, label=steps[y])
    paper_pts = [(y, paper_by_row.get(s)) for y, s in zip(ys, steps) if paper_by_row.get(s) is not None]
    ax_paper.plot([v for _, v in paper_pts], [y for y, _ in paper_pts], marker="s", color=PAPER_COLOR,
                  linewidth=1, label="paper")
    ax_ours.set_yticks(ys, steps)
    ax_ours.set_ylim(len(steps) - 0.5, -0.5)
    ax_ours.set_title(f"ours: {metric} (mean, 95% interval)", fontsize=10)
    ax_paper.set_title("paper (ImageNet-1k, DiT-L)", fontsize=10)
    for ax in (ax_ours, ax_paper):
        ax.set_xlabel(f"{metric} (%)")
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_chain(ours: pd.DataFrame, paper: pd.DataFrame, path: str | Path | None = None, **kwargs: Any) -> bytes:
    """The chain figure (:func:`chain_figure`, same keyword options) as PNG bytes, written atomically
    to ``path`` if given."""
    return png_bytes(chain_figure(ours, paper, **kwargs), path)


__all__: Sequence[str] = [
    "METRIC_COLUMNS_ATTR", "NothingToPlotError", "chain_figure", "leaderboard_figure", "leaderboard_outputs",
    "metric_columns", "plot_chain", "plot_leaderboard", "png_bytes", "row_labels",
]
