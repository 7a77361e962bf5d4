"""Leaderboard columns for any evaluator, the Table-4 probe note, and reading through a read-only store."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ssl_bench.results import ResultsStore, RunRecord, build_leaderboard, build_table4, render
from ssl_bench.results.columns import KNN_COL, LINEAR_COL
from ssl_bench.results.queries import finished_runs, knn_top1_k20, metrics_by_run
from ssl_bench.results.table4 import PAPER_PROBE

BASE_COLUMNS = [KNN_COL, LINEAR_COL]
TAIL_COLUMNS = ["wall time (s)", "throughput (img/s)", "labels", "baseline", "seeds", "run_ids", "settings"]


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns, checked to come with their companions and to sit between the fixed columns and the tail."""
    cols = df.attrs["metric_columns"]
    assert list(df.columns[:6]) == ["row", "method", "backbone", "dataset", "epochs", "n"]
    assert list(df.columns[-len(TAIL_COLUMNS):]) == TAIL_COLUMNS
    for c in cols:
        assert {f"{c} sd", f"{c} lo", f"{c} hi", f"{c} best"} <= set(df.columns)
    return cols


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results.db")
    yield s
    s.close()


def _run(store: ResultsStore, method: str, results: dict[str, tuple[dict[str, float], dict[str, Any]]],
         backbone: str = "vit-b", dataset: str = "cifar10", epochs: int = 1) -> int:
    rid = store.add_run(RunRecord(method=method, backbone=backbone, dataset=dataset, epochs=epochs,
                                  run_dir=f"runs/{method}-{backbone}-{dataset}", seed=0))
    store.finish_run(rid, results, wall_time_s=1.0)
    return rid


LINEAR = {"linear": ({"linear_top1": 0.5, "linear_train_top1": 0.9, "linear_final_loss": 0.7},
                     {"optimizer": "lars", "batch_size": 256, "epochs": 90})}
KNN = {"knn": ({"knn_top1": 0.4, "knn_top1_k10": 0.41, "knn_top1_k20": 0.4}, {"headline_k": 20})}


def test_third_party_evaluator_gets_a_column_per_metric(store: ResultsStore) -> None:
    _run(store, "mae", {**KNN, **LINEAR})
    _run(store, "rotnet", {**LINEAR, "segm": ({"pixel_acc": 0.81234, "miou": 0.456789, "loss": 1.234567,
                                               "tokens_per_s": 123456.7}, {"dataset": "ade20k"})})
    df = build_leaderboard(store)
    assert metric_columns(df) == BASE_COLUMNS + ["pixel_acc", "miou", "loss", "tokens_per_s"]
    row = df.set_index("method").loc["rotnet"]
    assert row["pixel_acc"] == 81.2  # an accuracy: percent, one decimal
    assert (row["miou"], row["loss"], row["tokens_per_s"]) == (0.4568, 1.235, 123500.0)  # 4 significant
    assert df.set_index("method").loc["mae", ["pixel_acc", "miou"]].isna().all()
    # built-in evaluators keep only their headline columns
    for hidden in ("linear_train_top1", "linear_final_loss", "knn_top1_k10", "knn_top1_k20"):
        assert hidden not in df.columns

    md = render(df, "md")
    assert "pixel_acc |" in md.splitlines()[0] and "81.2" in md and "0.4568" in md and "1.235" in md and "123500" in md
    assert "0.456789" not in md and "e+05" not in md
    html = render(df, "html")
    assert "81.2" in html and "1.235" in html
    back = pd.read_csv(io.StringIO(render(df, "csv")))
    assert back.set_index("method").loc["rotnet", "loss"] == 1.235


def test_headline_in_protocol_limits_the_columns(store: ResultsStore) -> None:
    _run(store, "a", {**LINEAR, "segm": ({"pixel_acc": 0.8, "miou": 0.5, "loss": 1.0},
                                         {"headline": ["miou", "pixel_acc", "absent"]})})
    _run(store, "b", {**LINEAR, "depth": ({"rmse": 0.31, "delta1_acc": 0.9}, {"headline": "rmse"})})
    df = build_leaderboard(store)
    assert metric_columns(df) == BASE_COLUMNS + ["rmse", "miou", "pixel_acc"]
    t = df.set_index("method")
    assert (t.loc["a", "miou"], t.loc["a", "pixel_acc"], t.loc["b", "rmse"]) == (0.5, 80.0, 0.31)


def test_evaluator_columns_follow_the_shown_runs(store: ResultsStore) -> None:
    _run(store, "a", {**LINEAR, "segm": ({"miou": 0.5}, {})}, dataset="ade20k")
    _run(store, "b", LINEAR)
    assert "miou" in build_leaderboard(store).columns
    assert "miou" not in build_leaderboard(store, dataset="cifar10").columns


def test_clashing_metric_names_are_qualified(store: ResultsStore) -> None:
    _run(store, "a", {**LINEAR, "segm": ({"score": 0.5, "seed": 3.0}, {})})
    _run(store, "b", {**LINEAR, "depth": ({"score": 0.25}, {})}, backbone="vit-s")
    df = build_leaderboard(store)
    extra = [c for c in metric_columns(df) if c not in BASE_COLUMNS]
    assert extra == ["depth:score", "segm:score", "segm:seed"]
    t = df.set_index("method")
    assert t.loc["a", "segm:score"] == 0.5 and pd.isna(t.loc["a", "depth:score"])
    assert t.loc["b", "depth:score"] == 0.25 and t.loc["a", "seeds"] == "0"  # the run's seed is untouched


def test_a_bad_headline_is_one_warning_line_naming_the_run(store: ResultsStore, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged ``"headline"`` declaration is ignored (every metric of that evaluator gets a column),
    with one warning line naming the run, never a failed table."""
    rid = _run(store, "a", {**LINEAR, "segm": ({"miou": 0.5, "loss": 0.25}, {"headline": {"miou": True}})})
    df = build_leaderboard(store)
    assert metric_columns(df) == BASE_COLUMNS + ["miou", "loss"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    msg = warnings[0]
    assert "\n" not in msg and f"run {rid} (runs/a-vit-b-cifar10)" in msg and "headline" in msg
    assert "metrics.protocol_json" in msg and "ssl-bench eval runs/a-vit-b-cifar10" in msg


def test_knn_column_respects_the_recorded_headline_k(store: ResultsStore) -> None:
    _run(store, "k10", {"knn": ({"knn_top1": 0.7, "knn_top1_k10": 0.7}, {"headline_k": 10})})
    _run(store, "k20", {"knn": ({"knn_top1": 0.6}, {"headline_k": 20})})
    t = build_leaderboard(store).set_index("method")
    assert pd.isna(t.loc["k10", KNN_COL]) and t.loc["k20", KNN_COL] == 60.0
    assert knn_top1_k20({"knn_top1": 0.5}, {"knn_top1": {"k": "20"}}) == 0.5
    assert knn_top1_k20({"knn_top1": 0.5}, {"knn_top1": {"k": "ten"}}) is None


def test_reader_helpers_keep_their_signatures(store: ResultsStore) -> None:
    rid = _run(store, "a", {**KNN, "segm": ({"miou": 0.5}, {"headline": "miou"})})
    store.add_run(RunRecord(method="b"))
    assert finished_runs(store)["id"].tolist() == [rid]
    assert finished_runs(store, dataset="nope").empty
    values, protocols = metrics_by_run(store, [rid])[rid]
    assert values["miou"] == 0.5 and protocols["miou"] == {"headline": "miou"}
    assert knn_top1_k20(values, protocols) == 0.4
    assert metrics_by_run(store, []) == {}


# -- Table 4: the linear-probe protocol note --------------------------------------------


def _table4_note(store: ResultsStore, probe: dict[str, Any]) -> str:
    _run(store, "mae", {"linear": ({"linear_top1": 0.67}, probe)}, dataset="imagenet-1k", epochs=1600)
    return build_table4(store).set_index("method").loc["mae", "notes"]


def test_table4_notes_a_probe_on_cached_features(store: ResultsStore) -> None:
    # what the built-in evaluator records: no "protocol" key (cached features), sgd, batch 256
    note = _table4_note(store, {"optimizer": "sgd", "batch_size": 256, "epochs": 90, "lr": 0.1})
    assert note == "probe: cached features, sgd, batch 256 vs paper augmented, LARS, batch 16384"


def test_table4_no_note_for_the_paper_probe(store: ResultsStore) -> None:
    assert PAPER_PROBE == {"protocol": "augmented", "optimizer": "lars", "batch_size": 16384, "epochs": 90}
    assert _table4_note(store, dict(PAPER_PROBE)) == ""


def test_table4_probe_note_names_only_what_differs(store: ResultsStore) -> None:
    note = _table4_note(store, {"protocol": "augmented", "optimizer": "LARS", "batch_size": 4096, "epochs": 50})
    assert note == "probe: batch 4096, 50 ep vs paper batch 16384, 90 ep"


def test_table4_probe_note_joins_the_setting_note(store: ResultsStore) -> None:
    _run(store, "ldae", {"linear": ({"linear_top1": 0.3}, {"protocol": "features"})}, dataset="digits", epochs=5)
    _run(store, "pixels", {"linear": ({"linear_top1": 0.2}, {})})
    t = build_table4(store).set_index("method")
    assert t.loc["ldae", "notes"] == ("ours: digits, 5 ep; paper: ImageNet-1k, 1600 ep; "
                                      "probe: features vs paper augmented")
    assert t.loc["pixels", "notes"] == "not in paper Table 4"  # no paper row to compare a probe with


# -- runs on different data are never shown side by side as one comparison ------------------


def _data_run(store: ResultsStore, method: str, linear: float, dataset_cfg: dict[str, Any],
              dataset: str = "digits", epochs: int = 1, baseline: bool = False) -> int:
    rid = store.add_run(RunRecord(method=method, backbone="vit-nano", dataset=dataset, epochs=epochs, seed=0,
                                  is_baseline=baseline, run_dir=f"runs/{method}-{len(store.runs_frame())}",
                                  config_json={"dataset": {"name": dataset, **dataset_cfg}}))
    store.finish_run(rid, {"linear": ({"linear_top1": linear}, {})}, wall_time_s=1.0)
    return rid


def test_runs_on_different_data_settings_are_kept_apart_with_their_own_baselines(store: ResultsStore) -> None:
    """A model trained on 1,000 images must not sit beside baselines scored on 200 (the
    latest baselines): each data setting keeps its own rows, named by the setting."""
    big = {"limit_train": 1000, "limit_test": 128, "data_root": None}
    small = {"limit_train": 200, "limit_test": 128, "data_root": None}
    _data_run(store, "mae", 0.50, big)
    _data_run(store, "pixels", 0.84, big, baseline=True)
    _data_run(store, "mocov3", 0.10, small)
    _data_run(store, "pixels", 0.69, small, baseline=True)
    df = build_leaderboard(store)
    assert df[["method", "dataset", LINEAR_COL]].values.tolist() == [
        ["pixels", "digits (limit_train=1000)", 84.0],
        ["mae", "digits (limit_train=1000)", 50.0],
        ["pixels", "digits (limit_train=200)", 69.0],
        ["mocov3", "digits (limit_train=200)", 10.0],
    ]


def test_settings_that_cannot_change_the_images_do_not_split_a_dataset(store: ResultsStore) -> None:
    _data_run(store, "pixels", 0.80, {"limit_train": None, "data_root": "/a", "num_workers": 2}, baseline=True)
    _data_run(store, "pixels", 0.81, {"limit_train": None, "data_root": "/b", "num_workers": 8, "download": False},
              baseline=True)
    _data_run(store, "mae", 0.5, {"limit_train": None})
    _data_run(store, "mae", 0.6, {"limit_train": None, "image_size": 32}, dataset="fashion-mnist")
    df = build_leaderboard(store)
    assert df[["method", "dataset", LINEAR_COL]].values.tolist() == [
        ["pixels", "digits", 81.0], ["mae", "digits", 50.0], ["mae", "fashion-mnist", 60.0],
    ]  # one setting per dataset: the plain name; the latest pixels run of the one digits setting


def _probed(store: ResultsStore, method: str, linear: float, epochs: int, baseline: bool = False,
            knn_only: bool = False) -> int:
    """A run scored by the real evaluators' records (linear: MAE's probe settings; k-NN: T = 0.07)."""
    rid = store.add_run(RunRecord(method=method, backbone="vit-nano", dataset="digits", epochs=1, seed=0,
                                  is_baseline=baseline, run_dir=f"runs/{method}-{len(store.runs_frame())}",
                                  config_json={"dataset": {"name": "digits", "limit_train": None}}))
    knn = {"knn": ({"knn_top1": 0.4}, {"headline_k": 20, "ks": [10, 20], "temperature": 0.07, "normalisation": "l2",
                                       "n_train": 1437, "device": "cpu"})}
    probe = {"protocol": "cached", "optimizer": "sgd", "epochs": epochs, "warmup_epochs": 1, "blr": 0.1,
             "batch_size_requested": 256, "batch_size": 256, "lr": 0.1, "lr_rule": "blr * batch_size / 256",
             "seed": len(store.runs_frame()), "device": "cpu", "n_train": 1437, "total_steps": 5 * epochs}
    results = knn if knn_only else {**knn, "linear": ({"linear_top1": linear}, probe)}
    store.finish_run(rid, results, wall_time_s=1.0)
    return rid


def test_runs_scored_with_different_probe_settings_are_kept_apart(store: ResultsStore) -> None:
    """A 90-epoch probe beside pixels probed for 3 epochs (the latest baseline) is no comparison:
    each probe setting keeps its own rows; a run without that probe joins the rows it agrees with."""
    _probed(store, "mae", 0.60, epochs=90)
    _probed(store, "pixels", 0.96, epochs=90, baseline=True)
    _probed(store, "mocov3", 0.30, epochs=3)
    _probed(store, "pixels", 0.70, epochs=3, baseline=True)
    _probed(store, "simclr", 0.0, epochs=0, knn_only=True)
    df = build_leaderboard(store)
    rows = df[["method", "dataset", LINEAR_COL]].values.tolist()
    knn_only = [r for r in rows if r[0] == "simclr"]  # no probe: shown once, in a group it agrees with
    assert len(knn_only) == 1 and knn_only[0][1] in ("digits (linear.epochs=3)", "digits (linear.epochs=90)")
    assert [r for r in rows if r[0] != "simclr"] == [
        ["pixels", "digits (linear.epochs=3)", 70.0], ["mocov3", "digits (linear.epochs=3)", 30.0],
        ["pixels", "digits (linear.epochs=90)", 96.0], ["mae", "digits (linear.epochs=90)", 60.0],
    ]
    # facts in the records (device, step counts, the probe's seed) never split a dataset
    _probed(store, "ldae", 0.5, epochs=90)
    assert len(build_leaderboard(store)) == 6


def test_table4_notes_an_imagenet_subset_and_prefers_the_whole_dataset(store: ResultsStore) -> None:
    probe = dict(PAPER_PROBE)
    rid = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="imagenet-1k", epochs=1600, seed=0,
                                  run_dir="runs/a", config_json={"dataset": {"name": "imagenet-1k", "limit_train": None}}))
    store.finish_run(rid, {"linear": ({"linear_top1": 0.68}, probe)})
    rid = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="imagenet-1k", epochs=1600, seed=0,
                                  run_dir="runs/b", config_json={"dataset": {"name": "imagenet-1k", "limit_train": 10000}}))
    store.finish_run(rid, {"linear": ({"linear_top1": 0.30}, probe)})
    t = build_table4(store).set_index("method")
    assert (t.loc["mae", "vit-b ours"], t.loc["mae", "notes"]) == (68.0, "")  # the whole-data run, though older
    rid = store.add_run(RunRecord(method="ldae", backbone="vit-b", dataset="imagenet-1k", epochs=1600, seed=0,
                                  run_dir="runs/c", config_json={"dataset": {"name": "imagenet-1k", "limit_train": 10000}}))
    store.finish_run(rid, {"linear": ({"linear_top1": 0.30}, probe)})
    assert build_table4(store).set_index("method").loc["ldae", "notes"] == (
        "ours: imagenet-1k subset (limit_train=10000), 1600 ep; paper: ImageNet-1k, 1600 ep")


# -- read-only -------------------------------------------------------------------------


def test_tables_read_through_a_read_only_store(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultsStore(path) as s:
        _run(s, "mae", {**KNN, **LINEAR, "segm": ({"miou": 0.5}, {})}, dataset="imagenet-1k", epochs=1600)
    with ResultsStore(path, readonly=True) as s:
        df = build_leaderboard(s)
        assert df["miou"].tolist() == [0.5] and df[LINEAR_COL].tolist() == [50.0]
        assert build_table4(s).set_index("method").loc["mae", "vit-b ours"] == 50.0
        assert "0.5000" in render(df, "md")
