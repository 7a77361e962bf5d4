"""The leaderboard's rows: one per configuration, holding the latest finished run of each seed.

A configuration is a method, its row identity (the settings that differ from the method's defaults,
recorded with every run), the backbone, the dataset and the data / probe settings. Its runs share
everything but the seed. A run scored only on a validation split (a sweep's grid point that was not
selected) has no test number, so it has no place in the table; ``ssl-bench leaderboard --runs``
lists it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .queries import LatestRun, knn_top1_k20, latest_finished
from .records import BASELINE_METHOD_NAMES, VAL_PREFIX
from .settings import Settings
from .store import ResultsStore
from .store_errors import ResultsStoreError

class RowNotFoundError(ResultsStoreError):
    """A row asked for by name or run id is not in the store, or is not one row."""


#: The per-run accuracies ``--runs`` lists (test, then the validation ones a sweep scores).
RUN_METRICS: tuple[str, ...] = ("knn_top1", "linear_top1", "val_knn_top1", "val_linear_top1")


def scored_on_test(e: LatestRun) -> bool:
    """Whether the run has a number for the test split (a run with no metrics at all counts: it is
    shown with empty cells rather than hidden)."""
    return not e.metrics or any(not name.startswith(VAL_PREFIX) for name in e.metrics)


@dataclass
class ConfigRow:
    """One configuration and its runs, one per seed, ordered by seed."""

    label: str
    method: str
    backbone: str | None
    dataset: str | None
    data: Settings
    settings: dict[str, Any]
    runs: list[LatestRun] = field(default_factory=list)

    @property
    def baseline(self) -> bool:
        first = self.runs[0]
        return first.is_baseline or self.method in BASELINE_METHOD_NAMES

    @property
    def seeds(self) -> list[int | None]:
        return [None if e.seed is None else int(e.seed) for e in self.runs]

    @property
    def run_ids(self) -> list[int]:
        return [e.run_id for e in self.runs]

    @property
    def epochs(self) -> int | None:
        return self.runs[0].epochs

    def values(self, metric: str) -> list[float]:
        """The metric's value in each run that has one (``knn_top1`` is the k=20 number)."""
        out = []
        for e in self.runs:
            v = knn_top1_k20(e.metrics, e.protocols) if metric == "knn_top1" else e.metrics.get(metric)
            if v is not None:
                out.append(float(v))
        return out

    def n_test(self, metric: str) -> int | None:
        """How many test images the metric was scored on (from its protocol record), if recorded."""
        name = "knn_top1" if metric.startswith("knn_top1") else metric
        for e in self.runs:
            n = (e.protocols.get(name) or e.protocols.get(metric) or {}).get("n_test")
            if isinstance(n, int) and not isinstance(n, bool) and n > 0:
                return n
        return None

    def damaged(self, metric: str) -> bool:
        return any(metric in e.damaged for e in self.runs)

    def settings_text(self) -> str:
        """Every setting that differs from the method's defaults, ``key=value`` joined by ``; ``."""
        return "; ".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.settings.items()))


def configuration_rows(
    store: ResultsStore, dataset: str | None = None, backbone: str | None = None, *, with_val_only: bool = False,
) -> list[ConfigRow]:
    """The configurations in ``store`` (of one dataset / backbone if given), each with its seeds.

    Two configurations that were given the same ``--name`` but differ in their settings stay two
    rows; the label of the later one says which run it starts with (``name #12``).
    """
    groups: dict[tuple[Any, ...], ConfigRow] = {}
    for e in sorted(latest_finished(store, dataset, backbone), key=lambda e: (e.seed is None, e.seed or 0, e.run_id)):
        if not with_val_only and not scored_on_test(e):
            continue
        key = (e.method, e.variant, e.variant_settings, e.backbone, e.dataset, e.data)
        if key not in groups:
            groups[key] = ConfigRow(e.variant or e.method, e.method, e.backbone, e.dataset, e.data, json.loads(e.variant_settings))
        groups[key].runs.append(e)
    rows = list(groups.values())
    taken: dict[tuple[Any, ...], set[str]] = {}
    for row in sorted(rows, key=lambda r: min(r.run_ids)):
        where = (row.backbone, row.dataset, row.data, row.epochs)
        seen = taken.setdefault(where, set())
        if row.label in seen:
            row.label = f"{row.label} #{min(row.run_ids)}"
        seen.add(row.label)
    return rows


def runs_table(store: ResultsStore, dataset: str | None = None, backbone: str | None = None) -> pd.DataFrame:
    """``ssl-bench leaderboard --runs``: the runs behind each row, one line per run (seed), sweep
    runs scored only on validation included (``validation only`` is True for them).

    Accuracies in percent; ``val_*`` columns hold validation-split numbers, never test ones.
    """
    records = []
    for row in sorted(configuration_rows(store, dataset, backbone, with_val_only=True), key=lambda r: min(r.run_ids)):
        for e in row.runs:
            rec: dict[str, Any] = {"row": row.label, "backbone": e.backbone, "dataset": e.dataset, "epochs": e.epochs,
                                   "seed": e.seed, "run_id": e.run_id}
            for name in RUN_METRICS:
                v = knn_top1_k20(e.metrics, e.protocols) if name == "knn_top1" else e.metrics.get(name)
                rec[name] = None if v is None else round(100.0 * float(v), 2)
            rec["validation only"] = not scored_on_test(e)
            rec["run_dir"] = e.run_dir
            records.append(rec)
    df = pd.DataFrame(records, columns=["row", "backbone", "dataset", "epochs", "seed", "run_id", *RUN_METRICS, "validation only", "run_dir"])
    for col in ("epochs", "seed", "run_id"):
        df[col] = df[col].astype("Int64")
    for col in RUN_METRICS:
        df[col] = df[col].astype("float64")
    return df


def find_row(
    store: ResultsStore, spec: str, dataset: str | None = None, backbone: str | None = None,
    rows: list[ConfigRow] | None = None,
) -> ConfigRow:
    """The configuration row ``spec`` names: a row label as the leaderboard shows it, or the id of any
    run of it. An unknown or ambiguous spec is one line listing what there is. ``rows``: the store's
    rows already read (for several look-ups)."""
    rows = configuration_rows(store, dataset, backbone) if rows is None else rows
    if spec.isdigit():
        hits = [r for r in rows if int(spec) in r.run_ids]
    else:
        hits = [r for r in rows if r.label == spec]
    if len(hits) == 1:
        return hits[0]
    where = "".join(f" {k} {v!r}" for k, v in (("dataset", dataset), ("backbone", backbone)) if v)
    if not hits:
        labels = sorted({r.label for r in rows})
        shown = ", ".join(repr(x) for x in labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
        raise RowNotFoundError(f"no leaderboard row {spec!r}{' for' + where if where else ''}; rows there: {shown or 'none'}. "
                               "Fix: pass a row label as the leaderboard prints it, or the id of one of its runs")
    places = "; ".join(f"{r.dataset}/{r.backbone}, {r.epochs} epochs (runs {','.join(map(str, r.run_ids))})" for r in hits)
    raise RowNotFoundError(f"{spec!r} names {len(hits)} rows ({places}). Fix: add --dataset / --backbone, or pass a run id")
