"""Config resolution order and typo protection."""

from __future__ import annotations

import pytest

from ssl_bench.config import parse_set_items
from ssl_bench.errors import ConfigError
from ssl_bench.run import method_config


def test_resolution_order(registry, tmp_path):
    user = tmp_path / "user.py"
    user.write_text("train = dict(epochs=7, blr=2e-4)\nmethod = dict(corruption=dict(mask_ratio=0.6))\n")
    cfg = method_config("mae", registry, user_config=user, cli={"train.epochs": 3}, set_items=["train.blr=1e-3"])
    assert cfg.train.epochs == 3  # flag beats file
    assert cfg.train.blr == 1e-3  # --set beats file
    assert cfg.method.corruption.mask_ratio == 0.6  # file beats method default
    assert cfg.train.betas == (0.9, 0.95)  # method default beats harness default
    assert cfg.dataset.name == "digits"  # harness default


def test_unknown_key_is_a_clear_error(registry):
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'.*known keys there:.*epochs"):
        method_config("mae", registry, set_items=["train.epoch=3"])


def test_set_parses_literals():
    assert parse_set_items(["a=1", "b=(0.2, 1.0)", "c=vit-b", "d=None"]) == {"a": 1, "b": (0.2, 1.0), "c": "vit-b", "d": None}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_items(["train.epochs"])


def test_missing_config_file(registry, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        method_config("mae", registry, user_config=tmp_path / "nope.py")


def test_dataset_option_from_another_dataset_is_a_clear_error(registry):
    from pathlib import Path

    from ssl_bench.run import load_dataset

    recipe = Path(__file__).resolve().parents[1] / "benchmarks" / "table4" / "mae_vit_b.py"
    cfg = method_config("mae", registry, user_config=recipe, cli={"dataset.name": "digits"})
    with pytest.raises(ConfigError, match=r"'digits' does not take option\(s\) image_size, num_workers.*"
                                          r"--set dataset.image_size=None dataset.num_workers=None"):
        load_dataset(cfg, registry)
    cfg = method_config("mae", registry, user_config=recipe, cli={"dataset.name": "digits"},
                        set_items=["dataset.image_size=None", "dataset.num_workers=None"])
    assert load_dataset(cfg, registry).info.name == "digits"  # the suggested fix works


def test_imagenet1k_takes_the_folder_loaders_options():
    from mmengine.config import Config

    from ssl_bench.data.datasets import load_imagenet1k
    from ssl_bench.methods.parts import keyword_options
    from ssl_bench.registry import get_registry
    from ssl_bench.run import load_dataset

    assert {"image_size", "num_workers", "limit_train"} <= keyword_options(load_imagenet1k)[0]
    cfg = Config(dict(dataset=dict(name="imagenet-1k", data_root="nowhere", download=True)))
    with pytest.raises(ConfigError, match=r"dataset 'imagenet-1k' does not take option\(s\) download .*dataset.download=None"):
        load_dataset(cfg, get_registry())
