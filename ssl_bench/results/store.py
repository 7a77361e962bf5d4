"""SQLite-backed store for benchmark runs and their evaluation metrics.

Why SQLite: several training / evaluation processes (a sweep on one machine,
``ssl-bench eval`` re-scoring an old run while a new one trains) must append to
one results file without a server. WAL journaling lets readers proceed while a
writer commits, and a generous busy timeout makes concurrent writers queue
instead of failing with ``database is locked``.

Conventions (shared with the evaluators and the leaderboard):

* accuracy metrics (names containing ``top1`` / ``top5`` / ending in ``acc``)
  are stored as **fractions in [0, 1]**; the leaderboard turns them into
  percentages. :meth:`ResultsStore.add_metrics` rejects values outside [0, 1]
  so that a percentage slipping in is caught at write time, not in a table.
* timestamps are UTC ISO-8601 strings.
* ``*_json`` columns hold JSON text; dicts passed for them are serialised.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ..errors import SSLBenchError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
RUN_STATUSES = ("running", "finished", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_dir TEXT,
    method TEXT NOT NULL,
    backbone TEXT,
    dataset TEXT,
    config_json TEXT,
    seed INTEGER,
    git_commit TEXT,
    versions_json TEXT,
    epochs INTEGER,
    batch_size INTEGER,
    wall_time_s REAL,
    throughput_img_s REAL,
    peak_mem_mb REAL,
    device TEXT,
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'finished', 'failed')),
    uses_labels INTEGER NOT NULL DEFAULT 0,
    is_baseline INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_run_dir ON runs(run_dir);
CREATE INDEX IF NOT EXISTS runs_key ON runs(method, backbone, dataset);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    evaluator TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    protocol_json TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, evaluator);
"""


class ResultsStoreError(SSLBenchError, RuntimeError):
    """The results file cannot be used (corrupt, foreign, too new); the CLI prints
    it as one message because the fix is about the file, not the code."""


def utc_now() -> str:
    """UTC timestamp in ISO-8601; one format everywhere keeps string ordering valid."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class RunRecord:
    """One training run; fields mirror the ``runs`` table columns (minus ``id``).

    ``config_json`` / ``versions_json`` accept either JSON text or a dict (it is
    serialised on insert), so callers can hand over the resolved config as is.
    """

    method: str
    backbone: str | None = None
    dataset: str | None = None
    run_dir: str | None = None
    config_json: str | Mapping[str, Any] | None = None
    seed: int | None = None
    git_commit: str | None = None
    versions_json: str | Mapping[str, Any] | None = None
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


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
_JSON_FIELDS = {"config_json", "versions_json"}
_BOOL_FIELDS = {"uses_labels", "is_baseline"}


def _to_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _normalise_run_value(name: str, value: Any) -> Any:
    """Coerce a python value to what the ``runs`` column stores."""
    if name in _JSON_FIELDS:
        return _to_json(value)
    if name in _BOOL_FIELDS:
        return int(bool(value))
    if name == "run_dir" and value is not None:
        return os.fspath(value)
    if name == "status" and value not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {value!r}")
    return value


def is_accuracy_metric(name: str) -> bool:
    """Accuracy-like metrics are stored as fractions and shown as percentages."""
    n = name.lower()
    return "top1" in n or "top5" in n or n.endswith("acc") or n.endswith("accuracy")


class ResultsStore:
    """Handle on one results database file; safe to open from many processes.

    Open one ``ResultsStore`` per process (do not share across ``fork``). Each
    write is its own short ``BEGIN IMMEDIATE`` transaction, which is what lets
    concurrent writers serialise through the busy timeout without losing rows.
    """

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.is_dir():
            raise ResultsStoreError(
                f"results store path {self.path} is a directory; pass a file path such as "
                f"{self.path / 'results.db'}"
            )
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write holds
        # the lock only for the duration of one logical operation.
        self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._corrupt_error(exc) from exc
        except BaseException:
            self._conn.close()
            raise

    # -- lifecycle -----------------------------------------------------------------

    def _corrupt_error(self, exc: Exception) -> ResultsStoreError:
        return ResultsStoreError(
            f"{self.path} is not a usable ssl-bench results database ({exc}). "
            f"Fix: move or delete that file (a new store is created on the next run), "
            f"or point the results path at a different file."
        )

    def _init_schema(self) -> None:
        with self._transaction() as cur:
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    cur.execute(stmt)
            row = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise ResultsStoreError(
                    f"{self.path} has results schema version {version}, but this ssl-bench "
                    f"only understands up to {SCHEMA_VERSION}. Fix: upgrade ssl-bench or use "
                    f"a different results file."
                )

    def close(self) -> None:
        """Close the connection; the store object is unusable afterwards."""
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> sqlite3.Cursor:
            # IMMEDIATE takes the write lock up front, so the busy timeout applies
            # here rather than failing on a lock upgrade halfway through.
            self.conn.execute("BEGIN IMMEDIATE")
            return self.conn.cursor()

        def __exit__(self, exc_type: object, *rest: object) -> None:
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")

    def _transaction(self) -> "ResultsStore._Tx":
        return ResultsStore._Tx(self._conn)

    # -- runs ------------------------------------------------------------------------

    def add_run(self, rec: RunRecord) -> int:
        """Insert a run and return its id (the handle for metrics and updates)."""
        values = {k: _normalise_run_value(k, v) for k, v in asdict(rec).items()}
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._transaction() as cur:
            cur.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(values.values()))
            return int(cur.lastrowid)

    def update_run(self, run_id: int, **fields_: Any) -> None:
        """Update columns of a run, e.g. ``status='finished', wall_time_s=...``.

        Field names are validated because they are spliced into SQL and because a
        typo (``wall_time=``) would otherwise be silently dropped.
        """
        unknown = sorted(set(fields_) - set(RUN_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown run field(s) {unknown}; valid fields: {', '.join(RUN_FIELDS)}"
            )
        if not fields_:
            return
        if fields_.get("status") == "finished" and "finished_at" not in fields_:
            fields_["finished_at"] = utc_now()
        values = {k: _normalise_run_value(k, v) for k, v in fields_.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as cur:
            cur.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id))
            )
            if cur.rowcount == 0:
                raise KeyError(f"no run with id {run_id} in {self.path}")

    def get_run(self, run_id: int) -> RunRecord:
        """Return the stored run as a :class:`RunRecord` (JSON columns stay text)."""
        row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id} in {self.path}")
        data = {k: row[k] for k in RUN_FIELDS}
        for k in _BOOL_FIELDS:
            data[k] = bool(data[k])
        return RunRecord(**data)

    def find_run(self, run_dir: str | os.PathLike[str]) -> int | None:
        """Id of the most recent run recorded for ``run_dir`` (exact string match)."""
        row = self._conn.execute(
            "SELECT id FROM runs WHERE run_dir = ? ORDER BY id DESC LIMIT 1",
            (os.fspath(run_dir),),
        ).fetchone()
        return None if row is None else int(row[0])

    # -- metrics ---------------------------------------------------------------------

    @staticmethod
    def _metric_rows(
        run_id: int, evaluator: str, metrics: Mapping[str, float], protocol: Mapping[str, Any] | None
    ) -> list[tuple[Any, ...]]:
        now = utc_now()
        proto = _to_json(dict(protocol) if protocol is not None else {})
        rows = []
        for name, value in metrics.items():
            v = None if value is None else float(value)
            if v is not None and math.isnan(v):
                v = None
            if v is not None and is_accuracy_metric(name) and not 0.0 <= v <= 1.0:
                raise ValueError(
                    f"metric {name!r}={value} looks like a percentage; accuracies are stored "
                    f"as fractions in [0, 1] (divide by 100)"
                )
            rows.append((int(run_id), evaluator, str(name), v, proto, now))
        return rows

    def _insert_metrics(self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
        try:
            cur.executemany(
                "INSERT INTO metrics (run_id, evaluator, name, value, protocol_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.IntegrityError as exc:
            raise KeyError(f"no run with id {rows[0][0]} in {self.path}") from exc

    def add_metrics(
        self,
        run_id: int,
        evaluator: str,
        metrics: Mapping[str, float],
        protocol: Mapping[str, Any] | None = None,
    ) -> None:
        """Append metric values produced by one evaluator under one protocol."""
        rows = self._metric_rows(run_id, evaluator, metrics, protocol)
        if not rows:
            return
        with self._transaction() as cur:
            self._insert_metrics(cur, rows)

    def replace_metrics(
        self,
        run_id: int,
        evaluator: str,
        metrics: Mapping[str, float],
        protocol: Mapping[str, Any] | None = None,
    ) -> None:
        """Atomically drop this evaluator's metrics for the run and write new ones.

        Used by re-evaluation (``ssl-bench eval``) so a re-scored run does not end up
        with two competing values for the same metric.
        """
        rows = self._metric_rows(run_id, evaluator, metrics, protocol)
        with self._transaction() as cur:
            cur.execute(
                "DELETE FROM metrics WHERE run_id = ? AND evaluator = ?", (int(run_id), evaluator)
            )
            if rows:
                self._insert_metrics(cur, rows)

    # -- frames ----------------------------------------------------------------------

    def _frame(self, sql: str) -> pd.DataFrame:
        cur = self._conn.execute(sql)
        cols = [d[0] for d in cur.description]
        df = pd.DataFrame.from_records(cur.fetchall(), columns=cols)
        for col in _BOOL_FIELDS:
            if col in df.columns:
                df[col] = df[col].astype(bool)
        return df

    def runs_frame(self) -> pd.DataFrame:
        """All runs, one row each, ordered by id."""
        return self._frame("SELECT * FROM runs ORDER BY id")

    def metrics_frame(self) -> pd.DataFrame:
        """All metric rows joined with their run's columns.

        Metric ``id``/``created_at`` are exposed as ``metric_id``/``metric_created_at``
        and the run's ``created_at`` as ``run_created_at`` to avoid name clashes.
        """
        run_cols = [c for c in RUN_FIELDS if c != "created_at"]
        select_runs = ", ".join(f"r.{c}" for c in run_cols)
        return self._frame(
            "SELECT m.id AS metric_id, m.run_id, m.evaluator, m.name, m.value,"
            " m.protocol_json, m.created_at AS metric_created_at, "
            f"{select_runs}, r.created_at AS run_created_at"
            " FROM metrics m JOIN runs r ON r.id = m.run_id ORDER BY m.id"
        )
