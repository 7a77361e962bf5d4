"""Config resolution order, typo protection, and the default config files' inheritance."""

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


def _flat(tree, prefix=""):
    out = {}
    for k, v in dict(tree).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


DENOISING_PLUGINS = ("ldae", "ddm")
BASE_LINE = '_base_ = "../../ssl_bench/configs/denoising.py"'


@pytest.mark.parametrize("plugin", DENOISING_PLUGINS)
def test_denoising_defaults_inherit_one_base_and_repeat_none_of_it(plugin):
    """ddm and ldae are the core DenoisingMethod with different settings: their default configs
    inherit ssl_bench/configs/denoising.py and state only what differs from it."""
    import ast
    from pathlib import Path

    from mmengine.config import Config

    root = Path(__file__).resolve().parents[1]
    text = (root / "plugins" / plugin / "default_config.py").read_text()
    assert BASE_LINE in text.splitlines()
    base = _flat(Config.fromfile(str(root / "ssl_bench" / "configs" / "denoising.py")).to_dict())
    tree = ast.parse(text)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_base_")]
    own: dict = {}
    exec(compile(tree, plugin, "exec"), {}, own)  # the file's own keys, without its base
    repeated = [k for k, v in _flat(own).items() if k in base and base[k] == v]
    assert not repeated, f"plugins/{plugin}/default_config.py repeats the base's values: {repeated}"
    assert own["method"]["name"] == plugin


def test_denoising_base_resolves_from_the_installed_layout(tmp_path):
    """A wheel installs plugins/ as ssl_bench_plugins/ beside ssl_bench/ (pyproject.toml
    package-dir): the relative _base_ must find the base there as it does in the checkout."""
    import shutil
    from pathlib import Path

    from mmengine.config import Config

    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site-packages"
    (site / "ssl_bench" / "configs").mkdir(parents=True)
    shutil.copy2(root / "ssl_bench" / "configs" / "denoising.py", site / "ssl_bench" / "configs" / "denoising.py")
    for plugin in DENOISING_PLUGINS:
        (site / "ssl_bench_plugins" / plugin).mkdir(parents=True)
        shutil.copy2(root / "plugins" / plugin / "default_config.py", site / "ssl_bench_plugins" / plugin / "default_config.py")
        installed = Config.fromfile(str(site / "ssl_bench_plugins" / plugin / "default_config.py")).to_dict()
        checkout = Config.fromfile(str(root / "plugins" / plugin / "default_config.py")).to_dict()
        assert installed == checkout and installed["method"]["name"] == plugin
        assert installed["method"]["tokenizer"]["name"] == "patch-pca"  # from the base
