"""The predictions file (ssl_bench.eval.predictions): written whole, read back as numpy, never paired when stale."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ssl_bench.eval.predictions import PREDICTIONS_NAME, read_predictions, write_predictions

KEY = {"features": {"pool": "cls"}, "method": "mae", "weights": {"epoch": 2, "step": 8, "sha256": "ab12"}}
LABELS = torch.tensor([0, 1, 2, 1, 0])
BY_EVALUATOR = {
    "knn": {"knn_top1": torch.tensor([0, 1, 1, 1, 0]), "knn_top1_k10": torch.tensor([0, 2, 2, 1, 1])},
    "linear": {"linear_top1": torch.tensor([0, 1, 2, 1, 2])},
}


def test_round_trip_as_numpy(tmp_path):
    path = write_predictions(tmp_path, KEY, LABELS, BY_EVALUATOR)
    assert path == tmp_path / PREDICTIONS_NAME and not list(tmp_path.glob("*.tmp"))
    got = read_predictions(tmp_path)
    assert got.key == KEY and got.labels.dtype == np.int64 and got.labels.tolist() == [0, 1, 2, 1, 0]
    assert {m: p.tolist() for m, p in got.preds.items()} == {
        "knn_top1": [0, 1, 1, 1, 0], "knn_top1_k10": [0, 2, 2, 1, 1], "linear_top1": [0, 1, 2, 1, 2],
    }
    assert got.evaluator_of == {"knn_top1": "knn", "knn_top1_k10": "knn", "linear_top1": "linear"}
    assert got.correct("knn_top1").tolist() == [True, True, False, True, True]
    assert got.accuracy("knn_top1") == 0.8 and got.accuracy("linear_top1") == 0.8 and got.accuracy("knn_top1_k10") == 0.6


def test_the_key_is_stored_json_normalised_like_the_features_cache(tmp_path):
    write_predictions(tmp_path, {"ks": (10, 20), "b": 1, "a": None}, LABELS, {})
    assert read_predictions(tmp_path).key == {"a": None, "b": 1, "ks": [10, 20]}
    assert read_predictions(tmp_path, expected_key={"ks": (10, 20), "a": None, "b": 1}) is not None


def test_a_stale_file_is_never_paired(tmp_path):
    write_predictions(tmp_path, KEY, LABELS, BY_EVALUATOR)
    assert read_predictions(tmp_path, expected_key=KEY) is not None
    other_weights = {**KEY, "weights": {**KEY["weights"], "sha256": "cd34"}}
    assert read_predictions(tmp_path, expected_key=other_weights) is None


def test_disagreements_name_the_metrics_the_file_does_not_reproduce(tmp_path):
    write_predictions(tmp_path, KEY, LABELS, BY_EVALUATOR)
    got = read_predictions(tmp_path)
    assert got.disagreements({"knn_top1": 0.8, "linear_top1": 0.8, "knn_top1_k10": 0.6, "nll": 3.2, "x": None}) == []
    assert got.disagreements({"knn_top1": 0.6, "linear_top1": 0.8}) == ["knn_top1"]


def test_no_file_or_a_damaged_one_reads_as_none(tmp_path, caplog):
    assert read_predictions(tmp_path) is None
    (tmp_path / PREDICTIONS_NAME).write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING, logger="ssl_bench"):
        assert read_predictions(tmp_path) is None
    assert "unreadable" in caplog.text
    torch.save({"key": KEY, "labels": LABELS, "evaluators": {"knn": {"knn_top1": torch.tensor([0, 1])}}}, tmp_path / PREDICTIONS_NAME)
    assert read_predictions(tmp_path) is None  # predictions of another length than the labels
