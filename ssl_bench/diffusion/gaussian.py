"""Discrete Gaussian diffusion with Improved DDPM's maths (Nichol & Dhariwal 2021;
openai/improved-diffusion ``improved_diffusion/gaussian_diffusion.py``).

This is the "DDM" half of the l-DAE paper: the DiT baseline it deconstructs trains exactly this
(epsilon prediction, learned-range variance, hybrid loss) on VAE latents. It is pure maths on tensors;
the network is any callable ``model_fn(x_t, t, **model_kwargs) -> [B, C or 2C, ...]``.

Conventions (kept identical to IDDPM/DiT so that their numbers carry over):

* t in {0..T-1}; t = 0 is already one noising step (alpha_bar_0 = 1 - beta_0).
* All per-step tables are float64 numpy arrays; they are indexed *first* and cast to the data dtype
  afterwards (``extract``), so float32 training sees the same rounding as the reference code.
* The channel dimension is dim 1. With learned variance the model returns 2C channels: the first C
  are the mean output (eps or x0), the last C the interpolation value v (IDDPM §3.1 Eq. 15,
  ``GaussianDiffusion.p_mean_variance``).
* VLB terms are in bits per dimension (mean over non-batch dims, divided by ln 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import Tensor

# one noise draw for the whole harness: float32 on the generator's device, then cast and moved
from ssl_bench.components.noise import randn_like_from as randn_like

ModelMeanType = Literal["eps", "x0"]
ModelVarType = Literal["learned_range", "fixed_small", "fixed_large"]
LossType = Literal["mse", "rescaled_mse", "kl", "rescaled_kl"]
ModelFn = Callable[..., Tensor]

_MEAN_TYPES = ("eps", "x0")
_VAR_TYPES = ("learned_range", "fixed_small", "fixed_large")
_LOSS_TYPES = ("mse", "rescaled_mse", "kl", "rescaled_kl")

__all__ = [
    "GaussianDiffusion",
    "PMeanVariance",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "extract",
    "mean_flat",
    "normal_kl",
    "randn_like",
]


# ----------------------------------------------------------------------------------------------
# small pure functions
# ----------------------------------------------------------------------------------------------


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every non-batch dimension: [B, ...] -> [B]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def extract(table: np.ndarray, t: Tensor, like: Tensor) -> Tensor:
    """table[t] broadcast against ``like``: [T] float64, [B] int64 -> [B, 1, ..., 1] in like's dtype.

    The float64 -> data-dtype cast happens after indexing, as in IDDPM's _extract_into_tensor.
    """
    values = torch.as_tensor(table, dtype=torch.float64, device=like.device)[t.to(like.device)]  # [B]
    return values.to(like.dtype).reshape(t.shape + (1,) * (like.ndim - t.ndim))


def normal_kl(mean1: Tensor | float, logvar1: Tensor | float, mean2: Tensor | float, logvar2: Tensor | float) -> Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats; scalars broadcast."""
    ref = next(a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, Tensor))
    mean1, logvar1, mean2, logvar2 = (torch.as_tensor(a, dtype=ref.dtype, device=ref.device) for a in (mean1, logvar1, mean2, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Phi(x) ~ 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): the tanh-GELU approximation IDDPM uses."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) for 8-bit data rescaled to [-1, 1] under a Gaussian discretised into 256 bins.

    Each value x_k = -1 + 2k/255 owns the bin [x_k - 1/255, x_k + 1/255]; the two edge bins extend to
    -inf / +inf so that the 256 probabilities sum to one. Probabilities are clamped at 1e-12 before the
    log. ``log_scales`` is log(std) = 0.5 * log-variance. Returns log-probs (nats) shaped like x.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))  # upper bin edge
    cdf_minus = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))  # lower bin edge
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))  # bin (-inf, x0 + 1/255]
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))  # bin [x255 - 1/255, inf)
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


@dataclass
class PMeanVariance:
    """Output of p(x_{t-1} | x_t): every tensor shaped like x_t."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_xstart: Tensor


# ----------------------------------------------------------------------------------------------
# the diffusion
# ----------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """Forward process q, learned reverse process p, and the IDDPM training/likelihood objectives.

    Args:
        betas: float64 [T] noise variances in (0, 1].
        model_mean_type: the model's first C channels predict ``eps`` or ``x0``.
        model_var_type: ``learned_range`` (2C outputs, log-variance interpolated between beta~_t and
            beta_t), ``fixed_small`` (posterior beta~_t) or ``fixed_large`` (beta_t).
        loss_type: ``mse`` (L_simple + L_vb), ``rescaled_mse`` (L_simple + T/1000 L_vb),
            ``kl`` (L_vb), ``rescaled_kl`` (T L_vb).
        rescale_timesteps: feed the model t * 1000 / original_num_steps as floats (IDDPM option;
            DiT feeds raw integer indices, the default).
        timestep_map: original step index of each of our steps (set by respacing); identity if None.
        original_num_steps: T of the un-respaced diffusion (only used for ``rescale_timesteps``).
    """

    def __init__(
        self,
        betas: np.ndarray,
        model_mean_type: ModelMeanType = "eps",
        model_var_type: ModelVarType = "learned_range",
        loss_type: LossType = "mse",
        *,
        rescale_timesteps: bool = False,
        timestep_map: Sequence[int] | np.ndarray | None = None,
        original_num_steps: int | None = None,
    ):
        if model_mean_type not in _MEAN_TYPES:
            raise ValueError(f"model_mean_type must be one of {_MEAN_TYPES}, got {model_mean_type!r}")
        if model_var_type not in _VAR_TYPES:
            raise ValueError(f"model_var_type must be one of {_VAR_TYPES}, got {model_var_type!r}")
        if loss_type not in _LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {_LOSS_TYPES}, got {loss_type!r}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError("betas must be a 1-D array with at least 2 steps")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("betas must lie in (0, 1]")
        self.model_mean_type: ModelMeanType = model_mean_type
        self.model_var_type: ModelVarType = model_var_type
        self.loss_type: LossType = loss_type
        self.rescale_timesteps = rescale_timesteps

        T = len(betas)
        self.num_timesteps = T
        self.timestep_map = np.arange(T, dtype=np.int64) if timestep_map is None else np.asarray(timestep_map, dtype=np.int64)
        if self.timestep_map.shape != (T,):
            raise ValueError(f"timestep_map must have {T} entries, got {self.timestep_map.shape}")
        self.original_num_steps = int(original_num_steps) if original_num_steps is not None else T

        # forward process q(x_t | x_0); all [T] float64
        self.betas = betas
        self.log_betas = np.log(betas)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)

        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0 would give log 0: IDDPM replaces index 0 by beta~_1 (only matters for the
        # learned-range lower bound at t = 0, where the decoder NLL is used anyway).
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        # fixed_large: beta_t, except beta~_1 at t = 0 for a better decoder log-likelihood
        self.large_variance = np.append(self.posterior_variance[1], betas[1:])

    # -- configuration --------------------------------------------------------------------------

    @property
    def learn_sigma(self) -> bool:
        return self.model_var_type == "learned_range"

    def describe(self) -> dict[str, Any]:
        """Protocol record."""
        return {
            "num_timesteps": self.num_timesteps,
            "original_num_steps": self.original_num_steps,
            "respaced": self.num_timesteps != self.original_num_steps,
            "model_mean_type": self.model_mean_type,
            "model_var_type": self.model_var_type,
            "loss_type": self.loss_type,
            "rescale_timesteps": self.rescale_timesteps,
            "beta_first_last": [float(self.betas[0]), float(self.betas[-1])],
        }

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The t the network sees: original step index (respacing), optionally scaled to [0, 1000)."""
        mapped = torch.as_tensor(self.timestep_map, device=t.device)[t]
        if self.rescale_timesteps:
            return mapped.float() * (1000.0 / self.original_num_steps)
        return mapped

    def call_model(self, model_fn: ModelFn, x: Tensor, t: Tensor, model_kwargs: dict[str, Any] | None = None) -> Tensor:
        return model_fn(x, self.model_timesteps(t), **(model_kwargs or {}))

    # -- forward process ------------------------------------------------------------------------

    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_t | x_0): mean, variance, log-variance (the latter two broadcastable to x)."""
        mean = extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
        variance = extract(1.0 - self.alphas_cumprod, t, x_start)
        log_variance = extract(self.log_one_minus_alphas_cumprod, t, x_start)
        return mean, variance, log_variance

    def q_sample(
        self, x_start: Tensor, t: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; [B, ...] -> [B, ...]."""
        if noise is None:
            noise = randn_like(x_start, generator)
        return extract(self.sqrt_alphas_cumprod, t, x_start) * x_start + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x_0): mean c1 x_0 + c2 x_t, variance beta~_t, clipped log beta~_t."""
        mean = extract(self.posterior_mean_coef1, t, x_t) * x_start + extract(self.posterior_mean_coef2, t, x_t) * x_t
        variance = extract(self.posterior_variance, t, x_t)
        log_variance = extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0 = x_t / sqrt(alpha_bar) - sqrt(1/alpha_bar - 1) eps."""
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, pred_xstart: Tensor) -> Tensor:
        """Inverse of predict_xstart_from_eps (DDIM needs eps whatever the model predicts)."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart) / extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    # -- reverse process ------------------------------------------------------------------------

    def split_output(self, model_output: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """[B, C or 2C, ...] -> (mean output [B, C, ...], v [B, C, ...] or None)."""
        C = x.shape[1]
        expected = 2 * C if self.learn_sigma else C
        if model_output.shape[:2] != (x.shape[0], expected) or model_output.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"model output {tuple(model_output.shape)} does not match input {tuple(x.shape)} "
                f"({self.model_var_type} needs {expected} channels)"
            )
        if self.learn_sigma:
            return model_output[:, :C], model_output[:, C:]
        return model_output, None

    def p_mean_variance_from_output(
        self,
        model_output: Tensor,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = False,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> PMeanVariance:
        """p(x_{t-1} | x_t) from a given network output (so callers can freeze parts of it)."""
        mean_out, v = self.split_output(model_output, x)

        if v is not None:
            # learned range: v = -1 -> beta~_t (clipped), v = +1 -> beta_t, linear in log space.
            # v is deliberately not clamped (IDDPM); the network is free to leave [-1, 1].
            min_log = extract(self.posterior_log_variance_clipped, t, x)
            max_log = extract(self.log_betas, t, x)
            frac = (v + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = torch.exp(log_variance)
        elif self.model_var_type == "fixed_small":
            variance = extract(self.posterior_variance, t, x).expand_as(x)
            log_variance = extract(self.posterior_log_variance_clipped, t, x).expand_as(x)
        else:  # fixed_large
            variance = extract(self.large_variance, t, x).expand_as(x)
            log_variance = extract(np.log(self.large_variance), t, x).expand_as(x)

        if self.model_mean_type == "eps":
            pred_xstart = self.predict_xstart_from_eps(x, t, mean_out)
        else:
            pred_xstart = mean_out
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return PMeanVariance(mean=mean, variance=variance, log_variance=log_variance, pred_xstart=pred_xstart)

    def p_mean_variance(
        self,
        model_fn: ModelFn,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = False,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> PMeanVariance:
        """Run the model at (x_t, t) and return p(x_{t-1} | x_t)."""
        model_output = self.call_model(model_fn, x, t, model_kwargs)
        return self.p_mean_variance_from_output(model_output, x, t, clip_denoised, denoised_fn)

    # -- objectives -----------------------------------------------------------------------------

    def vb_terms_bpd(
        self, model_output: Tensor, x_start: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = False
    ) -> tuple[Tensor, PMeanVariance]:
        """L_t of the VLB in bits/dim, [B]: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the
        discretised-Gaussian decoder NLL -log p(x_0|x_1) for t = 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        p = self.p_mean_variance_from_output(model_output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, p.mean, p.log_variance)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, means=p.mean, log_scales=0.5 * p.log_variance)
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl), p

    def training_losses(
        self,
        model_fn: ModelFn,
        x_start: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Per-sample losses, each [B]: ``loss`` (what to minimise), ``mse`` and ``vb``.

        * ``mse``: mean over dims of (target - mean output)^2, target = eps or x0 (L_simple).
        * ``vb``: the raw VLB term L_t in bits/dim (0 when the variance is fixed and loss is mse-type).
        * mse / rescaled_mse: loss = mse + c vb with c = 1 or T/1000. Inside vb the mean output is
          DETACHED, so L_vb only trains the variance and L_simple alone trains the mean (IDDPM §3.1;
          T/1000 c vb = lambda L_vlb with lambda = 0.001 since L_vlb ~ T L_t).
        * kl / rescaled_kl: loss = vb or T vb (mean and variance both trained by the VLB); ``mse``
          is then a detached diagnostic.
        """
        if noise is None:
            noise = randn_like(x_start, generator)
        x_t = self.q_sample(x_start, t, noise)  # [B, C, ...]
        model_output = self.call_model(model_fn, x_t, t, model_kwargs)  # [B, C or 2C, ...]
        mean_out, v = self.split_output(model_output, x_t)
        target = noise if self.model_mean_type == "eps" else x_start
        mse = mean_flat((target - mean_out) ** 2)  # [B]

        if self.loss_type in ("kl", "rescaled_kl"):
            vb, _ = self.vb_terms_bpd(model_output, x_start, x_t, t)
            scale = float(self.num_timesteps) if self.loss_type == "rescaled_kl" else 1.0
            return {"loss": scale * vb, "mse": mse.detach(), "vb": vb}

        if v is None:
            return {"loss": mse, "mse": mse, "vb": torch.zeros_like(mse)}
        frozen = torch.cat([mean_out.detach(), v], dim=1)  # gradient of vb reaches v only
        vb, _ = self.vb_terms_bpd(frozen, x_start, x_t, t)
        scale = self.num_timesteps / 1000.0 if self.loss_type == "rescaled_mse" else 1.0
        return {"loss": mse + scale * vb, "mse": mse, "vb": vb}

    def prior_bpd(self, x_start: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || N(0, I)) in bits/dim, [B]; not trainable, ~0 for a good schedule."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / math.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(
        self,
        model_fn: ModelFn,
        x_start: Tensor,
        timesteps: Sequence[int] | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Negative VLB in bits/dim per sample: prior KL at T + sum_t L_t (one noise draw per t).

        ``x_start`` must be 8-bit data scaled to [-1, 1] for the decoder term to be a likelihood.
        ``timesteps=None`` evaluates all T terms (exact VLB, IDDPM's calc_bpd_loop). A subset gives
        a cheaper *estimate*: t = 0 (decoder NLL) is always added and counted once; for t >= 1 each
        evaluated L_s stands for every step up to the next evaluated one (step interpolation, the
        first one also for the steps 1..s-1). Its error is the deviation of L_t from a step function:
        L_t falls steeply over the first few steps, where most of the VLB lies, so evaluate small t
        densely (e.g. range(0, 20) plus a stride). The per-term weights are returned.

        Returns ``total_bpd`` [B], ``prior_bpd`` [B], ``vb`` [B, K], ``xstart_mse`` [B, K],
        ``mse`` [B, K] (eps error), ``timesteps`` [K], ``weights`` [K].
        """
        T = self.num_timesteps
        steps = list(range(T)) if timesteps is None else sorted({int(s) for s in timesteps} | {0})
        if steps[0] < 0 or steps[-1] >= T or len(steps) < 2:
            raise ValueError(f"timesteps must lie in [0, {T}) and include at least one t >= 1")
        # step-interpolation weights: term 0 counts once; terms s_1 < s_2 < ... cover [1, s_2), [s_2, s_3), ...
        bounds = [1] + steps[2:] + [T]
        weights = [1.0] + [float(bounds[j + 1] - bounds[j]) for j in range(len(steps) - 1)]

        B = x_start.shape[0]
        vb, xstart_mse, eps_mse = [], [], []
        for s in steps:
            t = torch.full((B,), s, dtype=torch.long, device=x_start.device)
            noise = randn_like(x_start, generator)
            x_t = self.q_sample(x_start, t, noise)
            model_output = self.call_model(model_fn, x_t, t, model_kwargs)
            terms, p = self.vb_terms_bpd(model_output, x_start, x_t, t, clip_denoised)
            vb.append(terms)
            xstart_mse.append(mean_flat((p.pred_xstart - x_start) ** 2))
            eps_mse.append(mean_flat((self.predict_eps_from_xstart(x_t, t, p.pred_xstart) - noise) ** 2))

        vb_t = torch.stack(vb, dim=1)  # [B, K]
        w = torch.tensor(weights, dtype=vb_t.dtype, device=vb_t.device)  # [K]
        prior = self.prior_bpd(x_start)  # [B]
        return {
            "total_bpd": prior + (vb_t * w).sum(dim=1),
            "prior_bpd": prior,
            "vb": vb_t,
            "xstart_mse": torch.stack(xstart_mse, dim=1),
            "mse": torch.stack(eps_mse, dim=1),
            "timesteps": torch.tensor(steps, dtype=torch.long),
            "weights": w,
        }
