"""``ssl-bench sweep``: the grid, the choice on validation numbers only, and the test score of the choice only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ssl_bench.errors import ConfigError
from ssl_bench.run.sweep import (
    GridPoint, SweepRun, grid_points, parse_grid, point_config, select_from_store, select_setting, stored_scores,
)

from tests.conftest import cli


def test_grid_values_are_split_at_top_level_commas_and_kept_as_written():
    grid = parse_grid(["train.blr=1e-4,3e-4,1e-3", "eval.knn.ks=(10,20),(20,50)", "train.optimizer=adamw,sgd"])
    assert grid == {"train.blr": ["1e-4", "3e-4", "1e-3"], "eval.knn.ks": ["(10,20)", "(20,50)"], "train.optimizer": ["adamw", "sgd"]}
    assert parse_grid(["method.corruption.name=masking,additive-latent-noise"]) == {
        "method.corruption.name": ["masking", "additive-latent-noise"]}


@pytest.mark.parametrize("items, says", [
    (["train.blr"], "--grid expects KEY=V1,V2"),
    (["train.blr=1e-4,,3e-4"], "one or more comma-separated values"),
    (["train.blr=1e-4,0.0001"], "repeats a value"),
    (["train.blr=1e-4", "train.blr=3e-4"], "names train.blr twice"),
    ([], "a sweep needs a grid"),
])
def test_a_bad_grid_is_one_config_error(items, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_grid(items)


def test_grid_points_are_the_product_first_key_slowest():
    points = grid_points({"train.blr": ["1e-4", "3e-4"], "train.weight_decay": ["0.0", "0.05"]})
    assert [p.label for p in points] == [
        "train.blr=1e-4, train.weight_decay=0.0", "train.blr=1e-4, train.weight_decay=0.05",
        "train.blr=3e-4, train.weight_decay=0.0", "train.blr=3e-4, train.weight_decay=0.05",
    ]
    assert points[1].set_items == ("train.blr=1e-4", "train.weight_decay=0.05")


def test_select_setting_takes_the_best_mean_and_the_first_of_a_tie():
    assert select_setting({"a": [0.9, 0.5], "b": [0.72, 0.72], "c": [0.6]}) == "b"  # means 0.70, 0.72, 0.60
    assert select_setting({"a": [0.5, 0.7], "b": [0.6, 0.6]}) == "a"  # equal means: the first


def test_each_point_holds_back_a_validation_split_and_is_scored_on_it(registry, tmp_path):
    point = GridPoint("train.blr=3e-4", ("train.blr=3e-4",))
    cfg = point_config("mae", registry, point, 2, sweep_id="mae-x", folder=tmp_path, cli={"backbone.name": "vit-nano"})
    assert (cfg.dataset.val_fraction, cfg.dataset.val_seed, cfg.eval.split) == (0.1, 0, "val")
    assert (cfg.train.blr, cfg.seed, cfg.name, cfg.sweep) == (3e-4, 2, None, "mae-x")  # the row identity labels it
    named = point_config("mae", registry, point, 2, sweep_id="mae-x", folder=tmp_path, set_items=["name=mine"])
    assert named.name == "mine · train.blr=3e-4"
    assert Path(cfg.out) == tmp_path / "train.blr=3e-4"
    own = point_config("mae", registry, point, 0, sweep_id="mae-x", folder=tmp_path, set_items=["dataset.val_fraction=0.2"])
    assert own.dataset.val_fraction == 0.2
    with pytest.raises(ConfigError, match="train.blr is both on the grid and in --set"):
        point_config("mae", registry, point, 0, sweep_id="mae-x", folder=tmp_path, set_items=["train.blr=1e-3"])


def _store_with_planted_test_scores(tmp_path):
    """Two settings x two seeds. By validation "low-lr" is best; "high-lr" carries a planted, much
    higher TEST accuracy: a selection that reads test numbers picks it."""
    from ssl_bench.results import ResultsStore, RunRecord

    store = ResultsStore(tmp_path / "r.db")
    scores = {("low-lr", 0): (0.80, 0.50), ("low-lr", 1): (0.78, 0.52), ("high-lr", 0): (0.70, 0.99), ("high-lr", 1): (0.72, 0.98)}
    runs = []
    for (label, seed), (val, test) in scores.items():
        run_id = store.add_run(RunRecord(method="mae", backbone="vit-nano", dataset="digits", seed=seed))
        store.finish_run(run_id, {"linear": ({"val_linear_top1": val}, {"split": "val"})})
        store.replace_all_metrics(run_id, {"linear": ({"linear_top1": test}, {})})
        runs.append(SweepRun(label, seed, tmp_path / f"{label}-{seed}", run_id))
    return store, runs


def test_the_selection_reads_validation_scores_never_test_scores(tmp_path):
    store, runs = _store_with_planted_test_scores(tmp_path)
    choice, val = select_from_store(store, runs, "linear_top1")
    assert choice == "low-lr"
    assert val == {"low-lr": [0.80, 0.78], "high-lr": [0.70, 0.72]}
    assert select_from_store(store, runs, "val_linear_top1")[0] == "low-lr"  # the val_ spelling means the same


def test_a_missing_or_non_accuracy_selection_metric_is_one_line(tmp_path):
    from ssl_bench.errors import SSLBenchError

    store, runs = _store_with_planted_test_scores(tmp_path)
    with pytest.raises(SSLBenchError, match=r"has no val_knn_top1 \(its validation metrics: val_linear_top1\)"):
        stored_scores(store, runs, "val_knn_top1")
    with pytest.raises(ConfigError, match="name an accuracy"):
        select_from_store(store, runs, "nll_bpd")


SWEEP_SET = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=300", "dataset.limit_test=128",
    "train.batch_size=64", "train.warmup_epochs=0", "eval.linear.epochs=5", "eval.linear.warmup_epochs=1", "eval.knn.ks=(10,20)",
]


@pytest.mark.slow
def test_a_sweep_selects_on_validation_and_scores_only_the_selection_on_test(tmp_path):
    import pandas as pd

    from ssl_bench.results import ResultsStore

    proc = cli("sweep", "mae", "--backbone", "vit-nano", "--epochs", "1", "--grid", "train.blr=1e-4,1e-3", "--seeds", "0", "1",
               "--set", *SWEEP_SET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = ResultsStore(tmp_path / "runs" / "results.db", readonly=True)
    runs, metrics = store.runs_frame(), store.metrics_frame()
    assert len(runs) == 4 and not runs["is_baseline"].any()  # 2 points x 2 seeds, no baselines
    configs = {int(r.id): json.loads(r.config_json) for r in runs.itertuples()}
    sweep_ids = {c["sweep"] for c in configs.values()}
    assert len(sweep_ids) == 1 and all(c["dataset"]["val_fraction"] == 0.1 for c in configs.values())
    grid_text = {1e-4: "train.blr=1e-4", 1e-3: "train.blr=1e-3"}  # the point labels, as the grid wrote them
    label = {rid: grid_text[c["train"]["blr"]] for rid, c in configs.items()}
    val = metrics[metrics["name"] == "val_linear_top1"].assign(label=lambda f: f["run_id"].map(label))
    means = val.groupby("label")["value"].mean()
    best = means.idxmax()
    assert means[best] > means.drop(best).max()  # (a tie would make the check below ambiguous)
    line = f"selected {best} by validation linear_top1 (mean of 2 seeds); test accuracy reported for this setting only"
    assert line in proc.stdout
    # only the selected setting's runs were scored on test, and they keep their validation scores
    tested = set(metrics.loc[~metrics["name"].str.startswith("val_"), "run_id"])
    assert tested == {rid for rid, lb in label.items() if lb == best}
    assert set(val["run_id"]) == set(label)
    table = (tmp_path / "runs" / "sweeps" / sweep_ids.pop() / "sweep.md").read_text()
    assert line in table and pd.notna(means[best])
