"""The leaderboard: one row per configuration, aggregated over its seeds, with 95% intervals.

The table is *derived* data: it is rebuilt from the store on demand, so re-evaluating a run
(``ssl-bench eval``) or finishing a new one is reflected without anyone editing a file by hand.
Baselines (pixels / random-init) come first. The settings are those that decide what the numbers mean
(:mod:`.settings`): runs that differ in them are kept apart, each beside the baselines scored the same
way, and the dataset cell names the setting that differs. The built-in evaluators' headline metrics
have fixed columns; every other evaluator (a third-party plugin) gets a column per metric, or per name
in its protocol record's ``"headline"``, so a new evaluator shows up without editing this file.

Pass a store opened with ``ResultsStore(path, readonly=True)``: the table only reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from .columns import (
    ALWAYS_SHOWN, BUILTIN_EVALUATORS, COLUMN_FORMATS_ATTR, DAMAGED_CELLS_ATTR, HEADLINE_METRICS, LABELS_COL,
    METRIC_COLUMNS_ATTR, QUALIFIER_COLUMNS, THROUGHPUT_COL, WALL_COL,
)
from .queries import KNN_K, LatestRun
from .records import BASELINE_METHOD_NAMES, is_accuracy_metric, short_repr
from .rows import ConfigRow, configuration_rows
from .settings import setting_text
from .stats import overlaps
from .stats import summarise as stats_summary
from .store import ResultsStore

#: Metrics where lower is better (the best of such a column is its minimum).
LOWER_IS_BETTER: frozenset[str] = frozenset({"nll_bpd"})
#: Metrics that get a ``gain`` column: the row's mean minus its own untrained network's.
GAIN_METRICS: tuple[str, ...] = ("knn_top1", "linear_top1")
FIXED_COLUMNS: tuple[str, ...] = ("row", "method", "backbone", "dataset", "epochs", "n")
TAIL_COLUMNS: tuple[str, ...] = (WALL_COL, THROUGHPUT_COL, LABELS_COL, "baseline", "seeds", "run_ids", "settings")


def sort_key(row: ConfigRow) -> tuple[Any, ...]:
    """Per dataset and data settings: baselines first (pixels, random-init, a method's own untrained
    network), then linear top-1 mean desc, missing last."""
    lin = row.values("linear_top1")
    mean = sum(lin) / len(lin) if lin else None
    base = row.method.split(":")[0]
    base_order = BASELINE_METHOD_NAMES.index(base) if base in BASELINE_METHOD_NAMES else 99
    return (
        row.dataset or "", row.data, 0 if row.baseline else 1, base_order if row.baseline else 0,
        row.method if row.baseline else "", mean is None, -(mean or 0.0), row.label, row.backbone or "",
    )


def dataset_labels(rows: list[ConfigRow]) -> list[str]:
    """Each row's dataset cell: the name, plus the settings that differ where one dataset appears with
    more than one (``digits (limit_train=1000)`` beside ``digits (limit_train=200)``), written as the
    ``--set`` values that select them."""
    variants: dict[str | None, set[tuple[tuple[str, str], ...]]] = {}
    for r in rows:
        variants.setdefault(r.dataset, set()).add(r.data)
    differing: dict[str | None, list[str]] = {}  # per dataset: the keys whose values differ
    for name, settings in variants.items():
        values = [dict(d) for d in settings]
        keys = sorted({k for v in values for k in v})
        differing[name] = [k for k in keys if len({v.get(k) for v in values}) > 1] if len(values) > 1 else []
    labels = []
    for r in rows:
        keys, mine = differing[r.dataset], dict(r.data)
        shown = ", ".join(f"{k}={setting_text(mine.get(k))}" for k in keys)
        labels.append(f"{r.dataset or ''} ({shown})" if keys else r.dataset or "")
    return labels


def sig4(v: float) -> float:
    """Round to 4 significant digits: the precision shown for plugin metrics of unknown scale."""
    v = float(v)
    return v if v == 0 or not math.isfinite(v) else float(f"{v:.4g}")


def headline_names(store: ResultsStore, e: LatestRun, evaluator: str, metric: str) -> list[str] | None:
    """The ``"headline"`` metric names an evaluator's protocol record declares, or None.

    A declaration that is neither a name nor a list of names is damaged: one warning line naming the
    run, and the evaluator is shown as if it declared none.
    """
    raw = e.protocols.get(metric, {}).get("headline")
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, (list, tuple)) and all(isinstance(n, str) for n in raw):
        return list(raw)
    store.damage.report(
        e.run_id, e.run_dir, "metrics.protocol_json",
        f"\"headline\" must be a metric name or a list of names, got {short_repr(raw)}",
        f" (evaluator {evaluator!r})", outcome="its headline is ignored: every metric of it gets a column",
    )
    return None


@dataclass(frozen=True)
class ExtraColumn:
    """A leaderboard column for one metric of a non-built-in evaluator."""

    evaluator: str
    metric: str
    column: str

    @property
    def fmt(self) -> str:
        return "pct" if is_accuracy_metric(self.metric) else "sig4"

    @property
    def accuracy(self) -> bool:
        return self.fmt == "pct"

    def values(self, row: ConfigRow) -> list[float]:
        """The metric in each of the row's runs that this evaluator scored."""
        return [float(e.metrics[self.metric]) for e in row.runs
                if e.evaluators.get(self.metric) == self.evaluator and e.metrics.get(self.metric) is not None]

    def damaged(self, row: ConfigRow) -> bool:
        return any(e.evaluators.get(self.metric) == self.evaluator and self.metric in e.damaged for e in row.runs)


def extra_columns(store: ResultsStore, entries: list[LatestRun], reserved: set[str]) -> list[ExtraColumn]:
    """Columns for evaluators outside BUILTIN_EVALUATORS, evaluators in name order.

    An evaluator gets a column per metric that some shown run has (a value, or a damaged one), in the
    order the metrics were written; if any shown run's protocol record for it lists ``"headline"``
    (one name or a list), only those names, in that order. A column is named after the metric, or
    ``<evaluator>:<metric>`` when that name is taken (a fixed column, or the same metric name from two
    evaluators).
    """
    seen: dict[str, list[str]] = {}
    declared: dict[str, list[str]] = {}
    for e in entries:
        for metric, evaluator in e.evaluators.items():
            if evaluator in BUILTIN_EVALUATORS or metric in HEADLINE_METRICS:
                continue
            heads = headline_names(store, e, evaluator, metric)
            if heads is not None:
                names = declared.setdefault(evaluator, [])
                names += [h for h in heads if h not in names]
            if e.metrics.get(metric) is not None or metric in e.damaged:
                names = seen.setdefault(evaluator, [])
                if metric not in names:
                    names.append(metric)
    pairs = []
    for evaluator in sorted(seen):
        names = seen[evaluator]
        if evaluator in declared:
            names = [n for n in declared[evaluator] if n in names]
        pairs += [(evaluator, n) for n in names]
    counts: dict[str, int] = {}
    for _, n in pairs:
        counts[n] = counts.get(n, 0) + 1
    return [ExtraColumn(ev, n, n if n not in reserved and counts[n] == 1 else f"{ev}:{n}") for ev, n in pairs]


@dataclass(frozen=True)
class MetricColumn:
    """A metric column of the table: where its per-seed values come from and how they are shown."""

    column: str
    metric: str
    accuracy: bool
    higher_is_better: bool
    values: Callable[[ConfigRow], list[float]]
    damaged: Callable[[ConfigRow], bool]
    fmt: str | None = None  # "pct" / "sig4" for plugin columns (render's hint)


def headline_column(name: str) -> MetricColumn:
    return MetricColumn(
        HEADLINE_METRICS[name], name, is_accuracy_metric(name), name not in LOWER_IS_BETTER,
        values=lambda r, n=name: r.values(n), damaged=lambda r, n=name: r.damaged(f"knn_top1_k{KNN_K}" if n == "knn_top1" else n)
        or (n == "knn_top1" and r.damaged("knn_top1")),
    )


def rounded(v: float | None, digits: int) -> float | None:
    return None if v is None else round(float(v), digits)


def summarise(col: MetricColumn, row: ConfigRow) -> dict[str, Any]:
    """Mean, sd, interval and n of one column in one row (all None when the row has no value)."""
    vals = col.values(row)
    got = stats_summary(vals, row.n_test(col.metric), accuracy=col.accuracy, scale=100.0 if col.accuracy else 1.0)
    return {**got, "n": len(vals)}


def shown(col: MetricColumn, got: dict[str, Any]) -> dict[str, float | None]:
    """A column's summary as the table holds it: accuracies in percent with the mean to one decimal
    (as shown) and the spread to two; a plugin's other numbers to 4 significant digits."""
    if col.accuracy:
        return {"mean": rounded(got["mean"], 1), **{k: rounded(got[k], 2) for k in ("sd", "lo", "hi")}}
    fix = (lambda v: None if v is None else sig4(v)) if col.fmt == "sig4" else (lambda v: rounded(v, 4))
    return {k: fix(got[k]) for k in ("mean", "sd", "lo", "hi")}


def mark_best(summaries: list[dict[str, Any]], rows: list[ConfigRow], col: MetricColumn) -> list[bool]:
    """Per row: whether it cannot be told apart from the best row of the column (its 95% interval
    overlaps the best one's), among the trained rows of the same dataset, data settings and backbone.
    Baselines are references, never marked; a lone trained row neither."""
    marks = [False] * len(rows)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(rows):
        if not r.baseline and summaries[i]["mean"] is not None:
            groups.setdefault((r.dataset, r.data, r.backbone), []).append(i)
    for members in groups.values():
        if len(members) < 2:  # nothing to tell apart
            continue
        sign = 1.0 if col.higher_is_better else -1.0
        best = max(members, key=lambda i: sign * summaries[i]["mean"])
        b = (summaries[best]["lo"], summaries[best]["hi"])
        for i in members:
            marks[i] = i == best or overlaps((summaries[i]["lo"], summaries[i]["hi"]), b)
    return marks


def untrained_partner(row: ConfigRow, rows: list[ConfigRow]) -> ConfigRow | None:
    """The row's own untrained network: ``random-init:<its label>`` scored with it, else the plain
    ``random-init`` of the same data, probes and backbone."""
    same = [r for r in rows if r.baseline and (r.dataset, r.data, r.backbone) == (row.dataset, row.data, row.backbone)]
    own = [r for r in same if r.label == f"random-init:{row.label}"]
    plain = [r for r in same if r.method == "random-init"]
    return (own or plain or [None])[0]


def build_leaderboard(store: ResultsStore, dataset: str | None = None, backbone: str | None = None) -> pd.DataFrame:
    """One row per configuration (method + the settings that differ from its defaults, backbone,
    dataset, data and probe settings), aggregated over its seeds (the latest run of each).

    ``row`` is the configuration's label (``method`` the registered method it runs). For every
    metric column C: C is the mean over seeds (accuracies in percent), ``C sd`` the
    sample standard deviation (n >= 2), ``C lo`` / ``C hi`` the 95% interval (:mod:`.stats`: the seed
    spread together with test-set sampling), ``C best`` whether the row cannot be told apart from the
    column's best, and for the k-NN and linear columns ``C gain`` the mean minus that of the row's own
    untrained network. ``n`` is the number of seeds, ``seeds`` / ``run_ids`` the runs behind the row,
    ``settings`` the full difference from the method's defaults. ``df.attrs["metric_columns"]`` lists
    the metric columns; ``column_formats`` / ``damaged_cells`` are render's hints, as before.
    """
    rows = sorted(configuration_rows(store, dataset, backbone), key=sort_key)
    present = [n for n in HEADLINE_METRICS if n in ALWAYS_SHOWN or any(headline_column(n).values(r) or headline_column(n).damaged(r) for r in rows)]
    columns_m = [headline_column(n) for n in present]
    reserved = set(HEADLINE_METRICS.values()) | {c for c, _ in QUALIFIER_COLUMNS.values()} | set(FIXED_COLUMNS) | set(TAIL_COLUMNS)
    reserved |= {"seed", "run_id"}  # the per-run columns of `--runs`
    runs = [e for r in rows for e in r.runs]
    for x in extra_columns(store, runs, reserved):
        columns_m.append(MetricColumn(x.column, x.metric, x.accuracy, True, values=x.values, damaged=x.damaged, fmt=x.fmt))
    labels = dataset_labels(rows)
    summaries = {c.column: [summarise(c, r) for r in rows] for c in columns_m}
    best = {c.column: mark_best(summaries[c.column], rows, c) for c in columns_m}
    out_rows = []
    damaged: list[tuple[int, str]] = []
    for i, r in enumerate(rows):
        out: dict[str, Any] = {"row": r.label, "method": r.method, "backbone": r.backbone, "dataset": labels[i], "epochs": r.epochs, "n": len(r.runs)}
        partner = None if r.baseline else untrained_partner(r, rows)
        for c in columns_m:
            got = summaries[c.column][i]
            view = shown(c, got)
            out[c.column] = view["mean"]
            out.update({f"{c.column} sd": view["sd"], f"{c.column} lo": view["lo"], f"{c.column} hi": view["hi"],
                        f"{c.column} best": best[c.column][i]})
            if c.metric in GAIN_METRICS:
                base = None if partner is None else summaries[c.column][rows.index(partner)]["mean"]
                out[f"{c.column} gain"] = None if got["mean"] is None or base is None else rounded(got["mean"] - base, 1)
            if c.metric in QUALIFIER_COLUMNS:
                qcol, key = QUALIFIER_COLUMNS[c.metric]
                out[qcol] = None if got["mean"] is None else r.runs[0].protocols.get(c.metric, {}).get(key)
            if c.damaged(r):
                damaged.append((i, c.column))
        walls = [e.wall_time_s for e in r.runs if e.wall_time_s is not None]
        speeds = [e.throughput_img_s for e in r.runs if e.throughput_img_s is not None]
        out.update({
            WALL_COL: round(float(sum(walls) / len(walls)), 1) if walls else None,
            THROUGHPUT_COL: round(float(sum(speeds) / len(speeds)), 1) if speeds else None,
            LABELS_COL: any(e.uses_labels for e in r.runs),
            "baseline": r.baseline,
            "seeds": ",".join("" if s is None else str(s) for s in r.seeds),
            "run_ids": ",".join(map(str, r.run_ids)),
            "settings": r.settings_text(),
        })
        out_rows.append(out)
    metric_cols = []
    for c in columns_m:
        metric_cols += [c.column] + ([QUALIFIER_COLUMNS[c.metric][0]] if c.metric in QUALIFIER_COLUMNS else [])
        metric_cols += [f"{c.column} sd", f"{c.column} lo", f"{c.column} hi", f"{c.column} best"]
        metric_cols += [f"{c.column} gain"] if c.metric in GAIN_METRICS else []
    columns = list(FIXED_COLUMNS) + metric_cols + list(TAIL_COLUMNS)
    df = pd.DataFrame(out_rows, columns=columns)
    df["epochs"] = df["epochs"].astype("Int64")
    df["n"] = df["n"].astype("Int64")
    for c in columns_m:
        for col in (c.column, f"{c.column} sd", f"{c.column} lo", f"{c.column} hi") + ((f"{c.column} gain",) if c.metric in GAIN_METRICS else ()):
            df[col] = df[col].astype("float64")
        df[f"{c.column} best"] = df[f"{c.column} best"].astype(bool)
    for col in (WALL_COL, THROUGHPUT_COL):
        df[col] = df[col].astype("float64")
    for col in (LABELS_COL, "baseline"):
        df[col] = df[col].astype(bool)
    df.attrs[METRIC_COLUMNS_ATTR] = [c.column for c in columns_m]
    df.attrs[COLUMN_FORMATS_ATTR] = {c.column: c.fmt for c in columns_m if c.fmt}
    df.attrs[DAMAGED_CELLS_ATTR] = damaged
    return df
