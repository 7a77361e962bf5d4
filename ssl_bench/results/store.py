"""The results store: runs and their evaluation metrics in one SQLite file shared by all processes.

* a run's life: ``running`` -> ``finished`` | ``failed`` | ``interrupted``. A ``finished`` run is
  immutable (its metrics change only through :meth:`ResultsStore.replace_metrics`, i.e. an explicit
  re-score), so a later crash or a resumed process can never downgrade a recorded result.
* every multi-row write is one transaction: a process killed halfway leaves either the old state or
  the new one, never half a metric set.
* :meth:`ResultsStore.claim_run` decides, in one transaction, whether this process runs a piece of
  work (a baseline) or reuses / waits for the run another process recorded, so concurrent commands
  run each baseline once.
* readers skip a damaged row with one warning line naming it (the rest of the file stays usable);
  a damaged metric value is returned as None with the reason in the ``damaged`` column.

The file handling is :mod:`.sqlite_file`, the tables :mod:`.schema`, the row checks :mod:`.records`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from .damage import DamageReport
from .frames import FrameReader
from .liveness import current_host, process_alive
from .records import (
    BOOL_FIELDS, RUN_FIELDS, EvaluatorResult, RunRecord, damaged_message, metric_rows, normalise_run_value,
    VAL_PREFIX, metric_split, record_from_row, run_row_problem, unpack_result, utc_now,
)
from .schema import check_ours, initialise_blank, prepare_for_writing
from .sqlite_file import BUSY_TIMEOUT_S, SQLiteFile, Transaction
from .store_errors import FinishedRunError, ReadOnlyStoreError, ResultsStoreError, RunStillRunningError

IsAlive = Callable[[Any, Any], bool]


class ResultsStore:
    """Handle on one results database file; safe to open from many processes.

    Open one ``ResultsStore`` per process (do not share across ``fork``). Each write is its own short
    ``BEGIN IMMEDIATE`` transaction, which is what lets concurrent writers serialise through the busy
    timeout without losing rows.

    ``readonly=True`` (or :meth:`open_readonly`) is for commands that only read (the leaderboard): it
    never creates, initialises or migrates the file, reads older schema versions as they are, works on
    a read-only directory or medium, and refuses every write with :class:`ReadOnlyStoreError`.

    ``damage`` (:class:`~.damage.DamageReport`) holds the one-line warning logged (once) for each
    damaged value a reader skipped or showed as damaged, so a command can sum them up.
    """

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False) -> None:
        self.file = SQLiteFile(path, timeout_s=timeout_s, readonly=readonly)
        self.path, self.readonly, self.timeout_s = self.file.path, self.file.readonly, self.file.timeout_s
        self.damage = DamageReport(self.path)
        exists = self.file.check_path()
        if self.readonly:
            self._conn, version = self.file.connect_readonly(lambda cur: check_ours(cur, self.path, False))
        else:
            if not exists:
                self.file.create(initialise_blank)
            self._conn, version = self.file.connect_for_writing(lambda cur: prepare_for_writing(cur, self.path))
        #: Schema version of the file as opened (older than SCHEMA_VERSION only when read-only).
        self.schema_version: int = version
        #: "rw", "ro" (sqlite ``mode=ro``) or "immutable" (read-only medium fallback).
        self.access_mode = self.file.access_mode
        try:
            self._frames = FrameReader(self.file, self._conn, self.damage)
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S) -> "ResultsStore":
        """Open ``path`` for reading only (see the class docstring)."""
        return cls(path, timeout_s=timeout_s, readonly=True)

    def close(self) -> None:
        """Close the connection; the store object is unusable afterwards."""
        self._conn.close()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"ResultsStore({str(self.path)!r}{mode})"

    def _transaction(self) -> Transaction:
        return self.file.transaction(self._conn)

    def _require_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStoreError(
                f"{self.path} was opened read-only, so {what} was not written. Fix: open it with "
                f"ResultsStore(path) (readonly=False) in the process that records runs"
            )

    # -- runs ------------------------------------------------------------------------

    def add_run(self, rec: RunRecord) -> int:
        """Insert a run and return its id. A ``running`` run without ``pid``/``host`` is this process's."""
        self._require_writable("the new run")
        with self._transaction() as cur:
            return self._insert_run(cur, rec)

    @staticmethod
    def _insert_run(cur: sqlite3.Cursor, rec: RunRecord) -> int:
        values = {k: normalise_run_value(k, v) for k, v in asdict(rec).items()}
        if values["status"] == "running" and values["pid"] is None and values["host"] is None:
            values["pid"], values["host"] = os.getpid(), current_host()
        marks = ", ".join("?" for _ in values)
        cur.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES ({marks})", tuple(values.values()))
        return int(cur.lastrowid)

    def claim_run(self, rec: RunRecord, same: Callable[[dict[str, Any]], bool],
                  is_alive: IsAlive = process_alive) -> tuple[int, str]:
        """Run ``rec`` here, or reuse / wait for the run another process recorded; ``(run id, how)``.

        In ONE write transaction, so of several processes racing for the same work exactly one gets
        "claimed": the runs with ``rec``'s method, backbone, dataset and ``is_baseline`` that are
        ``running`` or ``finished`` are looked at newest first. A ``running`` one whose owner is gone
        (``is_alive(host, pid)`` False) is marked ``interrupted`` and counts as absent; a damaged row
        is skipped with a warning. The first for which ``same(row)`` holds decides: finished ->
        ``(its id, "finished")`` (reuse its metrics), running -> ``(its id, "running")`` (wait for
        it with :meth:`wait_for_run`, then claim again if it did not finish). With none, ``rec`` is
        inserted as ``running``, owned by this process: ``(new id, "claimed")``.

        ``same(row)`` gets the row as a dict (JSON columns as text, booleans as bool) and says whether
        that run is the same work (e.g. an equal baseline identity in its ``config_json``).
        """
        self._require_writable("the claim of a run")
        if rec.status != "running":
            raise ValueError(f"claim_run records a running run; got status={rec.status!r}")
        with self._transaction() as cur:
            rows = cur.execute(
                "SELECT * FROM runs WHERE method = ? AND backbone IS ? AND dataset IS ? AND is_baseline = ?"
                " AND status IN ('running', 'finished') ORDER BY id DESC",
                (rec.method, rec.backbone, rec.dataset, int(bool(rec.is_baseline))),
            ).fetchall()
            for r in rows:
                row = dict(zip(r.keys(), tuple(r)))
                if not self.damage.run_is_sound(row):
                    continue
                if row["status"] == "running" and not is_alive(row["host"], row["pid"]):
                    self._flip_interrupted(cur, row["id"], row["host"], row["pid"])
                    continue
                for k in BOOL_FIELDS:
                    row[k] = bool(row[k])
                if same(row):
                    return int(row["id"]), str(row["status"])
            return self._insert_run(cur, rec), "claimed"

    def wait_for_run(self, run_id: int, timeout_s: float | None = None, poll_s: float = 1.0,
                     is_alive: IsAlive = process_alive) -> str:
        """Wait until run ``run_id`` leaves ``running``; its status then.

        If its owner dies meanwhile the run is marked ``interrupted`` (when this store may write) and
        "interrupted" is returned. After ``timeout_s`` (None: no limit) a one-line
        :class:`RunStillRunningError` is raised; the run is left as it is.
        """
        deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)
        while True:
            with self.file.reading():
                row = self._conn.execute(
                    "SELECT status, host, pid, run_dir FROM runs WHERE id = ?", (int(run_id),)
                ).fetchone()
            if row is None:
                raise KeyError(f"no run with id {run_id} in {self.path}")
            status, host, pid, run_dir = tuple(row)
            if status != "running":
                return str(status)
            if not is_alive(host, pid):
                if not self.readonly:
                    with self._transaction() as cur:
                        self._flip_interrupted(cur, int(run_id), host, pid)
                return "interrupted"
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunStillRunningError(
                    f"run {run_id} ({run_dir or 'no run dir'}) in {self.path} is still running after "
                    f"{float(timeout_s):g} s (process {pid} on {host}). Fix: wait for that process to "
                    f"finish and try again, or stop it (the run is then marked interrupted)"
                )
            time.sleep(max(0.0, poll_s if left is None else min(poll_s, left)))

    @staticmethod
    def _flip_interrupted(cur: sqlite3.Cursor, run_id: int, host: Any, pid: Any) -> bool:
        """``running`` -> ``interrupted`` if the row still has this owner (inside a transaction)."""
        cur.execute(
            "UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running' AND host IS ? AND pid IS ?",
            (int(run_id), host, pid),
        )
        return bool(cur.rowcount)

    def _check_fields(self, fields_: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields_) - set(RUN_FIELDS))
        if unknown:
            raise ValueError(f"unknown run field(s) {unknown}; valid fields: {', '.join(RUN_FIELDS)}")

    def _status_for_write(self, cur: sqlite3.Cursor, run_id: int, what: str) -> str:
        """Current status of ``run_id`` inside a write transaction; refuses finished runs."""
        row = cur.execute("SELECT status, run_dir FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id} in {self.path}")
        if row[0] == "finished":
            raise FinishedRunError(
                f"run {run_id} ({row[1] or 'no run dir'}) in {self.path} is finished and its result "
                f"is immutable, so {what} was refused. Fix: re-score it with `ssl-bench eval "
                f"{row[1] or 'RUN_DIR'}` (replace_metrics) or start a new run"
            )
        return str(row[0])

    def update_run(self, run_id: int, **fields_: Any) -> None:
        """Update columns of a run that is not finished, e.g. ``status='failed'``.

        Field names are validated because they are spliced into SQL and because a typo
        (``wall_time=``) would otherwise be silently dropped. A finished run is refused
        (:class:`FinishedRunError`): nothing may downgrade a recorded result. Setting
        ``status='running'`` without ``pid``/``host`` claims the run for this process (a resume).
        Prefer :meth:`finish_run` to finish a run.
        """
        self._require_writable(f"the update of run {run_id}")
        self._check_fields(fields_)
        if not fields_:
            return
        status = fields_.get("status")
        if status == "finished" and "finished_at" not in fields_:
            fields_["finished_at"] = utc_now()
        if status == "running" and "pid" not in fields_ and "host" not in fields_:
            fields_["pid"], fields_["host"] = os.getpid(), current_host()
        values = {k: normalise_run_value(k, v) for k, v in fields_.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, f"update_run({', '.join(sorted(fields_))})")
            cur.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id)))

    def finish_run(self, run_id: int, metrics_by_evaluator: Mapping[str, EvaluatorResult], **fields_: Any) -> None:
        """Write every evaluator's metrics and mark the run finished, in ONE transaction.

        ``metrics_by_evaluator`` maps evaluator name -> ``(metrics, protocol)`` or an ``EvalResult``
        (``.metrics`` / ``.protocol``). Each evaluator's earlier metrics for the run are replaced.
        ``fields_`` are further run columns (``wall_time_s``, ...); ``finished_at`` defaults to now.
        Because metrics and status commit together, a process killed in between leaves the run
        unfinished with its old metrics, never a finished run with half a metric set.
        """
        self._require_writable(f"the result of run {run_id}")
        self._check_fields(fields_)
        if fields_.get("status", "finished") != "finished":
            raise ValueError(f"finish_run sets status='finished'; got status={fields_['status']!r}")
        fields_["status"] = "finished"
        fields_.setdefault("finished_at", utc_now())
        values = {k: normalise_run_value(k, v) for k, v in fields_.items()}
        per_evaluator = self._rows_per_evaluator(run_id, metrics_by_evaluator)
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, "finish_run")
            self._write_metrics(cur, run_id, per_evaluator)
            cur.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id)))

    def mark_stale_runs(self, is_alive: IsAlive = process_alive) -> list[int]:
        """Flip ``running`` runs whose owning process is gone to ``interrupted``; their ids.

        ``is_alive(host, pid)`` decides (default :func:`process_alive`). The flip is conditional on the
        row still being ``running`` with the same owner, so a run that finished or was resumed by
        another process meanwhile is left alone. ``finished_at`` stays empty: when it died is unknown.
        """
        self._require_writable("marking stale runs")
        with self.file.reading():
            rows = self._conn.execute("SELECT id, host, pid FROM runs WHERE status = 'running' ORDER BY id").fetchall()
        dead = [(int(r[0]), r[1], r[2]) for r in rows if not is_alive(r[1], r[2])]
        if not dead:
            return []
        with self._transaction() as cur:
            return [run_id for run_id, host, pid in dead if self._flip_interrupted(cur, run_id, host, pid)]

    def get_run(self, run_id: int) -> RunRecord:
        """The stored run as a :class:`RunRecord` (JSON columns stay text); a damaged row is refused
        with one line naming it, since the caller is about to act on that very run."""
        with self.file.reading():
            row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id} in {self.path}")
        data = dict(zip(row.keys(), tuple(row)))
        problem = run_row_problem(data)
        if problem:
            raise ResultsStoreError(damaged_message(self.path, run_id, data.get("run_dir"), *problem))
        return record_from_row(data)

    def find_run(self, run_dir: str | os.PathLike[str]) -> int | None:
        """Id of the most recent run recorded for ``run_dir`` (exact string match)."""
        with self.file.reading():
            row = self._conn.execute(
                "SELECT id FROM runs WHERE run_dir = ? ORDER BY id DESC LIMIT 1", (os.fspath(run_dir),)
            ).fetchone()
        return None if row is None else int(row[0])

    # -- metrics ---------------------------------------------------------------------

    @staticmethod
    def _rows_per_evaluator(run_id: int, results: Mapping[str, EvaluatorResult]) -> list[tuple[str, list[Any]]]:
        """Every evaluator's rows, all checked before a transaction starts."""
        return [(str(name), metric_rows(run_id, str(name), *unpack_result(name, res))) for name, res in results.items()]

    def _insert_metrics(self, cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> None:
        try:
            cur.executemany(
                "INSERT INTO metrics (run_id, evaluator, name, value, protocol_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        except sqlite3.IntegrityError as exc:
            raise KeyError(f"no run with id {rows[0][0]} in {self.path}") from exc

    def _write_metrics(self, cur: sqlite3.Cursor, run_id: int, per_evaluator: list[tuple[str, list[Any]]]) -> None:
        """Each evaluator's earlier rows for the run, of the split its new rows score, replaced by its
        new ones (inside a transaction): re-scoring a run on the test split keeps its validation
        metrics (``val_*``) and the reverse. An evaluator that returned nothing counts as test."""
        for name, rows in per_evaluator:
            splits = {metric_split(row[2]) for row in rows} or {"test"}
            if len(splits) > 1:
                raise ValueError(f"evaluator {name!r} returned metrics of both the test and the validation split "
                                 f"({', '.join(sorted(row[2] for row in rows))}); score one split at a time")
            cur.execute(
                "DELETE FROM metrics WHERE run_id = ? AND evaluator = ? AND (substr(coalesce(name, ''), 1, ?) = ?) = ?",
                (int(run_id), name, len(VAL_PREFIX), VAL_PREFIX, int(splits == {"val"})),
            )
            if rows:
                self._insert_metrics(cur, rows)

    def add_metrics(self, run_id: int, evaluator: str, metrics: Mapping[str, float],
                    protocol: Mapping[str, Any] | None = None) -> None:
        """Append metric values produced by one evaluator under one protocol (one transaction).

        Refused on a finished run: its result is immutable; re-scoring goes through
        :meth:`replace_metrics`. NaN / inf values are refused (None means "not computed").
        """
        self._require_writable(f"metrics of run {run_id}")
        rows = metric_rows(run_id, evaluator, metrics, protocol)
        if not rows:
            return
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, f"add_metrics({evaluator!r})")
            self._insert_metrics(cur, rows)

    def replace_metrics(self, run_id: int, evaluator: str, metrics: Mapping[str, float],
                        protocol: Mapping[str, Any] | None = None) -> None:
        """Atomically drop this evaluator's metrics for the run and write new ones.

        Used by re-evaluation (``ssl-bench eval``) so a re-scored run does not end up with two
        competing values for the same metric. This is the one way to change a finished run's
        numbers: an explicit re-score, never a side effect.
        """
        self.replace_all_metrics(run_id, {evaluator: (metrics, protocol)})

    def replace_all_metrics(self, run_id: int, metrics_by_evaluator: Mapping[str, EvaluatorResult]) -> None:
        """:meth:`replace_metrics` for every evaluator of a re-scoring, in ONE transaction, so a
        failure part-way never leaves a finished run with some evaluators' new numbers and some old.
        ``metrics_by_evaluator`` as for :meth:`finish_run`."""
        self._require_writable(f"metrics of run {run_id}")
        per_evaluator = self._rows_per_evaluator(run_id, metrics_by_evaluator)
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE id = ?", (int(run_id),)).fetchone() is None:
                raise KeyError(f"no run with id {run_id} in {self.path}")
            self._write_metrics(cur, run_id, per_evaluator)

    # -- frames ----------------------------------------------------------------------

    def runs_frame(self) -> pd.DataFrame:
        """All runs, one row each, ordered by id (JSON columns as text, checked to parse); a damaged
        run is skipped with one warning line naming it."""
        return self._frames.runs()

    def metrics_frame(self, run_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Metric rows (of ``run_ids``, or all) joined with their run's columns.

        Metric ``id``/``created_at`` are exposed as ``metric_id``/``metric_created_at`` and the run's
        ``created_at`` as ``run_created_at`` to avoid name clashes. Every row is checked: rows of a
        damaged run, or without a readable evaluator / name, are skipped; a metric whose value (not a
        number, not finite, an accuracy outside [0, 1]) or protocol record is damaged is kept with
        ``value`` and ``protocol_json`` None and the reason in ``damaged`` (None for sound rows), so
        tables show it as damaged rather than as a number or as "not computed". Each is warned once.
        """
        return self._frames.metrics(run_ids)
