"""``ssl-bench sweep``: a grid of settings chosen on validation data, reported on test for the choice only.

Choosing a setting by its test accuracy makes the test accuracy of the choice optimistic: the best of
several noisy numbers is biased upwards, and the test set has then been used to fit a
hyper-parameter. So a sweep

1. runs every grid point x seed through the ordinary run path (:func:`ssl_bench.run.run_method`),
   each holding back the same stratified validation split of the training data
   (``dataset.val_fraction``, default 0.1; its own seed, so the points' scores are paired) and
   scored on it only (``eval.split=val``): no test number exists for any of them yet;
2. selects the point with the best mean validation score over the seeds (:func:`select_setting`,
   which is given validation numbers and nothing else);
3. scores only the selected point's runs on the test split (``evaluate_run(..., split="test")``).

Every run's config carries ``name`` (the method and the point's settings) and ``sweep`` (the sweep's
id), so its rows are recognisable; the runs live under ``OUT/sweeps/<sweep id>/`` beside the sweep's
table (``sweep.md``). No baselines are scored.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.config import parse_set_items
from ssl_bench.config_schema import validate_config
from ssl_bench.distributed import DistContext, broadcast_object
from ssl_bench.errors import ConfigError, SSLBenchError
from ssl_bench.files import atomic_write_text
from ssl_bench.results import is_accuracy_metric, metrics_by_run
from ssl_bench.results.records import VAL_PREFIX
from ssl_bench.results.stats import mean_sd
from ssl_bench.run.assemble import method_config
from ssl_bench.run.resume import comparable
from ssl_bench.run.runs import check_run, evaluate_run, run_method
from ssl_bench.run.score import summary

log = logging.getLogger("ssl_bench")

#: The fraction of the training data held back for validation when the config sets none.
DEFAULT_VAL_FRACTION = 0.1
#: The metric a sweep selects on by default (its validation score, ``val_linear_top1``).
DEFAULT_SELECT = "linear_top1"
#: The sweep's table, in its folder.
SWEEP_TABLE = "sweep.md"


# ---------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridPoint:
    """One setting of the grid: its label (``train.blr=3e-4``) and its ``--set`` items."""

    label: str
    set_items: tuple[str, ...]


def _split_values(raw: str) -> list[str]:
    """``1e-4,3e-4`` -> ["1e-4", "3e-4"]: split at the commas outside brackets and quotes, so a tuple
    value stays one value (``(10,20),(20,50)``). Text that is no Python expression list (``a b,c``)
    is split at every comma."""
    try:
        tree = ast.parse(f"[{raw}]", mode="eval").body
    except SyntaxError:
        return [v.strip() for v in raw.split(",")]
    assert isinstance(tree, ast.List)
    return [(ast.get_source_segment(f"[{raw}]", node) or "").strip() for node in tree.elts]


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["train.blr=1e-4,3e-4", ...]`` -> ``{"train.blr": ["1e-4", "3e-4"]}`` (the values as written;
    each is parsed like a ``--set`` value when the config is resolved). Bad items are one ConfigError."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects KEY=V1,V2,..., got {item!r} (example: --grid train.blr=1e-4,3e-4,1e-3)")
        key, raw = (s.strip() for s in item.split("=", 1))
        values = _split_values(raw)
        if not key or not raw.strip() or any(v == "" for v in values):
            raise ConfigError(f"--grid {item!r}: give a key and one or more comma-separated values (example: --grid train.blr=1e-4,3e-4)")
        if key in grid:
            raise ConfigError(f"--grid names {key} twice; give all its values in one --grid {key}=V1,V2,...")
        parsed = [repr(parse_set_items([f"{key}={v}"])[key]) for v in values]
        if len(set(parsed)) < len(parsed):
            raise ConfigError(f"--grid {item!r} repeats a value; each grid value is run once per seed")
        grid[key] = values
    if not grid:
        raise ConfigError("a sweep needs a grid: --grid KEY=V1,V2,... (example: --grid train.blr=1e-4,3e-4,1e-3)")
    return grid


def grid_points(grid: Mapping[str, Sequence[str]]) -> list[GridPoint]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [
        GridPoint(", ".join(f"{k}={v}" for k, v in zip(keys, combo)), tuple(f"{k}={v}" for k, v in zip(keys, combo)))
        for combo in itertools.product(*(grid[k] for k in keys))
    ]


# ---------------------------------------------------------------------------------------------
# the choice
# ---------------------------------------------------------------------------------------------


def select_setting(val_scores: Mapping[str, Sequence[float]]) -> str:
    """The label whose validation scores have the highest mean (higher is better; a tie goes to
    the first label in order). It is handed validation numbers only, so it cannot choose by test."""
    if not val_scores:
        raise ValueError("select_setting needs at least one setting with validation scores")
    means = {label: float(pd.Series(list(scores), dtype=float).mean()) for label, scores in val_scores.items()}
    if any(pd.isna(m) for m in means.values()):
        missing = [label for label, m in means.items() if pd.isna(m)]
        raise ValueError(f"setting(s) {missing} have no validation score")
    return max(means, key=lambda label: (means[label], -list(means).index(label)))


def selected_metric(select: str) -> str:
    """The headline name a sweep selects on (``linear_top1``; ``val_linear_top1`` is read as the same),
    which must be an accuracy: the selection takes the highest mean."""
    name = select[len(VAL_PREFIX):] if select.startswith(VAL_PREFIX) else select
    if not is_accuracy_metric(name):
        raise ConfigError(f"--select {select!r}: a sweep selects the highest mean, so name an accuracy "
                          "(e.g. linear_top1 or knn_top1)")
    return name


# ---------------------------------------------------------------------------------------------
# the runs
# ---------------------------------------------------------------------------------------------


@dataclass
class SweepRun:
    """One run of a sweep: a grid point at one seed."""

    label: str
    seed: int
    run_dir: Path
    run_id: int | None


@dataclass
class SweepResult:
    """What a sweep ran, what it chose and on which numbers (accuracies as fractions)."""

    sweep_id: str
    folder: Path
    metric: str  # the selected-on metric's test name (``linear_top1``)
    labels: list[str]
    runs: list[SweepRun]
    val: dict[str, list[float]]  # label -> validation scores, one per seed
    selected: str
    test: dict[str, list[float]] = field(default_factory=dict)  # the selected label only

    @property
    def seeds(self) -> int:
        return len(self.val[self.selected])


def sweep_id_for(method: str, now: datetime | None = None) -> str:
    """``<method>-<UTC time>``, e.g. ``mae-20260101T120000Z``."""
    return f"{method}-{(now or datetime.now(timezone.utc)).strftime('%Y%m%dT%H%M%SZ')}"


def claim_sweep_folder(out: str | Path, sweep_id: str) -> tuple[str, Path]:
    """A new ``OUT/sweeps/<sweep id>[-N]`` folder (``mkdir`` is atomic: two sweeps started in the same
    second each get their own) and its id."""
    base = Path(out) / "sweeps"
    base.mkdir(parents=True, exist_ok=True)
    for i in range(10_000):
        name = sweep_id if i == 0 else f"{sweep_id}-{i}"
        try:
            (base / name).mkdir()
        except FileExistsError:
            continue
        return name, base / name
    raise SSLBenchError(f"{base} already holds 10,000 sweeps named {sweep_id}-N; use another --out")


def _slug(label: str) -> str:
    """A grid point's label as a folder name."""
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", label.replace(", ", "__"))


def point_config(
    method: str, registry: Any, point: GridPoint, seed: int, *, sweep_id: str, folder: Path,
    set_items: Sequence[str] = (), user_config: str | None = None, cli: Mapping[str, Any] | None = None,
) -> Any:
    """The resolved config of one grid point at one seed: the run's layers with the point's values
    as the last ``--set`` items, a validation split (the config's own ``dataset.val_fraction``, else
    :data:`DEFAULT_VAL_FRACTION`), scored on it, ``sweep`` set (and a given ``name`` suffixed with the
    point), runs under ``folder``."""
    clash = sorted(set(parse_set_items(set_items)) & set(parse_set_items(point.set_items)))
    if clash:
        raise ConfigError(f"{', '.join(clash)} is both on the grid and in --set; drop it from one of them")
    layers = {**(cli or {}), "seed": seed, "out": str(folder / _slug(point.label))}
    cfg = method_config(method, registry, user_config=user_config, cli=layers, set_items=[*set_items, *point.set_items, "eval.split=test"])
    fraction = cfg.dataset.get("val_fraction")
    cfg.merge_from_dict({
        "dataset.val_fraction": DEFAULT_VAL_FRACTION if fraction is None else fraction,
        # a row label only when the user named the configuration: else the row identity labels it (method + what differs)
        "eval.split": "val", "name": f"{cfg.name} · {point.label}" if cfg.get("name") else None, "sweep": sweep_id,
    })
    validate_config(cfg)
    return cfg


def run_sweep(
    method: str, registry: Any, store: Any, ctx: DistContext, *, grid: Mapping[str, Sequence[str]], seeds: Sequence[int] = (0,),
    set_items: Sequence[str] = (), user_config: str | None = None, cli: Mapping[str, Any] | None = None,
    select: str = DEFAULT_SELECT, out: str | Path = "runs", results: str | Path | None = None,
) -> SweepResult | None:
    """Run the grid, select on validation, score the selection on test; the result on the main rank
    (None elsewhere). Every config is resolved and checked before the first run trains.

    ``grid``: key -> values as written (:func:`parse_grid`); ``cli``: the run's flag layer
    (``backbone.name``, ``train.epochs``, ...); ``store``: the results store (main rank only).
    """
    metric = selected_metric(select)
    points = grid_points(grid)
    if not seeds or len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: give one or more distinct seeds (e.g. --seeds 0 1 2)")
    claimed = claim_sweep_folder(out, sweep_id_for(method)) if ctx.is_main else None
    sweep_id, folder = broadcast_object((claimed[0], str(claimed[1])) if claimed else None, ctx)
    folder = Path(folder)
    plan = [(p, s, point_config(method, registry, p, s, sweep_id=sweep_id, folder=folder, set_items=set_items,
                                user_config=user_config, cli=cli)) for p in points for s in seeds]
    datasets: dict[str, Any] = {}  # one load per distinct dataset config (a grid may vary the data)
    checked = []
    for _, _, cfg in plan:
        key = json.dumps(comparable(cfg.dataset), sort_keys=True)
        checked.append(check_run(cfg, registry, datasets.get(key)))
        datasets[key] = checked[-1].dataset
    runs: list[SweepRun] = []
    for i, ((point, seed, cfg), ok) in enumerate(zip(plan, checked)):
        if ctx.is_main:
            log.info("== sweep %s: run %d/%d, %s, seed %d (scored on validation) ==", sweep_id, i + 1, len(plan), point.label, seed)
        outcome = run_method(method, cfg, store, ctx, registry=registry, checked=ok, results=results)
        runs.append(SweepRun(point.label, seed, outcome.run_dir, outcome.run_id))
    choice, val = None, {}
    if ctx.is_main:
        choice, val = select_from_store(store, runs, metric)
        log.info("sweep %s: selected %s by validation %s; scoring its runs on test", sweep_id, choice, metric)
    choice = broadcast_object(choice, ctx)
    for run in runs:
        if run.label == choice:
            scored = evaluate_run(run.run_dir, store, ctx.device, registry=registry, ctx=ctx, results=results, split="test")
            if ctx.is_main:
                log.info("%s, seed %d, on test: %s", run.label, run.seed, summary(scored.metrics))
    if not ctx.is_main:
        return None
    test = stored_scores(store, [r for r in runs if r.label == choice], metric)
    result = SweepResult(sweep_id, folder, metric, [p.label for p in points], runs, val, choice, test)
    atomic_write_text(folder / SWEEP_TABLE, sweep_report(result) + "\n")
    return result


def select_from_store(store: Any, runs: Sequence[SweepRun], metric: str) -> tuple[str, dict[str, list[float]]]:
    """(the selected label, label -> validation scores): ``runs``' stored ``val_<metric>`` values, and
    nothing else of theirs, handed to :func:`select_setting`."""
    val = stored_scores(store, runs, VAL_PREFIX + selected_metric(metric))
    return select_setting(val), val


def stored_scores(store: Any, runs: Sequence[SweepRun], name: str) -> dict[str, list[float]]:
    """label -> the stored value of metric ``name`` of each of its runs (in seed order)."""
    stored = metrics_by_run(store, [r.run_id for r in runs])
    out: dict[str, list[float]] = {}
    for run in runs:
        values = stored.get(run.run_id, ({}, {}))[0]
        value = values.get(name)
        if value is None:
            have = ", ".join(sorted(k for k in values if k.startswith(VAL_PREFIX))) or "none"
            raise SSLBenchError(f"run {run.run_id} ({run.run_dir}) has no {name} (its validation metrics: {have}); "
                                "--select a metric its evaluators produce (e.g. linear_top1 with the linear evaluator)")
        out.setdefault(run.label, []).append(float(value))
    return out


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> str:
    """Accuracies (fractions) as ``88.0 ± 0.5 (3)`` in percent; one value has no sd."""
    mean, sd = mean_sd(values)
    return f"{100 * mean:.1f} ({len(values)})" if sd is None else f"{100 * mean:.1f} ± {100 * sd:.1f} ({len(values)})"


def selection_line(result: SweepResult) -> str:
    """The sentence that says how the setting was chosen and what the test number is."""
    n = result.seeds
    return (f"selected {result.selected} by validation {result.metric} (mean of {n} seed{'s' if n != 1 else ''}); "
            "test accuracy reported for this setting only")


def sweep_frame(result: SweepResult) -> pd.DataFrame:
    """One row per grid point: its validation mean ± sd (n), and test mean ± sd (n) for the selected row only."""
    rows = []
    for label in result.labels:
        rows.append({
            "setting": label + (" (selected)" if label == result.selected else ""),
            f"val {result.metric} (%)": _mean_sd(result.val[label]),
            f"test {result.metric} (%)": _mean_sd(result.test[label]) if label in result.test else "",
        })
    return pd.DataFrame(rows)


def sweep_report(result: SweepResult) -> str:
    """The sweep's table (markdown) and its selection line."""
    table = sweep_frame(result).to_markdown(index=False, disable_numparse=True)
    return f"Sweep {result.sweep_id}\n\n{table}\n\n{selection_line(result)}"


__all__ = [
    "DEFAULT_SELECT", "DEFAULT_VAL_FRACTION", "SWEEP_TABLE", "GridPoint", "SweepResult", "SweepRun", "grid_points",
    "parse_grid", "point_config", "run_sweep", "select_from_store", "select_setting", "selected_metric", "selection_line",
    "stored_scores", "sweep_frame", "sweep_report",
]
