"""Shared fixtures: tiny configs so every end-to-end test trains in seconds on CPU."""

from __future__ import annotations


import pytest
import torch

# One thread: on a shared 2-core machine two OpenMP threads per process make tiny ops ~100x slower.
torch.set_num_threads(1)

# A tiny backbone (width 32, depth 2) on a small balanced subset of digits.
TINY_SET = [
    "backbone.embed_dim=32",
    "backbone.depth=2",
    "backbone.num_heads=2",
    "dataset.limit_train=256",
    "dataset.limit_test=128",
    "train.batch_size=64",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "eval.linear.epochs=5",
    "eval.linear.warmup_epochs=1",
]


@pytest.fixture(scope="session")
def registry():
    from ssl_bench.registry import get_registry

    return get_registry()


@pytest.fixture
def tiny_cfg(registry, tmp_path):
    """Factory: resolved config for `method` with the tiny settings and output under tmp_path."""
    from ssl_bench.runner import method_config

    def make(method: str, *extra: str, backbone: str = "vit-nano"):
        return method_config(
            method, registry, cli={"backbone.name": backbone, "out": str(tmp_path / "runs")},
            set_items=[*TINY_SET, *extra],
        )

    return make
