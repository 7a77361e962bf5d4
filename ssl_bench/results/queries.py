"""What the rest of ssl-bench reads from the results store: finished runs, their metrics, the latest
finished run per comparison, and which datasets / backbones have results.

The run path (baseline reuse), the CLI and the deconstruction chain read through here, not through
the table builders or the renderer. Readers never fail on one damaged row: the store skips it with a
warning line, and a damaged metric value arrives as None with its reason in ``RunMetrics.damaged``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import pandas as pd

from .records import BASELINE_METHOD_NAMES, none_if_na
from .settings import Settings, data_settings, eval_settings, merge_partial_settings, subset_of
from .store import ResultsStore

#: The k of the k-NN headline number (the k-NN literature's and DINO's k = 20).
KNN_K = 20


def finished_runs(store: ResultsStore, dataset: str | None = None, backbone: str | None = None) -> pd.DataFrame:
    """The store's finished runs, optionally for one dataset / backbone (a runs-frame slice)."""
    runs = store.runs_frame()
    if runs.empty:
        return runs
    runs = runs[runs["status"] == "finished"]
    if dataset is not None:
        runs = runs[runs["dataset"] == dataset]
    if backbone is not None:
        runs = runs[runs["backbone"] == backbone]
    return runs


def datasets_in(store: ResultsStore) -> list[str]:
    """The datasets that have finished runs, sorted: what ``leaderboard --dataset`` can show."""
    runs = finished_runs(store)
    return sorted({str(d) for d in runs["dataset"] if none_if_na(d) is not None}) if not runs.empty else []


def backbones_in(store: ResultsStore, dataset: str | None = None) -> list[str]:
    """The backbones that have finished runs (on ``dataset`` if given), sorted."""
    runs = finished_runs(store, dataset)
    return sorted({str(b) for b in runs["backbone"] if none_if_na(b) is not None}) if not runs.empty else []


class RunMetrics(NamedTuple):
    """One run's metrics by name; a later row of the same name wins."""

    values: dict[str, float | None]
    protocols: dict[str, dict[str, Any]]
    evaluators: dict[str, str]  # metric -> the evaluator that wrote it
    damaged: dict[str, str]  # metric -> why its stored value cannot be shown (value is None then)


def run_metrics(store: ResultsStore, run_ids: Iterable[int]) -> dict[int, RunMetrics]:
    """run id -> its :class:`RunMetrics` (every id asked for, empty if it has none)."""
    ids = sorted({int(i) for i in run_ids})
    out: dict[int, RunMetrics] = {i: RunMetrics({}, {}, {}, {}) for i in ids}
    if not ids:
        return out
    for m in store.metrics_frame(run_ids=ids).to_dict("records"):  # ordered by metric id
        got = out[int(m["run_id"])]
        name = m["name"]
        got.values[name] = none_if_na(m["value"])
        got.protocols[name] = json.loads(none_if_na(m["protocol_json"]) or "{}")
        got.evaluators[name] = m["evaluator"]
        if none_if_na(m["damaged"]) is not None:
            got.damaged[name] = m["damaged"]
        else:
            got.damaged.pop(name, None)
    return out


def metrics_by_run(
    store: ResultsStore, run_ids: Iterable[int]
) -> dict[int, tuple[dict[str, float | None], dict[str, dict[str, Any]]]]:
    """run id -> ({metric: value}, {metric: protocol}); a later value of the same name wins."""
    return {rid: (m.values, m.protocols) for rid, m in run_metrics(store, run_ids).items()}


def equals_int(value: Any, expected: int) -> bool:
    """``value == expected`` for ints stored as int, float or text; anything else is not."""
    try:
        return float(value) == expected
    except (TypeError, ValueError):
        return False


def knn_top1_k20(metrics: dict[str, Any], protocols: dict[str, dict[str, Any]]) -> float | None:
    """k-NN top-1 at k=20: ``knn_top1_k20`` if present, else ``knn_top1`` unless its protocol records
    a different k (a k=10 number must not fill a k=20 column).

    The k-NN evaluator records ``headline_k``; ``k`` is the older spelling.
    """
    if metrics.get(f"knn_top1_k{KNN_K}") is not None:
        return metrics[f"knn_top1_k{KNN_K}"]
    proto = protocols.get("knn_top1", {})
    k = proto.get("k", proto.get("headline_k"))
    if k is not None and not equals_int(k, KNN_K):
        return None
    return metrics.get("knn_top1")


@dataclass
class LatestRun:
    """The latest finished run of one (method, backbone, dataset, settings) and its metrics."""

    run_id: int
    method: str
    backbone: str | None
    dataset: str | None
    epochs: int | None
    seed: int | None
    wall_time_s: float | None
    throughput_img_s: float | None
    uses_labels: bool
    is_baseline: bool
    run_dir: str | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluators: dict[str, str] = field(default_factory=dict)  # metric -> evaluator that wrote it
    damaged: dict[str, str] = field(default_factory=dict)  # metric -> why its value is not shown
    data: Settings = ()  # data and probe settings, values as JSON text
    variant: str = ""  # the row label (the method name for its default configuration)
    variant_settings: str = "{}"  # JSON of the settings that differ from the method's defaults

    def subset(self) -> dict[str, Any]:
        """The subset options this run set (``limit_train`` / ``limit_test`` not None)."""
        return subset_of(self.data)

    @property
    def baseline(self) -> bool:
        return self.is_baseline or self.method in BASELINE_METHOD_NAMES

    def linear(self) -> float | None:
        return self.metrics.get("linear_top1")


def variant_of_record(rec: dict[str, Any]) -> tuple[str, str]:
    """(label, settings JSON) of a run row; a run recorded before row identities (or with a damaged
    one) is its method's default configuration."""
    raw = none_if_na(rec.get("variant_json"))
    try:
        v = json.loads(raw) if raw else {}
    except ValueError:
        v = {}
    label = v.get("label") if isinstance(v, dict) and isinstance(v.get("label"), str) else rec["method"]
    settings = v.get("settings") if isinstance(v, dict) and isinstance(v.get("settings"), dict) else {}
    return label, json.dumps(settings, sort_keys=True)


def latest_finished(store: ResultsStore, dataset: str | None = None, backbone: str | None = None) -> list[LatestRun]:
    """Latest finished run per (method, row identity, backbone, dataset, data and probe settings,
    seed); ties by run id. A rerun of a seed replaces that seed's earlier run; other seeds and other
    configurations are kept (:mod:`.rows` groups them into the table's rows).

    A run scored with fewer probes joins the settings group it agrees with
    (:func:`~.settings.merge_partial_settings`).
    """
    runs = finished_runs(store, dataset, backbone)
    scored = run_metrics(store, runs["id"].tolist()) if not runs.empty else {}
    records = runs.to_dict("records")
    settings: dict[int, Settings] = {}
    for rec in records:
        got = scored[int(rec["id"])]
        settings[int(rec["id"])] = tuple(
            sorted(data_settings(none_if_na(rec["config_json"])) + eval_settings(got.protocols, got.evaluators))
        )
    canonical = merge_partial_settings(set(settings.values()))
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in records:
        data = canonical[settings[int(rec["id"])]]
        rec["_variant"] = variant_of_record(rec)
        key = (rec["method"], rec["_variant"], none_if_na(rec["backbone"]), none_if_na(rec["dataset"]), data, none_if_na(rec["seed"]))
        rank = (none_if_na(rec["finished_at"]) or rec["created_at"], int(rec["id"]))
        if key not in latest or rank > latest[key]["_rank"]:
            latest[key] = {**rec, "_rank": rank, "_data": data}
    out = []
    for r in latest.values():
        got = scored[int(r["id"])]
        out.append(LatestRun(
            run_id=int(r["id"]), method=r["method"], backbone=none_if_na(r["backbone"]),
            dataset=none_if_na(r["dataset"]), epochs=none_if_na(r["epochs"]), seed=none_if_na(r["seed"]),
            wall_time_s=none_if_na(r["wall_time_s"]), throughput_img_s=none_if_na(r["throughput_img_s"]),
            uses_labels=bool(r["uses_labels"]), is_baseline=bool(r["is_baseline"]), run_dir=none_if_na(r["run_dir"]),
            metrics=got.values, protocols=got.protocols, evaluators=got.evaluators, damaged=got.damaged, data=r["_data"],
            variant=r["_variant"][0], variant_settings=r["_variant"][1],
        ))
    return out
