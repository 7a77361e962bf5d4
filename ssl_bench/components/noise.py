"""Additive latent noise (l-DAE, Chen et al. 2024, §3 Eq. 1): z_t = gamma_t z0 + sigma_t eps, the noise
always added in the tokenizer's latent space.

The schedule (``ssl_bench.components.schedules``) owns the tables and the t sampling; this module only
draws eps and records what was done. Whether the network then sees the noisy latent or its
inverse-tokenizer image (l-DAE's "inverse PCA" input x_t = mu + V^T z_t, §4.3, so the PCA residual of
x0 is never visible to the network) is the pipeline's ``input_space``, not the corruption's business.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Corruption
from ssl_bench.components.schedules import NoiseSchedule, append_dims


def randn_like_from(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) with x's shape/dtype/device, drawn on the generator's device (reproducible on CPU and CUDA)."""
    gen_device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


class AdditiveLatentNoise(Corruption):
    """t ~ schedule.sample_t, eps ~ N(0, I), z_t = gamma_t z0 + sigma_t eps on z0 [N, L, d]."""

    produces: ClassVar[frozenset[str]] = frozenset({"t", "noise"})
    needs_schedule: ClassVar[bool] = True

    def __init__(self, schedule: NoiseSchedule | None):
        super().__init__()
        if schedule is None:
            raise ValueError("additive latent noise needs a noise schedule (method.noise_schedule = dict(name=...))")
        self.schedule = schedule

    def noise_at(self, z0: Tensor, t: Tensor, noise: Tensor) -> Corrupted:
        """Deterministic part: apply the schedule at given t [N] with given eps [N, L, d]."""
        t = t.to(z0.device)
        gamma = self.schedule.gamma(t, z0.dtype)  # [N]
        sigma = self.schedule.sigma(t, z0.dtype)  # [N]
        z_t = append_dims(gamma, z0.ndim) * z0 + append_dims(sigma, z0.ndim) * noise  # [N, L, d]
        return Corrupted(z_t=z_t, t=t, sigma=sigma, gamma=gamma, noise=noise)

    def forward(self, z0: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        t = self.schedule.sample_t(z0.shape[0], generator, device=z0.device)  # [N] int64
        return self.noise_at(z0, t, randn_like_from(z0, generator))
