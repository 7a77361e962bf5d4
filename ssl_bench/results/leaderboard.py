"""The leaderboard: one row per (method, backbone, dataset, settings) from its latest finished run.

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
from typing import Any

import pandas as pd

from .columns import (
    ALWAYS_SHOWN, BUILTIN_EVALUATORS, COLUMN_FORMATS_ATTR, DAMAGED_CELLS_ATTR, HEADLINE_METRICS, LABELS_COL,
    QUALIFIER_COLUMNS, THROUGHPUT_COL, WALL_COL,
)
from .queries import KNN_K, LatestRun, knn_top1_k20, latest_finished
from .records import BASELINE_METHOD_NAMES, is_accuracy_metric, short_repr
from .settings import setting_text
from .store import ResultsStore


def metric_value(e: LatestRun, name: str) -> float | None:
    """A headline metric as shown: accuracies in percent (one decimal), others to 4 decimals."""
    v = knn_top1_k20(e.metrics, e.protocols) if name == "knn_top1" else e.metrics.get(name)
    if v is None:
        return None
    return round(100.0 * v, 1) if is_accuracy_metric(name) else round(float(v), 4)


def metric_damaged(e: LatestRun, name: str) -> bool:
    """Whether the value a headline column would show for ``e`` is damaged in the store."""
    if name != "knn_top1":
        return name in e.damaged
    k20 = f"knn_top1_k{KNN_K}"
    return k20 in e.damaged or (e.metrics.get(k20) is None and "knn_top1" in e.damaged)


def sort_key(e: LatestRun) -> tuple[Any, ...]:
    """Per dataset and data settings: baselines first (pixels, random-init, others), then linear
    top-1 desc, missing last."""
    lin = e.linear()
    base_order = BASELINE_METHOD_NAMES.index(e.method) if e.method in BASELINE_METHOD_NAMES else 99
    return (
        e.dataset or "", e.data, 0 if e.baseline else 1, base_order if e.baseline else 0,
        lin is None, -(lin or 0.0), e.method, e.backbone or "", e.dataset or "",
    )


def dataset_labels(entries: list[LatestRun]) -> dict[int, str]:
    """run id -> dataset cell: the name, plus the settings that differ where one dataset appears with
    more than one (``digits (limit_train=1000)`` beside ``digits (limit_train=200)``), written as the
    ``--set`` values that select them."""
    variants: dict[str | None, set[tuple[tuple[str, str], ...]]] = {}
    for e in entries:
        variants.setdefault(e.dataset, set()).add(e.data)
    differing: dict[str | None, list[str]] = {}  # per dataset: the keys whose values differ
    for name, settings in variants.items():
        values = [dict(d) for d in settings]
        keys = sorted({k for v in values for k in v})
        differing[name] = [k for k in keys if len({v.get(k) for v in values}) > 1] if len(values) > 1 else []
    labels = {}
    for e in entries:
        keys, mine = differing[e.dataset], dict(e.data)
        shown = ", ".join(f"{k}={setting_text(mine.get(k))}" for k in keys)
        labels[e.run_id] = f"{e.dataset or ''} ({shown})" if keys else e.dataset or ""
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

    def value(self, e: LatestRun) -> float | None:
        if e.evaluators.get(self.metric) != self.evaluator:
            return None
        v = e.metrics.get(self.metric)
        if v is None:
            return None
        return round(100.0 * float(v), 1) if self.fmt == "pct" else sig4(v)

    def damaged(self, e: LatestRun) -> bool:
        return e.evaluators.get(self.metric) == self.evaluator and self.metric in e.damaged


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


def build_leaderboard(store: ResultsStore, dataset: str | None = None, backbone: str | None = None) -> pd.DataFrame:
    """One row per (method, backbone, dataset, settings) from its latest finished run.

    Accuracies are percentages with one decimal; optional headline metrics get a column only if some
    row has them; ``labels`` is True for runs that used labels during pre-training (e.g.
    class-conditional DiT), which is not label-free SSL. Metrics of evaluators other than the built-in
    ones follow the headline columns (see :func:`extra_columns`): accuracies as percentages, other
    numbers to 4 significant digits. ``df.attrs["column_formats"]`` tells ``render`` which, and
    ``df.attrs["damaged_cells"]`` which cells hold a damaged stored value (NaN in the frame).
    """
    entries = sorted(latest_finished(store, dataset, backbone), key=sort_key)
    shown = [
        name for name in HEADLINE_METRICS
        if name in ALWAYS_SHOWN or any(metric_value(e, name) is not None or metric_damaged(e, name) for e in entries)
    ]
    fixed = ["method", "backbone", "dataset", "epochs"]
    for n in shown:
        fixed.append(HEADLINE_METRICS[n])
        if n in QUALIFIER_COLUMNS:
            fixed.append(QUALIFIER_COLUMNS[n][0])
    tail = ["seed", WALL_COL, THROUGHPUT_COL, LABELS_COL, "run_id"]
    reserved = set(fixed) | set(tail) | set(HEADLINE_METRICS.values())
    reserved |= {c for c, _ in QUALIFIER_COLUMNS.values()}
    extras = extra_columns(store, entries, reserved)
    labels = dataset_labels(entries)
    rows = []
    damaged: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        row: dict[str, Any] = {"method": e.method, "backbone": e.backbone, "dataset": labels[e.run_id], "epochs": e.epochs}
        for name in shown:
            value = row[HEADLINE_METRICS[name]] = metric_value(e, name)
            if metric_damaged(e, name):
                damaged.append((i, HEADLINE_METRICS[name]))
            if name in QUALIFIER_COLUMNS:
                col, key = QUALIFIER_COLUMNS[name]
                row[col] = None if value is None else e.protocols.get(name, {}).get(key)
        for x in extras:
            row[x.column] = x.value(e)
            if x.damaged(e):
                damaged.append((i, x.column))
        row.update({
            "seed": e.seed,
            WALL_COL: None if e.wall_time_s is None else round(float(e.wall_time_s), 1),
            THROUGHPUT_COL: None if e.throughput_img_s is None else round(float(e.throughput_img_s), 1),
            LABELS_COL: e.uses_labels,
            "run_id": e.run_id,
        })
        rows.append(row)
    columns = fixed + [x.column for x in extras] + tail
    metric_cols = [HEADLINE_METRICS[n] for n in shown] + [x.column for x in extras]
    df = pd.DataFrame(rows, columns=columns)
    for col in ("epochs", "seed", "run_id"):
        df[col] = df[col].astype("Int64")
    for col in metric_cols + [WALL_COL, THROUGHPUT_COL]:
        df[col] = df[col].astype("float64")
    df[LABELS_COL] = df[LABELS_COL].astype(bool)
    df.attrs[COLUMN_FORMATS_ATTR] = {x.column: x.fmt for x in extras}
    df.attrs[DAMAGED_CELLS_ATTR] = damaged
    return df
