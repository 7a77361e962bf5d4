"""Tests for the SQLite results store and the leaderboard / Table-4 views."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.results import (
    PAPER_TABLE4,
    ResultsStore,
    ResultsStoreError,
    RunRecord,
    build_leaderboard,
    build_table4,
    render,
)
from ssl_bench.results.leaderboard import KNN_COL, LINEAR_COL


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results.db")
    yield s
    s.close()


def _finished(store: ResultsStore, method: str, backbone: str = "vit-b", dataset: str = "cifar10",
              linear: float | None = None, knn: float | None = None, **kw) -> int:
    rec = RunRecord(method=method, backbone=backbone, dataset=dataset,
                    run_dir=kw.pop("run_dir", f"runs/{method}-{backbone}-{dataset}"),
                    epochs=kw.pop("epochs", 1), seed=kw.pop("seed", 0), **kw)
    rid = store.add_run(rec)
    store.update_run(rid, status="finished", wall_time_s=12.34, throughput_img_s=1000.0)
    if knn is not None:
        store.add_metrics(rid, "knn", {"knn_top1": knn, "knn_top1_k10": knn - 0.01}, {"k": 20})
    if linear is not None:
        store.add_metrics(rid, "linear", {"linear_top1": linear}, {"epochs": 10, "lr": 0.1})
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
        s.update_run(rid, status="finished", wall_time_s=5.5, throughput_img_s=321.0,
                     peak_mem_mb=1024.0)
        s.add_metrics(rid, "knn", {"knn_top1": 0.5, "knn_top1_k10": 0.48}, {"k": 20, "t": 0.07})

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
        s.add_metrics(rid, "linear", {"linear_top1": 0.6}, {"epochs": 1})
        s.replace_metrics(rid, "knn", {"knn_top1": 0.55}, {"k": 20})
        m = s.metrics_frame()
        assert dict(zip(m["name"], m["value"])) == {"linear_top1": 0.6, "knn_top1": 0.55}

        version = s._conn.execute("SELECT version FROM schema_version").fetchall()
        assert [tuple(v) for v in version] == [(1,)]
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
    _finished(store, "mae", linear=0.40, knn=0.30)  # superseded below
    _finished(store, "mae", linear=0.555, knn=0.444, seed=7)  # latest finished -> shown
    running = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="cifar10"))
    store.add_metrics(running, "linear", {"linear_top1": 0.99}, {})  # running: ignored
    failed = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="cifar10"))
    store.update_run(failed, status="failed")
    _finished(store, "mocov3", linear=0.70, knn=0.65)
    _finished(store, "ldae", linear=0.60)
    _finished(store, "random-init", linear=0.20, knn=0.10, is_baseline=True)
    _finished(store, "pixels", linear=0.30, knn=0.25, is_baseline=True)
    dit = _finished(store, "dit", linear=0.50, uses_labels=True)
    store.add_metrics(dit, "nll", {"nll_bpd": 3.4567}, {"space": "pixel"})

    df = build_leaderboard(store)
    assert df["method"].tolist() == ["pixels", "random-init", "mocov3", "ldae", "mae", "dit"]
    mae = df[df["method"] == "mae"].iloc[0]
    assert mae[LINEAR_COL] == 55.5 and mae[KNN_COL] == 44.4 and mae["seed"] == 7
    assert "NLL (bits/dim)" in df.columns
    nll_at = list(df.columns).index("NLL (bits/dim)")
    assert df.columns[nll_at + 1] == "NLL space"  # latent and pixel bits/dim are different scales
    space = df.set_index("method")["NLL space"]
    assert space["dit"] == "pixel" and space.drop("dit").isna().all()
    labels = df.set_index("method")["labels"]
    assert labels["dit"] and not labels["mae"]
    assert list(df.columns[:6]) == ["method", "backbone", "dataset", "epochs", KNN_COL, LINEAR_COL]

    md = render(df, "md")
    assert "55.5" in md and "44.4" in md and "70.0" in md and "3.457" in md
    assert "99.0" not in md and "40.0" not in md
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
    rid = _finished(store, "simclr", dataset="cifar10")
    store.add_metrics(rid, "knn", {"knn_top1": 0.9}, {"k": 10})  # k=10: not the k=20 column
    assert len(build_leaderboard(store)) == 4
    df = build_leaderboard(store, dataset="cifar10", backbone="vit-b")
    assert df["method"].tolist() == ["mae", "simclr"]
    assert pd.isna(df.set_index("method").loc["simclr", KNN_COL])
    assert "NLL (bits/dim)" not in df.columns
    assert build_leaderboard(ResultsStore(store.path), dataset="nope").empty


def test_empty_leaderboard_renders(store: ResultsStore) -> None:
    df = build_leaderboard(store)
    assert df.empty and KNN_COL in df.columns
    for fmt in ("md", "csv", "html"):
        assert isinstance(render(df, fmt), str)


# -- Table 4 -------------------------------------------------------------------------


def test_table4_layout_paper_numbers_and_notes(store: ResultsStore) -> None:
    _finished(store, "mae", dataset="fashion-mnist", epochs=1, linear=0.812)
    _finished(store, "moco-v3", backbone="vit_b", dataset="imagenet-1k", epochs=300, linear=0.765)
    _finished(store, "ldae", backbone="resnet-18", dataset="cifar10", epochs=5, linear=0.3)
    _finished(store, "pixels", backbone="vit-b", dataset="fashion-mnist", linear=0.2, is_baseline=True)

    df = build_table4(store)
    assert df["method"].tolist() == ["mocov3", "mae", "ldae", "pixels"]
    assert list(df.columns) == ["method", "vit-b ours", "vit-b paper", "vit-l ours", "vit-l paper",
                                "resnet-18 ours", "resnet-18 paper", "notes"]
    t = df.set_index("method")
    for method, nums in PAPER_TABLE4.items():
        assert t.loc[method, "vit-b paper"] == nums["vit-b"]
        assert t.loc[method, "vit-l paper"] == nums["vit-l"]
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


def test_table4_per_backbone_notes(store: ResultsStore) -> None:
    _finished(store, "mae", backbone="vit-b", dataset="imagenet", epochs=1600, linear=0.67)
    _finished(store, "mae", backbone="vit-l", dataset="imagenet", epochs=800, linear=0.74)
    note = build_table4(store).set_index("method").loc["mae", "notes"]
    assert note == "vit-l: ours: imagenet, 800 ep; paper: ImageNet-1k, 1600 ep"
