"""Tests for the SQLite results store and the leaderboard / Table-4 views."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from ssl_bench.results import (
    ResultsStore,
    SCHEMA_VERSION,
    ResultsStoreError,
    RunRecord,
    build_leaderboard,
    build_table4,
    render,
)
from ssl_bench.results import liveness, schema
from ssl_bench.results.columns import KNN_COL, LINEAR_COL
from ssl_bench.results.liveness import current_host, process_alive
from ssl_bench.results.sqlite_file import SQLiteFile
from ssl_bench.results.store_errors import FinishedRunError, ReadOnlyStoreError


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results.db")
    yield s
    s.close()


#: The paper's (MAE) linear-probe protocol, so Table-4 notes below are only about data/epochs.
PAPER_PROBE_RECORD = {"protocol": "augmented", "optimizer": "lars", "batch_size": 16384, "epochs": 90}


def _finished(store: ResultsStore, method: str, backbone: str = "vit-b", dataset: str = "cifar10",
              linear: float | None = None, knn: float | None = None,
              extra: dict[str, tuple[dict, dict]] | None = None, probe: dict | None = None, **kw) -> int:
    """A finished run: metrics and status written together, as the runner does."""
    rec = RunRecord(method=method, backbone=backbone, dataset=dataset,
                    run_dir=kw.pop("run_dir", f"runs/{method}-{backbone}-{dataset}"),
                    epochs=kw.pop("epochs", 1), seed=kw.pop("seed", 0), **kw)
    rid = store.add_run(rec)
    results: dict[str, tuple[dict, dict]] = {}
    if knn is not None:
        results["knn"] = ({"knn_top1": knn, "knn_top1_k10": knn - 0.01}, {"k": 20})
    if linear is not None:
        results["linear"] = ({"linear_top1": linear}, PAPER_PROBE_RECORD if probe is None else probe)
    results.update(extra or {})
    store.finish_run(rid, results, wall_time_s=12.34, throughput_img_s=1000.0)
    return rid


# -- store ---------------------------------------------------------------------------


def test_round_trip_runs_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.db"
    with ResultsStore(path) as s:
        cfg = {"method": "mae", "optim": {"lr": 1.5e-4}}
        rid = s.add_run(RunRecord(method="mae", backbone="vit-b", dataset="fashion-mnist",
                                  run_dir="runs/mae-1", config_json=cfg, seed=3,
                                  git_commit="abc123", versions_json={"torch": "2.3"},
                                  epochs=1, batch_size=64, device="cpu", uses_labels=False))
        s.add_metrics(rid, "knn", {"knn_top1": 0.5, "knn_top1_k10": 0.48}, {"k": 20, "t": 0.07})
        s.update_run(rid, status="finished", wall_time_s=5.5, throughput_img_s=321.0,
                     peak_mem_mb=1024.0)

    with ResultsStore(path) as s:  # reopen: persisted, schema re-open is idempotent
        assert s.find_run("runs/mae-1") == rid
        assert s.find_run("runs/nope") is None
        runs = s.runs_frame()
        assert len(runs) == 1
        r = runs.iloc[0]
        assert (r["method"], r["backbone"], r["dataset"], r["seed"]) == ("mae", "vit-b", "fashion-mnist", 3)
        assert json.loads(r["config_json"]) == cfg
        assert json.loads(r["versions_json"]) == {"torch": "2.3"}
        assert r["status"] == "finished" and r["finished_at"]  # set automatically
        assert r["wall_time_s"] == 5.5 and r["peak_mem_mb"] == 1024.0
        assert not r["uses_labels"]
        assert s.get_run(rid).git_commit == "abc123"

        m = s.metrics_frame()
        assert sorted(m["name"]) == ["knn_top1", "knn_top1_k10"]
        assert set(m["method"]) == {"mae"} and set(m["run_id"]) == {rid}
        assert json.loads(m["protocol_json"].iloc[0]) == {"k": 20, "t": 0.07}
        assert dict(zip(m["name"], m["value"])) == {"knn_top1": 0.5, "knn_top1_k10": 0.48}

        # re-evaluation replaces only that evaluator's metrics
        s.replace_metrics(rid, "linear", {"linear_top1": 0.6}, {"epochs": 1})
        s.replace_metrics(rid, "knn", {"knn_top1": 0.55}, {"k": 20})
        m = s.metrics_frame()
        assert dict(zip(m["name"], m["value"])) == {"linear_top1": 0.6, "knn_top1": 0.55}

        version = s._conn.execute("SELECT version FROM schema_version").fetchall()
        assert [tuple(v) for v in version] == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 3
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_update_run_rejects_unknown_fields(store: ResultsStore) -> None:
    rid = store.add_run(RunRecord(method="mae"))
    with pytest.raises(ValueError, match="wall_time.*valid fields"):
        store.update_run(rid, wall_time=3.0)
    with pytest.raises(ValueError, match="status"):
        store.update_run(rid, status="done")
    with pytest.raises(KeyError):
        store.update_run(rid + 100, status="failed")
    store.update_run(rid, status="failed")
    assert store.runs_frame()["status"].tolist() == ["failed"]


def test_metrics_validation(store: ResultsStore) -> None:
    rid = store.add_run(RunRecord(method="mae"))
    with pytest.raises(ValueError, match="fractions"):
        store.add_metrics(rid, "linear", {"linear_top1": 76.7}, {})
    with pytest.raises(KeyError):
        store.add_metrics(rid + 1, "linear", {"linear_top1": 0.7}, {})
    store.add_metrics(rid, "nll", {"nll_bpd": 3.21}, {})  # not an accuracy: any value
    assert store.metrics_frame()["value"].tolist() == [3.21]


def test_corrupt_file_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "results.db"
    bad.write_bytes(b"this is definitely not sqlite" * 200)
    with pytest.raises(ResultsStoreError) as info:
        ResultsStore(bad)
    msg = str(info.value)
    assert str(bad) in msg and "not a usable" in msg and "Fix:" in msg


def test_directory_path_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsStoreError, match="directory"):
        ResultsStore(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    ResultsStore(path).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ResultsStoreError, match="schema version 99"):
        ResultsStore(path)


N_PER_WRITER = 40


def _writer(path: str, tag: str) -> None:
    """Child process: its own store handle, many small write transactions."""
    s = ResultsStore(path)
    for i in range(N_PER_WRITER):
        rid = s.add_run(RunRecord(method=f"m-{tag}", backbone="vit-b", dataset="d",
                                  run_dir=f"runs/{tag}/{i}", seed=i))
        s.add_metrics(rid, "knn", {"knn_top1": 0.5, "knn_top1_k10": 0.4}, {"k": 20})
        s.update_run(rid, status="finished")
        s.replace_metrics(rid, "linear", {"linear_top1": i / 100}, {})
    s.close()


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "results.db")
    ResultsStore(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    with ResultsStore(path) as s:
        runs = s.runs_frame()
        assert len(runs) == 2 * N_PER_WRITER
        assert runs["run_dir"].nunique() == 2 * N_PER_WRITER
        assert set(runs["status"]) == {"finished"}
        m = s.metrics_frame()
        assert len(m) == 3 * 2 * N_PER_WRITER
        assert m.groupby("run_id").size().eq(3).all()


# -- leaderboard ---------------------------------------------------------------------


def test_leaderboard_latest_finished_and_baselines_first(store: ResultsStore) -> None:
    _finished(store, "mae", linear=0.40, knn=0.30, seed=7)  # superseded below: a rerun of its seed
    _finished(store, "mae", linear=0.555, knn=0.444, seed=7)  # latest finished of seed 7 -> shown
    running = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="cifar10"))
    store.add_metrics(running, "linear", {"linear_top1": 0.99}, {})  # running: ignored
    failed = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="cifar10"))
    store.update_run(failed, status="failed")
    interrupted = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="cifar10"))
    store.add_metrics(interrupted, "linear", {"linear_top1": 0.98}, {})
    store.update_run(interrupted, status="interrupted")  # interrupted: ignored
    _finished(store, "mocov3", linear=0.70, knn=0.65)
    _finished(store, "ldae", linear=0.60)
    _finished(store, "random-init", linear=0.20, knn=0.10, is_baseline=True)
    _finished(store, "pixels", linear=0.30, knn=0.25, is_baseline=True)
    _finished(store, "dit", linear=0.50, uses_labels=True,
              extra={"nll": ({"nll_bpd": 3.4567, "nll_bpd_stderr": 0.01}, {"space": "pixel"})})

    df = build_leaderboard(store)
    assert df["method"].tolist() == ["pixels", "random-init", "mocov3", "ldae", "mae", "dit"]
    mae = df[df["method"] == "mae"].iloc[0]
    assert mae[LINEAR_COL] == 55.5 and mae[KNN_COL] == 44.4 and mae["seeds"] == "7" and mae["n"] == 1
    assert "NLL (bits/dim)" in df.columns
    nll_at = list(df.columns).index("NLL (bits/dim)")
    assert df.columns[nll_at + 1] == "NLL space"  # latent and pixel bits/dim are different scales
    space = df.set_index("method")["NLL space"]
    assert space["dit"] == "pixel" and space.drop("dit").isna().all()
    labels = df.set_index("method")["labels"]
    assert labels["dit"] and not labels["mae"]
    assert list(df.columns[:7]) == ["row", "method", "backbone", "dataset", "epochs", "n", KNN_COL]

    md = render(df, "md")
    assert "55.5" in md and "44.4" in md and "70.0" in md and "3.457" in md
    assert not {99.0, 98.0, 40.0} & set(df[LINEAR_COL])  # running, interrupted, superseded: none shown
    assert "nll_bpd_stderr" not in df.columns  # a built-in evaluator's non-headline metric
    assert md.index("pixels") < md.index("random-init") < md.index("mocov3") < md.index("| mae")
    csv = render(df, "csv")
    back = pd.read_csv(io.StringIO(csv))
    assert back["method"].tolist() == df["method"].tolist()
    assert back.loc[back["method"] == "mae", LINEAR_COL].iloc[0] == 55.5
    html = render(df, "html")
    assert html.lstrip().startswith("<table") and "55.5" in html and "mocov3" in html
    with pytest.raises(ValueError, match="md, csv, html"):
        render(df, "latex")


def test_leaderboard_filters_and_knn_k(store: ResultsStore) -> None:
    _finished(store, "mae", dataset="cifar10", linear=0.5)
    _finished(store, "mae", dataset="stl10", linear=0.6)
    _finished(store, "mae", backbone="vit-s", dataset="cifar10", linear=0.4)
    _finished(store, "simclr", dataset="cifar10",  # k=10: not the k=20 column
              extra={"knn": ({"knn_top1": 0.9}, {"k": 10})})
    assert len(build_leaderboard(store)) == 4
    df = build_leaderboard(store, dataset="cifar10", backbone="vit-b")
    assert df["method"].tolist() == ["mae", "simclr"]
    assert pd.isna(df.set_index("method").loc["simclr", KNN_COL])
    assert "NLL (bits/dim)" not in df.columns
    assert build_leaderboard(ResultsStore(store.path), dataset="nope").empty


#: The leaderboard's columns when no run has more than the core metrics (README "Leaderboard").
EMPTY_LEADERBOARD_COLUMNS = ["row", "backbone", "dataset", "epochs", "n", "k-NN top-1 (k=20)", "k-NN top-1 (k=20) 95% CI",
                             "k-NN top-1 (k=20) gain", "linear top-1", "linear top-1 95% CI", "linear top-1 gain",
                             "wall time (s)", "throughput (img/s)", "labels"]


def test_empty_leaderboard_renders_its_header(store: ResultsStore) -> None:
    df = build_leaderboard(store)
    assert df.empty and df.attrs["metric_columns"] == ["k-NN top-1 (k=20)", "linear top-1"]
    md = render(df, "md").splitlines()
    assert len(md) == 2 and [c.strip() for c in md[0].strip("|").split("|")] == EMPTY_LEADERBOARD_COLUMNS
    assert set(md[1]) <= {"|", "-", ":"}  # the separator, and no data row
    assert render(df, "csv") == ",".join(df.columns) + "\n"  # csv: the numeric frame (sd, lo, hi, best, run ids)
    assert {"linear top-1 sd", "linear top-1 lo", "linear top-1 hi", "linear top-1 best", "seeds", "run_ids", "settings"} <= set(df.columns)
    html = render(df, "html")
    html_columns = ["row", "method"] + EMPTY_LEADERBOARD_COLUMNS[1:] + ["baseline", "seeds", "run_ids", "settings"]  # html keeps what md leaves out
    assert re.findall(r"<th>(.*?)</th>", html) == html_columns and "<td>" not in html


# -- Table 4 -------------------------------------------------------------------------

#: l-DAE paper: Chen, Liu, Xie, He, "Deconstructing Denoising Diffusion Models for Self-Supervised
#: Learning" (2024, arXiv 2401.14404), Table 4: ImageNet-1k linear-probe top-1 (%), (ViT-B, ViT-L).
PAPER_TABLE4_TOP1 = {"mocov3": (76.7, 77.6), "mae": (68.0, 75.8), "ldae": (66.6, 75.0)}
#: The same table's pre-training epochs (MoCo v3 300; MAE and l-DAE 1600).
PAPER_TABLE4_EPOCHS = {"mocov3": 300, "mae": 1600, "ldae": 1600}


def test_table4_notes_state_the_papers_epochs(store: ResultsStore) -> None:
    for method in PAPER_TABLE4_EPOCHS:
        _finished(store, method, dataset="imagenet-1k", epochs=7, linear=0.5, probe=PAPER_PROBE_RECORD)
    notes = build_table4(store).set_index("method")["notes"]
    for method, epochs in PAPER_TABLE4_EPOCHS.items():
        assert notes[method] == f"ours: imagenet-1k, 7 ep; paper: ImageNet-1k, {epochs} ep"
    store.finish_run(store.add_run(RunRecord(method="mocov3", backbone="vit-b", dataset="imagenet-1k", epochs=300)),
                     {"linear": ({"linear_top1": 0.7}, PAPER_PROBE_RECORD)})
    assert build_table4(store).set_index("method").loc["mocov3", "notes"] == ""  # the paper's setting


def test_table4_layout_paper_numbers_and_notes(store: ResultsStore) -> None:
    _finished(store, "mae", dataset="fashion-mnist", epochs=1, linear=0.812)
    _finished(store, "moco-v3", backbone="vit_b", dataset="imagenet-1k", epochs=300, linear=0.765)
    _finished(store, "ldae", backbone="resnet-18", dataset="cifar10", epochs=5, linear=0.3)
    _finished(store, "pixels", backbone="vit-b", dataset="fashion-mnist", linear=0.2, is_baseline=True)

    df = build_table4(store)
    assert df["method"].tolist() == ["mocov3", "mae", "ldae", "pixels"]
    assert list(df.columns) == ["method"] + [f"{bb} {w}" for bb in ("vit-b", "vit-l", "resnet-18")
                                             for w in ("ours", "ours sd", "n", "paper")] + ["notes"]
    t = df.set_index("method")
    for method, (vit_b, vit_l) in PAPER_TABLE4_TOP1.items():
        assert (t.loc[method, "vit-b paper"], t.loc[method, "vit-l paper"]) == (vit_b, vit_l)
    assert pd.isna(t.loc["pixels", "vit-b paper"]) and pd.isna(t.loc["pixels", "vit-l paper"])
    assert t.loc["mae", "vit-b ours"] == 81.2
    assert pd.isna(t.loc["mae", "vit-l ours"])
    assert t.loc["mae", "notes"] == "ours: fashion-mnist, 1 ep; paper: ImageNet-1k, 1600 ep"
    assert t.loc["mocov3", "vit-b ours"] == 76.5
    assert t.loc["mocov3", "notes"] == ""  # same settings as the paper
    assert t.loc["ldae", "resnet-18 ours"] == 30.0
    assert "resnet-18" in t.loc["ldae", "notes"] and "ViT-B/ViT-L" in t.loc["ldae", "notes"]
    assert t.loc["pixels", "notes"] == "not in paper Table 4"

    md = render(df, "md")
    assert "81.2" in md and "68.0" in md and "76.7" in md and "75.0" in md
    assert "paper: ImageNet-1k, 1600 ep" in md


def test_table4_shows_mean_and_sd_of_the_seeds(store: ResultsStore) -> None:
    for seed, top1 in enumerate((0.60, 0.64, 0.65)):
        _finished(store, "mae", dataset="imagenet-1k", epochs=1600, linear=top1, seed=seed)
    t = build_table4(store).set_index("method")
    assert (t.loc["mae", "vit-b ours"], t.loc["mae", "vit-b ours sd"], t.loc["mae", "vit-b n"]) == (63.0, 2.6, 3)  # sd 0.02646
    md = render(build_table4(store), "md")
    assert "63.0 ± 2.6" in md and "ours sd" not in md


def test_table4_per_backbone_notes(store: ResultsStore) -> None:
    _finished(store, "mae", backbone="vit-b", dataset="imagenet", epochs=1600, linear=0.67)
    _finished(store, "mae", backbone="vit-l", dataset="imagenet", epochs=800, linear=0.74)
    note = build_table4(store).set_index("method").loc["mae", "notes"]
    assert note == "vit-l: ours: imagenet, 800 ep; paper: ImageNet-1k, 1600 ep"


# -- statuses, ownership, immutability -----------------------------------------------


def test_interrupted_status_and_owner_recorded(store: ResultsStore) -> None:
    rid = store.add_run(RunRecord(method="mae"))
    rec = store.get_run(rid)
    assert (rec.status, rec.pid, rec.host) == ("running", os.getpid(), current_host())
    store.update_run(rid, status="interrupted")
    assert store.get_run(rid).status == "interrupted"
    store.update_run(rid, status="running", pid=123, host="elsewhere")  # a resume elsewhere
    assert (store.get_run(rid).pid, store.get_run(rid).host) == (123, "elsewhere")
    store.update_run(rid, status="running")  # resumed here: this process owns it again
    assert store.get_run(rid).pid == os.getpid()
    done = store.add_run(RunRecord(method="mae", status="finished"))  # e.g. `ssl-bench eval`
    assert store.get_run(done).pid is None


def test_finished_run_is_immutable(store: ResultsStore) -> None:
    rid = store.add_run(RunRecord(method="mae", run_dir="runs/mae-s0"))
    store.finish_run(rid, {"linear": ({"linear_top1": 0.5}, {"epochs": 1})}, wall_time_s=3.0)
    for status in ("failed", "running", "interrupted", "finished"):
        with pytest.raises(FinishedRunError) as info:
            store.update_run(rid, status=status)
        msg = str(info.value)
        assert "\n" not in msg and f"run {rid} (runs/mae-s0)" in msg and "immutable" in msg
        assert "ssl-bench eval runs/mae-s0" in msg
    with pytest.raises(FinishedRunError):
        store.update_run(rid, wall_time_s=1.0)
    with pytest.raises(FinishedRunError):
        store.add_metrics(rid, "linear", {"linear_top1": 0.9}, {})
    with pytest.raises(FinishedRunError):
        store.finish_run(rid, {"linear": ({"linear_top1": 0.9}, {})})
    rec = store.get_run(rid)
    assert rec.status == "finished" and rec.wall_time_s == 3.0
    assert store.metrics_frame()["value"].tolist() == [0.5]
    store.replace_metrics(rid, "linear", {"linear_top1": 0.6}, {"epochs": 2})  # explicit re-score
    assert store.metrics_frame()["value"].tolist() == [0.6]
    with pytest.raises(KeyError):
        store.replace_metrics(rid + 1, "linear", {"linear_top1": 0.6}, {})


def test_finish_run_writes_metrics_and_status_together(store: ResultsStore) -> None:
    rid = store.add_run(RunRecord(method="mae"))
    store.add_metrics(rid, "knn", {"knn_top1": 0.1}, {"k": 20})  # stale partial result: replaced
    eval_result = SimpleNamespace(metrics={"linear_top1": 0.7, "linear_final_loss": 0.3},
                                  protocol={"optimizer": "lars"})
    store.finish_run(rid, {"knn": ({"knn_top1": 0.4, "knn_top1_k10": 0.35}, {"k": 20}),
                           "linear": eval_result}, wall_time_s=9.0, peak_mem_mb=12.0)
    rec = store.get_run(rid)
    assert rec.status == "finished" and rec.finished_at and rec.wall_time_s == 9.0
    m = store.metrics_frame()
    assert dict(zip(m["name"], m["value"])) == {
        "knn_top1": 0.4, "knn_top1_k10": 0.35, "linear_top1": 0.7, "linear_final_loss": 0.3}
    assert json.loads(m.set_index("name").loc["linear_top1", "protocol_json"]) == {"optimizer": "lars"}
    with pytest.raises(ValueError, match="status='finished'"):
        store.finish_run(store.add_run(RunRecord(method="x")), {}, status="failed")
    with pytest.raises(TypeError, match="expected \\(metrics, protocol\\)"):
        store.finish_run(store.add_run(RunRecord(method="x")), {"knn": 0.5})
    with pytest.raises(KeyError):
        store.finish_run(rid + 100, {})


def test_finish_run_is_all_or_nothing(store: ResultsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rid = store.add_run(RunRecord(method="mae"))
    store.add_metrics(rid, "knn", {"knn_top1": 0.1}, {})
    # a percentage in the second evaluator: refused before anything is written
    with pytest.raises(ValueError, match="fractions"):
        store.finish_run(rid, {"knn": ({"knn_top1": 0.4}, {}), "linear": ({"linear_top1": 70.0}, {})})
    # killed (Ctrl-C) after the first evaluator's rows went in: the transaction rolls back
    real, calls = ResultsStore._insert_metrics, {"n": 0}

    def dying_insert(self, cur, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, cur, rows)

    monkeypatch.setattr(ResultsStore, "_insert_metrics", dying_insert)
    with pytest.raises(KeyboardInterrupt):
        store.finish_run(rid, {"knn": ({"knn_top1": 0.4}, {}), "linear": ({"linear_top1": 0.7}, {})})
    monkeypatch.undo()
    assert calls["n"] == 2
    assert store.get_run(rid).status == "running"
    m = store.metrics_frame()
    assert dict(zip(m["name"], m["value"])) == {"knn_top1": 0.1}  # the old state, whole
    store.update_run(rid, status="interrupted")  # the store is still usable afterwards


def test_rescoring_a_finished_run_replaces_all_evaluators_or_none(store: ResultsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-score killed after its first evaluator's rows went in leaves the finished run's old
    numbers whole, not new k-NN beside old linear."""
    rid = store.add_run(RunRecord(method="mae"))
    store.finish_run(rid, {"knn": ({"knn_top1": 0.1}, {}), "linear": ({"linear_top1": 0.2}, {})})
    real, calls = ResultsStore._insert_metrics, {"n": 0}

    def dying_insert(self, cur, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self, cur, rows)

    monkeypatch.setattr(ResultsStore, "_insert_metrics", dying_insert)
    with pytest.raises(KeyboardInterrupt):
        store.replace_all_metrics(rid, {"knn": ({"knn_top1": 0.4}, {}), "linear": ({"linear_top1": 0.7}, {})})
    monkeypatch.undo()
    m = store.metrics_frame()
    assert dict(zip(m["name"], m["value"])) == {"knn_top1": 0.1, "linear_top1": 0.2}
    store.replace_all_metrics(rid, {"knn": ({"knn_top1": 0.4}, {}), "linear": ({"linear_top1": 0.7}, {})})
    m = store.metrics_frame()
    assert dict(zip(m["name"], m["value"])) == {"knn_top1": 0.4, "linear_top1": 0.7}
    assert store.get_run(rid).status == "finished"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_alive() -> None:
    here = current_host()
    assert process_alive(here, os.getpid())
    assert not process_alive(here, _dead_pid())
    assert process_alive("some-other-host", _dead_pid())  # cannot probe another machine
    assert process_alive(None, _dead_pid()) and process_alive(here, None)  # unknown: alive
    assert not process_alive(here, 0)


def test_process_alive_permission_error_means_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(liveness.os, "kill", kill)
    assert process_alive(current_host(), 12345)


def test_mark_stale_runs(store: ResultsStore) -> None:
    here, dead = current_host(), _dead_pid()
    mine = store.add_run(RunRecord(method="a"))
    gone = store.add_run(RunRecord(method="b", pid=dead, host=here))
    remote = store.add_run(RunRecord(method="c", pid=dead, host="other-host"))
    legacy = store.add_run(RunRecord(method="d"))
    store.update_run(legacy, pid=None, host=None)  # a row from before pids were recorded
    finished = store.add_run(RunRecord(method="e", pid=dead, host=here))
    store.finish_run(finished, {})
    failed = store.add_run(RunRecord(method="f", pid=dead, host=here))
    store.update_run(failed, status="failed")

    assert store.mark_stale_runs() == [gone]
    status = store.runs_frame().set_index("id")["status"]
    assert status.to_dict() == {mine: "running", gone: "interrupted", remote: "running",
                                legacy: "running", finished: "finished", failed: "failed"}
    assert store.get_run(gone).finished_at is None  # when it died is unknown
    assert store.mark_stale_runs() == []
    seen: list[tuple] = []
    flipped = store.mark_stale_runs(lambda host, pid: seen.append((host, pid)) or host != "other-host")
    assert flipped == [remote] and sorted(seen, key=str) == sorted(
        [(here, os.getpid()), ("other-host", dead), (None, None)], key=str)


# -- opening: refuse what is not ours, create what is new -----------------------------


def test_new_path_is_created_whole(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.db"
    with ResultsStore(path) as s:
        assert s.runs_frame().empty
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.db"]  # no temp files left
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"


def test_zero_byte_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.touch()
    for readonly in (False, True):
        with pytest.raises(ResultsStoreError) as info:
            ResultsStore(path, readonly=readonly)
        assert str(info.value) == (f"{path} is empty: not an ssl-bench results database; delete it "
                                   f"or pass another --results file")
    assert path.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        c.execute("INSERT INTO users (name) VALUES ('ada')")
    c.close()
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(ResultsStoreError) as info:
            ResultsStore(path, readonly=readonly)
        msg = str(info.value)
        assert str(path) in msg and "not an ssl-bench results store" in msg and "users" in msg
        assert "--results" in msg and "\n" not in msg
    assert path.read_bytes() == before  # not initialised, not even switched to WAL
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c.close()


def test_non_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_text("method,linear\nmae,0.5\n")
    for readonly in (False, True):
        with pytest.raises(ResultsStoreError, match="not an SQLite file"):
            ResultsStore(path, readonly=readonly)
    assert path.read_text() == "method,linear\nmae,0.5\n"


def test_tableless_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    sqlite3.connect(path).execute("VACUUM").connection.close()  # a valid, empty SQLite file
    assert path.stat().st_size > 0
    with pytest.raises(ResultsStoreError, match="without ssl-bench tables"):
        ResultsStore(path, readonly=True)
    with ResultsStore(path) as s:  # nothing to lose: writing initialises it
        assert s.add_run(RunRecord(method="mae")) == 1


# -- schema migration v1 -> v2 -------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_dir TEXT, method TEXT NOT NULL, backbone TEXT,
    dataset TEXT, config_json TEXT, seed INTEGER, git_commit TEXT, versions_json TEXT,
    epochs INTEGER, batch_size INTEGER, wall_time_s REAL, throughput_img_s REAL, peak_mem_mb REAL,
    device TEXT,
    status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished', 'failed')),
    uses_labels INTEGER NOT NULL DEFAULT 0, is_baseline INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, finished_at TEXT
);
CREATE INDEX runs_run_dir ON runs(run_dir);
CREATE INDEX runs_key ON runs(method, backbone, dataset);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    evaluator TEXT NOT NULL, name TEXT NOT NULL, value REAL, protocol_json TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX metrics_run ON metrics(run_id, evaluator);
INSERT INTO schema_version VALUES (1);
"""


def _v1_file(path: Path) -> Path:
    """A results file as ssl-bench schema v1 wrote it: 3 runs (a 4th deleted), 4 metrics."""
    c = sqlite3.connect(path)
    c.executescript(V1_SCHEMA)
    c.execute("PRAGMA journal_mode = WAL")
    t = "2024-01-01T00:00:00+00:00"
    rows = [(1, "runs/mae", "mae", "finished", '{"seed": 0}', t),
            (2, "runs/moco", "mocov3", "failed", None, None),
            (3, "runs/ldae", "ldae", "running", None, None),
            (4, "runs/gone", "ddm", "finished", None, t)]
    c.executemany("INSERT INTO runs (id, run_dir, method, status, config_json, backbone, dataset,"
                  " epochs, created_at, finished_at) VALUES (?, ?, ?, ?, ?, 'vit-b', 'cifar10', 3,"
                  f" '{t}', ?)", [(i, d, m, s, cfg, fin) for i, d, m, s, cfg, fin in rows])
    c.executemany("INSERT INTO metrics (run_id, evaluator, name, value, protocol_json, created_at)"
                  " VALUES (?, ?, ?, ?, ?, ?)",
                  [(1, "linear", "linear_top1", 0.61, '{"epochs": 90}', t),
                   (1, "knn", "knn_top1", 0.52, '{"k": 20}', t),
                   (2, "knn", "knn_top1", 0.11, '{"k": 20}', t),
                   (4, "knn", "knn_top1", 0.99, '{"k": 20}', t)])
    c.execute("DELETE FROM metrics WHERE run_id = 4")
    c.execute("DELETE FROM runs WHERE id = 4")
    c.commit()
    c.close()
    return path


def test_v1_file_is_readable_read_only_without_migrating(tmp_path: Path) -> None:
    path = _v1_file(tmp_path / "results.db")
    with ResultsStore(path, readonly=True) as s:
        assert s.schema_version == 1
        runs = s.runs_frame()
        assert runs["id"].tolist() == [1, 2, 3] and runs["pid"].isna().all()
        assert s.get_run(1).pid is None and s.get_run(1).status == "finished"
        assert len(s.metrics_frame()) == 3
        assert build_leaderboard(s).set_index("method").loc["mae", LINEAR_COL] == 61.0
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        cols = [r[1] for r in c.execute("PRAGMA table_info(runs)")]
    c.close()
    assert "pid" not in cols


def test_v1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = _v1_file(tmp_path / "results.db")
    with sqlite3.connect(path) as c:
        before_runs = c.execute("SELECT * FROM runs ORDER BY id").fetchall()
        before_metrics = c.execute("SELECT * FROM metrics ORDER BY id").fetchall()
    c.close()
    with ResultsStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        c = s._conn
        assert [tuple(r) for r in c.execute("SELECT version FROM schema_version")] == [(SCHEMA_VERSION,)]
        cols = [r[1] for r in c.execute("PRAGMA table_info(runs)")]
        assert cols[-3:] == ["pid", "host", "variant_json"]
        assert [tuple(r)[:-3] for r in c.execute("SELECT * FROM runs ORDER BY id")] == before_runs
        assert [tuple(r) for r in c.execute("SELECT * FROM metrics ORDER BY id")] == before_metrics
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"runs_run_dir", "runs_key", "metrics_run"} <= indexes
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # the new status works, ids are not reused (4 was deleted), foreign keys still cascade
        s.update_run(3, status="interrupted")
        assert s.add_run(RunRecord(method="new")) == 5
        c.execute("DELETE FROM runs WHERE id = 2")
        assert c.execute("SELECT COUNT(*) FROM metrics WHERE run_id = 2").fetchone()[0] == 0
        assert len(s.metrics_frame()) == 2
    with ResultsStore(path) as s:  # re-open: nothing more to migrate
        assert s.runs_frame()["status"].tolist() == ["finished", "interrupted", "running"]


def test_failed_migration_leaves_v1_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _v1_file(tmp_path / "results.db")
    with sqlite3.connect(path) as c:
        before = (c.execute("SELECT * FROM runs").fetchall(), c.execute("SELECT * FROM metrics").fetchall())
    c.close()
    monkeypatch.setattr(schema, "RUNS_INDEXES", (*schema.RUNS_INDEXES, "CREATE INDEX broken ON nope(x)"))
    with pytest.raises(ResultsStoreError, match="nope"):
        ResultsStore(path)
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert (c.execute("SELECT * FROM runs").fetchall(), c.execute("SELECT * FROM metrics").fetchall()) == before
        assert {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {
            "schema_version", "runs", "metrics", "sqlite_sequence"}
    c.close()
    monkeypatch.undo()
    with ResultsStore(path) as s:  # and a later open migrates it
        assert s.schema_version == SCHEMA_VERSION and len(s.runs_frame()) == 3


# -- read-only access ----------------------------------------------------------------


def _two_runs(path: Path) -> None:
    with ResultsStore(path) as s:
        rid = s.add_run(RunRecord(method="mae", run_dir="runs/mae"))
        s.finish_run(rid, {"linear": ({"linear_top1": 0.5}, {})})
        s.add_run(RunRecord(method="mocov3"))


def test_readonly_store_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    _two_runs(path)
    with ResultsStore.open_readonly(path) as s:
        assert s.readonly and s.access_mode == "ro"
        assert s.runs_frame()["method"].tolist() == ["mae", "mocov3"]
        assert s.find_run("runs/mae") == 1
        writes = [lambda: s.add_run(RunRecord(method="x")), lambda: s.update_run(2, status="failed"),
                  lambda: s.add_metrics(2, "knn", {"knn_top1": 0.1}), lambda: s.finish_run(2, {}),
                  lambda: s.replace_metrics(1, "knn", {"knn_top1": 0.1}), lambda: s.mark_stale_runs()]
        for write in writes:
            with pytest.raises(ReadOnlyStoreError) as info:
                write()
            assert "opened read-only" in str(info.value) and str(path) in str(info.value)
    with ResultsStore(path) as s:
        assert s.get_run(2).status == "running" and len(s.metrics_frame()) == 1


def test_readonly_never_creates(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "results.db"
    with pytest.raises(ResultsStoreError, match="no results store at .*ssl-bench run"):
        ResultsStore(path, readonly=True)
    assert not path.parent.exists()


def _fail_mode_ro(self: SQLiteFile) -> sqlite3.Connection:
    raise sqlite3.OperationalError("unable to open database file")  # what a read-only dir gives


def test_readonly_falls_back_to_immutable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.db"
    _two_runs(path)
    monkeypatch.setattr(SQLiteFile, "connect_mode_ro", _fail_mode_ro)
    with ResultsStore(path, readonly=True) as s:
        assert s.access_mode == "immutable"
        assert s.runs_frame()["method"].tolist() == ["mae", "mocov3"]
        assert build_leaderboard(s)["method"].tolist() == ["mae"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.db"]  # no -wal/-shm created


def test_immutable_fallback_refuses_unread_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.db"
    writer = ResultsStore(path)  # open: its commits sit in results.db-wal, not yet checkpointed
    writer.add_run(RunRecord(method="mae"))
    assert Path(f"{path}-wal").stat().st_size > 0
    monkeypatch.setattr(SQLiteFile, "connect_mode_ro", _fail_mode_ro)
    with pytest.raises(ResultsStoreError, match="results.db-wal holds changes"):
        ResultsStore(path, readonly=True)
    monkeypatch.undo()
    with ResultsStore(path, readonly=True) as s:  # mode=ro reads the WAL
        assert s.access_mode == "ro" and len(s.runs_frame()) == 1
    writer.close()


def test_read_only_directory(tmp_path: Path, as_unprivileged) -> None:
    """A chmod'ed read-only folder: the store reads, and refuses to write in one line. As root (CI)
    the checks run without root's permission override (tests/conftest.py: run_as_unprivileged)."""
    d = tmp_path / "ro"
    d.mkdir()
    path = d / "results.db"
    _two_runs(path)  # closed: WAL checkpointed and removed
    d.chmod(0o555)
    path.chmod(0o444)

    def check() -> None:
        with ResultsStore(path, readonly=True) as s:
            assert s.access_mode in ("ro", "immutable")
            assert s.runs_frame()["method"].tolist() == ["mae", "mocov3"]
        with pytest.raises(ResultsStoreError, match="read-only"):
            ResultsStore(path)
        with pytest.raises(ResultsStoreError, match="read-only"):
            ResultsStore(d / "new.db")

    try:
        as_unprivileged(check)
    finally:
        d.chmod(0o755)
        path.chmod(0o644)
    assert sorted(p.name for p in d.iterdir()) == ["results.db"]  # nothing created beside it


# -- damaged rows and files ----------------------------------------------------------


@pytest.mark.parametrize(
    "sql, column",
    [
        ("UPDATE runs SET config_json = '{\"lr\": 0.1' WHERE id = 2", "runs.config_json"),
        ("UPDATE runs SET versions_json = '[1, 2]' WHERE id = 2", "runs.versions_json"),
        ("UPDATE runs SET epochs = 'ten' WHERE id = 2", "runs.epochs"),
    ],
)
def test_a_damaged_run_row_is_skipped_with_one_line_naming_it(tmp_path: Path, sql: str, column: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Readers leave the damaged run out (one warning line naming it); the rest of the file stays
    usable; a read of that very run (what a write or a resume does first) is refused with that line."""
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        _finished(s, "mae", linear=0.5)
        _finished(s, "mocov3", linear=0.6, run_dir="runs/moco-s0")
    with sqlite3.connect(path) as c:
        c.execute(sql)
    c.close()
    with ResultsStore(path, readonly=True) as s:
        assert s.runs_frame()["id"].tolist() == [1]
        assert set(s.metrics_frame()["run_id"]) == {1}
        assert build_leaderboard(s)["method"].tolist() == ["mae"]
        assert pd.isna(build_table4(s).set_index("method").loc["mocov3", "vit-b ours"])  # not shown
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # once per damaged value, however many readers met it
        msg = warnings[0]
        assert "\n" not in msg and "run 2 (runs/moco-s0)" in msg and column in msg and str(path) in msg
        assert "skipped" in msg and "Fix: delete that run" in msg
        with pytest.raises(ResultsStoreError) as info:
            s.get_run(2)
        assert "\n" not in str(info.value) and "run 2 (runs/moco-s0)" in str(info.value) and column in str(info.value)
        assert s.get_run(1).method == "mae"  # other rows still read


@pytest.mark.parametrize(
    "sql, column",
    [
        ("UPDATE metrics SET protocol_json = 'k=20' WHERE run_id = 2", "metrics.protocol_json"),
        ("UPDATE metrics SET value = 'high' WHERE run_id = 2", "metrics.value"),
    ],
)
def test_a_damaged_metric_is_shown_as_damaged(tmp_path: Path, sql: str, column: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        _finished(s, "mae", linear=0.5)
        _finished(s, "mocov3", linear=0.6, run_dir="runs/moco-s0")
    with sqlite3.connect(path) as c:
        c.execute(sql)
    c.close()
    with ResultsStore(path, readonly=True) as s:
        m = s.metrics_frame().set_index("run_id")
        assert pd.isna(m.loc[2, "value"]) and m.loc[2, "damaged"].startswith(column)
        assert m.loc[1, "value"] == 0.5 and pd.isna(m.loc[1, "damaged"])
        df = build_leaderboard(s)
        assert df["method"].tolist() == ["mae", "mocov3"]  # no number: sorted after the runs that have one
        assert pd.isna(df.set_index("method").loc["mocov3", LINEAR_COL])
        lines = render(df, "md").splitlines()
        header = [c.strip() for c in lines[0].split("|")]
        row = [c.strip() for c in next(line for line in lines if "mocov3" in line).split("|")]
        assert row[header.index(LINEAR_COL)] == "damaged" and "60.0" not in row
        msg = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        assert "\n" not in msg and "run 2 (runs/moco-s0)" in msg and column in msg
        assert "metric 'linear_top1'" in msg and "ssl-bench eval runs/moco-s0" in msg


def test_malformed_file_mid_read_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        for i in range(60):  # runs spread over many pages
            s.add_run(RunRecord(method="m", run_dir=f"runs/{i}", config_json={"pad": "x" * 3000}))
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as fh:  # trash the last pages (run rows), keep the schema page
        fh.seek((pages - 8) * 4096)
        fh.write(b"\xa5" * 8 * 4096)
    with ResultsStore(path, readonly=True) as s:  # opening reads only the schema
        with pytest.raises(ResultsStoreError) as info:
            s.runs_frame()
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "malformed" in msg and "backup" in msg


def test_uncreatable_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsStoreError) as info:
        ResultsStore(tmp_path / "file" / "results.db")
    msg = str(info.value)
    assert msg.startswith("cannot create results store") and "--results" in msg and "\n" not in msg
