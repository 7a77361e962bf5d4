"""The results store under a hostile user (issue 16, item 6): a damaged byte, an edited accuracy, a
NaN from a plugin evaluator, a full disk. Each costs one row or one value and one line, never the
whole file, and never shows a wrong number."""

from __future__ import annotations

import errno
import io
import json
import math
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.results import ResultsStore, ResultsStoreError, RunRecord, build_leaderboard, build_table4, render
from ssl_bench.results.columns import LINEAR_COL


def _finished(store: ResultsStore, method: str, linear: float, run_dir: str, config: str | None = None) -> int:
    rid = store.add_run(RunRecord(method=method, backbone="vit-b", dataset="digits", run_dir=run_dir, epochs=1,
                                  seed=0, config_json=config))
    store.finish_run(rid, {"linear": ({"linear_top1": linear}, {})})
    return rid


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def _cell(md: str, method: str, column: str) -> str:
    lines = md.splitlines()
    header = [c.strip() for c in lines[0].split("|")]
    row = [c.strip() for c in next(line for line in lines if f"| {method} " in line).split("|")]
    return row[header.index(column)]


def test_one_bad_byte_in_config_json_costs_that_row_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A byte flipped on disk inside one run's (multi-line) config: the old store failed every read
    with an SQLite decode error quoting the whole JSON over many lines."""
    path = tmp_path / "results.db"
    config = json.dumps({"dataset": {"name": "digits"}, "marker": "QQQQ"}, indent=1)  # multi-line, as runs store it
    with ResultsStore(path) as s:
        _finished(s, "mae", 0.5, "runs/mae-s0")
        _finished(s, "mocov3", 0.6, "runs/moco-s0")
        _finished(s, "ldae", 0.7, "runs/ldae-s0", config=config)
    data = path.read_bytes()
    at = data.index(b"QQQQ")
    path.write_bytes(data[:at] + b"\xff" + data[at + 1:])

    with ResultsStore(path, readonly=True) as s:
        assert s.runs_frame()["method"].tolist() == ["mae", "mocov3"]
        assert build_leaderboard(s)["method"].tolist() == ["mocov3", "mae"]
        (msg,) = _warnings(caplog)
        assert "\n" not in msg and f"{path}: run 3 (runs/ldae-s0)" in msg and "runs.config_json" in msg
        assert "not valid UTF-8 text (byte 0xff" in msg and "skipped" in msg
        assert "Fix: delete that run (DELETE FROM runs WHERE id = 3" in msg
        with pytest.raises(ResultsStoreError) as info:
            s.get_run(3)
        assert "\n" not in str(info.value) and "runs.config_json" in str(info.value)
    with ResultsStore(path) as s:  # writing elsewhere in the file still works
        _finished(s, "ddm", 0.4, "runs/ddm-s0")


def test_an_accuracy_edited_out_of_range_is_shown_as_damaged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """linear_top1 edited to 1.7 was shown as 170.0."""
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        _finished(s, "mae", 0.5, "runs/mae-s0")
        _finished(s, "ldae", 0.6, "runs/ldae-s0")
    with sqlite3.connect(path) as c:
        c.execute("UPDATE metrics SET value = 1.7 WHERE run_id = 2")
    c.close()
    with ResultsStore(path, readonly=True) as s:
        df = build_leaderboard(s)
        assert pd.isna(df.set_index("method").loc["ldae", LINEAR_COL])
        md, html, csv = render(df, "md"), render(df, "html"), render(df, "csv")
        assert _cell(md, "ldae", LINEAR_COL) == "damaged" and _cell(md, "mae", LINEAR_COL) == "50.0"
        assert "170" not in md and "170" not in html and "170" not in csv
        assert "<td>damaged</td>" in html
        back = pd.read_csv(io.StringIO(csv)).set_index("method")
        assert pd.isna(back.loc["ldae", LINEAR_COL]) and back.loc["mae", LINEAR_COL] == 50.0
        t4 = build_table4(s)
        assert pd.isna(t4.set_index("method").loc["ldae", "vit-b ours"])
        assert _cell(render(t4, "md"), "ldae", "vit-b ours") == "damaged"
        (msg,) = _warnings(caplog)
        assert "\n" not in msg and "run 2 (runs/ldae-s0)" in msg and "metric 'linear_top1'" in msg
        assert "1.7 is outside [0, 1]" in msg and "ssl-bench eval runs/ldae-s0" in msg


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_refused_naming_evaluator_and_metric(tmp_path: Path, bad: float) -> None:
    """A plugin evaluator's NaN was stored silently as NULL ("not computed")."""
    with ResultsStore(tmp_path / "results.db") as s:
        rid = s.add_run(RunRecord(method="mae"))
        writes = [lambda: s.add_metrics(rid, "segm", {"miou": bad}),
                  lambda: s.finish_run(rid, {"knn": ({"knn_top1": 0.5}, {}), "segm": ({"miou": bad}, {})}),
                  lambda: s.replace_all_metrics(rid, {"segm": ({"miou": bad}, {})})]
        for write in writes:
            with pytest.raises(ValueError) as info:
                write()
            msg = str(info.value)
            assert "evaluator 'segm'" in msg and "'miou'" in msg and "not a finite number" in msg and "\n" not in msg
        assert s.metrics_frame().empty and s.get_run(rid).status == "running"  # nothing written
        s.finish_run(rid, {"segm": ({"miou": None, "loss": 0.25}, {})})  # None: not computed, allowed
        m = s.metrics_frame().set_index("name")
        assert pd.isna(m.loc["miou", "value"]) and m.loc["loss", "value"] == 0.25


def test_a_full_disk_is_not_reported_as_a_damaged_file(tmp_path: Path) -> None:
    """SQLITE_FULL ("database or disk is full") said "not a usable database ... move or delete that file"."""
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        s.add_run(RunRecord(method="mae"))
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count = {pages}")  # the file cannot grow: what a full disk does
        with pytest.raises(ResultsStoreError) as info:
            s.add_run(RunRecord(method="big", config_json={"pad": "x" * 200_000}))
        msg = str(info.value)
        assert msg.startswith(f"cannot write results store {path}: the disk is full (database or disk is full)")
        assert "free space" in msg and "--results" in msg and "\n" not in msg
        assert "move or delete" not in msg and "not a usable" not in msg
        assert s.runs_frame()["method"].tolist() == ["mae"]  # rolled back, the store still usable


def test_a_full_disk_when_creating_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "mkdir", no_space)
    with pytest.raises(ResultsStoreError) as info:
        ResultsStore(tmp_path / "out" / "results.db")
    msg = str(info.value)
    assert "the disk is full" in msg and "free space on that disk" in msg and "\n" not in msg


def test_one_run_with_many_damaged_metrics_is_one_warning_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        rid = s.add_run(RunRecord(method="mae", run_dir="runs/mae-s0", dataset="digits"))
        s.finish_run(rid, {"knn": ({"knn_top1": 0.4, "knn_top1_k10": 0.41}, {"headline_k": 20}),
                           "linear": ({"linear_top1": 0.5, "linear_top5": 0.9}, {})})
    with sqlite3.connect(path) as c:
        c.execute("UPDATE metrics SET protocol_json = '{not json'")
    c.close()
    with ResultsStore(path, readonly=True) as s:
        md = render(build_leaderboard(s), "md")
        build_leaderboard(s)  # read again: nothing new to say
    (msg,) = _warnings(caplog)
    assert msg.startswith(f"{path}: run 1 (runs/mae-s0) has a damaged metrics.protocol_json value (4 metrics: "
                          "evaluator 'knn', metric 'knn_top1'; ")
    assert "\n" not in msg and "shown as damaged" in msg
    assert _cell(md, "mae", LINEAR_COL) == "damaged"
