"""Gaussian diffusion core (Improved DDPM maths) for the DDM baseline that l-DAE deconstructs.

``create_diffusion`` mirrors the reference factories (IDDPM ``create_gaussian_diffusion``, DiT
``create_diffusion``): its defaults give DiT's training diffusion (linear betas, T = 1000, eps
prediction, learned-range variance, MSE-type hybrid loss).
"""

from __future__ import annotations

import numpy as np

from ssl_bench.components.schedules import cosine_betas, linear_betas
from ssl_bench.diffusion.gaussian import (
    GaussianDiffusion,
    PMeanVariance,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from ssl_bench.diffusion.resample import LossSecondMomentSampler, ScheduleSampler, UniformSampler, build_sampler
from ssl_bench.diffusion.respace import respace, respaced_betas, space_timesteps
from ssl_bench.diffusion.sampling import cfg_model_fn, ddim_sample_loop, ddpm_sample_loop

__all__ = [
    "GaussianDiffusion",
    "LossSecondMomentSampler",
    "PMeanVariance",
    "ScheduleSampler",
    "UniformSampler",
    "build_sampler",
    "cfg_model_fn",
    "create_diffusion",
    "ddim_sample_loop",
    "ddpm_sample_loop",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "named_betas",
    "normal_kl",
    "respace",
    "respaced_betas",
    "space_timesteps",
]


def named_betas(name: str, num_timesteps: int) -> np.ndarray:
    """float64 betas for ``linear`` (IDDPM scaled by 1000/T) or ``cosine`` (``squaredcos_cap_v2`` in DiT)."""
    if name == "linear":
        return linear_betas(num_timesteps)
    if name in ("cosine", "squaredcos_cap_v2"):
        return cosine_betas(num_timesteps)
    raise ValueError(f"unknown beta schedule {name!r}; use 'linear' or 'cosine'")


def create_diffusion(
    timestep_respacing: str | list[int] = "",
    noise_schedule: str = "linear",
    num_timesteps: int = 1000,
    learn_sigma: bool = True,
    predict_xstart: bool = False,
    use_kl: bool = False,
    rescale_learned_sigmas: bool = False,
    sigma_small: bool = False,
    rescale_timesteps: bool = False,
) -> GaussianDiffusion:
    """Same switches and loss-type rule as IDDPM/DiT: use_kl -> rescaled_kl, else
    rescale_learned_sigmas -> rescaled_mse, else mse. Defaults = DiT (T = 1000, so mse == rescaled_mse)."""
    betas = named_betas(noise_schedule, num_timesteps)
    loss_type = "rescaled_kl" if use_kl else ("rescaled_mse" if rescale_learned_sigmas else "mse")
    var_type = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    diffusion = GaussianDiffusion(
        betas,
        model_mean_type="x0" if predict_xstart else "eps",
        model_var_type=var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
    )
    if timestep_respacing:
        diffusion = respace(diffusion, space_timesteps(num_timesteps, timestep_respacing))
    return diffusion
