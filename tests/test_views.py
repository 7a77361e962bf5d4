"""Per-view crops from the full image: each method tells the data loader its crops (the papers'
RandomResizedCrop: MAE scale (0.2, 1) bicubic, one view; MoCo v3 two views, scale (0.08, 1),
bilinear; l-DAE the centre crop), a folder dataset crops them in its workers, and the training step
takes the pre-cropped views [N, V, C, S, S] without cropping again."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.data.crops import CropSpec
from ssl_bench.registry import get_registry
from ssl_bench.run import build_method, load_dataset, method_config
from tests.conftest import make_imagefolder

REG = get_registry()
TINY = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2"]




@pytest.mark.parametrize("method,expected", [
    ("mae", [CropSpec(32, (0.2, 1.0), (3 / 4, 4 / 3), "bicubic")]),
    ("ldae", [CropSpec.center(32)]),
    ("mocov3", [CropSpec(32, (0.08, 1.0), (3 / 4, 4 / 3), "bilinear")] * 2),
])
def test_each_method_names_the_papers_crops(method, expected):
    from ssl_bench.data.base import DatasetInfo

    info = DatasetInfo("folder", 2, 3, 32, (0.5,) * 3, (0.25,) * 3, default_patch_size=8)
    cfg = method_config(method, REG, cli={"backbone.name": "vit-nano"}, set_items=TINY)
    assert build_method(cfg, REG, info).train_views() == expected


@pytest.mark.parametrize("method", ["mae", "ldae", "mocov3"])
def test_folder_training_gets_precropped_views(method, tmp_path):
    root = make_imagefolder(tmp_path / "data")
    cfg = method_config(method, REG, cli={"backbone.name": "vit-nano", "dataset.name": "imagefolder", "dataset.data_root": str(root)},
                        set_items=[*TINY, "dataset.image_size=32", "dataset.num_workers=0", "eval.knn.ks=(5,)",
                                   "method.tokenizer.num_samples=500" if method == "ldae" else "seed=0"])
    data = load_dataset(cfg, REG)
    model = build_method(cfg, REG, data.info)
    model.prepare(data.train, torch.Generator().manual_seed(0))
    views = model.train_views()
    images, labels = next(iter(data.train.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0), views=views)))
    assert images.shape == (4, len(views), 3, 32, 32) and images.dtype == torch.uint8
    out = model(images, labels, torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss)
