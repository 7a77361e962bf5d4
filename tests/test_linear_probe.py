"""Linear probe (MAE protocol): it learns, it is deterministic, and it is MAE's recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from ssl_bench.eval.base import Evaluator
from ssl_bench.eval.linear_probe import LinearProbeEvaluator
from ssl_bench.eval.probe_head import (
    LinearProbeProtocol,
    build_linear_head,
    build_lr_scheduler,
    build_optimizer,
    scaled_lr,
)


def _separable_problem(n=2000, m=500, d=16, c=4, seed=0):
    """labels = argmax(W x) for a random W: linearly separable by construction.

    Features get an offset and a scale so the parameter-free BN has real work to do.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g)  # [C, D]
    x = torch.randn(n + m, d, generator=g)  # [N + M, D]
    y = (x @ w.T).argmax(dim=1)  # [N + M]
    x = 5.0 * x + 3.0
    return x[:n], y[:n], x[n:], y[n:], c


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "sgd"},
        # AdamW's default blr (1e-3) is sized for real data sets with many more steps than the
        # ~700 this toy problem gets; a larger step recovers the labelling within them.
        {"optimizer": "adamw", "blr": 5e-2},
        # MAE's probe runs LARS at lr = 0.1 * 16384 / 256 = 6.4; the trust ratio makes the step
        # ~lr * 1e-3 * ||w||, so at lr 0.1 (batch 256) the head barely leaves its init.
        {"optimizer": "lars", "lr": 6.4},
    ],
    ids=lambda o: o["optimizer"],
)
def test_recovers_linearly_separable_labels(overrides):
    train, train_y, test, test_y, c = _separable_problem()
    res = LinearProbeEvaluator(LinearProbeProtocol(**overrides), seed=0)(train, train_y, test, test_y, c)
    assert res.metrics["linear_top1"] > 0.95, res.metrics
    assert res.metrics["linear_train_top1"] > 0.95, res.metrics


def test_deterministic_given_seed():
    train, train_y, test, test_y, c = _separable_problem(n=600, m=200)
    p = LinearProbeProtocol(epochs=5, warmup_epochs=1, batch_size=64)
    a, b, other = (LinearProbeEvaluator(p, seed=s) for s in (3, 3, 4))
    ra, rb, ro = (ev(train, train_y, test, test_y, c) for ev in (a, b, other))
    assert ra.metrics == rb.metrics
    for pa, pb in zip(a.last_head.parameters(), b.last_head.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.last_head[1].weight, other.last_head[1].weight)
    assert ra.protocol["seed"] == 3 and ro.protocol["seed"] == 4


def test_returns_the_test_predictions_behind_its_accuracy():
    train, train_y, test, test_y, c = _separable_problem(n=600, m=200)
    res = LinearProbeEvaluator(LinearProbeProtocol(epochs=3, warmup_epochs=1, batch_size=64), seed=0)(train, train_y, test, test_y, c)
    preds = res.predictions["linear_top1"]
    assert set(res.predictions) == {"linear_top1"} and preds.dtype == torch.long and preds.shape == (200,)
    assert (preds == test_y).double().mean().item() == res.metrics["linear_top1"]
    assert preds.device.type == "cpu"


def test_does_not_touch_global_rng():
    train, train_y, test, test_y, c = _separable_problem(n=200, m=50)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LinearProbeEvaluator(epochs=2, warmup_epochs=0)(train, train_y, test, test_y, c)
    assert torch.equal(torch.rand(3), expected)


def test_head_bn_has_no_affine_params_and_mae_init():
    head = build_linear_head(64, 10, generator=torch.Generator().manual_seed(0))
    bn, linear = head
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine
    assert bn.weight is None and bn.bias is None and bn.eps == 1e-6
    assert [p.shape for p in head.parameters()] == [torch.Size([10, 64]), torch.Size([10])]
    assert torch.all(linear.bias == 0)
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.15)
    # the trained head too
    train, train_y, test, test_y, c = _separable_problem(n=200, m=50)
    ev = LinearProbeEvaluator(epochs=2, warmup_epochs=0)
    ev(train, train_y, test, test_y, c)
    assert sum(p.numel() for p in ev.last_head.parameters()) == 16 * c + c


def test_lr_scaling_rule():
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert scaled_lr(0.1, 16384) == pytest.approx(6.4)  # MAE's probe
    train, train_y, test, test_y, c = _separable_problem(n=300, m=50)
    fast = dict(epochs=2, warmup_epochs=0)
    rec = LinearProbeEvaluator(batch_size=128, **fast)(train, train_y, test, test_y, c).protocol
    assert rec["lr"] == pytest.approx(0.05) and rec["blr"] == 0.1 and rec["batch_size"] == 128
    # batch capped to N: the rule uses the batch actually used
    rec = LinearProbeEvaluator(**fast)(train[:100], train_y[:100], test, test_y, c).protocol
    assert rec["batch_size"] == 100 and rec["batch_size_requested"] == 256
    assert rec["lr"] == pytest.approx(0.1 * 100 / 256)
    rec = LinearProbeEvaluator(lr=0.3, **fast)(train, train_y, test, test_y, c).protocol
    assert rec["lr"] == 0.3 and rec["lr_rule"] == "given"
    rec = LinearProbeEvaluator(optimizer="adamw", **fast)(train, train_y, test, test_y, c).protocol
    assert rec["blr"] == 1e-3  # per-optimizer default


def test_protocol_record_contents():
    train, train_y, test, test_y, c = _separable_problem(n=300, m=50)
    ev = LinearProbeEvaluator(LinearProbeProtocol(epochs=3, warmup_epochs=1, batch_size=100), seed=7)
    assert isinstance(ev, Evaluator) and ev.name == "linear"
    res = ev(train, train_y, test, test_y, c)
    rec = json.loads(json.dumps(res.to_dict()))["protocol"]
    assert rec["evaluator"] == "linear"
    assert rec["optimizer"] == "lars" and rec["optimizer_impl"] == "timm.optim.Lars"
    assert rec["momentum"] == 0.9 and rec["trust_coefficient"] == 0.001 and rec["weight_decay"] == 0
    assert rec["lars_matches_mae"] is True
    assert rec["epochs"] == 3 and rec["warmup_epochs"] == 1 and rec["seed"] == 7
    assert rec["steps_per_epoch"] == 3 and rec["warmup_steps"] == 3 and rec["total_steps"] == 9
    assert rec["bn_eps"] == 1e-6 and rec["init_std"] == 0.01
    assert rec["n_train"] == 300 and rec["n_test"] == 50 and rec["dim"] == 16 and rec["num_classes"] == c
    assert "final" in rec["reported"]
    assert set(res.metrics) == {"linear_top1", "linear_train_top1", "linear_final_loss"}


def test_defaults_are_mae():
    p = LinearProbeProtocol()
    assert (p.epochs, p.warmup_epochs, p.batch_size, p.resolved_blr) == (90, 10, 256, 0.1)
    assert (p.optimizer, p.weight_decay, p.momentum, p.trust_coefficient) == ("lars", 0.0, 0.9, 0.001)


def _mae_lars_step(params, state, lr, wd=0.0, momentum=0.9, tc=0.001):
    """MAE util/lars.py, re-stated: 1-D params get plain momentum SGD; others are LARS-adapted."""
    with torch.no_grad():
        for p in params:
            dp = p.grad
            if p.ndim > 1:
                dp = dp.add(p, alpha=wd)
                pn, un = torch.norm(p), torch.norm(dp)
                q = torch.where(pn > 0, torch.where(un > 0, tc * pn / un, torch.ones_like(pn)),
                                torch.ones_like(pn))
                dp = dp.mul(q)
            mu = state.setdefault(p, torch.zeros_like(p))
            mu.mul_(momentum).add_(dp)
            p.add_(mu, alpha=-lr)


def test_lars_matches_mae_reference():
    g = torch.Generator().manual_seed(0)
    head_a = build_linear_head(8, 3, generator=g)
    head_b = build_linear_head(8, 3)
    head_b.load_state_dict(head_a.state_dict())
    opt = build_optimizer(head_a, LinearProbeProtocol(), lr=0.5)
    mae_state: dict = {}
    for _ in range(5):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        for head in (head_a, head_b):
            head.zero_grad()
            nn.functional.cross_entropy(head(x), y).backward()
        opt.step()
        _mae_lars_step(list(head_b.parameters()), mae_state, lr=0.5)
        for pa, pb in zip(head_a.parameters(), head_b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_schedule_matches_mae_adjust_learning_rate():
    """MAE: epoch = it / iters_per_epoch + ep; warm-up lr * epoch / W, then half-cycle cosine."""
    head = build_linear_head(4, 2)
    base, epochs, warmup, ipe = 0.4, 6, 2, 5
    opt = build_optimizer(head, LinearProbeProtocol(), lr=base)
    sched = build_lr_scheduler(opt, epochs * ipe, warmup * ipe)
    for t in range(epochs * ipe):
        sched.step_update(t)
        e = t / ipe
        if e < warmup:
            want = base * e / warmup
        else:
            want = base * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))
        assert all(gr["lr"] == pytest.approx(want, abs=1e-12) for gr in opt.param_groups), t


def test_errors():
    train, train_y, test, test_y, c = _separable_problem(n=50, m=10)
    with pytest.raises(ValueError, match="unknown optimizer"):
        LinearProbeProtocol(optimizer="adam")
    with pytest.raises(ValueError, match="warmup_epochs=10 must be in"):
        LinearProbeProtocol(epochs=5)
    with pytest.raises(ValueError, match="at least 2 training samples"):
        LinearProbeEvaluator()(train[:1], train_y[:1], test, test_y, c)
    with pytest.raises(ValueError, match="feature dims differ"):
        LinearProbeEvaluator()(train, train_y, test[:, :3], test_y, c)
    with pytest.raises(ValueError, match="num_classes=2"):
        LinearProbeEvaluator()(train, train_y, test, test_y, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    train, train_y, test, test_y, c = _separable_problem()
    ev = LinearProbeEvaluator(optimizer="sgd")
    res = ev(train.cuda(), train_y.cuda(), test.cuda(), test_y.cuda(), c)
    assert res.protocol["device"] == "cuda" and res.metrics["linear_top1"] > 0.95
    assert next(ev.last_head.parameters()).device.type == "cuda"
