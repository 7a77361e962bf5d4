"""Leaderboard tables generated from the results store.

The tables are *derived* data: they are rebuilt from ``ResultsStore`` on demand
so that re-evaluating a run (``ssl-bench eval``) or finishing a new one is
reflected without anyone editing a markdown file by hand.

Two views:

* :func:`build_leaderboard` - one row per (method, backbone, dataset, settings), using the
  latest finished run, baselines (pixels / random-init) first. The settings are those that
  decide what the numbers mean: the data (``dataset.limit_train``, ``image_size``, ...) and
  the built-in probes' protocols (linear-probe epochs, optimiser, lr, ...; k-NN temperature).
  Runs that differ in them are kept apart, each beside the baselines scored the same way, and
  the dataset cell names the setting that differs, so a model trained and scored on 1,000
  images, or probed for 90 epochs, is never shown next to baselines scored on 200 images, or
  probed for 3. The built-in
  evaluators' headline metrics have fixed columns; every other evaluator (a
  third-party plugin) gets a column per metric, or per name in its protocol
  record's ``"headline"``, so a new evaluator shows up without editing this file.
* :func:`build_table4` - our linear-probe numbers next to the l-DAE paper's
  Table 4, with a ``notes`` column that flags where our settings differ (so a
  1-epoch Fashion-MNIST smoke run, or a probe on cached features, is never
  mistaken for a reproduction).

The tables only read: pass a store opened with ``ResultsStore(path, readonly=True)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pandas as pd

from .store import ResultsStore, ResultsStoreError, is_accuracy_metric

BASELINE_METHOD_NAMES: tuple[str, ...] = ("pixels", "random-init")

KNN_COL = "k-NN top-1 (k=20)"
LINEAR_COL = "linear top-1"
WALL_COL = "wall time (s)"
THROUGHPUT_COL = "throughput (img/s)"
LABELS_COL = "labels"

#: Metric name -> leaderboard column, in display order. ``knn_top1`` is resolved
#: specially (k=20 only, see :func:`knn_top1_k20`). These are the built-in
#: evaluators' columns; a plugin evaluator needs no entry here: its metrics get
#: columns of their own (see :data:`BUILTIN_EVALUATORS`).
HEADLINE_METRICS: dict[str, str] = {
    "knn_top1": KNN_COL,
    "linear_top1": LINEAR_COL,
    "linear_top5": "linear top-5",
    "nll_bpd": "NLL (bits/dim)",
}
#: Metric -> (column, protocol key): a column beside the metric that says what it is measured on,
#: e.g. NLL in "pixel" bits/dim (comparable with the diffusion literature) or per "latent" dim of a
#: tokenizer (comparable only within that tokenizer), so the two are never read as one scale.
QUALIFIER_COLUMNS: dict[str, tuple[str, str]] = {"nll_bpd": ("NLL space", "space")}
#: Shown even when no run has them, so the core comparison is always visible.
ALWAYS_SHOWN: tuple[str, ...] = ("knn_top1", "linear_top1")
KNN_K = 20
#: Evaluators whose columns are the fixed HEADLINE_METRICS above; their other metrics
#: (``linear_train_top1``, ``knn_top1_k10``, ``nll_bpd_stderr``) stay in the store only.
#: Any other evaluator gets a column per metric (see :func:`build_leaderboard`).
BUILTIN_EVALUATORS: tuple[str, ...] = ("knn", "linear", "nll")
#: ``df.attrs`` key: column -> "pct" (one decimal) or "sig4" (4 significant digits), for render().
COLUMN_FORMATS_ATTR = "column_formats"

#: l-DAE paper (Chen et al., "Deconstructing Denoising Diffusion Models for
#: Self-Supervised Learning"), Table 4: ImageNet-1k linear-probe top-1 (%).
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "mocov3": {"vit-b": 76.7, "vit-l": 77.6},
    "mae": {"vit-b": 68.0, "vit-l": 75.8},
    "ldae": {"vit-b": 66.6, "vit-l": 75.0},
}
#: Pre-training epochs behind the paper numbers (MAE / l-DAE 1600, MoCo v3 300).
PAPER_EPOCHS: dict[str, int] = {"mocov3": 300, "mae": 1600, "ldae": 1600}
PAPER_DATASET = "ImageNet-1k"
#: The paper's linear probe (MAE's): augmented images (RandomResizedCrop + flip), LARS,
#: batch 16384, 90 epochs. Ours trains on cached, un-augmented features unless a run's
#: linear protocol record says ``"protocol": "augmented"``; Table 4 notes the difference.
PAPER_PROBE: dict[str, Any] = {"protocol": "augmented", "optimizer": "lars", "batch_size": 16384, "epochs": 90}
PAPER_BACKBONES: tuple[str, ...] = ("vit-b", "vit-l")

_IMAGENET1K_NAMES = {"imagenet", "imagenet-1k", "imagenet1k", "in1k", "in-1k", "ilsvrc2012"}
_BACKBONE_ALIASES = {
    "vit-base": "vit-b",
    "vit-b-16": "vit-b",
    "vit-b/16": "vit-b",
    "vit-large": "vit-l",
    "vit-l-16": "vit-l",
    "vit-l/16": "vit-l",
}
RENDER_FORMATS: tuple[str, ...] = ("md", "csv", "html")
#: Dataset options that cannot change which images a run trains and is scored on: where the
#: files are, how many loader processes read them, whether a missing copy may be downloaded
#: (the dataset keys ``ssl_bench.runner.RESUME_FREE_KEYS`` lets a resume change, plus ``download``,
#: which a resume never needs). Every other dataset option (``limit_train``, ``image_size``, a
#: plugin dataset's own options) tells data apart.
DATA_KEYS_NOT_CHANGING_IMAGES: frozenset[str] = frozenset({"name", "data_root", "num_workers", "download"})
#: Options that take a subset of the dataset: a run with one set is not on the paper's data.
SUBSET_KEYS: tuple[str, ...] = ("limit_train", "limit_test")
#: Built-in evaluator -> the protocol-record keys that are settings changing its headline number
#: (the rest of a record are facts: sizes, device, derived step counts, references). The linear
#: probe's ``lr`` counts only when it was given (``lr_rule == "given"``), else it follows from
#: ``blr`` and the batch; k-NN's ``ks`` only add columns, the k=20 one is checked on its own.
EVAL_SETTING_KEYS: dict[str, tuple[str, ...]] = {
    "linear": (
        "protocol", "optimizer", "epochs", "warmup_epochs", "batch_size_requested", "blr", "min_lr",
        "weight_decay", "momentum", "trust_coefficient", "betas", "bn_eps", "init_std", "drop_last",
        "crop_scale", "flip_p",
    ),
    "knn": ("temperature", "normalisation"),
}


# -- selection -----------------------------------------------------------------------


@dataclass
class _Entry:
    """The latest finished run of one (method, backbone, dataset) and its metrics."""

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
    data: tuple[tuple[str, str], ...] = ()  # data and probe settings (run_settings), values as JSON text

    def subset(self) -> dict[str, Any]:
        """The subset options this run set (``limit_train`` / ``limit_test`` not None)."""
        settings = {k: json.loads(v) for k, v in self.data}
        return {k: settings[k] for k in SUBSET_KEYS if settings.get(k) is not None}

    @property
    def baseline(self) -> bool:
        return self.is_baseline or self.method in BASELINE_METHOD_NAMES

    def linear(self) -> float | None:
        return self.metrics.get("linear_top1")


def _none(v: Any) -> Any:
    """pandas NaN/NA -> None so plain python comparisons work."""
    if v is None:
        return None
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return v


def data_settings(config: Any) -> tuple[tuple[str, str], ...]:
    """A run's dataset options that decide its images, as sorted ``(key, JSON value)`` pairs.

    ``config`` is the run's stored config (dict or JSON text). Two runs whose numbers may be
    set side by side have equal settings; see :data:`DATA_KEYS_NOT_CHANGING_IMAGES`.
    """
    if isinstance(config, str):
        config = json.loads(config or "{}")
    dataset = (config or {}).get("dataset") or {}
    if not isinstance(dataset, dict):
        return ()
    return tuple(
        sorted((k, json.dumps(v, sort_keys=True)) for k, v in dataset.items() if k not in DATA_KEYS_NOT_CHANGING_IMAGES)
    )


def eval_settings(protocols: dict[str, dict[str, Any]], evaluators: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The built-in probes' settings a run was scored with, as sorted ``("linear.epochs", JSON)`` pairs.

    ``protocols`` / ``evaluators``: metric name -> protocol record / evaluator name (as
    :func:`metrics_by_run` reads them). Read from the metrics' own records, not the run's config,
    because ``ssl-bench eval`` may re-score a run with other probe settings.
    """
    pairs: dict[str, str] = {}
    for metric, evaluator in evaluators.items():
        keys = EVAL_SETTING_KEYS.get(evaluator)
        record = protocols.get(metric) or {}
        if keys is None or not isinstance(record, dict):
            continue
        for key in keys:
            if key in record:
                pairs[f"{evaluator}.{key}"] = json.dumps(record[key], sort_keys=True)
        if evaluator == "linear" and record.get("lr_rule") == "given" and "lr" in record:
            pairs["linear.lr"] = json.dumps(record["lr"])
    return tuple(sorted(pairs.items()))


def _merge_partial_settings(
    variants: set[tuple[tuple[str, str], ...]],
) -> dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """Each settings tuple -> the one it is shown under.

    A run scored by fewer evaluators (no linear probe, say) records fewer settings; it belongs with
    the runs whose settings agree on every key it has, not in a group of its own. Larger settings
    come first, so a partial one joins the first (sorted) complete one it agrees with.
    """
    out: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
    groups: list[tuple[tuple[str, str], ...]] = []
    for variant in sorted(variants, key=lambda v: (-len(v), v)):
        items = set(variant)
        home = next((g for g in groups if items <= set(g)), None)
        if home is None:
            groups.append(variant)
            home = variant
        out[variant] = home
    return out


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


_RunMetrics = tuple[dict[str, float | None], dict[str, dict[str, Any]], dict[str, str]]


def _metrics_with_evaluators(store: ResultsStore, run_ids: Iterable[int]) -> dict[int, _RunMetrics]:
    """run id -> ({metric: value}, {metric: protocol}, {metric: evaluator}); later rows win.

    The store checks every row it returns (bad JSON, wrong types) and names the run,
    so the parsing here cannot fail on a damaged value.
    """
    ids = sorted({int(i) for i in run_ids})
    out: dict[int, _RunMetrics] = {i: ({}, {}, {}) for i in ids}
    if not ids:
        return out
    frame = store.metrics_frame(run_ids=ids)
    for m in frame.to_dict("records"):  # ordered by metric id
        values, protocols, evaluators = out[int(m["run_id"])]
        values[m["name"]] = _none(m["value"])
        protocols[m["name"]] = json.loads(m["protocol_json"] or "{}")
        evaluators[m["name"]] = m["evaluator"]
    return out


def metrics_by_run(
    store: ResultsStore, run_ids: Iterable[int]
) -> dict[int, tuple[dict[str, float | None], dict[str, dict[str, Any]]]]:
    """run id -> ({metric: value}, {metric: protocol}); a later value of the same name wins."""
    return {rid: (v, p) for rid, (v, p, _) in _metrics_with_evaluators(store, run_ids).items()}


def _latest_finished(
    store: ResultsStore, dataset: str | None = None, backbone: str | None = None
) -> list[_Entry]:
    """Latest finished run per (method, backbone, dataset, data and probe settings); ties broken by run id."""
    runs = finished_runs(store, dataset, backbone)
    scored = _metrics_with_evaluators(store, runs["id"].tolist()) if not runs.empty else {}
    settings: dict[int, tuple[tuple[str, str], ...]] = {}
    for rec in runs.to_dict("records"):
        _, protocols, evaluators = scored[int(rec["id"])]
        settings[int(rec["id"])] = tuple(
            sorted(data_settings(_none(rec["config_json"])) + eval_settings(protocols, evaluators))
        )
    canonical = _merge_partial_settings(set(settings.values()))
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for rec in runs.to_dict("records"):
        data = canonical[settings[int(rec["id"])]]
        key = (rec["method"], _none(rec["backbone"]), _none(rec["dataset"]), data)
        when = _none(rec["finished_at"]) or rec["created_at"]
        rank = (when, int(rec["id"]))
        if key not in latest or rank > latest[key]["_rank"]:
            latest[key] = {**rec, "_rank": rank, "_data": data}

    entries = {
        int(r["id"]): _Entry(
            run_id=int(r["id"]),
            method=r["method"],
            backbone=_none(r["backbone"]),
            dataset=_none(r["dataset"]),
            epochs=_none(r["epochs"]),
            seed=_none(r["seed"]),
            wall_time_s=_none(r["wall_time_s"]),
            throughput_img_s=_none(r["throughput_img_s"]),
            uses_labels=bool(r["uses_labels"]),
            is_baseline=bool(r["is_baseline"]),
            run_dir=_none(r["run_dir"]),
            data=r["_data"],
        )
        for r in latest.values()
    }
    for run_id in entries:
        values, protocols, evaluators = scored[run_id]
        e = entries[run_id]
        e.metrics, e.protocols, e.evaluators = values, protocols, evaluators
    return list(entries.values())


def knn_top1_k20(metrics: dict[str, Any], protocols: dict[str, dict[str, Any]]) -> float | None:
    """k-NN top-1 at k=20: ``knn_top1_k20`` if present, else ``knn_top1`` unless
    its protocol records a different k (a k=10 number must not fill a k=20 column).

    The k-NN evaluator records ``headline_k``; ``k`` is the older spelling.
    """
    if metrics.get(f"knn_top1_k{KNN_K}") is not None:
        return metrics[f"knn_top1_k{KNN_K}"]
    proto = protocols.get("knn_top1", {})
    k = proto.get("k", proto.get("headline_k"))
    if k is not None and not _is_int(k, KNN_K):
        return None
    return metrics.get("knn_top1")


def _is_int(value: Any, expected: int) -> bool:
    """``value == expected`` for ints stored as int, float or text; anything else is not."""
    try:
        return float(value) == expected
    except (TypeError, ValueError):
        return False


def _metric_value(e: _Entry, name: str) -> float | None:
    v = knn_top1_k20(e.metrics, e.protocols) if name == "knn_top1" else e.metrics.get(name)
    if v is None:
        return None
    return round(100.0 * v, 1) if is_accuracy_metric(name) else round(float(v), 4)


def _sort_key(e: _Entry) -> tuple[Any, ...]:
    """Per dataset and data settings: baselines first (pixels, random-init, others), then
    linear top-1 desc, missing last."""
    lin = e.linear()
    base_order = BASELINE_METHOD_NAMES.index(e.method) if e.method in BASELINE_METHOD_NAMES else 99
    return (
        e.dataset or "",
        e.data,
        0 if e.baseline else 1,
        base_order if e.baseline else 0,
        lin is None,
        -(lin or 0.0),
        e.method,
        e.backbone or "",
        e.dataset or "",
    )


# -- leaderboard ---------------------------------------------------------------------


def _dataset_labels(entries: list[_Entry]) -> dict[int, str]:
    """run id -> dataset cell: the name, plus the settings that differ where one dataset appears
    with more than one (``digits (limit_train=1000)`` beside ``digits (limit_train=200)``), written
    as the ``--set`` values that select them."""
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
        shown = ", ".join(f"{k}={_setting_text(mine.get(k))}" for k in keys)
        labels[e.run_id] = f"{e.dataset or ''} ({shown})" if keys else e.dataset or ""
    return labels


def _setting_text(value_json: str | None) -> str:
    """A stored setting as ``--set`` would take it (None when the run did not set it)."""
    if value_json is None:
        return "None"
    value = json.loads(value_json)
    return "None" if value is None else str(value)


def _sig4(v: float) -> float:
    """Round to 4 significant digits: the precision shown for plugin metrics of unknown scale."""
    v = float(v)
    return v if v == 0 or not math.isfinite(v) else float(f"{v:.4g}")


def _headline_names(e: _Entry, evaluator: str, metric: str, path: Any) -> list[str] | None:
    """The ``"headline"`` metric names an evaluator's protocol record declares, or None."""
    raw = e.protocols.get(metric, {}).get("headline")
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, (list, tuple)) and all(isinstance(n, str) for n in raw):
        return list(raw)
    fix = f"`ssl-bench eval {e.run_dir}`" if e.run_dir else "`ssl-bench eval RUN_DIR`"
    raise ResultsStoreError(
        f"{path}: run {e.run_id} ({e.run_dir or 'no run dir'}) has a damaged metrics.protocol_json "
        f"value (evaluator {evaluator!r}: \"headline\" must be a metric name or a list of names, "
        f"got {raw!r}). Fix: correct that evaluator's protocol record and re-score with {fix}"
    )


@dataclass(frozen=True)
class _ExtraColumn:
    """A leaderboard column for one metric of a non-built-in evaluator."""

    evaluator: str
    metric: str
    column: str

    @property
    def fmt(self) -> str:
        return "pct" if is_accuracy_metric(self.metric) else "sig4"

    def value(self, e: _Entry) -> float | None:
        if e.evaluators.get(self.metric) != self.evaluator:
            return None
        v = e.metrics.get(self.metric)
        if v is None:
            return None
        return round(100.0 * float(v), 1) if self.fmt == "pct" else _sig4(v)


def _extra_columns(entries: list[_Entry], reserved: set[str], path: Any) -> list[_ExtraColumn]:
    """Columns for evaluators outside BUILTIN_EVALUATORS, evaluators in name order.

    An evaluator gets a column per metric that some shown run has, in the order the
    metrics were written; if any shown run's protocol record for it lists
    ``"headline"`` (one name or a list), only those names, in that order. A column is
    named after the metric, or ``<evaluator>:<metric>`` when that name is taken (a
    fixed column, or the same metric name from two evaluators).
    """
    seen: dict[str, list[str]] = {}
    declared: dict[str, list[str]] = {}
    for e in entries:
        for metric, evaluator in e.evaluators.items():
            if evaluator in BUILTIN_EVALUATORS or metric in HEADLINE_METRICS:
                continue
            heads = _headline_names(e, evaluator, metric, path)
            if heads is not None:
                names = declared.setdefault(evaluator, [])
                names += [h for h in heads if h not in names]
            if e.metrics.get(metric) is not None:
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
    return [
        _ExtraColumn(ev, n, n if n not in reserved and counts[n] == 1 else f"{ev}:{n}")
        for ev, n in pairs
    ]


def build_leaderboard(
    store: ResultsStore, dataset: str | None = None, backbone: str | None = None
) -> pd.DataFrame:
    """One row per (method, backbone, dataset) from its latest finished run.

    Accuracies are percentages with one decimal; optional headline metrics get a
    column only if some row has them; ``labels`` is True for runs that used labels
    during pre-training (e.g. class-conditional DiT), which is not label-free SSL.
    Metrics of evaluators other than the built-in ones follow the headline columns
    (see :func:`_extra_columns`): accuracies as percentages, other numbers to 4
    significant digits. ``df.attrs["column_formats"]`` tells :func:`render` which.
    """
    entries = sorted(_latest_finished(store, dataset, backbone), key=_sort_key)
    shown = [
        name
        for name in HEADLINE_METRICS
        if name in ALWAYS_SHOWN or any(_metric_value(e, name) is not None for e in entries)
    ]
    fixed = ["method", "backbone", "dataset", "epochs"]
    for n in shown:
        fixed.append(HEADLINE_METRICS[n])
        if n in QUALIFIER_COLUMNS:
            fixed.append(QUALIFIER_COLUMNS[n][0])
    tail = ["seed", WALL_COL, THROUGHPUT_COL, LABELS_COL, "run_id"]
    reserved = set(fixed) | set(tail) | set(HEADLINE_METRICS.values())
    reserved |= {c for c, _ in QUALIFIER_COLUMNS.values()}
    extras = _extra_columns(entries, reserved, store.path)
    dataset_labels = _dataset_labels(entries)
    rows = []
    for e in entries:
        row: dict[str, Any] = {
            "method": e.method,
            "backbone": e.backbone,
            "dataset": dataset_labels[e.run_id],
            "epochs": e.epochs,
        }
        for name in shown:
            value = row[HEADLINE_METRICS[name]] = _metric_value(e, name)
            if name in QUALIFIER_COLUMNS:
                col, key = QUALIFIER_COLUMNS[name]
                row[col] = None if value is None else e.protocols.get(name, {}).get(key)
        for x in extras:
            row[x.column] = x.value(e)
        row.update(
            {
                "seed": e.seed,
                WALL_COL: None if e.wall_time_s is None else round(float(e.wall_time_s), 1),
                THROUGHPUT_COL: (
                    None if e.throughput_img_s is None else round(float(e.throughput_img_s), 1)
                ),
                LABELS_COL: e.uses_labels,
                "run_id": e.run_id,
            }
        )
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
    return df


# -- Table 4 -------------------------------------------------------------------------


def _canon_backbone(name: str | None) -> str:
    b = (name or "").lower().replace("_", "-")
    return _BACKBONE_ALIASES.get(b, b)


def _canon_method(name: str) -> str:
    """Map spelling variants (moco-v3, l_dae) onto the paper keys; others unchanged."""
    squashed = name.lower().replace("-", "").replace("_", "")
    return squashed if squashed in PAPER_TABLE4 else name


def _is_imagenet1k(dataset: str | None) -> bool:
    return (dataset or "").lower().replace("_", "-") in _IMAGENET1K_NAMES


def _ep(n: Any) -> str:
    return f"{n} ep" if n is not None else "? ep"


def _probe_note(e: _Entry) -> str | None:
    """How the run's linear probe differs from the paper's (:data:`PAPER_PROBE`), or None.

    Only what the probe's protocol record states is compared, except the data: a record
    without ``"protocol": "augmented"`` is a probe on cached (un-augmented) features,
    which is what the built-in evaluator does.
    """
    proto = e.protocols.get("linear_top1")
    if e.linear() is None or proto is None:
        return None
    ours: list[str] = []
    paper: list[str] = []
    data = proto.get("protocol")
    if data != PAPER_PROBE["protocol"]:
        ours.append("cached features" if data in (None, "cached") else str(data))
        paper.append(str(PAPER_PROBE["protocol"]))
    opt = proto.get("optimizer")
    if opt is not None and str(opt).lower() != PAPER_PROBE["optimizer"]:
        ours.append(str(opt))
        paper.append(PAPER_PROBE["optimizer"].upper())
    batch = proto.get("batch_size")
    if batch is not None and not _is_int(batch, PAPER_PROBE["batch_size"]):
        ours.append(f"batch {batch}")
        paper.append(f"batch {PAPER_PROBE['batch_size']}")
    epochs = proto.get("epochs")
    if epochs is not None and not _is_int(epochs, PAPER_PROBE["epochs"]):
        ours.append(_ep(epochs))
        paper.append(_ep(PAPER_PROBE["epochs"]))
    if not ours:
        return None
    return f"probe: {', '.join(ours)} vs paper {', '.join(paper)}"


def _setting_note(method: str, backbone: str, e: _Entry) -> str | None:
    """Describe how ``e``'s settings (data, schedule, backbone, linear probe) differ from
    the paper's, or None if they match."""
    if method not in PAPER_TABLE4:
        return "not in paper Table 4"
    notes = []
    paper_ep = PAPER_EPOCHS[method]
    paper_bb = backbone in PAPER_BACKBONES
    subset = e.subset()
    if not (_is_imagenet1k(e.dataset) and not subset and e.epochs == paper_ep and paper_bb):
        ours = [] if paper_bb else [f"{e.backbone}"]
        data = e.dataset or "?"
        if subset:
            data += " subset (" + ", ".join(f"{k}={v}" for k, v in subset.items()) + ")"
        ours += [data, _ep(e.epochs)]
        paper = [] if paper_bb else ["ViT-B/ViT-L"]
        paper += [PAPER_DATASET, _ep(paper_ep)]
        notes.append(f"ours: {', '.join(ours)}; paper: {', '.join(paper)}")
    probe = _probe_note(e)
    if probe:
        notes.append(probe)
    return "; ".join(notes) or None


def _pick(cands: list[_Entry]) -> _Entry | None:
    """Prefer an ImageNet-1k run (the paper's setting), then one on the whole dataset (no
    ``limit_train`` / ``limit_test``), then one with a linear probe, then the most recent."""
    if not cands:
        return None
    return max(cands, key=lambda e: (_is_imagenet1k(e.dataset), not e.subset(), e.linear() is not None, e.run_id))


def _ordered(first: Iterable[str], present: Iterable[str], key: Callable[[str], Any]) -> list[str]:
    out = list(first)
    out += sorted({p for p in present if p not in out}, key=key)
    return out


def build_table4(store: ResultsStore) -> pd.DataFrame:
    """Our linear top-1 next to the paper's Table 4, one row per method.

    Columns: ``method``, then ``<backbone> ours`` / ``<backbone> paper`` for
    vit-b, vit-l and any other backbone present, then ``notes``. A note is
    written whenever our dataset, epochs or backbone differ from the paper's.
    """
    entries = _latest_finished(store)
    by_key: dict[tuple[str, str], list[_Entry]] = {}
    for e in entries:
        by_key.setdefault((_canon_method(e.method), _canon_backbone(e.backbone)), []).append(e)
    methods = _ordered(
        PAPER_TABLE4,
        (m for m, _ in by_key),
        key=lambda m: (m not in BASELINE_METHOD_NAMES, m),
    )
    backbones = _ordered(PAPER_BACKBONES, (b for _, b in by_key), key=str)

    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method}
        notes: list[tuple[str, str]] = []
        n_runs = 0
        for bb in backbones:
            e = _pick(by_key.get((method, bb), []))
            n_runs += e is not None
            lin = None if e is None else e.linear()
            row[f"{bb} ours"] = None if lin is None else round(100.0 * lin, 1)
            row[f"{bb} paper"] = PAPER_TABLE4.get(method, {}).get(bb)
            note = None if e is None else _setting_note(method, bb, e)
            if note:
                notes.append((bb, note))
        # A note shared by every backbone we ran is stated once; otherwise each is
        # prefixed by its backbone so it is clear which number it qualifies.
        if len({n for _, n in notes}) == 1 and len(notes) == n_runs:
            row["notes"] = notes[0][1]
        else:
            row["notes"] = " | ".join(f"{bb}: {n}" for bb, n in notes)
        rows.append(row)
    columns = ["method"] + [f"{bb} {w}" for bb in backbones for w in ("ours", "paper")] + ["notes"]
    df = pd.DataFrame(rows, columns=columns)
    for col in columns[1:-1]:
        df[col] = df[col].astype("float64")
    return df


# -- rendering -----------------------------------------------------------------------


def _decimals(col: str) -> int | None:
    """Fixed decimals per column so 80.0 prints as 80.0, not 80; None = as is."""
    if col in (KNN_COL, LINEAR_COL, WALL_COL, THROUGHPUT_COL):
        return 1
    if col.endswith(" ours") or col.endswith(" paper"):
        return 1
    if col == HEADLINE_METRICS["nll_bpd"]:
        return 3
    if col in HEADLINE_METRICS.values():
        return 1
    return None


def _fmt_sig4(v: float) -> str:
    """4 significant digits without exponent for everyday magnitudes (3.457, 0.01235, 12350)."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    mag = math.floor(math.log10(abs(v)))
    if -4 <= mag < 6:
        return f"{v:.{max(0, 3 - mag)}f}"
    return f"{v:.4g}"


def _fmt_cell(v: Any, decimals: int | str | None, is_bool: bool) -> str:
    if is_bool:
        return "yes" if bool(v) else ""
    v = _none(v)
    if v is None:
        return ""
    if decimals is not None and isinstance(v, (int, float)) and not math.isnan(float(v)):
        if decimals == "sig4":
            return _fmt_sig4(float(v))
        return f"{float(v):.{decimals}f}"
    return str(v)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """All-string copy with fixed decimals and blanks for missing values."""
    formats = df.attrs.get(COLUMN_FORMATS_ATTR) or {}
    out = {}
    for col in df.columns:
        is_bool = pd.api.types.is_bool_dtype(df[col])
        fmt = formats.get(col)
        dec: int | str | None = 1 if fmt == "pct" else "sig4" if fmt == "sig4" else _decimals(str(col))
        out[col] = [_fmt_cell(v, dec, is_bool) for v in df[col].tolist()]
    return pd.DataFrame(out, columns=list(df.columns), dtype=object)


def render(df: pd.DataFrame, fmt: str) -> str:
    """Render a leaderboard/table frame as markdown, CSV or HTML.

    md/html get display formatting (one decimal for accuracies, blanks for
    missing); csv keeps the numeric frame so it can be loaded back for analysis.
    """
    if fmt not in RENDER_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(RENDER_FORMATS)}")
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = _display(df)
    if fmt == "html":
        return shown.to_html(index=False, na_rep="")
    colalign = [
        "right" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        else "left"
        for c in df.columns
    ]
    # disable_numparse: cells are already formatted; tabulate would turn "80.0" into "80".
    return shown.to_markdown(index=False, disable_numparse=True, colalign=colalign)
