"""A third-party plugin package, pip-installed, registers methods that train and are ranked, and
parts the built-in methods use: the example package registers RotNet and SimSiam (the latter built
from the core's joint-embedding parts), a block-masking corruption and a Sobel-edge target."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ssl-bench-example"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """The example plugin pip-installed into a temporary folder, never into the running venv, so an
    interrupted test run leaves nothing behind there. It is built from a copy of its source (the build
    writes build/ and *.egg-info beside the source). The CLI subprocesses find it, its entry points
    included, through PYTHONPATH (see _cli)."""
    tmp = tmp_path_factory.mktemp("example")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)]
    subprocess.run(pip, check=True, capture_output=True)
    assert (target / "ssl_bench_example" / "__init__.py").is_file()
    return target


def _cli(*args: str, cwd: Path, site: Path) -> subprocess.CompletedProcess:
    """``ssl-bench ARGS`` with the packages installed in ``site`` importable."""
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([str(BIN / "ssl-bench"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_example_plugin_trains_and_appears_on_leaderboard(installed_example, tmp_path):
    listing = _cli("list", cwd=tmp_path, site=installed_example)
    assert listing.returncode == 0, listing.stderr
    for name in ("rotnet", "simsiam"):
        row = [line for line in listing.stdout.splitlines() if f" {name} " in f" {line} "]
        assert row and row[0].split()[0] == "method" and row[0].split()[-1] == "ssl-bench-example", listing.stdout
    run = _cli(
        "run", "rotnet", "simsiam", "--backbone", "vit-nano", "--epochs", "1", "--out", "runs",
        "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
        "dataset.limit_train=256", "dataset.limit_test=128", "train.batch_size=64",
        "eval.linear.epochs=3", "eval.linear.warmup_epochs=1", cwd=tmp_path, site=installed_example,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| rotnet" in run.stdout and "| simsiam" in run.stdout and "| pixels" in run.stdout


@pytest.mark.slow
def test_builtin_methods_use_the_plugins_corruption_and_target(installed_example, tmp_path):
    """The issue's user story: a pip-installed third-party corruption and target are used by the
    built-in mae and ldae through --set, train, and land on the leaderboard."""
    run = _cli(
        "run", "mae", "ldae", "--backbone", "vit-nano", "--epochs", "1", "--out", "runs",
        "--set", "method.corruption.name=block-masking", "method.target.name=sobel-edges",
        "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
        "dataset.limit_train=256", "dataset.limit_test=128", "train.batch_size=64",
        "eval.linear.epochs=3", "eval.linear.warmup_epochs=1", cwd=tmp_path, site=installed_example,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| mae" in run.stdout and "| ldae" in run.stdout
    import json

    for method in ("mae", "ldae"):
        cfg = json.loads((tmp_path / "runs" / "digits" / "vit-nano" / f"{method}-s0" / "config.json").read_text())
        assert cfg["method"]["corruption"]["name"] == "block-masking" and cfg["method"]["target"]["name"] == "sobel-edges"
        features = json.loads((tmp_path / "runs" / "digits" / "vit-nano" / f"{method}-s0" / "metrics.json").read_text())
        parts = features["linear"]["protocol"]["features"]["parts"]
        assert parts["corruption"]["name"] == "block-masking" and parts["target"] == {"name": "sobel-edges"}


def _example_module(monkeypatch: pytest.MonkeyPatch, name: str):
    import importlib

    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module(f"ssl_bench_example.{name}")


def test_block_masking_removes_whole_blocks_and_exactly_the_ratio(monkeypatch):
    import torch

    BlockMasking = _example_module(monkeypatch, "block_masking").BlockMasking
    z0 = torch.zeros(8, 196, 4)  # a 14 x 14 grid
    a = BlockMasking(0.4)(z0, torch.Generator().manual_seed(0))
    b = BlockMasking(0.4)(z0, torch.Generator().manual_seed(0))
    assert torch.equal(a.mask, b.mask)  # reproducible from the generator
    assert a.ids_keep.shape == (8, 117) and a.mask.sum(1).tolist() == [79.0] * 8  # int(196 * 0.6) = 117 kept
    kept = torch.zeros(8, 196).scatter_(1, a.ids_keep, 1.0)
    assert torch.equal(kept, 1 - a.mask)
    grid = a.mask.view(8, 14, 14)  # blocks: a removed token mostly has removed 4-neighbours
    neighbours = (grid[:, 1:, :] * grid[:, :-1, :]).sum() + (grid[:, :, 1:] * grid[:, :, :-1]).sum()
    random_pairs = 2 * 14 * 13 * 8 * (79 / 196) ** 2  # expected for independent masking at the same ratio
    assert neighbours > 1.8 * random_pairs


def test_sobel_target_is_edge_magnitude(monkeypatch):
    import torch

    from ssl_bench.components.base import Corrupted

    SobelTarget = _example_module(monkeypatch, "sobel_target").SobelTarget
    img = torch.zeros(1, 1, 4, 4)
    img[..., 2:] = 1.0  # a vertical edge between columns 1 and 2
    target, weight = SobelTarget(patch_size=2, norm=False)(img, None, Corrupted())
    assert weight is None and target.shape == (1, 4, 4)
    edges = torch.tensor([[0.0, 4.0, 4.0, 0.0]] * 4)  # |gx| = 1 + 2 + 1 on both sides of the edge
    torch.testing.assert_close(target, edges.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(1, 4, 4))


def _simsiam(monkeypatch: pytest.MonkeyPatch, *extra: str):
    """A tiny SimSiam built from the example's source (no pip install): registered explicitly
    unless the installed example already provides it."""
    import importlib

    from ssl_bench.data.base import DatasetInfo
    from ssl_bench.registry import build_registry
    from ssl_bench.run import build_method, method_config

    monkeypatch.syspath_prepend(str(EXAMPLE))
    reg = build_registry()
    if "simsiam" not in reg.names("method"):
        reg = build_registry(extra_modules=[("ssl-bench-example", importlib.import_module("ssl_bench_example"))])
    tiny = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "train.batch_size=16", *extra]
    cfg = method_config("simsiam", reg, cli={"backbone.name": "vit-nano"}, set_items=tiny)
    info = DatasetInfo("random", 10, 3, 8, (0.5,) * 3, (0.25,) * 3, default_patch_size=2)
    return build_method(cfg, reg, info)


def test_example_simsiam_heads_groups_and_step(monkeypatch):
    """SimSiam from the core parts: paper-shaped heads, the predictor alone in a fixed-lr group,
    a finite negative-cosine loss whose gradient reaches encoder, projector and predictor."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = _simsiam(monkeypatch)
    assert model.batch_coupled_loss
    proj_bns = [m for m in model.projector if isinstance(m, nn.BatchNorm1d)]
    assert len(proj_bns) == 3 and not proj_bns[-1].affine  # BN on every layer, output BN
    pred = model.predictor
    assert isinstance(pred[-1], nn.Linear) and pred[-1].bias is not None  # plain Linear out
    assert pred[0].out_features < pred[0].in_features  # bottleneck (512 -> 128 on vit-nano)

    groups = model.param_groups(0.1)
    assert [g.get("fixed_lr", False) for g in groups] == [False, True]
    assert all(g["weight_decay"] == 0.1 for g in groups)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.predictor.parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # no parameter twice

    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    model.train()
    out = model(images, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(2))
    assert torch.isfinite(out.loss) and -1.0 <= out.loss.item() <= 1.0
    assert 0.0 < float(out.logs["z_std"]) < 1.0
    out.loss.backward()
    for part in (model.backbone.vit.blocks, model.projector, model.predictor):
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in part.parameters())
    views = torch.randint(0, 256, (16, 2, 3, 8, 8), dtype=torch.uint8)  # cropped by a loader
    assert torch.isfinite(model(views, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(3)).loss)

    plain = _simsiam(monkeypatch, "method.fix_pred_lr=False")
    assert [g.get("fixed_lr", False) for g in plain.param_groups(0.1)] == [False, False]


def test_first_party_plugins_are_not_a_bare_plugins_package():
    import importlib.util

    assert importlib.util.find_spec("ssl_bench_plugins.mae") is not None
    assert importlib.util.find_spec("plugins") is None or "site-packages" not in str(importlib.util.find_spec("plugins").origin)
