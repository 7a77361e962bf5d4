"""Issue 17, item 6: the same config, seed, machine and thread count give a byte-identical
``metrics.json``; the thread count is recorded with the run; the per-image predictions a run keeps
reproduce its accuracies and carry the features key of the weights that made them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from tests.conftest import cli

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256", "dataset.limit_test=128",
    "train.batch_size=64", "train.warmup_epochs=0", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1",
]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same tiny mae run (1 epoch) twice, into two --out folders, one thread each (cli_env)."""
    root = tmp_path_factory.mktemp("determinism")
    dirs = []
    for out in ("first", "second"):
        proc = cli("run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--no-baselines", "--out", out, "--set", *TINY, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        dirs.append(root / out / "digits" / "vit-nano" / "mae-s0")
    return dirs[0], dirs[1]


@pytest.mark.slow
def test_the_same_run_twice_writes_the_same_metrics_json_and_records_its_threads(two_runs):
    first, second = two_runs
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    con = sqlite3.connect(first.parents[2] / "results.db")
    (versions,) = con.execute("SELECT versions_json FROM runs").fetchone()
    con.close()
    assert json.loads(versions)["torch_num_threads"] == 1  # cli_env: OMP_NUM_THREADS=1


@pytest.mark.slow
def test_a_finished_run_keeps_predictions_that_reproduce_its_accuracies(two_runs):
    from ssl_bench.eval.predictions import read_predictions

    run_dir = two_runs[0]
    recorded = json.loads((run_dir / "metrics.json").read_text())
    features_key = torch.load(run_dir / "features.pt", map_location="cpu", weights_only=True)["protocol"]
    preds = read_predictions(run_dir, expected_key=features_key)
    assert preds is not None and preds.key == features_key and preds.key["weights"]["epoch"] == 1
    assert preds.labels.shape == (128,)
    accuracies = {**recorded["knn"]["metrics"], "linear_top1": recorded["linear"]["metrics"]["linear_top1"]}
    assert set(preds.preds) == set(accuracies)  # knn_top1, knn_top1_k{10,20,100,200}, linear_top1
    for metric, value in accuracies.items():
        assert float((preds.preds[metric] == preds.labels).mean()) == value, metric
    assert preds.disagreements(recorded["knn"]["metrics"]) == []
    assert "predictions" not in (run_dir / "metrics.json").read_text()


def test_metrics_json_keys_are_sorted_at_every_level(tmp_path):
    from ssl_bench.run.score import METRICS_JSON, write_metrics_json

    write_metrics_json(tmp_path, {"linear": ({"linear_top1": 0.5, "a": 0.1}, {"z": 1, "b": {"y": 2, "x": 3}}),
                                  "knn": ({"knn_top1": 0.25}, {})})
    text = (tmp_path / METRICS_JSON).read_text()
    assert text == json.dumps({"knn": {"metrics": {"knn_top1": 0.25}, "protocol": {}},
                               "linear": {"metrics": {"a": 0.1, "linear_top1": 0.5},
                                          "protocol": {"b": {"x": 3, "y": 2}, "z": 1}}}, indent=1)
