"""What a row of the results store is, and the checks every value passes on its way in or out.

Conventions shared with the evaluators and the tables:

* accuracy metrics (names containing ``top1`` / ``top5`` / ending in ``acc`` or ``accuracy``) are
  stored as **fractions in [0, 1]**; the tables show percentages. A percentage slipping in is refused
  at write time, and a value outside [0, 1] read back (a hand-edited file) is shown as damaged, never
  as a number: 1.7 must not become "170.0".
* a metric value is a finite number or None ("not computed"); NaN and inf are refused at write time,
  because SQLite would store NaN as NULL and the failure would vanish.
* timestamps are UTC ISO-8601 strings; ``*_json`` columns hold JSON objects as text.
* a metric scored on the validation split (held back from the training data) is named ``val_<name>``
  (``val_linear_top1``); every other metric is a test-split number. A run keeps both splits' rows.

Every message built here is one line: values are quoted short (:func:`short_repr`), so a damaged
100-line config never floods the terminal.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Mapping

import pandas as pd

RUN_STATUSES: tuple[str, ...] = ("running", "finished", "failed", "interrupted")
#: The reference rows every comparison carries, in display order (``random-init:<method>`` is a
#: method's own untrained network, recorded with ``is_baseline``).
BASELINE_METHOD_NAMES: tuple[str, ...] = ("pixels", "random-init")


#: The prefix of a metric scored on the validation split.
VAL_PREFIX = "val_"


def metric_split(name: str) -> str:
    """``"val"`` for a validation-split metric (``val_linear_top1``), else ``"test"``."""
    return "val" if str(name).startswith(VAL_PREFIX) else "test"


def utc_now() -> str:
    """UTC timestamp in ISO-8601; one format everywhere keeps string ordering valid."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class RunRecord:
    """One training run; fields mirror the ``runs`` table columns (minus ``id``).

    ``config_json`` / ``versions_json`` accept either JSON text or a dict (it is serialised on
    insert), so callers can hand over the resolved config as is. ``pid`` / ``host`` identify the
    process that owns a ``running`` run, so a later command can tell that it died; they are filled
    with this process when a run is added or set ``running`` without them.
    """

    method: str
    backbone: str | None = None
    dataset: str | None = None
    run_dir: str | None = None
    config_json: str | Mapping[str, Any] | None = None
    seed: int | None = None
    git_commit: str | None = None
    versions_json: str | Mapping[str, Any] | None = None
    variant_json: str | Mapping[str, Any] | None = None  # {"label", "settings"}: see ssl_bench.run.variant
    epochs: int | None = None
    batch_size: int | None = None
    wall_time_s: float | None = None
    throughput_img_s: float | None = None
    peak_mem_mb: float | None = None
    device: str | None = None
    status: str = "running"
    uses_labels: bool = False
    is_baseline: bool = False
    created_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    pid: int | None = None
    host: str | None = None


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
JSON_FIELDS: frozenset[str] = frozenset({"config_json", "versions_json", "variant_json"})
BOOL_FIELDS: frozenset[str] = frozenset({"uses_labels", "is_baseline"})
INT_FIELDS: frozenset[str] = frozenset({"id", "seed", "epochs", "batch_size", "pid"}) | BOOL_FIELDS
REAL_FIELDS: frozenset[str] = frozenset({"wall_time_s", "throughput_img_s", "peak_mem_mb"})

#: What one evaluator reports to ``ResultsStore.finish_run``: ``(metrics, protocol)`` or any
#: object with ``.metrics`` and ``.protocol`` (an ``EvalResult``).
EvaluatorResult = Any


@dataclass(frozen=True)
class UndecodableText:
    """A TEXT value whose bytes are not UTF-8 (a damaged byte in the file).

    The store's connection returns this instead of raising, so one bad byte costs one row, not the
    whole file (Python's sqlite3 would raise for the whole query, quoting the entire value).
    """

    raw: bytes

    def why(self) -> str:
        try:
            self.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not valid UTF-8 text (byte 0x{self.raw[exc.start]:02x} at offset {exc.start})"
        return "not valid UTF-8 text"

    def __str__(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


def decode_text(raw: bytes) -> str | UndecodableText:
    """The connection's ``text_factory``: UTF-8 text, or :class:`UndecodableText` for damaged bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return UndecodableText(bytes(raw))


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters: safe to put in a message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_json(value: Any) -> str | None:
    """JSON text for a ``*_json`` column (text is kept as given; keys sorted for stable files)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def normalise_run_value(name: str, value: Any) -> Any:
    """Coerce a python value to what the ``runs`` column stores."""
    if name in JSON_FIELDS:
        return to_json(value)
    if name in BOOL_FIELDS:
        return int(bool(value))
    if name == "run_dir" and value is not None:
        return os.fspath(value)
    if name == "status" and value not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {value!r}")
    return value


def record_from_row(row: Mapping[str, Any]) -> RunRecord:
    """A :class:`RunRecord` from a (checked) ``runs`` row; JSON columns stay text."""
    data = {k: row.get(k) for k in RUN_FIELDS}
    for k in BOOL_FIELDS:
        data[k] = bool(data[k])
    return RunRecord(**data)


def is_accuracy_metric(name: str) -> bool:
    """Accuracy-like metrics are stored as fractions and shown as percentages."""
    n = name.lower()
    return "top1" in n or "top5" in n or n.endswith("acc") or n.endswith("accuracy")


def type_problem(column: str, value: Any) -> str | None:
    """Why ``value`` cannot be a ``column`` value, or None when it is fine."""
    if value is None:
        return None
    if isinstance(value, UndecodableText):
        return value.why()
    if column in INT_FIELDS:
        return None if isinstance(value, int) else f"expected an integer, got {short_repr(value)}"
    if column in REAL_FIELDS or column == "value":
        return None if isinstance(value, (int, float)) else f"expected a number, got {short_repr(value)}"
    if not isinstance(value, str):
        return f"expected text, got {short_repr(value)}"
    if column == "status" and value not in RUN_STATUSES:
        return f"expected one of {', '.join(RUN_STATUSES)}, got {short_repr(value)}"
    return None


def json_problem(text: Any) -> str | None:
    """Why ``text`` is not a JSON object (or NULL), or None when it is one."""
    if text is None:
        return None
    if isinstance(text, UndecodableText):
        return text.why()
    if not isinstance(text, str):
        return f"expected JSON text, got {short_repr(text)}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON: {' '.join(str(exc).split())}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return None


def metric_value_problem(name: str, value: Any) -> str | None:
    """Why a metric value cannot be stored or shown as a number (type, finiteness, accuracy range);
    None when it can (None itself means "not computed"). The one rule for the values an evaluator
    returns, the values written and the values read back."""
    if isinstance(value, bool):
        return f"expected a number, got {short_repr(value)}"
    why = type_problem("value", value)
    if why or value is None:
        return why
    if not math.isfinite(float(value)):
        return f"{value!r} is not a finite number"
    if is_accuracy_metric(name) and not 0.0 <= float(value) <= 1.0:
        return f"{value!r} is outside [0, 1], the range of an accuracy stored as a fraction"
    return None


def run_row_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """``("runs.<column>", why)`` for the first damaged column of a ``runs`` row, or None."""
    for col, value in row.items():
        if col in JSON_FIELDS:
            why = json_problem(value)
        elif col in RUN_FIELDS or col == "id":
            why = type_problem(col, value)
        else:
            continue
        if why:
            return f"runs.{col}", why
    return None


def damaged_message(path: Any, run_id: Any, run_dir: Any, column: str, why: str, where: str = "",
                    outcome: str = "") -> str:
    """One line naming a damaged value (file, run, column, why), what the reader did, and the fix."""
    rd = run_dir if isinstance(run_dir, str) and run_dir else None
    if column.startswith("metrics.") and rd:
        fix = f"re-score it with `ssl-bench eval {rd}` (replaces that evaluator's metrics)"
    else:
        fix = (f"delete that run (DELETE FROM runs WHERE id = {run_id}, with any SQLite tool)"
               + (f" and re-score it with `ssl-bench eval {rd}`" if rd else ""))
    said = f"; {outcome}" if outcome else ""
    return (f"{path}: run {run_id} ({rd or 'no run dir'}) has a damaged {column} value{where} ({why}){said}. "
            f"Fix: {fix}")


def unpack_result(name: str, res: EvaluatorResult) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """``(metrics, protocol)`` of one evaluator's result (a pair or an ``EvalResult``)."""
    if hasattr(res, "metrics") and hasattr(res, "protocol"):
        return res.metrics, res.protocol
    if isinstance(res, (tuple, list)) and len(res) == 2 and isinstance(res[0], Mapping):
        return res[0], res[1]
    raise TypeError(f"evaluator {name!r}: expected (metrics, protocol) or an EvalResult, got {type(res).__name__}")


def metric_rows(run_id: int, evaluator: str, metrics: Mapping[str, Any],
                protocol: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
    """The ``metrics`` rows of one evaluator's result, each value checked before anything is written.

    None means "not computed" and is kept; NaN / inf and accuracies outside [0, 1] are refused with a
    ValueError naming the evaluator and the metric.
    """
    now = utc_now()
    proto = to_json(dict(protocol) if protocol is not None else {})
    rows = []
    for name, value in metrics.items():
        why = metric_value_problem(str(name), value)
        if why:
            raise ValueError(
                f"evaluator {evaluator!r} returned {name!r}={short_repr(value)}: {why}; nothing was written. "
                f"Fix the evaluator: return finite numbers, accuracies as fractions in [0, 1] (divide a "
                f"percentage by 100), and None for a metric it could not compute"
            )
        rows.append((int(run_id), evaluator, str(name), None if value is None else float(value), proto, now))
    return rows


def none_if_na(v: Any) -> Any:
    """pandas NaN/NA -> None so plain python comparisons work."""
    if v is None:
        return None
    try:
        return None if pd.isna(v) else v
    except (TypeError, ValueError):
        return v
