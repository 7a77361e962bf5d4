"""results.plot: the leaderboard's intervals as a figure, the html that embeds it, and the chain beside
the paper. Frames are made by hand to the aggregated-leaderboard contract (build_leaderboard's columns)."""

from __future__ import annotations

import base64
import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from ssl_bench.errors import SSLBenchError
from ssl_bench.results.plot import (
    NothingToPlotError, chain_figure, leaderboard_figure, leaderboard_outputs, plot_chain, plot_leaderboard,
)
from ssl_bench.results.render import render

KNN, LIN = "k-NN top-1 (k=20)", "linear top-1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frame() -> pd.DataFrame:
    """Two baselines and three rows on one dataset / backbone; ldae has no k-NN value."""
    rows = [
        # method, baseline, n, knn (mean, sd, lo, hi, best), linear (mean, sd, lo, hi, best)
        ("pixels", True, 1, (40.0, None, 35.0, 45.1, False), (85.0, None, 81.2, 88.4, False)),
        ("random-init", True, 3, (20.0, 1.0, 16.0, 24.0, False), (30.0, 2.0, 25.0, 35.0, False)),
        ("mae", False, 3, (60.0, 2.0, 55.5, 64.5, True), (90.0, 1.0, 87.0, 92.5, True)),
        ("mae · corruption=additive-latent-noise", False, 3, (50.0, 3.0, 44.0, 56.0, False), (89.0, 1.2, 86.0, 91.9, True)),
        ("ldae", False, 2, (None, None, None, None, False), (80.0, 1.5, 76.0, 84.0, False)),
    ]
    data: dict[str, list] = {k: [] for k in ("method", "backbone", "dataset", "epochs", "n")}
    for col in (KNN, LIN):
        for suffix in ("", " sd", " lo", " hi", " best"):
            data[col + suffix] = []
    data["baseline"] = []
    for method, base, n, knn, lin in rows:
        data["method"].append(method)
        data["backbone"].append("vit-nano")
        data["dataset"].append("digits")
        data["epochs"].append(None if base else 10)
        data["n"].append(n)
        for col, vals in ((KNN, knn), (LIN, lin)):
            for suffix, v in zip(("", " sd", " lo", " hi"), vals[:4]):
                data[col + suffix].append(float("nan") if v is None else v)
            data[col + " best"].append(vals[4])
        data["baseline"].append(base)
    df = pd.DataFrame(data)
    df.attrs["metric_columns"] = [KNN, LIN]
    return df


def _bars(ax) -> dict[str, tuple[float, float, float]]:
    """label -> (mean, left end, right end) of each error bar drawn on ``ax``."""
    out = {}
    for c in ax.containers:
        (x,), (y,) = c.lines[0].get_data()
        (segs,) = [lc.get_segments() for lc in c.lines[2] if isinstance(lc, LineCollection)]
        (seg,) = segs
        out[c.get_label()] = (float(x), float(seg[0][0]), float(seg[1][0]))
    return out


def _reference_lines(ax) -> dict[str, float]:
    """label -> x of each vertical dashed line (the baselines)."""
    return {ln.get_label(): float(ln.get_xdata()[0]) for ln in ax.get_lines()
            if ln.get_linestyle() == "--" and len(set(ln.get_xdata())) == 1}


def test_png_bytes_written_to_the_path(tmp_path) -> None:
    out = tmp_path / "lb.png"
    png = plot_leaderboard(_frame(), out)
    assert png[:8] == PNG_MAGIC and len(png) > 10_000
    assert out.read_bytes() == png
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no partial file left beside it


def test_one_panel_per_metric_column_in_order() -> None:
    fig = leaderboard_figure(_frame())
    assert [ax.get_xlabel() for ax in fig.axes] == [KNN, LIN]


def test_the_title_says_how_many_seeds_each_point_is_the_mean_of() -> None:
    assert "(mean over n = 1-3 seeds per row, 95% interval)" in leaderboard_figure(_frame()).get_suptitle()
    three = _frame().assign(n=3)
    assert "(mean over n = 3 seeds, 95% interval)" in leaderboard_figure(three).get_suptitle()


def test_error_bars_span_the_interval_columns() -> None:
    knn_ax, lin_ax = leaderboard_figure(_frame()).axes
    assert _bars(lin_ax) == {
        "mae": (90.0, 87.0, 92.5),
        "mae · corruption=additive-latent-noise": (89.0, 86.0, 91.9),
        "ldae": (80.0, 76.0, 84.0),
    }
    # ldae has no k-NN value: left out of that panel (no bar, no tick)
    assert _bars(knn_ax) == {"mae": (60.0, 55.5, 64.5), "mae · corruption=additive-latent-noise": (50.0, 44.0, 56.0)}
    assert [t.get_text() for t in knn_ax.get_yticklabels()] == ["mae", "mae · corruption=additive-latent-noise"]
    # first row on top
    assert knn_ax.get_ylim()[0] > knn_ax.get_ylim()[1]


def test_baselines_are_reference_lines_not_bars() -> None:
    knn_ax, lin_ax = leaderboard_figure(_frame()).axes
    for ax, expected in ((knn_ax, {"pixels": 40.0, "random-init": 20.0}), (lin_ax, {"pixels": 85.0, "random-init": 30.0})):
        assert _reference_lines(ax) == expected
        assert not {"pixels", "random-init"} & set(_bars(ax))
        assert not {"pixels", "random-init"} & {t.get_text() for t in ax.get_yticklabels()}
        assert {"pixels", "random-init"} <= {t.get_text() for t in ax.texts}  # labelled with their name


def test_best_rows_are_highlighted() -> None:
    knn_ax, lin_ax = leaderboard_figure(_frame()).axes
    bold = {t.get_text() for t in lin_ax.get_yticklabels() if t.get_fontweight() == "bold"}
    assert bold == {"mae", "mae · corruption=additive-latent-noise"}
    bold_knn = {t.get_text() for t in knn_ax.get_yticklabels() if t.get_fontweight() == "bold"}
    assert bold_knn == {"mae"}


def test_labels_name_dataset_and_backbone_only_when_several() -> None:
    df = _frame()
    df.loc[2, "dataset"] = "fashion-mnist"
    lin_ax = leaderboard_figure(df).axes[1]
    labels = [t.get_text() for t in lin_ax.get_yticklabels()]
    assert labels[0] == "mae (fashion-mnist)" and labels[2] == "ldae (digits)"
    # the digits baselines stand beside the digits rows only (positions 1 and 2), not the fashion-mnist row
    lines = {ln.get_label(): ln.get_ydata() for ln in lin_ax.get_lines() if ln.get_linestyle() == "--"}
    assert sorted(lines) == ["pixels (digits)", "random-init (digits)"]
    assert min(lines["pixels (digits)"]) > 0.5 and max(lines["pixels (digits)"]) < 2.5


def test_html_embeds_the_same_png() -> None:
    df = _frame()
    text, png = leaderboard_outputs(df, "html", None)
    assert png is not None and png[:8] == PNG_MAGIC
    (b64,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert base64.b64decode(b64) == png
    assert "<table" in text and text.index("<img") < text.index("<table")
    assert render(df, "html", figure=png) == text


def test_md_and_csv_unchanged_and_plot_written(tmp_path) -> None:
    df = _frame()
    for fmt in ("md", "csv"):
        assert leaderboard_outputs(df, fmt, None) == (render(df, fmt), None)
    text, png = leaderboard_outputs(df, "md", tmp_path / "lb.png")
    assert text == render(df, "md") and (tmp_path / "lb.png").read_bytes() == png
    with pytest.raises(ValueError, match="only in html"):
        render(df, "md", figure=png)


def _empty() -> pd.DataFrame:
    df = _frame()
    for col in (KNN, LIN):
        df[col] = float("nan")
    return df


def test_a_frame_without_values_is_one_line_error(tmp_path) -> None:
    for df in (_empty(), _frame().iloc[0:0]):
        with pytest.raises(NothingToPlotError) as err:
            plot_leaderboard(df, tmp_path / "x.png")
        assert isinstance(err.value, SSLBenchError)
        assert "\n" not in str(err.value) and "ssl-bench run" in str(err.value)
    assert not (tmp_path / "x.png").exists()
    text, png = leaderboard_outputs(_empty(), "html", None)  # html without --plot: the table alone
    assert png is None and "<img" not in text


def test_no_pyplot_state() -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    plot_leaderboard(_frame())
    assert matplotlib.get_backend() == backend
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


# --- the deconstruction chain ---------------------------------------------------------------------

#: Table 3 of Chen, Liu, Xie, He 2024 (arXiv 2401.14404 v1), linear probe top-1 (%); our extra row
#: t3_r1b has no paper value.
PAPER_TABLE3 = [
    ("t3_r1_patch_pca", 65.1), ("t3_r1b_no_learned_variance", None), ("t3_r2_predict_clean", 62.4),
    ("t3_r3_no_input_scaling", 63.6), ("t3_r4_image_input", 63.6), ("t3_r5_image_output", 63.9),
    ("t3_r6_ldae", 64.5),
]


def _chain_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    paper = pd.DataFrame({"row": [r for r, _ in PAPER_TABLE3], "paper linear": [v for _, v in PAPER_TABLE3]})
    ours = pd.DataFrame({
        "row": [r for r, _ in PAPER_TABLE3],
        LIN: [87.8, 88.6, 90.6, None, 89.7, 91.7, 91.7],
        f"{LIN} lo": [85.0, 86.0, 88.1, None, 87.0, 89.5, 89.0],
        f"{LIN} hi": [90.3, 91.0, 92.8, None, 92.1, 93.6, 93.9],
    })
    return ours, paper


def test_chain_ours_beside_the_paper(tmp_path) -> None:
    ours, paper = _chain_frames()
    fig = chain_figure(ours, paper)
    ax_ours, ax_paper = fig.axes
    assert [t.get_text() for t in ax_ours.get_yticklabels()] == [r for r, _ in PAPER_TABLE3]
    bars = _bars(ax_ours)
    assert bars["t3_r2_predict_clean"] == (90.6, 88.1, 92.8)
    assert bars["t3_r6_ldae"] == (91.7, 89.0, 93.9)
    assert "t3_r3_no_input_scaling" not in bars  # no value: its place is kept, with no point
    (paper_line,) = [ln for ln in ax_paper.get_lines() if ln.get_label() == "paper"]
    x, y = paper_line.get_data()
    assert list(np.asarray(x, dtype=float)) == [65.1, 62.4, 63.6, 63.6, 63.9, 64.5]
    assert list(np.asarray(y, dtype=float)) == [0, 2, 3, 4, 5, 6]  # on the rows of those steps
    png = plot_chain(ours, paper, tmp_path / "chain.png")
    assert png[:8] == PNG_MAGIC and (tmp_path / "chain.png").read_bytes() == png


def test_chain_without_values_is_an_error() -> None:
    ours, paper = _chain_frames()
    ours[LIN] = math.nan
    with pytest.raises(NothingToPlotError, match="deconstruct"):
        chain_figure(ours, paper)
