"""train.optimizer (adamw / sgd / lars), train.momentum, and the per-group lr_scale / fixed_lr options
a Method.param_groups group may carry."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from timm.optim import Lars

from ssl_bench.components.base import Method
from ssl_bench.errors import ConfigError
from ssl_bench.train import loop
from ssl_bench.train.optim import build_optimizer, scheduled_lr
from tests.test_train_loop import CPU, MeanFeatureLoss, make_run


class ScaledGroups(MeanFeatureLoss):
    """Group 0 follows the schedule, group 1 runs at half of it, group 2 keeps the base lr
    (SimSiam's fixed-lr predictor)."""

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        params = [p for p in self.parameters() if p.requires_grad]
        third = len(params) // 3
        return [
            {"params": params[:third], "weight_decay": weight_decay},
            {"params": params[third : 2 * third], "weight_decay": weight_decay, "lr_scale": 0.5},
            {"params": params[2 * third :], "weight_decay": 0.0, "fixed_lr": True},
        ]


def _trainable(method: Method) -> set[int]:
    return {id(p) for p in method.parameters() if p.requires_grad}


def test_adamw_is_the_default_and_uses_the_methods_groups(tmp_path) -> None:
    method, _, cfg, _ = make_run(tmp_path, MeanFeatureLoss)
    assert cfg.train.optimizer == "adamw"
    opt, lr = build_optimizer(method, cfg.train, 16)
    assert type(opt) is torch.optim.AdamW and lr == pytest.approx(cfg.train.blr * 16 / 256)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.train.weight_decay, 0.0]
    assert opt.param_groups[0]["betas"] == tuple(cfg.train.betas)


def test_sgd_takes_train_momentum(tmp_path) -> None:
    method, _, cfg, _ = make_run(tmp_path, MeanFeatureLoss, "train.optimizer=sgd", "train.momentum=0.8")
    opt, _ = build_optimizer(method, cfg.train, 16)
    assert type(opt) is torch.optim.SGD
    assert all(g["momentum"] == 0.8 for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [cfg.train.weight_decay, 0.0]


def test_lars_neither_decays_nor_adapts_biases_and_norms(tmp_path) -> None:
    method, _, cfg, _ = make_run(tmp_path, MeanFeatureLoss, "train.optimizer=lars", "train.weight_decay=0.1")
    opt, lr = build_optimizer(method, cfg.train, 16)
    assert isinstance(opt, Lars)
    seen = set()
    for group in opt.param_groups:
        ndims = {p.ndim > 1 for p in group["params"]}
        assert len(ndims) == 1  # every group is all matrices or all vectors
        if ndims == {True}:
            assert group["always_adapt"] and group["weight_decay"] in (0.1, 0.0)
        else:
            assert not group["always_adapt"] and group["weight_decay"] == 0.0
        seen |= {id(p) for p in group["params"]}
    assert seen == _trainable(method)
    assert any(g["always_adapt"] and g["weight_decay"] == 0.1 for g in opt.param_groups)

    # one step: a vector moves by plain SGD (-lr * grad); a matrix by the trust-scaled, decayed grad
    for group in opt.param_groups:
        group["lr"] = 0.5
    vec = next(p for p in method.parameters() if p.ndim == 1)
    mat = next(p for p in method.parameters() if p.ndim > 1)
    for p in method.parameters():
        p.grad = torch.full_like(p, 0.01)
    vec0, mat0 = vec.detach().clone(), mat.detach().clone()
    opt.step()
    torch.testing.assert_close(vec.detach(), vec0 - 0.5 * 0.01)
    assert not torch.allclose(mat.detach(), mat0 - 0.5 * 0.01)


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_sgd_and_lars_train(tmp_path, name: str) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, MeanFeatureLoss, f"train.optimizer={name}", "train.blr=1.0")
    before = [p.detach().clone() for p in method.parameters()]
    result = loop.train(method, split, cfg, run_dir, CPU)
    assert result.steps == 6 and torch.isfinite(torch.tensor(result.final_loss))
    assert any(not torch.equal(a, b) for a, b in zip(method.parameters(), before, strict=True))


@pytest.mark.parametrize(
    ("setting", "pattern"),
    [
        ("train.optimizer=adam", r"train\.optimizer='adam' is not supported; use one of adamw, sgd, lars"),
        ("train.momentum=-0.1", r"train\.momentum=-0.1 is invalid; use a number in \[0, 1\)"),
        ("train.momentum=1.5", r"train\.momentum=1.5 is invalid"),
    ],
)
def test_bad_optimizer_settings_are_one_line_config_errors(tmp_path, setting: str, pattern: str) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, MeanFeatureLoss, setting)
    with pytest.raises(ConfigError, match=pattern) as info:
        loop.train(method, split, cfg, run_dir, CPU)
    assert "\n" not in str(info.value)
    assert not (run_dir / "checkpoint.pt").exists()


def test_lr_scale_follows_the_schedule_and_fixed_lr_keeps_the_base_lr(tmp_path, monkeypatch) -> None:
    method, split, cfg, run_dir = make_run(tmp_path, ScaledGroups, "train.epochs=3")
    lrs: list[list[float]] = []

    def recording(m: Method, tcfg: Any, batch: int):
        opt, lr = build_optimizer(m, tcfg, batch)
        opt.register_step_pre_hook(lambda o, *_: lrs.append([g["lr"] for g in o.param_groups]))
        return opt, lr

    monkeypatch.setattr(loop, "build_optimizer", recording)
    loop.train(method, split, cfg, run_dir, CPU)
    base = cfg.train.blr * 16 / 256
    assert len(lrs) == 9
    assert lrs[0][0] == 0.0 and max(s[0] for s in lrs) > lrs[-1][0] > 0.0  # warm-up from 0, then cosine decay
    for sched, scaled, fixed in lrs:
        assert scaled == 0.5 * sched  # warm-up and cosine included
        assert fixed == base  # no warm-up, no decay
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["lr"] == lrs[-1][0]  # the schedule's lr is reported, not a scaled or fixed group's


def test_reported_lr_ignores_a_fixed_or_scaled_first_group() -> None:
    p = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    opt = torch.optim.SGD([
        {"params": [p[0]], "fixed_lr": True, "lr": 9.0},
        {"params": [p[1]], "lr_scale": 0.5, "lr": 0.5},
        {"params": [p[2]], "lr": 1.0},
    ], lr=1.0)
    assert scheduled_lr(opt) == 1.0


def test_a_malformed_group_option_names_the_method(tmp_path) -> None:
    class Bad(MeanFeatureLoss):
        def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
            return [{"params": list(self.parameters()), "lr_scale": -1}]

    method, _, cfg, _ = make_run(tmp_path, Bad)
    with pytest.raises(ValueError, match=r"Bad.param_groups\(\)\[0\] has lr_scale=-1"):
        build_optimizer(method, cfg.train, 16)
