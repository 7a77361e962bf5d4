"""The Table-4 recipes in benchmarks/table4 resolve against their method's config and carry the
paper's settings (l-DAE App. A, §5; facebookresearch/mae PRETRAIN.md, main_linprobe.py;
facebookresearch/moco-v3 CONFIG.md); the ViT-B ones build at full size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_bench.data.base import DatasetInfo
from ssl_bench.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from ssl_bench.results.leaderboard import PAPER_EPOCHS
from ssl_bench.run.assemble import build_method, method_config

TABLE4 = Path(__file__).resolve().parents[1] / "benchmarks" / "table4"
RECIPES = sorted(TABLE4.glob("*_vit_[bl].py"))

# (global batch, base lr, warm-up epochs, weight decay, betas, image size) per method
PAPER = {
    "mae": (4096, 1.5e-4, 40, 0.05, (0.9, 0.95), 224),
    "mocov3": (4096, 1.5e-4, 40, 0.1, (0.9, 0.999), 224),
    "ldae": (2048, 1e-4, 100, 0.0, (0.9, 0.999), 256),
}


def _method_and_backbone(path: Path) -> tuple[str, str]:
    method, _, size = path.stem.rpartition("_vit_")
    return method, f"vit-{size}"


def test_every_cell_has_a_recipe() -> None:
    assert {p.stem for p in RECIPES} == {f"{m}_vit_{s}" for m in PAPER for s in "bl"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_resolves_to_the_paper_setting(path: Path, registry) -> None:
    method, backbone = _method_and_backbone(path)
    cfg = method_config(method, registry, user_config=path)  # unknown keys would raise here
    batch, blr, warmup, wd, betas, size = PAPER[method]
    assert cfg.method.name == method and cfg.backbone.name == backbone and cfg.backbone.patch_size == 16
    assert cfg.dataset.name == "imagenet-1k" and cfg.dataset.image_size == size
    assert cfg.train.epochs == PAPER_EPOCHS[method]
    assert (cfg.train.batch_size, cfg.train.blr, cfg.train.warmup_epochs) == (batch, blr, warmup)
    assert cfg.train.weight_decay == wd and tuple(cfg.train.betas) == betas
    lin = cfg.eval.linear
    assert (lin.optimizer, lin.blr, lin.batch_size, lin.epochs, lin.warmup_epochs) == ("lars", 0.1, 16384, 90, 10)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.endswith("_vit_b")], ids=lambda p: p.stem)
def test_vit_b_recipe_builds_at_paper_size(path: Path, registry) -> None:
    method, _ = _method_and_backbone(path)
    cfg = method_config(method, registry, user_config=path)
    size = cfg.dataset.image_size
    info = DatasetInfo("imagenet-1k", 1000, 3, size, IMAGENET_MEAN, IMAGENET_STD, 16)
    model = build_method(cfg, registry, info)
    assert model.backbone.embed_dim == 768 and model.backbone.num_patches == (size // 16) ** 2
    if method == "ldae":  # a DiT: ViT-B encoder + a decoder of the same size; the paper counts the encoder
        assert model.backbone.encoder_depth == 12 and model.backbone.depth == 24
        n_params = model.backbone.encoder_params()
        assert 86e6 < n_params < 110e6, n_params  # ViT-B blocks + adaLN-Zero modulation and t-MLPs
    else:
        n_params = sum(p.numel() for p in model.backbone.parameters())
        assert 85e6 < n_params < 90e6, n_params  # ViT-B/16: 86M
    if method == "mae":
        assert model.decoder.embed.out_features == 512 and len(model.decoder.blocks) == 8
    if method == "mocov3":
        widths = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert widths.count(4096) >= 3 and 256 in widths
