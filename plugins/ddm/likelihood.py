"""Test negative log-likelihood of the DDM in bits/dim (Improved DDPM's metric, Nichol &
Dhariwal 2021 §3; openai/improved-diffusion ``gaussian_diffusion.py::calc_bpd_loop``).

What is measured, and why it is honest
--------------------------------------
The diffusion runs on the tokenizer's latent laid out as an image ``x0 = latent_image(encode(x))``
([N, C, h, w], channels = latent dims). The negative VLB of ``x0`` is

    prior KL(q(x_T|x0) || N(0, I)) + sum_{t>=1} L_t + L_0,

each term averaged over the C*h*w dims and divided by ln 2. Two cases decide what L_0 and hence the
number *is*:

* ``space = "pixel"`` (``tokenizer.name = "pixel"``, ``image_norm = "minus1_1"``): the latent is a
  space-to-depth rearrangement of the 8-bit image scaled to [-1, 1], so its dims are exactly the
  pixels and IDDPM's discretised Gaussian decoder (bins of half-width 1/255) is exact. The number is
  the usual image bits/dim, comparable with IDDPM's (upper bound on -log2 P(x) / dims). Images are
  re-quantised to the 8-bit grid after any resize, so a resized run is the NLL of the resized image.
* ``space = "latent"`` (the default patch-PCA DDM, and any other tokenizer): the latent is
  continuous and unbounded, so a discretised decoder would be meaningless (every value beyond +-1
  falls in an edge bin). L_0 is instead the continuous Gaussian density -log N(x0; mu_theta, sigma_1^2),
  which makes the total an upper bound on the *differential* entropy of the latent, in bits per
  latent dim. It can be negative, depends on the latent's scale, and is NOT comparable with pixel
  bits/dim or across tokenizers; only runs with the same tokenizer compare. The protocol records this.

Estimator
---------
``timesteps = None`` (``nll.full = True``) evaluates all T terms (IDDPM's ``calc_bpd_loop``). The
default evaluates t = 0..dense-1 and every ``stride``-th step, and ``calc_bpd_loop`` fills the gaps
by step interpolation (each evaluated L_s stands for the steps up to the next one). L_t falls
steeply over the first steps, where most of the bound lies, hence the dense head. Two error bars are
reported: the standard error over images, and ``interp_err`` = half the gap between the left- and the
right-endpoint interpolation (a bracket for the true sum wherever L_t is monotone in t).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ssl_bench.components.tokenizers import PatchTokenizer
from ssl_bench.diffusion import GaussianDiffusion, mean_flat
from ssl_bench.eval.base import EvalResult

__all__ = ["nll_space", "nll_timesteps", "gaussian_nll_bpd", "interpolation_bracket", "evaluate_nll"]


def nll_space(method: Any) -> str:
    """"pixel" when the diffusion's data are the 8-bit pixels in [-1, 1] (discretised decoder exact),
    else "latent" (continuous decoder, bits per latent dim)."""
    pixel = isinstance(method.tokenizer, PatchTokenizer) and method.image_norm == "minus1_1"
    return "pixel" if pixel else "latent"


def nll_timesteps(T: int, dense: int = 20, stride: int = 50, full: bool = False) -> list[int] | None:
    """The evaluated subset {0..dense-1} U {0, stride, 2 stride, ...} (None = all T terms)."""
    if full:
        return None
    steps = set(range(min(int(dense), T))) | set(range(0, T, max(1, int(stride))))
    if max(steps) < 1:
        steps.add(1)
    return sorted(steps)


def gaussian_nll_bpd(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """Continuous decoder term: -log N(x; mean, exp(log_variance)) averaged over dims, in bits: [B]."""
    nats = 0.5 * (math.log(2.0 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))
    return mean_flat(nats) / math.log(2.0)


def interpolation_bracket(vb: Tensor, weights: Tensor) -> Tensor:
    """Right-endpoint counterpart of calc_bpd_loop's step interpolation, per sample: [B, K] -> [B].

    calc_bpd_loop gives term j >= 1 the weight of the steps [s_j, s_{j+1}) and the value L(s_j); here
    the same steps take L(s_{j+1}) (the last interval keeps L(s_{K-1})). Term 0 (decoder) is exact.
    """
    right = torch.cat([vb[:, :1], vb[:, 2:], vb[:, -1:]], dim=1)  # [B, K]: L(s_{j+1}) for j >= 1
    return (right * weights).sum(dim=1)


@torch.no_grad()
def evaluate_nll(
    diffusion: GaussianDiffusion,
    model_fn: Callable[..., Tensor],
    batches: Sequence[tuple[Tensor, Tensor | None]],
    space: str,
    timesteps: Sequence[int] | None,
    seed: int = 0,
    protocol: dict[str, Any] | None = None,
) -> EvalResult:
    """NLL over ``batches`` of (x0 [B, C, h, w] diffusion data, labels [B] or None).

    Returns metrics ``nll_bpd`` (mean negative VLB estimate), ``nll_bpd_stderr``, ``nll_bpd_interp_err``,
    ``nll_prior_bpd`` and ``nll_decoder_bpd``; the protocol says what the number means.
    """
    if space not in ("pixel", "latent"):
        raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}")
    device = batches[0][0].device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    totals, alts, priors, decoders = [], [], [], []
    steps_used: list[int] = []
    for x0, y in batches:
        kwargs = {} if y is None else {"y": y}
        out = diffusion.calc_bpd_loop(model_fn, x0, timesteps, clip_denoised=space == "pixel", model_kwargs=kwargs, generator=gen)
        vb, w = out["vb"], out["weights"]  # [B, K], [K]
        steps_used = out["timesteps"].tolist()
        total = out["total_bpd"]  # [B]
        decoder = vb[:, 0]
        if space == "latent":
            # replace the discretised decoder term (meaningless on a continuous latent) by the density
            t0 = torch.zeros(x0.shape[0], dtype=torch.long, device=device)
            x1 = diffusion.q_sample(x0, t0, generator=gen)
            p = diffusion.p_mean_variance(model_fn, x1, t0, clip_denoised=False, model_kwargs=kwargs)
            cont = gaussian_nll_bpd(x0, p.mean, p.log_variance)  # [B]
            total = total - decoder * w[0] + cont
            vb = torch.cat([cont[:, None], vb[:, 1:]], dim=1)
            decoder = cont
        totals.append(total)
        alts.append(out["prior_bpd"] + interpolation_bracket(vb, w))
        priors.append(out["prior_bpd"])
        decoders.append(decoder)
    total = torch.cat(totals).double()  # [N]
    alt = torch.cat(alts).double()
    n = total.numel()
    metrics = {
        "nll_bpd": float(total.mean()),
        # one image has no standard error: None ("not computed"), never a NaN the store would refuse
        "nll_bpd_stderr": float(total.std(unbiased=True) / math.sqrt(n)) if n > 1 else None,
        "nll_bpd_interp_err": 0.0 if timesteps is None else float((total.mean() - alt.mean()).abs() / 2),
        "nll_prior_bpd": float(torch.cat(priors).double().mean()),
        "nll_decoder_bpd": float(torch.cat(decoders).double().mean()),
    }
    T = diffusion.num_timesteps
    proto: dict[str, Any] = {
        "space": space,
        "unit": "bits per pixel dim (8-bit image in [-1, 1])" if space == "pixel" else "bits per latent dim (continuous density)",
        "decoder": (
            "discretised Gaussian, 256 bins of half-width 1/255 (exact likelihood of 8-bit data)"
            if space == "pixel"
            else "continuous Gaussian density at t=0: an upper bound on the latent's differential entropy; "
            "can be negative, scale dependent, NOT comparable with pixel bits/dim or across tokenizers"
        ),
        "clip_denoised": space == "pixel",
        "num_images": n,
        "timesteps": "all" if timesteps is None else f"{len(steps_used)} of {T}: {_describe_steps(steps_used)}",
        "estimator": "exact VLB sum" if timesteps is None else (
            "calc_bpd_loop step interpolation (L_s stands for steps up to the next evaluated s); "
            "interp_err = half gap to the right-endpoint interpolation"
        ),
        "noise_draws": f"one per (image, t), torch.Generator seed {int(seed)}",
        **(protocol or {}),
    }
    return EvalResult(metrics, proto)


def _describe_steps(steps: Sequence[int]) -> str:
    """Compact text for a sorted step list, e.g. '0-19, 50, 100, ..., 950'."""
    steps = list(steps)
    head = 0
    while head + 1 < len(steps) and steps[head + 1] == steps[head] + 1:
        head += 1
    rest = steps[head + 1 :]
    text = f"{steps[0]}-{steps[head]}" if head else str(steps[0])
    if len(rest) > 3:
        return f"{text}, {rest[0]}, {rest[1]}, ..., {rest[-1]}"
    return ", ".join([text] + [str(s) for s in rest])
