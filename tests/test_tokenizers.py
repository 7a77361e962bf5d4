"""Fitted tokenizers of l-DAE (Chen et al. 2024, §4.1-4.2, Table 2): patch PCA, patch AE / VAE, conv
VAE, pixel."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.components.patches import patchify
from ssl_bench.components.tokenizers import (
    ConvVAETokenizer,
    PatchAETokenizer,
    PatchPCATokenizer,
    PatchVAETokenizer,
    PatchTokenizer,
    default_latent_dim,
)


def correlated_images(n: int = 64, c: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-pass noise) so patch PCA has a decaying spectrum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, size // 2, size // 2, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x + 0.05 * torch.randn(n, c, size, size, generator=g) + 0.3


@pytest.fixture(scope="module")
def pca() -> PatchPCATokenizer:
    tok = PatchPCATokenizer(patch_size=4, channels=3, latent_dim=6, num_samples=10_000)
    tok.fit(correlated_images(), torch.Generator().manual_seed(0))
    return tok


def test_pca_basis_orthonormal_sorted_and_matches_eigh(pca):
    D = 48
    assert pca.basis.shape == (D, D) and pca.mean.shape == (D,) and pca.eigenvalues.shape == (D,)
    torch.testing.assert_close(pca.basis @ pca.basis.T, torch.eye(D), atol=1e-5, rtol=0)
    V = pca.components  # [d, D]
    torch.testing.assert_close(V @ V.T, torch.eye(6), atol=1e-5, rtol=0)  # V V^T = I_d
    ev = pca.eigenvalues
    assert torch.all(ev[:-1] >= ev[1:])  # descending
    # the basis diagonalises the covariance of the fitted patches (same sample as fit)
    x = patchify(correlated_images(), 4).reshape(-1, D).double()
    cov = torch.cov(x.T)
    ref = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(ev.double(), ref.clamp_min(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pca.mean.double(), x.mean(0), rtol=1e-5, atol=1e-6)


def test_pca_projection_idempotent_and_residual_orthogonal(pca):
    x = patchify(correlated_images(8, seed=1), 4)  # [8, 4, 48]
    p1 = pca.project(x)
    torch.testing.assert_close(pca.project(p1), p1, atol=1e-5, rtol=1e-5)  # idempotent
    residual = x - p1  # [8, 4, 48]
    torch.testing.assert_close(residual @ pca.components.T, torch.zeros(8, 4, 6), atol=1e-5, rtol=0)
    coords = pca.project_full(p1)  # the projection has no residual coordinates
    torch.testing.assert_close(coords[..., 6:], torch.zeros(8, 4, 42), atol=1e-5, rtol=0)
    torch.testing.assert_close(pca.project_full(x)[..., :6], pca.encode_patches(x), atol=1e-5, rtol=1e-5)


def test_pca_encode_decode_shapes_and_inverse(pca):
    x = correlated_images(5, seed=2)  # [5, 3, 8, 8]
    z = pca.encode(x)
    assert z.shape == (5, 4, 6)
    y = pca.decode(z)
    assert y.shape == x.shape
    torch.testing.assert_close(pca.encode(y), z, atol=1e-5, rtol=1e-5)  # encode(decode(z)) = z


def test_pca_state_dict_round_trip_and_unfitted_error(pca):
    state = pca.state_dict()
    assert {"mean", "basis", "eigenvalues", "scale", "fitted"} <= set(state)
    fresh = PatchPCATokenizer(4, 3, 6)
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh.encode(torch.zeros(1, 3, 8, 8))
    fresh.load_state_dict(state)
    x = correlated_images(2, seed=3)
    assert torch.equal(fresh.encode(x), pca.encode(x))


def test_pca_latent_scale_auto_gives_unit_average_variance():
    tok = PatchPCATokenizer(4, 3, 6, latent_scale="auto")
    imgs = correlated_images(128)
    tok.fit(imgs)
    z = tok.encode(imgs).reshape(-1, 6)
    assert abs(z.var(dim=0).mean().item() - 1.0) < 0.05
    plain = PatchPCATokenizer(4, 3, 6)
    plain.fit(imgs)
    # the scale is a pure latent rescaling: the reconstruction is the unscaled PCA's
    torch.testing.assert_close(tok.decode(tok.encode(imgs)), plain.decode(plain.encode(imgs)), atol=1e-5, rtol=1e-5)


def test_default_latent_dim_rule():
    assert default_latent_dim(768) == 32  # 16x16x3: the paper's d
    assert default_latent_dim(192) == 8
    assert default_latent_dim(48) == 2
    assert default_latent_dim(4) == 2  # 2x2x1 digits patches
    assert default_latent_dim(2) == 2


@pytest.mark.parametrize("cls", [PatchAETokenizer, PatchVAETokenizer])
def test_patch_ae_vae_losses_decrease_and_are_frozen(cls):
    tok = cls(4, 3, 6, num_samples=4096, steps=150, lr=1e-2, batch_size=512)
    tok.fit(correlated_images(), torch.Generator().manual_seed(0))
    hist = tok.loss_history
    assert len(hist) == 150 and hist[-1] < 0.5 * hist[0]
    assert not any(p.requires_grad for p in tok.parameters())  # the pre-training optimiser never sees them
    x = correlated_images(3, seed=4)
    assert tok.encode(x).shape == (3, 4, 6) and tok.decode(tok.encode(x)).shape == x.shape
    B = tok.full_basis()  # orthonormal, first d rows span the decoder's column space
    torch.testing.assert_close(B @ B.T, torch.eye(48), atol=1e-5, rtol=0)
    U = tok.decoder.weight  # [D, d]
    torch.testing.assert_close(B[6:] @ U, torch.zeros(42, 6), atol=1e-4, rtol=0)


def test_conv_vae_stride_scales_with_image_size():
    assert [ConvVAETokenizer.default_num_down(s) for s in (8, 28, 32, 64, 256)] == [0, 1, 2, 3, 3]
    tok = ConvVAETokenizer(8, 1, latent_channels=2, width=16, steps=60, lr=3e-3, batch_size=32)
    x = correlated_images(64, c=1)
    tok.fit(x, torch.Generator().manual_seed(0))
    assert tok.loss_history[-1] < tok.loss_history[0]
    z = tok.encode(x[:3])
    assert z.shape == (3, 16, 8)  # 4x4 tokens of 2x2 latent patches x 2 channels
    assert tok.decode(z).shape == (3, 1, 8, 8)
    assert ConvVAETokenizer(256, 3, 4).stride == 8  # LDM's f8 at 256 px -> 16x16 tokens


def test_pixel_tokenizer_is_identity():
    tok = PatchTokenizer(2, 3)
    x = torch.randn(2, 3, 8, 8)
    assert tok.latent_dim == 12 and not tok.needs_fit
    assert torch.equal(tok.decode(tok.encode(x)), x)
    torch.testing.assert_close(tok.project_full(patchify(x, 2)), patchify(x, 2))
