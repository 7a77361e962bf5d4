"""The training loop's gradient accumulation: train.accum_iter micro-batches per optimiser step
compute the same update as one batch of train.batch_size, for a loss that is a per-sample mean."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import Tensor

from ssl_bench.components.base import Method, StepOutput
from ssl_bench.data.base import DatasetInfo, TensorSplit
from ssl_bench.distributed import DistContext
from ssl_bench.run import build_backbone
from ssl_bench.train.engine import optimizer_steps
from ssl_bench.train.loop import build_optimizer, train

CPU = DistContext(0, 1, 0, torch.device("cpu"))
INFO = DatasetInfo("random", 10, 1, 8, (0.5,), (0.25,), 2)


class MeanFeatureLoss(Method):
    """A loss with no cross-sample term and no randomness: mean over samples of ||features||^2 / D,
    so a batch's loss is the average of its halves' losses and accumulation must be exact."""

    default_config = ""

    def training_step(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> StepOutput:
        x = images.float() / 255.0  # [N, 1, 8, 8]
        feats = self.backbone.features(x, pool="avg")  # [N, D]
        return StepOutput(loss=feats.pow(2).mean())

    def probe_features(self, images: Tensor) -> Tensor:
        return self.backbone.features(images.float() / 255.0, pool="avg")


class CoupledLoss(MeanFeatureLoss):
    batch_coupled_loss = True


def harness_cfg(tmp_path, *extra: str) -> Any:
    """The harness defaults only (no method's default config), tiny backbone, 48 images in steps of
    16: the other tests/test_train_*.py build on this so they do not depend on any plugin."""
    from ssl_bench.config import load_config

    cfg = load_config(
        None, cli={"backbone.name": "vit-nano", "out": str(tmp_path / "runs")},
        set_items=[
            "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
            "train.batch_size=16", "train.epochs=2", "train.warmup_epochs=1", *extra,
        ],
    )
    cfg.method = {"name": "toy"}  # what the runner adds; the resume hint names it
    return cfg


def make_run(tmp_path, method_cls: type[Method], *extra: str, n: int = 48) -> tuple[Method, TensorSplit, Any, Any]:
    """(method, split, cfg, run_dir): a fresh method with the same initial weights on every call
    (seeded), random uint8 8x8 images and a new run directory under ``tmp_path``."""
    from ssl_bench.registry import get_registry

    cfg = harness_cfg(tmp_path, *extra)
    torch.manual_seed(0)
    method = method_cls(cfg, build_backbone(cfg, get_registry(), INFO), INFO)
    g = torch.Generator().manual_seed(1)
    split = TensorSplit(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10)
    run_dir = tmp_path / f"run-{sum(1 for p in tmp_path.iterdir() if p.name.startswith('run-'))}"
    run_dir.mkdir()
    return method, split, cfg, run_dir


def _train(
    tiny_cfg: Any, tmp_path, method_cls: type[Method], *extra: str, grads: list[list[Tensor]] | None = None
) -> tuple[Method, Any, list[Tensor]]:
    """Train ``method_cls`` for 2 epochs of 3 steps; ``grads`` collects the gradients each
    optimiser step sees (Adam is invariant to a gradient's scale, so the weights alone would not
    show a missing 1 / accum_iter)."""
    cfg = tiny_cfg("mae", "train.batch_size=16", "train.epochs=2", "train.warmup_epochs=1", *extra)
    torch.manual_seed(0)
    from ssl_bench.registry import get_registry

    method = method_cls(cfg, build_backbone(cfg, get_registry(), INFO), INFO)
    g = torch.Generator().manual_seed(1)
    split = TensorSplit(torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(48) % 10)
    run_dir = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    run_dir.mkdir()
    initial = [p.detach().clone() for p in method.parameters()]
    if grads is None:
        return method, train(method, split, cfg, run_dir, CPU), initial
    from ssl_bench.train import loop

    def capturing(m: Method, tcfg: Any, batch: int):
        opt, lr = build_optimizer(m, tcfg, batch)
        opt.register_step_pre_hook(lambda *_: grads.append([p.grad.clone() for p in m.parameters() if p.grad is not None]))
        return opt, lr

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_optimizer", capturing)
        return method, train(method, split, cfg, run_dir, CPU), initial


def test_optimizer_steps_groups_micro_batches_and_drops_a_partial_group() -> None:
    micro = [(torch.tensor([i]), torch.tensor([i])) for i in range(7)]
    groups = list(optimizer_steps(micro, 2, 3))
    assert [[int(x) for x, _ in g] for g in groups] == [[0, 1], [2, 3], [4, 5]]
    assert len(list(optimizer_steps(micro, 2, 4))) == 3  # the 7th micro-batch alone is not a step
    assert len(list(optimizer_steps(micro, 1, 7))) == 7


@pytest.mark.parametrize("accum", [2, 4])
def test_accumulation_matches_one_large_batch(tiny_cfg, tmp_path, accum: int) -> None:
    g_one: list[list[Tensor]] = []
    g_acc: list[list[Tensor]] = []
    one, res_one, initial = _train(tiny_cfg, tmp_path, MeanFeatureLoss, grads=g_one)
    acc, res_acc, _ = _train(tiny_cfg, tmp_path, MeanFeatureLoss, f"train.accum_iter={accum}", grads=g_acc)
    assert len(g_one) == len(g_acc) == 6
    for step_one, step_acc in zip(g_one, g_acc, strict=True):  # the averaged gradient, not the sum
        for a, b in zip(step_one, step_acc, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    assert res_acc.steps == res_one.steps == 2 * (48 // 16)  # optimiser steps, not micro-batches
    assert any(not torch.equal(a, p0) for a, p0 in zip(one.parameters(), initial, strict=True))  # it trained
    for (name, a), b in zip(one.named_parameters(), acc.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert res_acc.final_loss == pytest.approx(res_one.final_loss, rel=1e-5)


def test_accumulation_changes_nothing_when_one(tiny_cfg, tmp_path) -> None:
    a, _, _ = _train(tiny_cfg, tmp_path, MeanFeatureLoss)
    b, _, _ = _train(tiny_cfg, tmp_path, MeanFeatureLoss, "train.accum_iter=1")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_accumulation_checks_divisibility(tiny_cfg, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"not divisible by 1 processes x 3 accumulation.*multiple of 3"):
        _train(tiny_cfg, tmp_path, MeanFeatureLoss, "train.accum_iter=3")
    with pytest.raises(ValueError, match=r"train.accum_iter=-1 is invalid: expected an integer >= 1"):
        _train(tiny_cfg, tmp_path, MeanFeatureLoss, "train.accum_iter=-1")


def test_batch_coupled_loss_is_warned_about(tiny_cfg, tmp_path, caplog, registry) -> None:
    assert registry.get("method", "mocov3").batch_coupled_loss
    assert not registry.get("method", "mae").batch_coupled_loss
    with caplog.at_level(logging.WARNING, logger="ssl_bench.train"):
        _train(tiny_cfg, tmp_path, CoupledLoss, "train.accum_iter=2")
    assert "not equivalent to one batch of 16" in caplog.text
