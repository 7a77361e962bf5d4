"""Every registered method builds at ViT-B size (paper-scale heads/decoders) and takes a CPU step."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.data.base import DatasetInfo, TensorSplit
from ssl_bench.registry import get_registry
from ssl_bench.run import build_method, method_config
from ssl_bench.train.loop import build_optimizer, make_generator


@pytest.mark.slow
@pytest.mark.parametrize("method", get_registry().names("method"))
def test_vit_b_builds_and_steps_on_cpu(method, registry):
    cfg = method_config(method, registry, cli={"backbone.name": "vit-b", "train.batch_size": 4})
    info = DatasetInfo("random", 10, 3, 16, (0.5,) * 3, (0.25,) * 3, 4)  # 16 tokens keep it quick
    model = build_method(cfg, registry, info)
    assert model.backbone.embed_dim == 768
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4)
    gen = make_generator(torch.device("cpu"), 0, 0)
    model.prepare(TensorSplit(images, labels), gen)
    opt, _ = build_optimizer(model, cfg.train, 4)
    for group in opt.param_groups:
        group["lr"] = 1e-4
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = model(images, labels, gen).loss
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = [p for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
