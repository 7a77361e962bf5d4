"""Timestep respacing: run a T-step diffusion on a subset of its steps.

Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", Sec. 4 ("Improving
Sampling Speed"); official code openai/improved-diffusion, ``improved_diffusion/respace.py``
(``space_timesteps``, ``SpacedDiffusion``), reused unchanged by DiT (facebookresearch/DiT,
``diffusion/respace.py``).

Keeping steps S = {s_0 < s_1 < ...} and setting beta'_j = 1 - alpha_bar_{s_j} / alpha_bar_{s_{j-1}}
(alpha_bar before s_0 = 1) gives a shorter Markov chain whose marginals q(x_j | x_0) equal the
original ones at the kept steps, so a model trained on all T steps can sample with fewer (DiT samples
with 250, DDIM with e.g. 50). The network must still see the *original* index s_j: the respaced
``GaussianDiffusion`` carries that ``timestep_map``.

The subset selection reproduces IDDPM's ``space_timesteps`` exactly (same rounding), so "250" or
"ddim50" select the same steps as the reference code.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ssl_bench.diffusion.gaussian import GaussianDiffusion

__all__ = ["respace", "respaced_betas", "space_timesteps"]


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """Which of ``num_timesteps`` original steps to keep (IDDPM's rule, bit for bit).

    * ``"ddimN"``: range(0, T, stride) for the smallest integer stride in 1..T-1 giving exactly N
      steps; ValueError if none does (so "ddim1" always fails, as in the reference).
    * a list of counts, or a comma string like ``"10,15,20"``: split [0, T) into that many equal
      sections (the first T % len get one extra step) and take count steps from each, walking a
      running float position by the fractional stride (size - 1) / (count - 1) and rounding it
      with builtin ``round`` at every step, so each section's first and last step are kept.
      A count of 1 keeps the section's first step, 0 keeps none; a count above the section's size
      is a ValueError. ``"250"`` or ``[250]`` is the DiT default.

    The running sum is deliberate: where k * (size - 1) / (count - 1) is a half-integer, the
    accumulated float can land a last bit below or above it, and ``round`` follows that bit, while
    k * stride may hit the half-integer and round to even instead (T = 1000, count 21: the sum
    reaches 499.49999999999994 and IDDPM keeps 499, but 10 * 49.95 == 499.5 would keep 500).
    Results are the reference's; error messages name the requested count and the section size
    (the reference's ddim message prints T instead of N).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot make exactly {desired} steps out of {num_timesteps} with an integer stride")
        section_counts = [int(c) for c in section_counts.split(",")]

    n_sections = len(section_counts)
    if n_sections == 0:
        raise ValueError("section_counts must name at least one section")  # IDDPM: ZeroDivisionError
    base, extra = divmod(num_timesteps, n_sections)
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(section_counts):
        size = base + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0  # accumulated, not k * stride: see the docstring
        for _ in range(count):
            kept.add(start + round(position))
            position += stride
        start += size
    return kept


def respaced_betas(betas: np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """(new betas [K] float64, original index of each new step [K] int64) for the kept steps."""
    betas = np.asarray(betas, dtype=np.float64)
    keep = np.array(sorted(set(int(s) for s in use_timesteps)), dtype=np.int64)  # [K]
    if len(keep) == 0 or keep[0] < 0 or keep[-1] >= len(betas):
        raise ValueError(f"use_timesteps must be a non-empty subset of [0, {len(betas)})")
    abar = np.cumprod(1.0 - betas)[keep]  # [K]
    abar_prev = np.append(1.0, abar[:-1])
    return 1.0 - abar / abar_prev, keep


def respace(diffusion: GaussianDiffusion, use_timesteps: Iterable[int]) -> GaussianDiffusion:
    """A GaussianDiffusion on a subset of ``diffusion``'s steps, same model/loss types.

    Indices in ``use_timesteps`` refer to ``diffusion``'s own steps; the returned diffusion maps its
    steps back to the original (un-respaced) indices, so respacing can be applied repeatedly.
    """
    new_betas, keep = respaced_betas(diffusion.betas, use_timesteps)
    return GaussianDiffusion(
        new_betas,
        diffusion.model_mean_type,
        diffusion.model_var_type,
        diffusion.loss_type,
        rescale_timesteps=diffusion.rescale_timesteps,
        timestep_map=diffusion.timestep_map[keep],
        original_num_steps=diffusion.original_num_steps,
    )
