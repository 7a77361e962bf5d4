"""The store's tables as pandas frames, read with every row checked.

A damaged row never fails a read: :class:`~.damage.DamageReport` decides whether it is skipped or
shown as damaged, and warns once. Columns an older (read-only) file lacks read as NULL.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Sequence

import pandas as pd

from .damage import DamageReport
from .records import BOOL_FIELDS, RUN_FIELDS
from .sqlite_file import SQLiteFile

#: Most run ids put into one ``IN (...)`` (SQLite caps bound parameters; older builds at 999).
MAX_SQL_IDS = 500


class FrameReader:
    """Reads ``runs`` and ``metrics`` of one open connection into frames (see ``ResultsStore``)."""

    def __init__(self, file: SQLiteFile, conn: sqlite3.Connection, damage: DamageReport) -> None:
        self.file, self.conn, self.damage = file, conn, damage
        with file.reading():
            self.run_columns = tuple(str(r[1]) for r in conn.execute("PRAGMA table_info(runs)").fetchall())

    def _records(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.file.reading():
            cur = self.conn.execute(sql, tuple(params))
            cols = [d[0] for d in cur.description]
            return cols, [tuple(r) for r in cur.fetchall()]

    @staticmethod
    def _to_frame(cols: list[str], rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        df = pd.DataFrame.from_records(rows, columns=cols)
        for col in BOOL_FIELDS:
            if col in df.columns:
                df[col] = df[col].astype(bool)
        return df

    def _select_runs(self, prefix: str = "") -> str:
        """Run columns in RUN_FIELDS order; columns an older file lacks read as NULL."""
        have = set(self.run_columns)
        return ", ".join(f"{prefix}{c}" if c in have else f"NULL AS {c}" for c in RUN_FIELDS if c != "created_at")

    def runs(self) -> pd.DataFrame:
        """All sound runs, one row each, ordered by id (JSON columns as text, checked to parse)."""
        cols, rows = self._records(f"SELECT id, {self._select_runs()}, created_at FROM runs ORDER BY id")
        rows = [r for r in rows if self.damage.run_is_sound(dict(zip(cols, r)))]
        return self._to_frame(cols, rows)[["id", *RUN_FIELDS]]

    def metrics(self, run_ids: Iterable[int] | None = None) -> pd.DataFrame:
        """Metric rows (of ``run_ids``, or all) joined with their run's columns, plus ``damaged``."""
        wanted: set[int] | None = None if run_ids is None else {int(i) for i in run_ids}
        where, params = "", ()
        if wanted is not None and len(wanted) <= MAX_SQL_IDS:
            where = f" WHERE m.run_id IN ({', '.join('?' for _ in wanted)})" if wanted else " WHERE 0"
            params = tuple(sorted(wanted))
        cols, rows = self._records(
            "SELECT m.id AS metric_id, m.run_id, m.evaluator, m.name, m.value, m.protocol_json,"
            f" m.created_at AS metric_created_at, {self._select_runs('r.')}, r.created_at AS run_created_at"
            f" FROM metrics m JOIN runs r ON r.id = m.run_id{where} ORDER BY m.id",
            params,
        )
        cols = [*cols, "damaged"]
        sound: dict[Any, bool] = {}
        kept = []
        for row in rows:
            rec = dict(zip(cols, (*row, None)))
            rid = rec["run_id"]
            if wanted is not None and rid not in wanted:  # too many ids for one IN (...)
                continue
            if rid not in sound:
                sound[rid] = self.damage.run_is_sound({"id": rid, **{k: v for k, v in rec.items() if k in RUN_FIELDS}})
            if sound[rid] and self.damage.metric_is_sound(rec):
                kept.append(tuple(rec[c] for c in cols))
        self.damage.flush()
        return self._to_frame(cols, kept)
