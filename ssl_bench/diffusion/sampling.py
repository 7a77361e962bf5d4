"""Samplers for a (possibly respaced) ``GaussianDiffusion``: DDPM ancestral and DDIM, plus CFG.

These are for looking at what the DDM baseline generates (and for FID-style sanity checks); the
self-supervised benchmark itself never samples. Everything runs under ``torch.no_grad`` and takes an
explicit generator, so a fixed seed gives the same images.

``clip_denoised`` defaults to False because DiT works on unbounded VAE latents; set it to True for
pixel-space models on [-1, 1] data, as IDDPM does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ssl_bench.diffusion.gaussian import GaussianDiffusion, ModelFn, extract, randn_like

__all__ = ["cfg_model_fn", "ddim_sample_loop", "ddim_step", "ddpm_sample_loop", "p_sample"]


def cfg_model_fn(
    model_fn: ModelFn, scale: float, null_label: int, guided_channels: int | None = None
) -> Callable[..., Tensor]:
    """Classifier-free guidance: eps = eps_uncond + scale (eps_cond - eps_uncond).

    The returned function takes (x [B, C, ...], t [B], y [B], **kwargs), runs ``model_fn`` once on the
    doubled batch (labels y, then ``null_label``) and returns [B, out_channels, ...]. Guidance is applied
    to the eps channels only, the first ``guided_channels`` (default C = x.shape[1]); the remaining
    channels (the learned-variance v) are taken from the conditional half. DiT guides only the first 3
    channels of its 4-channel latent "for exact reproducibility": pass ``guided_channels=3`` to match it.
    """

    def guided(x: Tensor, t: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
        n = x.shape[0]
        null = torch.full_like(y, null_label)
        out = model_fn(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]), **kwargs)  # [2B, C', ...]
        k = x.shape[1] if guided_channels is None else guided_channels
        cond, uncond = out[:n], out[n:]
        eps = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
        return torch.cat([eps, cond[:, k:]], dim=1)

    return guided


@torch.no_grad()
def p_sample(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    x: Tensor,
    t: Tensor,
    clip_denoised: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One ancestral step x_t -> x_{t-1} ~ p(x_{t-1} | x_t); no noise at t = 0. Returns (x_{t-1}, x0 pred)."""
    p = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
    noise = randn_like(x, generator)
    nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # [B, 1, ...]
    return p.mean + nonzero * torch.exp(0.5 * p.log_variance) * noise, p.pred_xstart


@torch.no_grad()
def ddim_step(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    x: Tensor,
    t: Tensor,
    eta: float = 0.0,
    clip_denoised: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step (Song et al. 2021, Eq. 12) x_t -> x_{t-1}; eta = 0 is deterministic, eta = 1
    matches the DDPM posterior variance. A learned variance, if any, is ignored."""
    p = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
    eps = diffusion.predict_eps_from_xstart(x, t, p.pred_xstart)
    abar = extract(diffusion.alphas_cumprod, t, x)
    abar_prev = extract(diffusion.alphas_cumprod_prev, t, x)
    sigma = eta * torch.sqrt((1.0 - abar_prev) / (1.0 - abar)) * torch.sqrt(1.0 - abar / abar_prev)
    mean = p.pred_xstart * torch.sqrt(abar_prev) + torch.sqrt(1.0 - abar_prev - sigma**2) * eps
    if eta == 0.0:
        return mean, p.pred_xstart  # no random draw: fully deterministic
    nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return mean + nonzero * sigma * randn_like(x, generator), p.pred_xstart


def _timesteps(diffusion: GaussianDiffusion, progress: bool) -> Iterator[int]:
    steps: Iterator[int] = iter(range(diffusion.num_timesteps - 1, -1, -1))
    if progress:
        from tqdm.auto import tqdm

        steps = iter(tqdm(list(steps), desc="sampling"))
    return steps


def _initial_noise(shape: tuple[int, ...], noise: Tensor | None, device: torch.device | str | None, generator) -> Tensor:
    if noise is not None:
        return noise.to(device) if device is not None else noise
    gen_device = generator.device if generator is not None else (device or "cpu")
    x = torch.randn(shape, generator=generator, device=gen_device)
    return x.to(device) if device is not None else x


@torch.no_grad()
def ddpm_sample_loop(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    noise: Tensor | None = None,
    clip_denoised: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling from x_{T-1} ~ N(0, I) (or ``noise``) down to x_0; returns [B, C, ...]."""
    x = _initial_noise(shape, noise, device, generator)
    for i in _timesteps(diffusion, progress):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x, _ = p_sample(diffusion, model_fn, x, t, clip_denoised, model_kwargs, generator)
    return x


@torch.no_grad()
def ddim_sample_loop(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    shape: tuple[int, ...],
    noise: Tensor | None = None,
    eta: float = 0.0,
    clip_denoised: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM sampling over every step of ``diffusion`` (respace it first, e.g. "ddim50")."""
    x = _initial_noise(shape, noise, device, generator)
    for i in _timesteps(diffusion, progress):
        t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
        x, _ = ddim_step(diffusion, model_fn, x, t, eta, clip_denoised, model_kwargs, generator)
    return x
