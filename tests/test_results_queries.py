"""What the run path, the CLI and the deconstruction chain read from the store (results.queries), and
the settings that keep runs apart (results.settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_bench.results import ResultsStore, RunRecord
from ssl_bench.results.queries import backbones_in, datasets_in, latest_finished, run_metrics
from ssl_bench.results.settings import data_settings, eval_settings, merge_partial_settings, subset_of


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results.db")
    yield s
    s.close()


def _run(store: ResultsStore, method: str, backbone: str, dataset: str, status: str = "finished") -> int:
    rid = store.add_run(RunRecord(method=method, backbone=backbone, dataset=dataset))
    if status == "finished":
        store.finish_run(rid, {"linear": ({"linear_top1": 0.5}, {})})
    elif status != "running":
        store.update_run(rid, status=status)
    return rid


def test_datasets_and_backbones_with_finished_runs(store: ResultsStore) -> None:
    """What `leaderboard --dataset NOSUCH` needs to say which datasets there are."""
    assert datasets_in(store) == [] and backbones_in(store) == []
    _run(store, "mae", "vit-nano", "digits")
    _run(store, "mae", "vit-tiny", "fashion-mnist")
    _run(store, "mocov3", "vit-small", "cifar10", status="failed")  # nothing to show: not listed
    _run(store, "ldae", "vit-base", "stl10", status="running")
    store.finish_run(store.add_run(RunRecord(method="x")), {})  # no dataset / backbone recorded
    assert datasets_in(store) == ["digits", "fashion-mnist"]
    assert backbones_in(store) == ["vit-nano", "vit-tiny"]
    assert backbones_in(store, dataset="fashion-mnist") == ["vit-tiny"]
    assert backbones_in(store, dataset="NOSUCH") == []


def test_run_metrics_carry_the_damaged_ones(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        rid = s.add_run(RunRecord(method="mae"))
        s.finish_run(rid, {"linear": ({"linear_top1": 0.5, "linear_top5": 0.9}, {"epochs": 90}),
                           "knn": ({"knn_top1": 0.4}, {"headline_k": 20})})
    with sqlite3.connect(path) as c:
        c.execute("UPDATE metrics SET value = -0.2 WHERE name = 'linear_top5'")
    c.close()
    with ResultsStore(path, readonly=True) as s:
        got = run_metrics(s, [rid, 99])
        assert got[99] == ({}, {}, {}, {})
        m = got[rid]
        assert m.values == {"linear_top1": 0.5, "linear_top5": None, "knn_top1": 0.4}
        assert m.evaluators == {"linear_top1": "linear", "linear_top5": "linear", "knn_top1": "knn"}
        assert m.protocols["knn_top1"] == {"headline_k": 20} and m.protocols["linear_top5"] == {}
        assert list(m.damaged) == ["linear_top5"] and "-0.2 is outside [0, 1]" in m.damaged["linear_top5"]


def test_latest_finished_keeps_one_run_per_method_and_settings(store: ResultsStore) -> None:
    first = _run(store, "mae", "vit-nano", "digits")
    second = _run(store, "mae", "vit-nano", "digits")
    _run(store, "mae", "vit-nano", "digits", status="running")
    other = _run(store, "mae", "vit-tiny", "digits")
    got = {(e.backbone, e.run_id) for e in latest_finished(store)}
    assert got == {("vit-nano", second), ("vit-tiny", other)} and first < second


def test_data_settings_ignore_what_cannot_change_the_images() -> None:
    cfg = {"dataset": {"name": "digits", "data_root": "/d", "num_workers": 4, "download": True,
                       "limit_train": 1000, "image_size": 32}}
    assert data_settings(cfg) == (("image_size", "32"), ("limit_train", "1000"))
    assert data_settings('{"dataset": {"name": "x"}}') == () and data_settings(None) == ()
    assert subset_of((("image_size", "32"), ("limit_test", "null"), ("limit_train", "1000"))) == {"limit_train": 1000}


def test_eval_settings_read_the_probes_records() -> None:
    protocols = {"linear_top1": {"epochs": 90, "optimizer": "sgd", "device": "cpu", "lr": 0.1, "lr_rule": "given"},
                 "knn_top1": {"temperature": 0.07, "n_train": 10}, "miou": {"epochs": 3}}
    evaluators = {"linear_top1": "linear", "knn_top1": "knn", "miou": "segm"}
    assert eval_settings(protocols, evaluators) == (
        ("knn.temperature", "0.07"), ("linear.epochs", "90"), ("linear.lr", "0.1"), ("linear.optimizer", '"sgd"'))


def test_a_partial_setting_joins_the_group_it_agrees_with() -> None:
    full_a = (("knn.temperature", "0.07"), ("linear.epochs", "3"))
    full_b = (("knn.temperature", "0.07"), ("linear.epochs", "90"))
    partial = (("knn.temperature", "0.07"),)
    odd = (("knn.temperature", "0.2"),)
    merged = merge_partial_settings({full_a, full_b, partial, odd})
    assert merged[full_a] == full_a and merged[full_b] == full_b and merged[odd] == odd
    assert merged[partial] == full_a  # the first (sorted) complete group it agrees with
