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
    from ssl_bench.run import method_config

    def make(method: str, *extra: str, backbone: str = "vit-nano"):
        return method_config(
            method, registry, cli={"backbone.name": backbone, "out": str(tmp_path / "runs")},
            set_items=[*TINY_SET, *extra],
        )

    return make


def make_imagefolder(root, classes: int = 2, per_class: int = 6, width: tuple[int, int] = (40, 64), height: tuple[int, int] = (30, 50)):
    """A small ImageNet-layout folder ``root/{train,val}/class<c>/<i>.jpg`` of random JPEGs of varied
    sizes (seeded); class c is 1/(c+1) as bright, so a probe has something to find."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                w, h = int(rng.integers(*width)), int(rng.integers(*height))
                pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(d / f"{i}.jpg", quality=90)
    return root
