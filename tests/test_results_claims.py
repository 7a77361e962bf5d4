"""The atomic run claim: concurrent commands that need the same baseline run it once.

Issue 16 (item 6): 4 simultaneous runs with the same seed, 2 of them failed with
``random-init-s0: File exists``. ``ResultsStore.claim_run`` decides in one write transaction who runs
the work; the others reuse the finished run or wait for the running one.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssl_bench.results import ReadOnlyStoreError, ResultsStore, RunRecord, RunStillRunningError, current_host

N_RACERS = 4


def _baseline(seed: int = 0, **kw) -> RunRecord:
    return RunRecord(method="random-init", backbone="vit-nano", dataset="digits", config_json={"seed": seed},
                     is_baseline=True, **kw)


def _seed0(row: dict) -> bool:
    return json.loads(row["config_json"] or "{}").get("seed") == 0


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _racer(path: str, barrier, results) -> None:
    """One of several processes that all want the seed-0 random-init baseline at the same moment."""
    store = ResultsStore(path)
    barrier.wait()
    run_id, how = store.claim_run(_baseline(run_dir=f"runs/random-init-{os.getpid()}"), _seed0)
    if how == "claimed":
        time.sleep(0.5)  # scoring the baseline, while the others look at the store
        store.finish_run(run_id, {"linear": ({"linear_top1": 0.25}, {})})
        final = "finished"
    elif how == "running":
        final = store.wait_for_run(run_id, timeout_s=60, poll_s=0.05)
    else:
        final = how
    store.close()
    results.put((run_id, how, final))


def test_racing_processes_claim_one_baseline_once(tmp_path: Path) -> None:
    path = str(tmp_path / "results.db")
    ResultsStore(path).close()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(path, barrier, results)) for _ in range(N_RACERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * N_RACERS
    assert sorted(how for _, how, _ in got).count("claimed") == 1  # exactly one runs it
    assert {how for _, how, _ in got} <= {"claimed", "running", "finished"}
    assert len({run_id for run_id, _, _ in got}) == 1  # everyone ends with the same run
    assert {final for _, _, final in got} == {"finished"}
    with ResultsStore(path, readonly=True) as s:
        runs = s.runs_frame()
        assert runs["method"].tolist() == ["random-init"] and runs["status"].tolist() == ["finished"]
        assert s.metrics_frame()["value"].tolist() == [0.25]


def test_claim_reuses_a_finished_same_run_and_ignores_the_rest(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.db") as s:
        seed1, how = s.claim_run(_baseline(1), _seed0)
        assert how == "claimed"
        s.finish_run(seed1, {})  # finished, but not the same work (seed 1)
        failed = s.add_run(_baseline(0))
        s.update_run(failed, status="failed")  # failed / interrupted runs are never reused
        other = [s.add_run(RunRecord(method="random-init", backbone="vit-tiny", dataset="digits",
                                     config_json={"seed": 0}, is_baseline=True)),
                 s.add_run(RunRecord(method="random-init", backbone="vit-nano", dataset="cifar10",
                                     config_json={"seed": 0}, is_baseline=True)),
                 s.add_run(RunRecord(method="random-init", backbone="vit-nano", dataset="digits",
                                     config_json={"seed": 0}, is_baseline=False))]
        for rid in other:  # another backbone, dataset, or not a baseline row
            s.finish_run(rid, {})
        rid, how = s.claim_run(_baseline(0), _seed0)
        assert how == "claimed" and rid == max(other) + 1
        assert s.get_run(rid).status == "running" and s.get_run(rid).pid == os.getpid()
        assert s.claim_run(_baseline(0), _seed0) == (rid, "running")  # its owner (us) is alive
        s.finish_run(rid, {"linear": ({"linear_top1": 0.2}, {})})
        assert s.claim_run(_baseline(0), _seed0) == (rid, "finished")
        newer = s.add_run(_baseline(0))
        s.finish_run(newer, {})
        assert s.claim_run(_baseline(0), _seed0) == (newer, "finished")  # newest first
        seen: list[dict] = []
        s.claim_run(_baseline(0), lambda row: seen.append(row) or False)
        assert seen[0]["id"] == newer and seen[0]["is_baseline"] is True and isinstance(seen[0]["config_json"], str)


def test_a_claim_whose_owner_died_is_taken_over(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.db") as s:
        dead = s.add_run(_baseline(0, pid=_dead_pid(), host=current_host()))
        remote = s.add_run(_baseline(0, pid=_dead_pid(), host="another-host"))  # cannot probe: alive
        assert s.claim_run(_baseline(0), _seed0) == (remote, "running")
        s.update_run(remote, status="failed")
        rid, how = s.claim_run(_baseline(0), _seed0)
        assert how == "claimed" and rid == remote + 1
        assert s.get_run(dead).status == "interrupted"  # marked in the same transaction


def test_a_damaged_candidate_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        s.finish_run(s.add_run(_baseline(0)), {})
    with sqlite3.connect(path) as c:
        c.execute("UPDATE runs SET config_json = '{\"seed\": 0' WHERE id = 1")
    c.close()
    with ResultsStore(path) as s:
        assert s.claim_run(_baseline(0), _seed0) == (2, "claimed")


def test_claim_run_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        with pytest.raises(ValueError, match="running"):
            s.claim_run(_baseline(0, status="finished"), _seed0)
    with ResultsStore(path, readonly=True) as s:
        with pytest.raises(ReadOnlyStoreError):
            s.claim_run(_baseline(0), _seed0)


def test_wait_for_run(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "results.db") as s:
        done = s.add_run(_baseline(0))
        s.finish_run(done, {})
        assert s.wait_for_run(done, timeout_s=0) == "finished"
        gone = s.add_run(_baseline(0, pid=_dead_pid(), host=current_host()))
        assert s.wait_for_run(gone, timeout_s=5, poll_s=0.01) == "interrupted"
        assert s.get_run(gone).status == "interrupted"
        live = s.add_run(_baseline(0, run_dir="runs/random-init-s0"))
        t0 = time.monotonic()
        with pytest.raises(RunStillRunningError) as info:
            s.wait_for_run(live, timeout_s=0.2, poll_s=0.05)
        assert 0.2 <= time.monotonic() - t0 < 5
        msg = str(info.value)
        assert "\n" not in msg and f"run {live} (runs/random-init-s0)" in msg and "still running after 0.2 s" in msg
        assert f"process {os.getpid()}" in msg
        with pytest.raises(KeyError):
            s.wait_for_run(live + 100, timeout_s=0)
