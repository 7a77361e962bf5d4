"""The validation split (``dataset.val_fraction``) and scoring on it (``eval.split=val``)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from ssl_bench.errors import ConfigError


def _digits(registry, tiny_cfg, *extra):
    from ssl_bench.run import load_dataset

    return load_dataset(tiny_cfg("mae", *extra), registry)


def _rows(split) -> set[bytes]:
    """Each image of a split as bytes: which images it holds, wherever they sit in it."""
    return {img.numpy().tobytes() for img in split.images}


def test_the_validation_split_is_stratified_seeded_and_taken_from_train_only(registry, tiny_cfg):
    plain = _digits(registry, tiny_cfg)
    ds = _digits(registry, tiny_cfg, "dataset.val_fraction=0.25")
    # 256 balanced training images -> 64 held back; the training split loses exactly them
    assert (len(ds.train), len(ds.val)) == (192, 64)
    assert _rows(ds.train) | _rows(ds.val) == _rows(plain.train)
    assert not _rows(ds.train) & _rows(ds.val)
    # the test split is untouched, image for image
    assert torch.equal(ds.test.images, plain.test.images) and torch.equal(ds.test.labels, plain.test.labels)
    # stratified: each class held back in proportion, within one image
    whole, held = Counter(plain.train.labels.tolist()), Counter(ds.val.labels.tolist())
    for c, n in whole.items():
        assert abs(held[c] - 0.25 * n) <= 1, (c, held[c], n)


def test_the_validation_split_has_its_own_seed_not_the_runs(registry, tiny_cfg):
    a = _digits(registry, tiny_cfg, "dataset.val_fraction=0.1", "seed=0")
    b = _digits(registry, tiny_cfg, "dataset.val_fraction=0.1", "seed=3")
    assert torch.equal(a.val.images, b.val.images)  # every seed of a sweep holds back the same images
    c = _digits(registry, tiny_cfg, "dataset.val_fraction=0.1", "dataset.val_seed=1")
    assert not torch.equal(a.val.images, c.val.images)


def test_validation_indices_are_reproducible_and_disjoint():
    from ssl_bench.data import validation_indices

    labels = torch.arange(40) % 4  # 4 classes of 10
    keep, held = validation_indices(labels, 0.2, seed=5)
    keep2, held2 = validation_indices(labels, 0.2, seed=5)
    assert torch.equal(keep, keep2) and torch.equal(held, held2)
    assert sorted(keep.tolist() + held.tolist()) == list(range(40))
    assert Counter(labels[held].tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}


def test_a_split_too_small_to_stratify_is_one_config_error():
    from ssl_bench.data import validation_indices

    with pytest.raises(ConfigError, match="val_fraction=0.05 cannot hold back"):
        validation_indices(torch.arange(40) % 10, 0.05)  # 2 images for 10 classes


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "'a'"])
def test_a_bad_val_fraction_is_one_config_error(tiny_cfg, value):
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=.* is invalid: expected a number in \(0, 1\) or None"):
        tiny_cfg("mae", f"dataset.val_fraction={value}")


def test_scoring_validation_without_a_validation_split_names_the_fix(tiny_cfg):
    with pytest.raises(ConfigError, match=r"eval.split='val'.*--set dataset.val_fraction=0.1"):
        tiny_cfg("mae", "eval.split=val")
    with pytest.raises(ConfigError, match="eval.split='train' is invalid: expected one of test, val"):
        tiny_cfg("mae", "eval.split=train")


def test_split_metrics_names_validation_scores_val_and_leaves_test_as_it_was():
    from ssl_bench.run.score import split_metrics

    metrics, protocol = split_metrics({"knn_top1": 0.5, "linear_top1": 0.75}, {"k": 20}, "val")
    assert metrics == {"val_knn_top1": 0.5, "val_linear_top1": 0.75}
    assert protocol == {"k": 20, "split": "val"}
    assert split_metrics({"knn_top1": 0.5}, {"k": 20}, "test") == ({"knn_top1": 0.5}, {"k": 20})


def test_the_features_cache_key_tells_the_splits_apart(tiny_cfg):
    from ssl_bench.run.score import split_key

    plain, held = tiny_cfg("mae"), tiny_cfg("mae", "dataset.val_fraction=0.1")
    assert split_key(plain, "test") == {}  # the key a run without a validation split always had
    keys = [split_key(held, "test"), split_key(held, "val"), split_key(tiny_cfg("mae", "dataset.val_fraction=0.2"), "val")]
    assert len({json.dumps(k, sort_keys=True) for k in keys}) == 3


def test_the_store_keeps_the_other_splits_metrics_when_one_split_is_rescored(tmp_path):
    from ssl_bench.results import ResultsStore, RunRecord

    store = ResultsStore(tmp_path / "r.db")
    run_id = store.add_run(RunRecord(method="mae", backbone="vit-nano", dataset="digits"))
    store.finish_run(run_id, {"knn": ({"val_knn_top1": 0.5}, {"split": "val"})})
    store.replace_all_metrics(run_id, {"knn": ({"knn_top1": 0.25}, {})})
    store.replace_all_metrics(run_id, {"knn": ({"knn_top1": 0.75}, {})})  # a second test scoring replaces the first
    frame = store.metrics_frame([run_id])
    assert dict(zip(frame["name"], frame["value"])) == {"val_knn_top1": 0.5, "knn_top1": 0.75}
    store.replace_all_metrics(run_id, {"knn": ({"val_knn_top1": 0.125}, {"split": "val"})})
    frame = store.metrics_frame([run_id])
    assert dict(zip(frame["name"], frame["value"])) == {"val_knn_top1": 0.125, "knn_top1": 0.75}
    with pytest.raises(ValueError, match="both the test and the validation split"):
        store.replace_all_metrics(run_id, {"knn": ({"knn_top1": 0.5, "val_knn_top1": 0.5}, {})})


def test_eval_on_validation_refuses_a_run_without_a_validation_split(tmp_path, registry, tiny_cfg):
    from ssl_bench.config import config_to_json
    from ssl_bench.run import evaluate_run

    (tmp_path / "config.json").write_text(config_to_json(tiny_cfg("mae")))
    with pytest.raises(ConfigError, match="trained without a validation split.*--set dataset.val_fraction=0.1"):
        evaluate_run(tmp_path, None, torch.device("cpu"), registry=registry, split="val")
