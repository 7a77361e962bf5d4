"""Additive latent noise (METHODS.md §1.5): z_t = gamma_t z0 + sigma_t eps, noise always in the latent.

The schedule (``ssl_bench.components.schedules``) owns the tables and the t sampling; this module only
draws eps and records what was done. With ``project_to_image`` the noisy latent is also mapped back
to pixels through the tokenizer's decoder (l-DAE's "inverse PCA" input x_t = mu + V^T z_t, so the PCA
residual of x0 is never visible to the network, §1.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Corruption, Tokenizer
from ssl_bench.components.schedules import NoiseSchedule, append_dims


@dataclass
class NoisyLatent(Corrupted):
    """``Corrupted`` plus the noisy latent decoded to an image (only with ``project_to_image``)."""

    image: Tensor | None = None  # [N, C, H, W] tokenizer.decode(z_t)


def randn_like_from(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) with x's shape/dtype/device, drawn on the generator's device (reproducible on CPU and CUDA)."""
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


class AdditiveLatentNoise(Corruption):
    """t ~ schedule.sample_t, eps ~ N(0, I), z_t = gamma_t z0 + sigma_t eps on z0 [N, L, d]."""

    def __init__(self, schedule: NoiseSchedule, project_to_image: bool = False, tokenizer: Tokenizer | None = None):
        super().__init__()
        if project_to_image and tokenizer is None:
            raise ValueError("project_to_image=True needs the tokenizer whose decoder maps z_t to pixels")
        self.schedule = schedule
        self.project_to_image = project_to_image
        # not a submodule: the method owns the tokenizer (one copy in the state_dict)
        self._tokenizer = [tokenizer] if tokenizer is not None else []

    def noise_at(self, z0: Tensor, t: Tensor, noise: Tensor) -> NoisyLatent:
        """Deterministic part: apply the schedule at given t [N] with given eps [N, L, d]."""
        t = t.to(z0.device)
        gamma = self.schedule.gamma(t, z0.dtype)  # [N]
        sigma = self.schedule.sigma(t, z0.dtype)  # [N]
        z_t = append_dims(gamma, z0.ndim) * z0 + append_dims(sigma, z0.ndim) * noise  # [N, L, d]
        image = self._tokenizer[0].decode(z_t) if self.project_to_image else None
        return NoisyLatent(z_t=z_t, t=t, sigma=sigma, gamma=gamma, noise=noise, image=image)

    def forward(self, z0: Tensor, generator: torch.Generator | None = None) -> NoisyLatent:
        t = self.schedule.sample_t(z0.shape[0], generator, device=z0.device)  # [N] int64
        return self.noise_at(z0, t, randn_like_from(z0, generator))
