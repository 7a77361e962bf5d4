"""The vocabulary the tables and their renderer share: column names, the headline metrics, and the
``DataFrame.attrs`` keys that carry display hints (number formats, damaged cells) to :mod:`.render`."""

from __future__ import annotations

KNN_COL = "k-NN top-1 (k=20)"
LINEAR_COL = "linear top-1"
NLL_COL = "NLL (bits/dim)"
WALL_COL = "wall time (s)"
THROUGHPUT_COL = "throughput (img/s)"
LABELS_COL = "labels"

#: Metric name -> leaderboard column, in display order. ``knn_top1`` is resolved specially (k=20
#: only, see ``queries.knn_top1_k20``). These are the built-in evaluators' columns; a plugin
#: evaluator needs no entry here: its metrics get columns of their own (see :data:`BUILTIN_EVALUATORS`).
HEADLINE_METRICS: dict[str, str] = {
    "knn_top1": KNN_COL,
    "linear_top1": LINEAR_COL,
    "linear_top5": "linear top-5",
    "nll_bpd": NLL_COL,
}
#: Metric -> (column, protocol key): a column beside the metric that says what it is measured on,
#: e.g. NLL in "pixel" bits/dim (comparable with the diffusion literature) or per "latent" dim of a
#: tokenizer (comparable only within that tokenizer), so the two are never read as one scale.
QUALIFIER_COLUMNS: dict[str, tuple[str, str]] = {"nll_bpd": ("NLL space", "space")}
#: Shown even when no run has them, so the core comparison is always visible.
ALWAYS_SHOWN: tuple[str, ...] = ("knn_top1", "linear_top1")
#: Evaluators whose columns are the fixed HEADLINE_METRICS above; their other metrics
#: (``linear_train_top1``, ``knn_top1_k10``, ``nll_bpd_stderr``) stay in the store only.
#: Any other evaluator gets a column per metric (see ``leaderboard.build_leaderboard``).
BUILTIN_EVALUATORS: tuple[str, ...] = ("knn", "linear", "nll")

#: ``df.attrs`` key: column -> "pct" (one decimal) or "sig4" (4 significant digits), for render().
COLUMN_FORMATS_ATTR = "column_formats"
#: ``df.attrs`` key: ``[(row position, column), ...]`` of cells whose stored value is damaged. The
#: frame holds NaN there (so a CSV leaves them empty); md / html say "damaged".
DAMAGED_CELLS_ATTR = "damaged_cells"
#: What md / html show in a damaged cell.
DAMAGED_TEXT = "damaged"
#: ``df.attrs`` key: the metric columns of a leaderboard frame (each with ``sd`` / ``lo`` / ``hi`` /
#: ``best`` companions), in display order: what the plot and the readable renderings iterate over.
METRIC_COLUMNS_ATTR = "metric_columns"
