"""Core components against MAE's official code (facebookresearch/mae ``models_mae.py``:
``random_masking``, ``patchify``, ``forward_loss``; ``util/pos_embed.py::get_2d_sincos_pos_embed``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.components.masking import RandomMasking
from ssl_bench.components.patches import patchify, unpatchify
from ssl_bench.components.posembed import sincos_2d
from ssl_bench.components.targets import NormalizedPixelTarget, reconstruction_loss
from ssl_bench.components.tokenizers import PatchTokenizer


def test_masking_keeps_49_of_196_and_ids_restore_is_argsort_of_argsort():
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(4, 196, 8)
    c = RandomMasking(0.75)(z, g)
    assert c.ids_keep.shape == (4, 49)
    assert c.mask.sum(dim=1).tolist() == [147.0] * 4  # 1 = removed
    noise = torch.rand(4, 196, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c.ids_restore, torch.argsort(torch.argsort(noise, dim=1), dim=1))
    # the kept tokens are exactly the ones with mask 0, and they are the smallest-noise ones
    kept = torch.zeros(4, 196).scatter_(1, c.ids_keep, 1.0)
    assert torch.equal(kept, 1 - c.mask)
    assert torch.equal(c.ids_keep, torch.argsort(noise, dim=1)[:, :49])


def test_masking_rejects_bad_ratio():
    with pytest.raises(ValueError, match="mask_ratio"):
        RandomMasking(1.0)


def test_patchify_layout_channel_fastest():
    # image value encodes (c, y, x) so we can read the layout back
    n, c, h, w, p = 1, 3, 4, 4, 2
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([ch * 100 + y * 10 + x for ch in range(c)]).unsqueeze(0).float()  # [1, 3, 4, 4]
    tokens = patchify(img, p)  # [1, 4, 12]
    assert tokens.shape == (1, 4, 12)
    # token 1 = grid row 0, col 1 -> pixels x in {2, 3}; within the token index = (row*p + col)*C + ch
    t1 = tokens[0, 1]
    assert t1[0].item() == 0 * 100 + 0 * 10 + 2  # (row 0, col 0, ch 0) -> pixel (0, 2)
    assert t1[1].item() == 100 + 0 + 2  # channel varies fastest
    assert t1[3].item() == 0 + 0 + 3  # next column in the patch
    assert t1[6].item() == 0 + 10 + 2  # next row in the patch
    assert tokens[0, 2, 0].item() == 20  # token 2 = grid row 1, col 0 -> pixel (2, 0)
    assert torch.equal(unpatchify(tokens, p, c), img)


def test_patch_tokenizer_round_trip():
    tok = PatchTokenizer(4, 1)
    x = torch.randn(2, 1, 28, 28)
    assert tok.encode(x).shape == (2, 49, 16)
    assert torch.equal(tok.decode(tok.encode(x)), x)


def test_patchify_rejects_indivisible():
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.zeros(1, 1, 10, 10), 4)


def test_sincos_first_half_column_second_half_row():
    emb = sincos_2d(8, 2, cls_token=True)  # [1 + 4, 8]
    assert torch.equal(emb[0], torch.zeros(8))
    token = emb[1 + 1]  # row 0, col 1
    expected = [0.84147, 0.0099998, 0.54030, 0.99995, 0, 0, 1, 1]
    np.testing.assert_allclose(token.numpy(), expected, atol=1e-5)
    # second half encodes the row: token (row 1, col 0) has the same values in the other half
    np.testing.assert_allclose(emb[1 + 2, 4:].numpy(), expected[:4], atol=1e-5)


def test_norm_pix_uses_unbiased_variance_and_masked_patches_only():
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(2, 6, 12, generator=g) * 3 + 1
    mask = torch.tensor([[1, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float32)
    from ssl_bench.components.base import Corrupted

    images = unpatchify(patches, 2, 3, grid=(2, 3))  # [2, 3, 4, 6]: the target re-cuts the patches
    target, weight = NormalizedPixelTarget(patch_size=2, norm_pix=True)(images, None, Corrupted(mask=mask))
    assert weight is None
    m = patches.mean(-1, keepdim=True)
    v = ((patches - m) ** 2).sum(-1, keepdim=True) / (12 - 1)  # unbiased
    torch.testing.assert_close(target, (patches - m) / (v + 1e-6).sqrt())
    pred = torch.zeros_like(target)
    loss = reconstruction_loss(pred, target, weight, mask)
    per_patch = (target**2).mean(-1)
    torch.testing.assert_close(loss, (per_patch * mask).sum() / mask.sum())
