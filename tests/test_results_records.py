"""results.records (value checks, one-line messages) and results.sqlite_file (SQLite failures as one
line with the fix that matches the cause)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from ssl_bench.results import sqlite_file
from ssl_bench.results.records import (
    UndecodableText, damaged_message, decode_text, is_accuracy_metric, json_problem, metric_rows, metric_value_problem,
    run_row_problem,
)
from ssl_bench.results.sqlite_file import SQLiteFile


@pytest.mark.parametrize("name, expected", [("linear_top1", True), ("knn_top1_k20", True), ("linear_top5", True),
                                            ("pixel_acc", True), ("val_accuracy", True), ("nll_bpd", False),
                                            ("miou", False), ("loss", False)])
def test_which_metrics_are_accuracies(name: str, expected: bool) -> None:
    assert is_accuracy_metric(name) is expected


@pytest.mark.parametrize("name, value, problem", [
    ("linear_top1", 0.0, None), ("linear_top1", 1.0, None), ("linear_top1", None, None), ("nll_bpd", 170.0, None),
    ("linear_top1", 1.7, "1.7 is outside [0, 1]"), ("knn_top1", -0.01, "-0.01 is outside [0, 1]"),
    ("nll_bpd", math.inf, "inf is not a finite number"), ("miou", "high", "expected a number, got 'high'"),
])
def test_a_stored_metric_value_is_range_checked(name: str, value: object, problem: str | None) -> None:
    why = metric_value_problem(name, value)
    assert (why is None) if problem is None else (problem in why)


def test_metric_rows_refuse_nan_and_percentages_but_keep_none() -> None:
    rows = metric_rows(3, "linear", {"linear_top1": 0.5, "linear_top5": None}, {"epochs": 90})
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        (3, "linear", "linear_top1", 0.5, '{"epochs": 90}'), (3, "linear", "linear_top5", None, '{"epochs": 90}')]
    with pytest.raises(ValueError, match=r"evaluator 'segm' returned 'miou'=nan: nan is not a finite number; nothing was written"):
        metric_rows(3, "segm", {"miou": float("nan")}, None)
    with pytest.raises(ValueError, match=r"evaluator 'linear' returned 'linear_top1'=97.5: 97.5 is outside \[0, 1\]"):
        metric_rows(3, "linear", {"linear_top1": 97.5}, None)


def test_undecodable_text_is_a_value_not_a_failed_query() -> None:
    assert decode_text("naïve".encode()) == "naïve"
    bad = decode_text(b'{"a": "\xff"}')
    assert isinstance(bad, UndecodableText) and bad.why() == "not valid UTF-8 text (byte 0xff at offset 7)"
    assert json_problem(bad) == bad.why()
    assert run_row_problem({"id": 1, "method": "mae", "host": bad}) == ("runs.host", bad.why())


def test_messages_about_damaged_values_are_one_short_line() -> None:
    big = "{\n" + '  "x": 1,\n' * 5000 + "}"
    why = json_problem(big)
    assert why is not None and "\n" not in why
    row_problem = run_row_problem({"id": 4, "method": "mae", "epochs": big})
    assert row_problem is not None and "\n" not in row_problem[1] and len(row_problem[1]) < 120
    msg = damaged_message("r.db", 4, "runs/a", "metrics.value", "why", " (metric 'x')", "shown as damaged")
    assert msg == ("r.db: run 4 (runs/a) has a damaged metrics.value value (metric 'x') (why); shown as damaged. "
                   "Fix: re-score it with `ssl-bench eval runs/a` (replaces that evaluator's metrics)")


def test_sqlite_failures_map_to_their_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = SQLiteFile(tmp_path / "results.db")
    full = str(f.error(sqlite3.OperationalError("database or disk is full")))
    assert "the disk is full" in full and "free space on that disk" in full and "move or delete" not in full
    locked = str(f.error(sqlite3.OperationalError("database is locked")))
    assert "is locked" in locked and "wait for that process" in locked
    damaged = str(f.error(sqlite3.DatabaseError("database disk image is malformed")))
    assert "not a usable ssl-bench results database" in damaged and "move or delete that file" in damaged
    multi = str(f.error(sqlite3.OperationalError("Could not decode column 'x' with text '{\n" + "a\n" * 500 + "}'")))
    assert "\n" not in multi and len(multi) < 600
    # an I/O error on a disk with no room left is the full disk, not a damaged file
    assert "not a usable" in str(f.error(sqlite3.OperationalError("disk I/O error")))
    monkeypatch.setattr(sqlite_file.shutil, "disk_usage", lambda p: type("U", (), {"free": 4096})())
    assert "the disk is full" in str(f.error(sqlite3.OperationalError("disk I/O error")))

