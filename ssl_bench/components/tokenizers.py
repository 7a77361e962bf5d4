"""Tokenizers: the identity patch tokenizer (MAE) and the fitted tokenizers of the l-DAE deconstruction
(Chen et al. 2024, §4.1-4.2, Table 2): patch PCA, patch AE / VAE, conv VAE.

All patch-wise tokenizers use MAE's patch layout (``patches.patchify``), so a basis row reshaped to
(p, p, C) is a pixel filter. Tokens are [N, L, d]; the "latent image" a DiT consumes is the token
grid laid out as an image [N, d, h, w] (``latent_patch = 1``), except for the conv VAE whose latent is
a genuine feature map [N, c, h', w'] tokenised in 2x2 latent patches (``latent_patch = 2``, d = 4c, as
DiT-L/2 on the LDM latent).

Fitting: ``fit(images, generator)`` takes normalised float images; ``fit_patches`` takes sampled
patch vectors directly (the method samples a few random patches from many training images rather
than holding whole images in memory). Fitted tokenizers are *frozen*: their parameters have
``requires_grad=False`` so the pre-training optimiser never touches them, and all their state
(bases, means, weights) is in ``state_dict`` so a checkpoint restores it.

Latent size. The patch-wise tokenizers take ``latent_dim`` (d) or, when it is None, resolve
d = round(D * latent_ratio) for their own patch dimension D = p*p*C, at least ``min_latent_dim`` and
at most D - 1 (``default_latent_dim``): ``latent_ratio = 32/768`` is the paper's d = 32 at 16x16x3
patches, and the same fraction of smaller patches on small images.

The pixel tokenizer of Fig. 5 is the identity ``PatchTokenizer`` (registered as ``patch`` and
``pixel``) on a resized image: the method's ``image_size`` key resizes every image (e.g. 256 -> 64)
and the patch is chosen to keep the token grid (e.g. 16 -> 4), so d = p*p*C (768/192/48/12 at 256
tokens).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.components.base import Tokenizer
from ssl_bench.components.patches import patchify, unpatchify
from ssl_bench.progress import progress

PAPER_LATENT_RATIO = 32 / 768  # l-DAE's d = 32 of D = 16*16*3 (Table 2's best patch-PCA d)


def default_latent_dim(patch_dim: int, ratio: float = PAPER_LATENT_RATIO, minimum: int = 2) -> int:
    """l-DAE's d for a patch of D values: d = round(D * ratio) (d = 32 at 16x16x3), at least
    ``minimum`` and at most D - 1 (so some residual remains); D <= minimum keeps d = D."""
    if patch_dim <= minimum:
        return patch_dim
    return int(min(patch_dim - 1, max(minimum, round(patch_dim * ratio))))


def sample_rows(x: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    """At most ``num`` random rows of x [M, D] (all of them, in random order, if M <= num)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(x.shape[0], generator=generator, device=gen_device).to(x.device)
    return x[perm[:num]]



def fit_with_adam(
    module: nn.Module, data: Tensor, loss_fn: Callable[[Tensor], Tensor], steps: int, batch_size: int,
    lr: float, generator: torch.Generator | None,
) -> list[float]:
    """Fit a tokenizer before the DDM trains: Adam on random minibatches of `data` [N, ...].

    The module is frozen again afterwards so the main optimiser never touches a fitted tokenizer.
    Returns the loss per step.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    module.requires_grad_(True)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    history: list[float] = []
    with torch.enable_grad():
        for _ in progress(range(steps), desc=f"fitting {type(module).__name__}", unit="step"):
            idx = torch.randint(0, data.shape[0], (min(batch_size, data.shape[0]),), generator=generator, device=gen_device)
            loss = loss_fn(data[idx.to(data.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    module.requires_grad_(False)
    return history

class _PatchTokenizer(Tokenizer):
    """Shared plumbing of the patch-wise tokenizers: patch layout, mean centring, frozen state."""

    needs_fit: ClassVar[bool] = True
    latent_patch: int = 1

    def __init__(
        self,
        patch_size: int,
        channels: int,
        latent_dim: int | None = None,
        num_samples: int = 100_000,
        center: bool = True,
        *,
        latent_ratio: float = PAPER_LATENT_RATIO,
        min_latent_dim: int = 2,
    ):
        super().__init__()
        dim = patch_size * patch_size * channels
        if latent_dim is None:
            latent_dim = default_latent_dim(dim, latent_ratio, min_latent_dim)
        if not 1 <= latent_dim <= dim:
            raise ValueError(f"latent_dim must be in [1, {dim}] for {patch_size}x{patch_size}x{channels} patches, got {latent_dim}")
        self.patch_size = patch_size
        self.channels = channels
        self.patch_dim = dim  # D
        self.latent_dim = latent_dim  # d
        self.latent_channels = latent_dim
        self.num_samples = num_samples
        self.center = center
        self.register_buffer("mean", torch.zeros(dim))  # [D]
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _check_fitted(self) -> None:
        # reading the buffer is a host sync on CUDA; once it has been seen True it stays True
        # (fitting only sets it), so every later encode/decode of the training step skips it
        if getattr(self, "_seen_fitted", False):
            return
        if not bool(self.fitted):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit() (Method.prepare does) or load a checkpoint")
        self._seen_fitted = True

    def fit(self, images: Tensor, generator: torch.Generator | None = None) -> None:
        """Fit from normalised images [N, C, H, W]: sample ``num_samples`` random patches."""
        patches = patchify(images, self.patch_size).reshape(-1, self.patch_dim)  # [N*L, D]
        self.fit_patches(sample_rows(patches, self.num_samples, generator), generator)

    def fit_patches(self, patches: Tensor, generator: torch.Generator | None = None) -> None:
        raise NotImplementedError

    # encode/decode on tokens; image-level wrappers below
    def encode_patches(self, patches: Tensor) -> Tensor:
        raise NotImplementedError

    def decode_patches(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, images: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, d]"""
        return self.encode_patches(patchify(images, self.patch_size))

    def decode(self, latents: Tensor) -> Tensor:
        """[N, L, d] -> [N, C, H, W]"""
        return unpatchify(self.decode_patches(latents), self.patch_size, self.channels)

    def project(self, patches: Tensor) -> Tensor:
        """Tokenizer reconstruction of patch vectors [..., D] (inverse PCA of PCA for PCA)."""
        return self.decode_patches(self.encode_patches(patches))

    def full_basis(self) -> Tensor:
        """[D, D] orthonormal rows whose first d span the decoder's image (for the l-DAE loss)."""
        raise NotImplementedError

    def project_full(self, x: Tensor) -> Tensor:
        """Coordinates of patch vectors [..., D] in the full basis: (x - mean) @ B^T -> [..., D]."""
        return (x - self.mean) @ self.full_basis().to(x.dtype).T


class PatchPCATokenizer(_PatchTokenizer):
    """Patch-wise PCA (l-DAE §4.2): z = V_d (x - mu), x_hat = mu + V_d^T z with V_d V_d^T = I_d.

    Fitted in closed form: eigendecomposition (``torch.linalg.eigh``, float64) of the covariance of
    randomly sampled training patches; bases sorted by descending eigenvalue, each row's sign fixed so
    that its largest-magnitude entry is positive (deterministic figures and checkpoints).

    Decisions where §4.2 is silent (docs/methods.md "Tokenizer"): patches are sampled from the
    training split after the method's own normalisation (the same pixels the network sees);
    mean-centred by default (``center=True``; the mean cancels in the final loss); the projection is
    orthonormal, *not* whitened. ``latent_scale`` multiplies the latent (1.0 = none, the paper's
    VV^T = I; ``"auto"`` = 1/sqrt(mean of the top-d eigenvalues), i.e. unit average latent variance
    like DiT's 0.18215).
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        latent_dim: int | None = None,
        num_samples: int = 100_000,
        center: bool = True,
        latent_scale: float | str = 1.0,
        *,
        latent_ratio: float = PAPER_LATENT_RATIO,
        min_latent_dim: int = 2,
    ):
        super().__init__(patch_size, channels, latent_dim, num_samples, center, latent_ratio=latent_ratio, min_latent_dim=min_latent_dim)
        if not (latent_scale == "auto" or isinstance(latent_scale, (int, float))):
            raise ValueError(f"latent_scale must be a number or 'auto', got {latent_scale!r}")
        self.latent_scale_rule = latent_scale
        D = self.patch_dim
        self.register_buffer("basis", torch.eye(D))  # [D, D] rows = eigenvectors, descending
        self.register_buffer("eigenvalues", torch.zeros(D))  # [D] descending
        self.register_buffer("scale", torch.tensor(float(latent_scale) if latent_scale != "auto" else 1.0))

    @property
    def components(self) -> Tensor:
        """V_d [d, D]"""
        return self.basis[: self.latent_dim]

    @torch.no_grad()
    def fit_patches(self, patches: Tensor, generator: torch.Generator | None = None) -> None:
        x = patches.reshape(-1, self.patch_dim).to(torch.float64)  # [M, D]
        if x.shape[0] < 2:
            raise ValueError("PCA needs at least 2 patches")
        mean = x.mean(dim=0) if self.center else torch.zeros(self.patch_dim, dtype=torch.float64, device=x.device)
        xc = x - mean
        cov = xc.T @ xc / (x.shape[0] - 1)  # [D, D]
        evals, evecs = torch.linalg.eigh(cov)  # ascending, columns
        order = torch.argsort(evals, descending=True)
        evals, basis = evals[order].clamp_min(0.0), evecs[:, order].T  # rows, descending
        idx = basis.abs().argmax(dim=1, keepdim=True)
        basis = basis * torch.sign(torch.gather(basis, 1, idx))  # largest entry positive
        self.mean.copy_(mean.to(self.mean))
        self.basis.copy_(basis.to(self.basis))
        self.eigenvalues.copy_(evals.to(self.eigenvalues))
        if self.latent_scale_rule == "auto":
            self.scale.fill_(float(evals[: self.latent_dim].mean().clamp_min(1e-12) ** -0.5))
        self.fitted.fill_(True)

    def encode_patches(self, patches: Tensor) -> Tensor:
        """[..., D] -> [..., d]"""
        self._check_fitted()
        v = self.components.to(patches.dtype)
        return (patches - self.mean.to(patches.dtype)) @ v.T * self.scale.to(patches.dtype)

    def decode_patches(self, latents: Tensor) -> Tensor:
        """[..., d] -> [..., D]"""
        self._check_fitted()
        v = self.components.to(latents.dtype)
        return self.mean.to(latents.dtype) + (latents / self.scale.to(latents.dtype)) @ v

    def full_basis(self) -> Tensor:
        return self.basis



class PatchAETokenizer(_PatchTokenizer):
    """Patch-wise linear AE: z = V (x - mu), x_hat = mu + U^T z, U, V in R^{d x D} (no KL).

    Trained in ``fit`` by ``steps`` Adam steps on ||x - x_hat||^2 (mean over values) over random
    minibatches of the sampled patches. Centred like the PCA tokenizer so the comparison isolates the
    constraint (PCA = AE with U = V orthonormal). The weights are then frozen.
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        latent_dim: int | None = None,
        num_samples: int = 100_000,
        center: bool = True,
        steps: int = 300,
        lr: float = 1e-2,
        batch_size: int = 4096,
        *,
        latent_ratio: float = PAPER_LATENT_RATIO,
        min_latent_dim: int = 2,
    ):
        super().__init__(patch_size, channels, latent_dim, num_samples, center, latent_ratio=latent_ratio, min_latent_dim=min_latent_dim)
        D, d = self.patch_dim, self.latent_dim
        self.encoder = nn.Linear(D, d, bias=False)  # V
        self.decoder = nn.Linear(d, D, bias=False)  # U^T
        self.steps, self.lr, self.batch_size = steps, lr, batch_size
        self.loss_history: list[float] = []
        self.requires_grad_(False)

    def _latent(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        """Centred patches -> (latent used for decoding, extra loss term)."""
        return self.encoder(xc), xc.new_zeros(())

    def fit_patches(self, patches: Tensor, generator: torch.Generator | None = None) -> None:
        x = patches.reshape(-1, self.patch_dim).to(torch.float32)
        with torch.no_grad():
            self.mean.copy_(x.mean(dim=0) if self.center else torch.zeros_like(self.mean))
        xc = x - self.mean

        def loss_fn(batch: Tensor) -> Tensor:  # batch [B, D]
            z, extra = self._latent(batch)
            return F.mse_loss(self.decoder(z), batch) + extra

        self.loss_history = fit_with_adam(self, xc, loss_fn, self.steps, self.batch_size, self.lr, generator)
        self.fitted.fill_(True)

    def encode_patches(self, patches: Tensor) -> Tensor:
        self._check_fitted()
        return self.encoder(patches - self.mean.to(patches.dtype))

    def decode_patches(self, latents: Tensor) -> Tensor:
        self._check_fitted()
        return self.mean.to(latents.dtype) + self.decoder(latents)

    def full_basis(self) -> Tensor:
        """QR of the decoder columns U^T [D, d] (complete mode): first d rows span the decoded space.

        The original-image target needs it twice per training step; the decoder is frozen after
        fitting, so the float64 QR is cached and redone only when the weight changes in place
        (fitting, load_state_dict) or moves (``.to``), which its version counter / storage tell.
        """
        w = self.decoder.weight
        key = (w.data_ptr(), w._version, w.device, self.mean.dtype)
        cached = getattr(self, "_basis_cache", None)
        if cached is None or cached[0] != key:
            q, _ = torch.linalg.qr(w.detach().to(torch.float64), mode="complete")  # [D, D]
            cached = self._basis_cache = (key, q.T.to(self.mean.dtype))
        return cached[1]


class PatchVAETokenizer(PatchAETokenizer):
    """Patch-wise linear VAE: mean V (x - mu), log-variance from a second linear map, loss
    ||x - U^T z||^2 + kl_weight * KL[q(z|x) || N(0, I)] with z sampled by reparameterisation.

    The KL weight is not given by the paper (l-DAE §4.1-4.2; our choice, docs/methods.md
    "Tokenizer"). Default 1e-3 per latent dimension relative to a per-value reconstruction mean:
    small, like LDM's KL-f8 (1e-6 on sums), so the latent stays informative. ``encode`` returns the
    posterior mean (deterministic tokens).
    """

    def __init__(
        self,
        patch_size: int,
        channels: int,
        latent_dim: int | None = None,
        num_samples: int = 100_000,
        center: bool = True,
        steps: int = 300,
        lr: float = 1e-2,
        batch_size: int = 4096,
        *,
        kl_weight: float = 1e-3,
        latent_ratio: float = PAPER_LATENT_RATIO,
        min_latent_dim: int = 2,
    ):
        super().__init__(
            patch_size, channels, latent_dim, num_samples, center, steps, lr, batch_size,
            latent_ratio=latent_ratio, min_latent_dim=min_latent_dim,
        )
        self.logvar = nn.Linear(self.patch_dim, self.latent_dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, -4.0)
        self.kl_weight = kl_weight
        self.requires_grad_(False)
        self._sample_gen: torch.Generator | None = None

    def fit_patches(self, patches: Tensor, generator: torch.Generator | None = None) -> None:
        self._sample_gen = generator
        try:
            super().fit_patches(patches, generator)
        finally:
            self._sample_gen = None

    def _latent(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(xc), self.logvar(xc).clamp(-30.0, 20.0)  # [B, d]
        gen = self._sample_gen
        eps = torch.randn(mu.shape, generator=gen, device=gen.device if gen is not None else mu.device).to(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return z, self.kl_weight * kl


class ConvVAETokenizer(Tokenizer):
    """Small conv VAE (the retrained LDM tokenizer without perceptual / adversarial loss,
    l-DAE §4.1 "Deconstruct VQGAN").

    Stride scales with the image: ``num_down`` stride-2 convs, as many as possible up to 3 (stride 8
    for 256 px) while the token grid (latent / 2, 2x2 latent patches per token as DiT-L/2) stays at
    least 4x4: 8 px -> stride 1 (4x4 tokens), 28 -> 2 (7x7), 32 -> 4 (4x4), 64 -> 8 (4x4), 256 -> 8
    (16x16). Tokens are d = 4c for c latent channels; with ``latent_channels`` None, c = max(1, d // 4)
    where d resolves like the patch-wise tokenizers' on the network's pixel patch ``patch_size``
    (``latent_dim`` or ``latent_ratio`` of D = patch_size^2 * C). Trained in ``fit`` by Adam on
    ||x - g(f(x))||^2 + kl_weight KL; ``encode`` returns the posterior mean. ``self.patch_size`` is
    the pixel side of one token (2 x stride), which may differ from the network's patch.
    """

    needs_fit: ClassVar[bool] = True
    latent_patch: int = 2

    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_channels: int | None = None,
        width: int = 64,
        num_down: int | None = None,
        kl_weight: float = 1e-3,
        steps: int = 300,
        lr: float = 1e-3,
        batch_size: int = 64,
        *,
        patch_size: int | None = None,
        latent_dim: int | None = None,
        latent_ratio: float = PAPER_LATENT_RATIO,
        min_latent_dim: int = 2,
    ):
        super().__init__()
        if num_down is None:
            num_down = self.default_num_down(image_size)
        stride = 2**num_down
        if latent_channels is None:
            ref = patch_size if patch_size is not None else 2 * stride
            d = latent_dim or default_latent_dim(ref * ref * channels, latent_ratio, min_latent_dim)
            latent_channels = max(1, d // 4)
        if image_size % (2 * stride):
            raise ValueError(f"image size {image_size} is not divisible by stride {stride} x 2x2 token patches")
        self.image_size, self.channels = image_size, channels
        self.c = latent_channels
        self.latent_channels = latent_channels
        self.latent_dim = 4 * latent_channels
        self.num_down = num_down
        self.stride = stride
        self.patch_size = 2 * stride  # pixels per token side
        self.kl_weight, self.steps, self.lr, self.batch_size = kl_weight, steps, lr, batch_size
        enc: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.SiLU()]
        for _ in range(num_down):
            enc += [nn.Conv2d(width, width, 4, stride=2, padding=1), nn.SiLU()]
        enc += [nn.Conv2d(width, 2 * latent_channels, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.SiLU()]
        for _ in range(num_down):
            dec += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.SiLU()]
        dec += [nn.Conv2d(width, channels, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.loss_history: list[float] = []
        self.requires_grad_(False)

    @staticmethod
    def default_num_down(image_size: int, max_down: int = 3, min_grid: int = 4) -> int:
        for k in range(max_down, -1, -1):
            s = 2**k
            if image_size % (2 * s) == 0 and image_size // (2 * s) >= min_grid:
                return k
        return 0

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[N, C, H, W] -> mean, logvar [N, c, H/s, W/s]"""
        mu, logvar = self.encoder(images).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def fit(self, images: Tensor, generator: torch.Generator | None = None) -> None:
        x = images.to(torch.float32)
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def loss_fn(batch: Tensor) -> Tensor:  # batch [B, C, H, W]
            mu, logvar = self.posterior(batch)
            eps = torch.randn(mu.shape, generator=generator, device=gen_device).to(mu)
            z = mu + torch.exp(0.5 * logvar) * eps  # reparameterised sample
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()
            return F.mse_loss(self.decoder(z), batch) + self.kl_weight * kl

        self.loss_history = fit_with_adam(self, x, loss_fn, self.steps, self.batch_size, self.lr, generator)
        self.fitted.fill_(True)

    def encode(self, images: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, L, 4c] (2x2 latent patches, patchify layout)"""
        if not bool(self.fitted):
            raise RuntimeError("ConvVAETokenizer is not fitted")
        mu, _ = self.posterior(images)
        return patchify(mu, 2)

    def decode(self, latents: Tensor) -> Tensor:
        """[N, L, 4c] -> [N, C, H, W]"""
        return self.decoder(unpatchify(latents, 2, self.c))


class PatchTokenizer(_PatchTokenizer):
    """The identity patch tokenizer: the latent of a patch is its pixels, d = D = p*p*C (MAE's input;
    the naive pixel tokenizer of l-DAE Fig. 5). It has the patch-wise interface (identity full basis,
    zero mean) so that every target works with it."""

    needs_fit: ClassVar[bool] = False

    def __init__(self, patch_size: int, channels: int):
        dim = patch_size * patch_size * channels
        super().__init__(patch_size, channels, dim, num_samples=0, center=False)
        self.fitted.fill_(True)

    def encode_patches(self, patches: Tensor) -> Tensor:
        return patches

    def decode_patches(self, latents: Tensor) -> Tensor:
        return latents

    def full_basis(self) -> Tensor:
        return torch.eye(self.patch_dim, device=self.mean.device)


BUILTIN_TOKENIZERS: dict[str, type[Tokenizer]] = {
    "patch": PatchTokenizer,
    "pixel": PatchTokenizer,
    "patch-pca": PatchPCATokenizer,
    "patch-ae": PatchAETokenizer,
    "patch-vae": PatchVAETokenizer,
    "conv-vae": ConvVAETokenizer,
}
