"""The tables of a results file, the schema version, and the migration of older files.

A file is ours when it has :data:`OUR_TABLES` and a schema version this code understands; anything
else (a foreign SQLite database, a newer file) is refused untouched. An older file is migrated in
place, inside the opening transaction, when it is opened for writing; a read-only open reads it as
it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .records import RUN_STATUSES
from .store_errors import OTHER_FILE_FIX, ResultsStoreError

SCHEMA_VERSION = 3
#: Tables every ssl-bench results file has (any schema version).
OUR_TABLES: tuple[str, ...] = ("schema_version", "runs", "metrics")


def runs_table_sql(name: str = "runs") -> str:
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
    host TEXT,
    variant_json TEXT
)"""


RUNS_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS runs_run_dir ON runs(run_dir)",
    "CREATE INDEX IF NOT EXISTS runs_key ON runs(method, backbone, dataset)",
)
METRICS_TABLE_SQL = """CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    evaluator TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    protocol_json TEXT,
    created_at TEXT NOT NULL
)"""
SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS schema_version (\n    version INTEGER NOT NULL\n)",
    runs_table_sql(),
    *RUNS_INDEXES,
    METRICS_TABLE_SQL,
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics(run_id, evaluator)",
)


def table_names(cur: sqlite3.Cursor) -> set[str]:
    rows = cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}


def create_schema(cur: sqlite3.Cursor) -> None:
    for stmt in SCHEMA:
        cur.execute(stmt)
    cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))


def initialise_blank(cur: sqlite3.Cursor) -> None:
    """Create the tables in a file that has none (one another process filled is left alone)."""
    if not table_names(cur):
        create_schema(cur)


def check_ours(cur: sqlite3.Cursor, path: Path, create_if_blank: bool) -> int:
    """Schema version of an ssl-bench file; creates the schema in a table-less SQLite file when
    writing (nothing there to lose); refuses anything else with one line."""
    names = table_names(cur)
    if not names:
        if not create_if_blank:
            raise ResultsStoreError(
                f"{path} is an SQLite database without ssl-bench tables (it is empty); "
                f"record a run into it first or pass another --results file"
            )
        create_schema(cur)
        return SCHEMA_VERSION
    missing = [t for t in OUR_TABLES if t not in names]
    if missing:
        raise ResultsStoreError(
            f"{path} is an SQLite database but not an ssl-bench results store (tables "
            f"{', '.join(sorted(names)[:5])}; no {', '.join(missing)}). {OTHER_FILE_FIX}"
        )
    version = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    if not isinstance(version, int):
        raise ResultsStoreError(
            f"{path} has no valid schema version ({str(version)[:40]!r}): it is damaged or not an "
            f"ssl-bench results store. {OTHER_FILE_FIX}"
        )
    if version > SCHEMA_VERSION:
        raise ResultsStoreError(
            f"{path} has results schema version {version}, but this ssl-bench only understands up to "
            f"{SCHEMA_VERSION}. Fix: upgrade ssl-bench or use a different results file."
        )
    return version


def prepare_for_writing(cur: sqlite3.Cursor, path: Path) -> int:
    """Check the file is ours, create the tables in a blank one, migrate an older one; the version."""
    version = check_ours(cur, path, create_if_blank=True)
    if version < SCHEMA_VERSION:
        migrate(cur, path, version)
    return SCHEMA_VERSION


def migrate(cur: sqlite3.Cursor, path: Path, version: int) -> None:
    """Bring an older file to :data:`SCHEMA_VERSION` inside the caller's transaction.

    v2 -> v3 adds the ``variant_json`` column (a run's row identity: its label and the settings that
    differ from its method's defaults); older runs read it as NULL, the method's default configuration.
    v1 -> v2 adds the ``interrupted`` status and the ``pid`` / ``host`` columns. SQLite cannot alter
    a CHECK constraint, so ``runs`` is rebuilt (SQLite's documented 12-step recipe): copy into a new
    table keeping ids, drop, rename, recreate the indexes, keep the AUTOINCREMENT high-water mark
    (ids of deleted runs are never reused), and verify no foreign key broke. Metrics rows are not
    touched; their ``run_id`` keeps pointing at the same ids.
    """
    if version == 2:
        cur.execute("ALTER TABLE runs ADD COLUMN variant_json TEXT")
        cur.execute("DELETE FROM schema_version")
        cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
        return
    if version != 1:
        raise ResultsStoreError(
            f"{path} has results schema version {version}, which this ssl-bench cannot migrate. "
            f"Fix: use a different results file."
        )
    fk_before = cur.execute("PRAGMA foreign_key_check").fetchall()
    seq = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'runs'").fetchone()
    old_cols = [r[1] for r in cur.execute("PRAGMA table_info(runs)").fetchall()]
    cur.execute("DROP TABLE IF EXISTS runs_v2_new")
    cur.execute(runs_table_sql("runs_v2_new"))
    new_cols = {r[1] for r in cur.execute("PRAGMA table_info(runs_v2_new)").fetchall()}
    cols = ", ".join(c for c in old_cols if c in new_cols)
    cur.execute(f"INSERT INTO runs_v2_new ({cols}) SELECT {cols} FROM runs")
    cur.execute("DROP TABLE runs")
    cur.execute("ALTER TABLE runs_v2_new RENAME TO runs")
    for stmt in RUNS_INDEXES:
        cur.execute(stmt)
    if seq is not None:
        cur.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'runs'", (int(seq[0]),))
    fk_after = cur.execute("PRAGMA foreign_key_check").fetchall()
    if len(fk_after) > len(fk_before):
        raise ResultsStoreError(
            f"migrating {path} to schema version {SCHEMA_VERSION} would break "
            f"{len(fk_after) - len(fk_before)} metric -> run link(s); nothing was changed. "
            f"Fix: keep using it with an older ssl-bench, or use a different results file"
        )
    cur.execute("DELETE FROM schema_version")
    cur.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
