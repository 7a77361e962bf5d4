"""The core joint-embedding parts: InfoNCE and negative-cosine losses, MLP heads, the momentum
schedule / update / encoder, the two-view augmentation (also on views pre-cropped by a loader).
The import boundaries are in tests/test_layout.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.components.heads import build_mlp
from ssl_bench.components.losses import (
    info_nce,
    negative_cosine,
    symmetric_info_nce,
    symmetric_negative_cosine,
)
from ssl_bench.components.momentum import MomentumEncoder, momentum_at, momentum_update_
from ssl_bench.data import augment as A

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _direct_ctr(q: torch.Tensor, k: torch.Tensor, t: float, rank: int = 0) -> torch.Tensor:
    """Written-out InfoNCE in float64: -mean_i log softmax(q_i . k / t)[N*rank + i], times 2t."""
    q = q.double() / q.double().norm(dim=1, keepdim=True)
    k = k.double() / k.double().norm(dim=1, keepdim=True)
    logits = q @ k.t() / t  # [N, M]
    n = q.shape[0]
    pos = logits[torch.arange(n), torch.arange(n) + n * rank]
    return (torch.logsumexp(logits, dim=1) - pos).mean() * 2 * t


def _images(n: int = 16, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------------ InfoNCE


def test_info_nce_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    q1, q2, k1, k2 = (torch.randn(12, 16, generator=g) * 3 for _ in range(4))
    t = 0.2
    assert float(info_nce(q1, k2, t)) == pytest.approx(float(_direct_ctr(q1, k2, t)), rel=1e-5)
    # the 2T factor: the plain cross-entropy times 0.4
    ce = F.cross_entropy(F.normalize(q1, dim=1) @ F.normalize(k2, dim=1).t() / t, torch.arange(12))
    assert float(info_nce(q1, k2, t)) == pytest.approx(0.4 * float(ce), rel=1e-5)
    # temperature 1.0 -> factor 2
    assert float(info_nce(q1, k2, 1.0)) == pytest.approx(float(_direct_ctr(q1, k2, 1.0)), rel=1e-5)
    # symmetric sum
    expect = _direct_ctr(q1, k2, t) + _direct_ctr(q2, k1, t)
    assert float(symmetric_info_nce(q1, q2, k1, k2, t)) == pytest.approx(float(expect), rel=1e-5)
    # keys are stop-gradient targets; scale of q/k does not matter (L2-normalised)
    qg = q1.clone().requires_grad_(True)
    kg = k2.clone().requires_grad_(True)
    info_nce(qg, kg, t).backward()
    assert kg.grad is None and qg.grad is not None
    assert float(info_nce(5 * q1, 0.1 * k2, t)) == pytest.approx(float(info_nce(q1, k2, t)), rel=1e-5)


def test_info_nce_rank_offset_with_global_keys():
    """rank r's queries have their positives at rows N*r + i of the global keys."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    t = 0.2
    per_rank = [info_nce(q[4 * r: 4 * r + 4], k, t, rank=r, gather=False) for r in range(2)]
    for r in range(2):
        assert float(per_rank[r]) == pytest.approx(float(_direct_ctr(q[4 * r: 4 * r + 4], k, t, rank=r)), rel=1e-5)
    assert float(sum(per_rank) / 2) == pytest.approx(float(info_nce(q, k, t)), rel=1e-5)
    with pytest.raises(ValueError):
        info_nce(q, k[:4], t, rank=1, gather=False)


def test_info_nce_is_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q.bfloat16(), k.bfloat16(), 0.2)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(_direct_ctr(q.bfloat16().float(), k.bfloat16().float(), 0.2)), rel=1e-5)


# ---------------------------------------------------------------------------- negative cosine


def test_negative_cosine_value_and_stop_gradient():
    g = torch.Generator().manual_seed(3)
    p1, p2, z1, z2 = (torch.randn(10, 6, generator=g) for _ in range(4))
    direct = -(p1.double() / p1.double().norm(dim=1, keepdim=True) * (z2.double() / z2.double().norm(dim=1, keepdim=True))).sum(1).mean()
    assert float(negative_cosine(p1, z2)) == pytest.approx(float(direct), rel=1e-6)
    assert float(negative_cosine(p1, 3.0 * p1)) == pytest.approx(-1.0, abs=1e-6)  # aligned: the minimum
    assert float(negative_cosine(p1, -p1)) == pytest.approx(1.0, abs=1e-6)
    sym = symmetric_negative_cosine(p1, p2, z1, z2)
    assert float(sym) == pytest.approx(0.5 * float(negative_cosine(p1, z2) + negative_cosine(p2, z1)), rel=1e-6)
    # stop-gradient: the targets z get no gradient, the predictions p do
    pg, zg = p1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    negative_cosine(pg, zg).backward()
    assert zg.grad is None and pg.grad is not None and float(pg.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------- heads


def test_mlp_heads_structure():
    proj = build_mlp(3, 32, 64, 16, last_bn=True)
    linears = [m for m in proj if isinstance(m, nn.Linear)]
    bns = [m for m in proj if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 64), (64, 16)]
    assert all(m.bias is None for m in linears)
    assert [m.affine for m in bns] == [True, True, False]
    assert sum(isinstance(m, nn.ReLU) for m in proj) == 2
    pred = build_mlp(2, 16, 64, 16, last_bn=False)
    assert not isinstance(pred[-1], nn.BatchNorm1d) and isinstance(pred[-1], nn.Linear)
    assert pred[-1].bias is None
    # SimSiam's predictor: bottleneck, plain last Linear with a bias
    simsiam_pred = build_mlp(2, 16, 4, 16, last_bn=False, last_bias=True)
    assert [type(m) for m in simsiam_pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert simsiam_pred[0].bias is None and simsiam_pred[-1].bias is not None
    assert simsiam_pred(torch.randn(5, 16)).shape == (5, 16)
    with pytest.raises(ValueError):
        build_mlp(2, 16, 4, 16, last_bn=True, last_bias=True)
    with pytest.raises(ValueError):
        build_mlp(0, 16, 4, 16)


# ---------------------------------------------------------------------------------- momentum


def test_momentum_schedule():
    for e_total in (1, 10, 300):
        assert momentum_at(0, e_total, 0.99) == pytest.approx(0.99, abs=1e-12)
        assert momentum_at(e_total / 2, e_total, 0.99) == pytest.approx(0.995, abs=1e-12)
        assert momentum_at(e_total, e_total, 0.99) == pytest.approx(1.0, abs=1e-12)
    ms = [momentum_at(e / 10, 3, 0.99) for e in range(31)]
    assert all(b >= a for a, b in zip(ms, ms[1:]))  # monotone
    assert momentum_at(5, 0, 0.9) == 0.9  # no schedule without a length


def test_momentum_update_is_exact_on_tiny_model():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    mom = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    with torch.no_grad():
        for p in mom.parameters():
            p.normal_()
    old = [p.detach().double().clone() for p in mom.parameters()]
    m = 0.9
    momentum_update_(list(mom.parameters()), list(base.parameters()), m)
    for p_k, p_old, p_q in zip(mom.parameters(), old, base.parameters()):
        expect = m * p_old + (1 - m) * p_q.detach().double()
        assert torch.allclose(p_k.double(), expect, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        momentum_update_(list(mom.parameters())[:1], list(base.parameters()), m)


def test_momentum_encoder_copies_freezes_and_updates_trainable_only():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    head = nn.Linear(6, 3)
    enc[0].bias.requires_grad_(False)  # frozen before the copy: never EMA-updated
    me = MomentumEncoder(enc, head)
    k_enc, k_head = me.modules
    assert k_enc is not enc and k_head is not head
    base, mom = me.base_parameters(), me.momentum_parameters()
    assert len(base) == len(mom) == 6 and me.num_updated == 5
    assert all(torch.equal(q, k) for q, k in zip(base, mom))  # same weights at the start
    assert not any(k.requires_grad for k in mom)
    assert enc[0].weight.requires_grad  # the originals keep their flags

    with torch.no_grad():  # move the originals, frozen bias included
        for q in base:
            q.add_(1.0)
    base_now = [q.detach().clone() for q in base]
    old = [k.detach().clone() for k in mom]
    me.update_(0.75)
    for q, k_old, k, q_now in zip(base, old, mom, base_now):
        expect = 0.75 * k_old + 0.25 * q_now if q.requires_grad else k_old
        assert torch.allclose(k, expect, rtol=0, atol=1e-6)
        assert torch.equal(q, q_now)  # the originals are not touched
    assert torch.equal(k_enc[0].bias, old[1])  # the frozen one did not move

    # the pairs stay valid after load_state_dict (in-place): m = 0 copies the originals
    k_enc.load_state_dict(enc.state_dict())
    with torch.no_grad():
        enc[0].weight.mul_(2.0)
    me.update_(0.0)
    assert torch.equal(k_enc[0].weight, enc[0].weight)
    with pytest.raises(ValueError):
        MomentumEncoder()


# ------------------------------------------------------------------------ two-view augment


def test_two_view_augment_is_the_byol_pair_stacked():
    """Same numbers as view 1 then view 2 of byol_view_pair on one generator, stacked [2N, ...]."""
    x = _images(12, 3, 16)
    tv = A.TwoViewAugment.byol(8, scale=(0.3, 1.0))
    v1, v2 = A.byol_view_pair(8, scale=(0.3, 1.0))
    assert (tv.view1, tv.view2) == (v1, v2)
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    out = tv(x, MEAN, STD, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    ref = torch.cat([v1(x, MEAN, STD, g), v2(x, MEAN, STD, g)])
    assert out.shape == (24, 3, 8, 8) and out.dtype == torch.float32
    assert torch.equal(out, ref)
    assert not torch.equal(out[:12], out[12:])  # two different views
    assert torch.equal(out, tv(x, MEAN, STD, torch.Generator().manual_seed(4)))  # reproducible
    assert not torch.equal(out, tv(x, MEAN, STD, torch.Generator().manual_seed(5)))


def test_view_is_crop_then_after_crop():
    """ViewAugment = random-resized crop, then after_crop (flip ... normalise) on the same stream."""
    x = _images(10, 3, 12)
    view = A.ViewAugment(8, scale=(0.3, 1.0), solarize_p=0.5)
    g = torch.Generator().manual_seed(6)
    cropped = A.random_resized_crop(A.to_float01(x), 8, view.scale, view.ratio, g)
    assert torch.equal(view(x, MEAN, STD, torch.Generator().manual_seed(6)), view.after_crop(cropped, MEAN, STD, g))


@pytest.mark.parametrize("channels", [1, 3])
def test_two_view_augment_on_views_cropped_by_the_loader(channels):
    """[N, 2, C, S, S] uint8: each view skips its crop and does the rest, view 1 first."""
    mean, std = MEAN[:channels], STD[:channels]
    g = torch.Generator().manual_seed(7)
    views = torch.randint(0, 256, (6, 2, channels, 8, 8), generator=g, dtype=torch.uint8)
    tv = A.TwoViewAugment.byol(8)
    out = tv(views, mean, std, torch.Generator().manual_seed(8))
    assert out.shape == (12, channels, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    g = torch.Generator().manual_seed(8)
    x1 = tv.view1.after_crop(views[:, 0], mean, std, g)
    x2 = tv.view2.after_crop(views[:, 1], mean, std, g)
    assert torch.equal(out, torch.cat([x1, x2]))
    # no crop: with every random op switched off a view is just the normalised input
    plain = A.ViewAugment(8, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    ident = A.TwoViewAugment(plain, plain)(views, mean, std, torch.Generator().manual_seed(0))
    assert torch.allclose(ident[:6], A.normalize(A.to_float01(views[:, 0]), mean, std))
    assert torch.allclose(ident[6:], A.normalize(A.to_float01(views[:, 1]), mean, std))
    with pytest.raises(ValueError):  # three views
        tv(views[:, [0, 1, 0]], mean, std, g)
    with pytest.raises(ValueError):  # views cropped at another size than the augmentation's
        A.TwoViewAugment.byol(6)(views, mean, std, g)
