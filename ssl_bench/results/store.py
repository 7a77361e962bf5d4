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
* ``*_json`` columns hold JSON objects as text; dicts passed for them are serialised.
* a run's life: ``running`` -> ``finished`` | ``failed`` | ``interrupted``. A
  ``finished`` run is immutable (its metrics change only through
  :meth:`ResultsStore.replace_metrics`, i.e. an explicit re-score), so a later
  crash or a resumed process can never downgrade a recorded result.
* every multi-row write is one transaction: a process killed halfway leaves
  either the old state or the new one, never half a metric set.

Opening never guesses: a missing file is created (written to a temporary name and
linked into place, so no other process ever sees a half-initialised file); an
empty file, a non-SQLite file or somebody else's SQLite database is refused with
a one-line :class:`ResultsStoreError` instead of being silently turned into a
results store.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import pandas as pd

from ..errors import SSLBenchError

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0
RUN_STATUSES = ("running", "finished", "failed", "interrupted")
#: Tables every ssl-bench results file has (any schema version).
OUR_TABLES: tuple[str, ...] = ("schema_version", "runs", "metrics")
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Most run ids put into one ``IN (...)`` (SQLite caps bound parameters; older builds at 999).
_MAX_SQL_IDS = 500


def _runs_table_sql(name: str = "runs") -> str:
    """DDL of the current ``runs`` table; also used to rebuild older tables on migration."""
    statuses = ", ".join(f"'{s}'" for s in RUN_STATUSES)
    return f"""CREATE TABLE IF NOT EXISTS {name} (
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
        CHECK (status IN ({statuses})),
    uses_labels INTEGER NOT NULL DEFAULT 0,
    is_baseline INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    pid INTEGER,
    host TEXT
)"""


_RUNS_INDEXES = (
    "CREATE INDEX IF NOT EXISTS runs_run_dir ON runs(run_dir)",
    "CREATE INDEX IF NOT EXISTS runs_key ON runs(method, backbone, dataset)",
)
_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS schema_version (\n    version INTEGER NOT NULL\n)",
    _runs_table_sql(),
    *_RUNS_INDEXES,
    """CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    evaluator TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    protocol_json TEXT,
    created_at TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, evaluator)",
)


class ResultsStoreError(SSLBenchError, RuntimeError):
    """The results file cannot be used (corrupt, foreign, too new, read-only) or a
    request would break its invariants; the CLI prints it as one message because the
    fix is about the file or the call, not the code."""


class FinishedRunError(ResultsStoreError):
    """A write would change a finished run; finished results are immutable so a
    crashed or resumed process can never downgrade a recorded result."""


class ReadOnlyStoreError(ResultsStoreError):
    """A write was attempted through a store opened read-only."""


def utc_now() -> str:
    """UTC timestamp in ISO-8601; one format everywhere keeps string ordering valid."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def current_host() -> str:
    """This machine's name as recorded in ``runs.host``; pids are only comparable on one host."""
    return socket.gethostname()


def process_alive(host: str | None, pid: int | None) -> bool:
    """Whether the process that owns a ``running`` run may still be alive.

    Only a definite "gone" returns False, because flipping a live run to
    ``interrupted`` would be worse than leaving a dead one ``running``: an unknown
    pid or host (rows written before pids were recorded), another host (we cannot
    probe it) and Windows (where signal 0 is CTRL_C_EVENT, not a probe) all count as
    alive. On this host ``os.kill(pid, 0)`` decides: ProcessLookupError means gone,
    PermissionError means it exists under another user. A recycled pid reads as
    alive, which errs on the same safe side.
    """
    if pid is None or host is None or host != current_host():
        return True
    if int(pid) <= 0:  # no real process; os.kill would address a process group
        return False
    if os.name == "nt":
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


@dataclass
class RunRecord:
    """One training run; fields mirror the ``runs`` table columns (minus ``id``).

    ``config_json`` / ``versions_json`` accept either JSON text or a dict (it is
    serialised on insert), so callers can hand over the resolved config as is.
    ``pid`` / ``host`` identify the process that owns a ``running`` run, so a later
    command can tell that it died (:meth:`ResultsStore.mark_stale_runs`); they are
    filled with this process when a run is added or set ``running`` without them.
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
    pid: int | None = None
    host: str | None = None


RUN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
_JSON_FIELDS = {"config_json", "versions_json"}
_BOOL_FIELDS = {"uses_labels", "is_baseline"}
_INT_FIELDS = {"id", "seed", "epochs", "batch_size", "pid"} | _BOOL_FIELDS
_REAL_FIELDS = {"wall_time_s", "throughput_img_s", "peak_mem_mb"}

#: What one evaluator reports to :meth:`ResultsStore.finish_run`: ``(metrics, protocol)``
#: or any object with ``.metrics`` and ``.protocol`` (an ``EvalResult``).
EvaluatorResult = Any


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


def _type_problem(column: str, value: Any) -> str | None:
    """Why ``value`` cannot be a ``column`` value, or None when it is fine."""
    if value is None:
        return None
    if column in _INT_FIELDS:
        return None if isinstance(value, int) else f"expected an integer, got {value!r}"
    if column in _REAL_FIELDS or column == "value":
        return None if isinstance(value, (int, float)) else f"expected a number, got {value!r}"
    if not isinstance(value, str):
        return f"expected text, got {value!r}"
    if column == "status" and value not in RUN_STATUSES:
        return f"expected one of {', '.join(RUN_STATUSES)}, got {value!r}"
    return None


def _json_problem(text: Any) -> str | None:
    """Why ``text`` is not a JSON object (or NULL), or None when it is one."""
    if text is None:
        return None
    if not isinstance(text, str):
        return f"expected JSON text, got {text!r}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return None


def _sqlite_uri(path: Path, **params: str) -> str:
    """``file:`` URI of ``path`` with query parameters (absolute, percent-encoded)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{path.resolve().as_uri()}?{query}"


class ResultsStore:
    """Handle on one results database file; safe to open from many processes.

    Open one ``ResultsStore`` per process (do not share across ``fork``). Each
    write is its own short ``BEGIN IMMEDIATE`` transaction, which is what lets
    concurrent writers serialise through the busy timeout without losing rows.

    ``readonly=True`` (or :meth:`open_readonly`) is for commands that only read
    (the leaderboard): it never creates, initialises or migrates the file, reads
    older schema versions as they are, works on a read-only directory or medium,
    and refuses every write with :class:`ReadOnlyStoreError`.
    """

    def __init__(
        self, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        self.readonly = bool(readonly)
        self.timeout_s = float(timeout_s)
        #: "rw", "ro" (sqlite ``mode=ro``) or "immutable" (read-only medium fallback).
        self.access_mode = "rw"
        #: Schema version of the file as opened (older than SCHEMA_VERSION only when read-only).
        self.schema_version = SCHEMA_VERSION
        self._run_columns: tuple[str, ...] = ("id", *RUN_FIELDS)
        exists = self._check_path()
        if self.readonly:
            self._conn = self._open_readonly()
        else:
            if not exists:
                self._create_new()
            self._conn = self._open_for_writing()
        try:
            self._run_columns = tuple(
                r[1] for r in self._conn.execute("PRAGMA table_info(runs)").fetchall()
            )
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise self._db_error(exc) from exc

    @classmethod
    def open_readonly(
        cls, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S
    ) -> "ResultsStore":
        """Open ``path`` for reading only (see the class docstring)."""
        return cls(path, timeout_s=timeout_s, readonly=True)

    # -- opening -----------------------------------------------------------------------

    def _fix_other_file(self) -> str:
        return "Fix: delete or move that file, or pass another --results file"

    def _check_path(self) -> bool:
        """Refuse paths that are not (and cannot become) a results file; True if it exists.

        The checks run before SQLite touches the file because ``sqlite3.connect``
        happily turns an empty file, or any SQLite database, into whatever we write.
        """
        if self.path.is_dir():
            raise ResultsStoreError(
                f"results store path {self.path} is a directory; pass a file path such as "
                f"{self.path / 'results.db'}"
            )
        if not self.path.exists():
            if self.readonly:
                raise ResultsStoreError(
                    f"no results store at {self.path}; run `ssl-bench run METHOD` first, "
                    f"or pass --results FILE"
                )
            return False
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ResultsStoreError(
                f"cannot read results store {self.path} ({exc.strerror or exc}); "
                f"fix its permissions or pass another --results file"
            ) from None
        if not head:
            raise ResultsStoreError(
                f"{self.path} is empty: not an ssl-bench results database; delete it or pass "
                f"another --results file"
            )
        if head != _SQLITE_MAGIC:
            raise ResultsStoreError(
                f"{self.path} is not a usable ssl-bench results database (not an SQLite file). "
                f"{self._fix_other_file()}"
            )
        return True

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")

    def _create_new(self) -> None:
        """Create a fresh, fully initialised store at ``self.path``.

        The file is built under a temporary name next to the target and hard-linked
        into place, so another process starting at the same moment sees either no
        file or a complete one, never the zero-byte file that ``sqlite3.connect``
        leaves before the first write (which opening would rightly refuse). If the
        filesystem has no hard links we fall back to creating the file in place.
        """
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.init")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(tmp), timeout=self.timeout_s, isolation_level=None)
            try:
                with self._transaction(conn) as cur:
                    self._create_schema(cur)
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: we open theirs
            except OSError:  # no hard links here (some network/FAT filesystems)
                if not self.path.exists():
                    conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
                    try:
                        with self._transaction(conn) as cur:
                            if not self._table_names(cur):
                                self._create_schema(cur)
                    finally:
                        conn.close()
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from exc
        except PermissionError as exc:
            raise self._readonly_location_error(exc.strerror or exc) from None
        except OSError as exc:  # e.g. a parent path component is a file
            raise ResultsStoreError(
                f"cannot create results store {self.path} ({exc.strerror or exc}: "
                f"{exc.filename or self.path}); pass another --results file"
            ) from None
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(OSError):  # absent, or its folder never existed
                    os.unlink(f"{tmp}{suffix}")

    def _open_for_writing(self) -> sqlite3.Connection:
        if not os.access(self.path, os.W_OK):
            raise self._readonly_location_error("file is not writable")
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write holds
        # the lock only for the duration of one logical operation.
        conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        try:
            self._configure(conn)
            # OFF while checking / migrating: a table rebuild must not cascade-delete
            # metrics when the old runs table is dropped. PRAGMA foreign_keys is a
            # no-op inside a transaction, hence here.
            conn.execute("PRAGMA foreign_keys = OFF")
            with self._transaction(conn) as cur:
                version = self._check_ours(cur, create_if_blank=True)
                if version < SCHEMA_VERSION:
                    self._migrate(cur, version)
            # Only once we know the file is ours: WAL is a persistent file setting.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._db_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        """Connect with ``mode=ro``; on a read-only directory or medium fall back to ``immutable=1``.

        ``mode=ro`` still needs the WAL index (``-shm``) next to the file, which cannot be
        created where the directory is read-only. ``immutable=1`` tells SQLite the file
        cannot change, so it takes no locks and ignores the WAL. That is safe for a reader
        here because no writer can commit to a file in a directory it cannot create its
        journal in; the one thing it would miss is a left-over, non-empty ``-wal`` file
        (commits not yet copied into the database), so that case is refused instead.
        """
        try:
            conn = self._connect_mode_ro()
            self.access_mode = "ro"
        except sqlite3.DatabaseError as first:
            if any(w in str(first).lower() for w in ("locked", "busy")):
                raise self._db_error(first) from first  # a writer holds it: wait, never bypass
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise ResultsStoreError(
                    f"{self.path} cannot be opened read-only ({first}) and {wal.name} holds changes "
                    f"SQLite cannot read without writing next to it; copy {self.path.name} with its "
                    f"-wal file to a writable directory, or open it once for writing"
                ) from None
            try:
                conn = sqlite3.connect(_sqlite_uri(self.path, immutable="1"), uri=True,
                                       timeout=self.timeout_s, isolation_level=None)
                self._configure(conn)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from exc
            self.access_mode = "immutable"
        try:
            cur = conn.cursor()
            self.schema_version = self._check_ours(cur, create_if_blank=False)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._db_error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_mode_ro(self) -> sqlite3.Connection:
        """A ``mode=ro`` connection that has proven it can read (errors surface on first read)."""
        conn = sqlite3.connect(_sqlite_uri(self.path, mode="ro"), uri=True,
                               timeout=self.timeout_s, isolation_level=None)
        try:
            self._configure(conn)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _table_names(cur: sqlite3.Cursor) -> set[str]:
        rows = cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {r[0] for r in rows if not r[0].startswith("sqlite_")}

    def _check_ours(self, cur: sqlite3.Cursor, create_if_blank: bool) -> int:
        """Schema version of an ssl-bench file; creates the schema in a table-less SQLite
        file when writing (nothing there to lose); refuses anything else."""
        names = self._table_names(cur)
        if not names:
            if not create_if_blank:
                raise ResultsStoreError(
                    f"{self.path} is an SQLite database without ssl-bench tables (it is empty); "
                    f"record a run into it first or pass another --results file"
                )
            self._create_schema(cur)
            return SCHEMA_VERSION
        missing = [t for t in OUR_TABLES if t not in names]
        if missing:
            raise ResultsStoreError(
                f"{self.path} is an SQLite database but not an ssl-bench results store (tables "
                f"{', '.join(sorted(names)[:5])}; no {', '.join(missing)}). {self._fix_other_file()}"
            )
        version = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if not isinstance(version, int):
            raise ResultsStoreError(
                f"{self.path} has no valid schema version ({version!r}): it is damaged or not an "
                f"ssl-bench results store. {self._fix_other_file()}"
            )
        if version > SCHEMA_VERSION:
            raise ResultsStoreError(
                f"{self.path} has results schema version {version}, but this ssl-bench "
                f"only understands up to {SCHEMA_VERSION}. Fix: upgrade ssl-bench or use "
                f"a different results file."
            )
        return version

    @staticmethod
    def _create_schema(cur: sqlite3.Cursor) -> None:
        for stmt in _SCHEMA:
            cur.execute(stmt)
        cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))

    def _migrate(self, cur: sqlite3.Cursor, version: int) -> None:
        """Bring an older file to :data:`SCHEMA_VERSION` inside the caller's transaction.

        v1 -> v2 adds the ``interrupted`` status and the ``pid`` / ``host`` columns.
        SQLite cannot alter a CHECK constraint, so ``runs`` is rebuilt (SQLite's
        documented 12-step recipe): copy into a new table keeping ids, drop, rename,
        recreate the indexes, keep the AUTOINCREMENT high-water mark (ids of deleted
        runs are never reused), and verify no foreign key broke. Metrics rows are not
        touched; their ``run_id`` keeps pointing at the same ids.
        """
        if version != 1:
            raise ResultsStoreError(
                f"{self.path} has results schema version {version}, which this ssl-bench cannot "
                f"migrate. Fix: use a different results file."
            )
        fk_before = cur.execute("PRAGMA foreign_key_check").fetchall()
        seq = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs'").fetchone()
        old_cols = [r[1] for r in cur.execute("PRAGMA table_info(runs)").fetchall()]
        cur.execute("DROP TABLE IF EXISTS runs_v2_new")
        cur.execute(_runs_table_sql("runs_v2_new"))
        new_cols = {r[1] for r in cur.execute("PRAGMA table_info(runs_v2_new)").fetchall()}
        cols = ", ".join(c for c in old_cols if c in new_cols)
        cur.execute(f"INSERT INTO runs_v2_new ({cols}) SELECT {cols} FROM runs")
        cur.execute("DROP TABLE runs")
        cur.execute("ALTER TABLE runs_v2_new RENAME TO runs")
        for stmt in _RUNS_INDEXES:
            cur.execute(stmt)
        if seq is not None:
            cur.execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'runs'", (int(seq[0]),)
            )
        fk_after = cur.execute("PRAGMA foreign_key_check").fetchall()
        if len(fk_after) > len(fk_before):
            raise ResultsStoreError(
                f"migrating {self.path} to schema version {SCHEMA_VERSION} would break "
                f"{len(fk_after) - len(fk_before)} metric -> run link(s); nothing was changed. "
                f"Fix: keep using it with an older ssl-bench, or use a different results file"
            )
        cur.execute("DELETE FROM schema_version")
        cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))

    # -- errors ------------------------------------------------------------------------

    def _readonly_location_error(self, detail: object) -> ResultsStoreError:
        still = (f" (reading it, e.g. `ssl-bench leaderboard --results {self.path}`, still works)"
                 if self.path.is_file() else "")
        return ResultsStoreError(
            f"{self.path} is on a read-only file or directory ({detail}); ssl-bench cannot record "
            f"runs there. Fix: pass a writable --results file{still}"
        )

    def _db_error(self, exc: sqlite3.DatabaseError) -> ResultsStoreError:
        """One line for an SQLite failure, with the fix that matches its cause."""
        text = str(exc)
        low = text.lower()
        if "locked" in low or "busy" in low:
            return ResultsStoreError(
                f"{self.path} is locked: another process held it for over {self.timeout_s:g} s "
                f"({text}). Fix: wait for that process to finish, or pass another --results file"
            )
        if "readonly" in low or "read-only" in low or "unable to open" in low:
            return self._readonly_location_error(text)
        return ResultsStoreError(
            f"{self.path} is not a usable ssl-bench results database ({text}). Fix: restore it "
            f"from a backup, or move or delete that file (a new store is created on the next "
            f"run; `sqlite3 {self.path.name} .recover` can salvage rows), or point the results "
            f"path at a different file."
        )

    def _damaged(self, run_id: Any, run_dir: Any, column: str, why: str, where: str = "") -> ResultsStoreError:
        """A row that cannot be read as what it should be, named so the user can fix that row."""
        rd = run_dir if isinstance(run_dir, str) and run_dir else None
        if column.startswith("metrics.") and rd:
            fix = f"re-score it with `ssl-bench eval {rd}` (replaces that evaluator's metrics)"
        else:
            fix = (f"delete that run (DELETE FROM runs WHERE id = {run_id}, with any SQLite tool)"
                   + (f" and re-score it with `ssl-bench eval {rd}`" if rd else ""))
        return ResultsStoreError(
            f"{self.path}: run {run_id} ({rd or 'no run dir'}) has a damaged {column} value"
            f"{where} ({why}). Fix: {fix}"
        )

    # -- lifecycle -----------------------------------------------------------------------

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

    class _Tx:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (incl. Ctrl-C)."""

        def __init__(self, store: "ResultsStore", conn: sqlite3.Connection) -> None:
            self.store, self.conn = store, conn

        def __enter__(self) -> sqlite3.Cursor:
            # IMMEDIATE takes the write lock up front, so the busy timeout applies
            # here rather than failing on a lock upgrade halfway through.
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise self.store._db_error(exc) from exc
            return self.conn.cursor()

        def _rollback(self) -> None:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")

        def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.DatabaseError as err:
                    self._rollback()
                    raise self.store._db_error(err) from err
                return
            self._rollback()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.store._db_error(exc) from exc

    def _transaction(self, conn: sqlite3.Connection | None = None) -> "ResultsStore._Tx":
        return ResultsStore._Tx(self, conn if conn is not None else self._conn)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Map SQLite failures mid-read ("database disk image is malformed") to one line."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from exc

    def _require_writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyStoreError(
                f"{self.path} was opened read-only, so {what} was not written. Fix: open it with "
                f"ResultsStore(path) (readonly=False) in the process that records runs"
            )

    # -- runs ------------------------------------------------------------------------

    def add_run(self, rec: RunRecord) -> int:
        """Insert a run and return its id (the handle for metrics and updates).

        A ``running`` run without ``pid``/``host`` is owned by this process.
        """
        self._require_writable("the new run")
        values = {k: _normalise_run_value(k, v) for k, v in asdict(rec).items()}
        if values["status"] == "running" and values["pid"] is None and values["host"] is None:
            values["pid"], values["host"] = os.getpid(), current_host()
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._transaction() as cur:
            cur.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(values.values()))
            return int(cur.lastrowid)

    def _check_fields(self, fields_: Mapping[str, Any]) -> None:
        unknown = sorted(set(fields_) - set(RUN_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown run field(s) {unknown}; valid fields: {', '.join(RUN_FIELDS)}"
            )

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

        Field names are validated because they are spliced into SQL and because a
        typo (``wall_time=``) would otherwise be silently dropped. A finished run is
        refused (:class:`FinishedRunError`): nothing may downgrade a recorded result.
        Setting ``status='running'`` without ``pid``/``host`` claims the run for this
        process (a resume). Prefer :meth:`finish_run` to finish a run.
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
        values = {k: _normalise_run_value(k, v) for k, v in fields_.items()}
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, f"update_run({', '.join(sorted(fields_))})")
            cur.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id))
            )

    def finish_run(
        self, run_id: int, metrics_by_evaluator: Mapping[str, EvaluatorResult], **fields_: Any
    ) -> None:
        """Write every evaluator's metrics and mark the run finished, in ONE transaction.

        ``metrics_by_evaluator`` maps evaluator name -> ``(metrics, protocol)`` or an
        ``EvalResult`` (``.metrics`` / ``.protocol``). Each evaluator's earlier metrics
        for the run are replaced. ``fields_`` are further run columns (``wall_time_s``,
        ...); ``finished_at`` defaults to now. Because metrics and status commit together,
        a process killed in between leaves the run unfinished with its old metrics,
        never a finished run with half a metric set.
        """
        self._require_writable(f"the result of run {run_id}")
        self._check_fields(fields_)
        if fields_.get("status", "finished") != "finished":
            raise ValueError(f"finish_run sets status='finished'; got status={fields_['status']!r}")
        fields_["status"] = "finished"
        fields_.setdefault("finished_at", utc_now())
        values = {k: _normalise_run_value(k, v) for k, v in fields_.items()}
        per_evaluator = [
            (str(name), self._metric_rows(run_id, str(name), *self._unpack(name, res)))
            for name, res in metrics_by_evaluator.items()
        ]
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, "finish_run")
            self._write_metrics(cur, run_id, per_evaluator)
            cur.execute(
                f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), int(run_id))
            )

    @staticmethod
    def _unpack(name: str, res: EvaluatorResult) -> tuple[Mapping[str, float], Mapping[str, Any] | None]:
        if hasattr(res, "metrics") and hasattr(res, "protocol"):
            return res.metrics, res.protocol
        if isinstance(res, (tuple, list)) and len(res) == 2 and isinstance(res[0], Mapping):
            return res[0], res[1]
        raise TypeError(
            f"evaluator {name!r}: expected (metrics, protocol) or an EvalResult, got {type(res).__name__}"
        )

    def mark_stale_runs(
        self, is_alive: Callable[[str | None, int | None], bool] = process_alive
    ) -> list[int]:
        """Flip ``running`` runs whose owning process is gone to ``interrupted``; their ids.

        ``is_alive(host, pid)`` decides (default :func:`process_alive`). The flip is
        conditional on the row still being ``running`` with the same owner, so a run
        that finished or was resumed by another process meanwhile is left alone.
        ``finished_at`` stays empty: when the process died is unknown.
        """
        self._require_writable("marking stale runs")
        with self._reading():
            rows = self._conn.execute(
                "SELECT id, host, pid FROM runs WHERE status = 'running' ORDER BY id"
            ).fetchall()
        dead = [(int(r[0]), r[1], r[2]) for r in rows if not is_alive(r[1], r[2])]
        flipped: list[int] = []
        if not dead:
            return flipped
        with self._transaction() as cur:
            for run_id, host, pid in dead:
                cur.execute(
                    "UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running'"
                    " AND host IS ? AND pid IS ?",
                    (run_id, host, pid),
                )
                if cur.rowcount:
                    flipped.append(run_id)
        return flipped

    def _check_run_row(self, row: Mapping[str, Any]) -> None:
        """Raise a one-line error naming the run if a column holds a wrong-typed or bad-JSON value."""
        for col, value in row.items():
            if col in _JSON_FIELDS:
                why = _json_problem(value)
            elif col in RUN_FIELDS or col == "id":
                why = _type_problem(col, value)
            else:
                continue
            if why:
                raise self._damaged(row.get("id"), row.get("run_dir"), f"runs.{col}", why)

    def _record_from_row(self, row: Mapping[str, Any]) -> RunRecord:
        data = {k: row.get(k) for k in RUN_FIELDS}
        for k in _BOOL_FIELDS:
            data[k] = bool(data[k])
        return RunRecord(**data)

    def get_run(self, run_id: int) -> RunRecord:
        """Return the stored run as a :class:`RunRecord` (JSON columns stay text)."""
        with self._reading():
            row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id} in {self.path}")
        data = dict(zip(row.keys(), tuple(row)))
        self._check_run_row(data)
        return self._record_from_row(data)

    def find_run(self, run_dir: str | os.PathLike[str]) -> int | None:
        """Id of the most recent run recorded for ``run_dir`` (exact string match)."""
        with self._reading():
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
        """Append metric values produced by one evaluator under one protocol (one transaction).

        Refused on a finished run: its result is immutable; re-scoring goes through
        :meth:`replace_metrics`.
        """
        self._require_writable(f"metrics of run {run_id}")
        rows = self._metric_rows(run_id, evaluator, metrics, protocol)
        if not rows:
            return
        with self._transaction() as cur:
            self._status_for_write(cur, run_id, f"add_metrics({evaluator!r})")
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
        with two competing values for the same metric. This is the one way to change
        a finished run's numbers: an explicit re-score, never a side effect.
        """
        self.replace_all_metrics(run_id, {evaluator: (metrics, protocol)})

    def replace_all_metrics(self, run_id: int, metrics_by_evaluator: Mapping[str, EvaluatorResult]) -> None:
        """:meth:`replace_metrics` for every evaluator of a re-scoring, in ONE transaction, so a
        failure part-way never leaves a finished run with some evaluators' new numbers and some old.
        ``metrics_by_evaluator`` as for :meth:`finish_run`."""
        self._require_writable(f"metrics of run {run_id}")
        per_evaluator = [
            (str(name), self._metric_rows(run_id, str(name), *self._unpack(name, res)))
            for name, res in metrics_by_evaluator.items()
        ]
        with self._transaction() as cur:
            if cur.execute("SELECT 1 FROM runs WHERE id = ?", (int(run_id),)).fetchone() is None:
                raise KeyError(f"no run with id {run_id} in {self.path}")
            self._write_metrics(cur, run_id, per_evaluator)

    def _write_metrics(self, cur: Any, run_id: int, per_evaluator: list[tuple[str, list[Any]]]) -> None:
        """Each evaluator's earlier rows for the run replaced by its new ones (inside a transaction)."""
        for name, rows in per_evaluator:
            cur.execute("DELETE FROM metrics WHERE run_id = ? AND evaluator = ?", (int(run_id), name))
            if rows:
                self._insert_metrics(cur, rows)

    # -- frames ----------------------------------------------------------------------

    def _records(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._reading():
            cur = self._conn.execute(sql, tuple(params))
            cols = [d[0] for d in cur.description]
            return cols, [tuple(r) for r in cur.fetchall()]

    @staticmethod
    def _to_frame(cols: list[str], rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        df = pd.DataFrame.from_records(rows, columns=cols)
        for col in _BOOL_FIELDS:
            if col in df.columns:
                df[col] = df[col].astype(bool)
        return df

    def _select_runs(self, prefix: str = "") -> str:
        """Run columns in RUN_FIELDS order; columns an older file lacks read as NULL."""
        have = set(self._run_columns)
        return ", ".join(
            f"{prefix}{c}" if c in have else f"NULL AS {c}" for c in RUN_FIELDS if c != "created_at"
        )

    def runs_frame(self) -> pd.DataFrame:
        """All runs, one row each, ordered by id (JSON columns as text, checked to parse)."""
        select = f"SELECT id, {self._select_runs()}, created_at FROM runs ORDER BY id"
        cols, rows = self._records(select)
        for row in rows:
            self._check_run_row(dict(zip(cols, row)))
        order = ["id", *RUN_FIELDS]
        return self._to_frame(cols, rows)[order]

    def metrics_frame(self, run_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Metric rows (of ``run_ids``, or all) joined with their run's columns.

        Metric ``id``/``created_at`` are exposed as ``metric_id``/``metric_created_at``
        and the run's ``created_at`` as ``run_created_at`` to avoid name clashes. Every
        row is checked, so a damaged value surfaces as one line naming its run.
        """
        wanted: set[int] | None = None if run_ids is None else {int(i) for i in run_ids}
        where: str = ""
        params: tuple[Any, ...] = ()
        if wanted is not None and len(wanted) <= _MAX_SQL_IDS:
            where = f" WHERE m.run_id IN ({', '.join('?' for _ in wanted)})" if wanted else " WHERE 0"
            params = tuple(sorted(wanted))
        cols, rows = self._records(
            "SELECT m.id AS metric_id, m.run_id, m.evaluator, m.name, m.value,"
            " m.protocol_json, m.created_at AS metric_created_at, "
            f"{self._select_runs('r.')}, r.created_at AS run_created_at"
            f" FROM metrics m JOIN runs r ON r.id = m.run_id{where} ORDER BY m.id",
            params,
        )
        if wanted is not None and len(wanted) > _MAX_SQL_IDS:  # too many for one IN (...)
            at = cols.index("run_id")
            rows = [r for r in rows if r[at] in wanted]
        checked: set[Any] = set()
        for row in rows:
            rec = dict(zip(cols, row))
            rid = rec["run_id"]
            if rid not in checked:
                checked.add(rid)
                self._check_run_row({"id": rid, **{k: v for k, v in rec.items() if k in RUN_FIELDS}})
            where_ = f" (evaluator {rec['evaluator']!r}, metric {rec['name']!r})"
            why = _json_problem(rec["protocol_json"])
            if why:
                raise self._damaged(rid, rec["run_dir"], "metrics.protocol_json", why, where_)
            why = _type_problem("value", rec["value"])
            if why:
                raise self._damaged(rid, rec["run_dir"], "metrics.value", why, where_)
        return self._to_frame(cols, rows)
