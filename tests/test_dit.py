"""DiT conditioning on timm blocks against facebookresearch/DiT ``models.py`` (``TimestepEmbedder``,
``DiTBlock``, ``modulate``, ``LabelEmbedder``, ``DiT.initialize_weights``)."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import Attention, Mlp

from ssl_bench.components.dit import DiTBackbone, DiTBlock, LabelEmbedder, TimestepEmbedder, modulate, timestep_embedding


def small_dit(**kw) -> DiTBackbone:
    args = dict(image_size=8, patch_size=2, in_chans=3, out_dim=12, embed_dim=32, encoder_depth=2, decoder_depth=2, num_heads=2)
    args.update(kw)
    return DiTBackbone(**args)


def test_timestep_embedding():
    e0 = timestep_embedding(torch.tensor([0]))
    assert e0.shape == (1, 256)
    assert torch.equal(e0[0], torch.tensor([1.0] * 128 + [0.0] * 128))  # cos first
    f127 = math.exp(-math.log(10000) * 127 / 128)
    assert abs(f127 - 1.0746e-4) < 5e-9
    e1 = timestep_embedding(torch.tensor([1]))[0]
    assert abs(e1[255].item() - math.sin(f127)) < 1e-9 and abs(e1[127].item() - math.cos(f127)) < 1e-7
    assert abs(e1[128].item() - math.sin(1.0)) < 1e-6 and abs(e1[0].item() - math.cos(1.0)) < 1e-6  # f_0 = 1
    t = torch.tensor([3, 999])
    e = timestep_embedding(t)
    k = torch.arange(128, dtype=torch.float64)
    f = torch.exp(-math.log(10000) * k / 128)
    ref = torch.cat([torch.cos(t[:, None].double() * f), torch.sin(t[:, None].double() * f)], dim=1)
    torch.testing.assert_close(e.double(), ref, atol=2e-4, rtol=0)
    assert timestep_embedding(torch.tensor([5]), dim=7).shape == (1, 7)  # odd dim zero-padded


def test_timestep_embedder_init():
    emb = TimestepEmbedder(64)
    assert emb.mlp[0].in_features == 256 and emb.mlp[2].out_features == 64
    assert 0.015 < emb.mlp[0].weight.std().item() < 0.025  # N(0, 0.02)


def test_block_composes_timm_and_has_quarter_width_t_mlp():
    blk = DiTBlock(32, 2, cond_hidden_ratio=0.25)
    assert isinstance(blk.attn, Attention) and isinstance(blk.mlp, Mlp)
    lin = [m for m in blk.adaLN_modulation if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(32, 8), (8, 192)]  # D -> D/4 -> 6D
    dit_blk = DiTBlock(32, 2, cond_hidden_ratio=None)  # DiT's own: SiLU -> Linear(D, 6D)
    lin = [m for m in dit_blk.adaLN_modulation if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(32, 192)]


@pytest.mark.parametrize("ratio", [None, 0.25])
def test_adaln_chunk_order(ratio):
    torch.manual_seed(0)
    D = 16
    blk = DiTBlock(D, 2, cond_hidden_ratio=ratio)
    last = blk.adaLN_modulation[-1]
    vals = [0.3, 0.5, 1.0, -0.2, -0.1, 2.0]  # shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.cat([torch.full((D,), v) for v in vals]))
    c = torch.randn(3, D)
    chunks = blk.modulation(c)
    for ch, v in zip(chunks, vals):
        assert torch.allclose(ch, torch.full((3, D), v))
    x = torch.randn(3, 5, D)
    h = x + 1.0 * blk.attn(blk.norm1(x) * (1 + 0.5) + 0.3)
    ref = h + 2.0 * blk.mlp(blk.norm2(h) * (1 - 0.1) - 0.2)
    torch.testing.assert_close(blk(x, c), ref)
    torch.testing.assert_close(modulate(x, torch.full((3, D), 0.3), torch.full((3, D), 0.5)), x * 1.5 + 0.3)


@pytest.mark.parametrize("kw", [{}, {"cond_hidden_ratio": None}, {"num_classes": 10}])
def test_fresh_dit_outputs_exactly_zero(kw):
    torch.manual_seed(0)
    dit = small_dit(**kw)
    x = torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    y = torch.tensor([1, 2, 3, 4]) if kw.get("num_classes") else None
    out = dit(x, t, y)
    assert out.shape == (4, 16, 12)
    assert torch.equal(out, torch.zeros_like(out))
    # adaLN-Zero: every block is the identity at init, so the encoder returns the embedded patches
    assert torch.equal(dit.encode(x, cond=t), dit.embed(x))


def test_label_dropout_null_id():
    emb = LabelEmbedder(10, 8, dropout_prob=0.1)
    assert emb.embedding_table.num_embeddings == 11 and emb.null_id == 10
    labels = torch.arange(10)
    dropped = emb.token_drop(labels, force_drop_ids=torch.ones(10, dtype=torch.long))
    assert dropped.tolist() == [10] * 10
    g = torch.Generator().manual_seed(0)
    many = emb.token_drop(torch.zeros(20000, dtype=torch.long), generator=g)
    assert abs((many == 10).float().mean().item() - 0.1) < 0.01
    assert LabelEmbedder(10, 8, dropout_prob=0.0).embedding_table.num_embeddings == 10
    # eval: no dropout; train: drop with prob 1 -> all null
    all_drop = LabelEmbedder(10, 8, dropout_prob=1.0)
    out = all_drop(labels, train=True, generator=g)
    torch.testing.assert_close(out, all_drop.embedding_table.weight[10].expand(10, -1))
    torch.testing.assert_close(all_drop(labels, train=False), all_drop.embedding_table(labels))


def test_dit_features_and_encoder_split():
    torch.manual_seed(0)
    dit = small_dit(encoder_depth=3, decoder_depth=1)
    assert len(dit.blocks) == 4 and dit.depth == 4
    for p in dit.parameters():  # leave zero-init so blocks actually act
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None
    x = torch.randn(2, 3, 8, 8)
    f = dit.features(x, t=10)
    assert f.shape == (2, 32)
    torch.testing.assert_close(f, dit.encode(x, cond=torch.tensor([10, 10]), num_blocks=3).mean(1))
    assert not torch.allclose(dit.features(x, t=10, block=1), f)
    assert not torch.allclose(dit.features(x, t=500), f)  # t-conditioned
    with pytest.raises(ValueError, match="cond"):
        dit.encode(x)
    with pytest.raises(ValueError, match="avg"):
        dit.features(x, pool="cls")
