"""Sample grids for the DDM: DDIM or respaced ancestral DDPM in the latent, decoded by the tokenizer.

Sampling is a sanity check of the generative model (the benchmark itself never samples): a model
whose test NLL drops should also start to produce digit-like strokes. Everything is seeded, so the
same checkpoint and options give the same PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ssl_bench.diffusion import GaussianDiffusion, respace, space_timesteps

__all__ = ["respaced_for_sampling", "image_grid", "save_png"]

SAMPLERS = ("ddim", "ddpm")


def respaced_for_sampling(diffusion: GaussianDiffusion, steps: int, sampler: str) -> GaussianDiffusion:
    """The diffusion on ``steps`` of its T steps: DDIM's constant stride ("ddimN") where it exists,
    else IDDPM's evenly spaced section ("N"), which is also what ancestral DDPM uses (DiT: "250")."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    T = diffusion.num_timesteps
    steps = max(1, min(int(steps), T))
    if steps == T:
        return diffusion
    use = None
    if sampler == "ddim":
        try:
            use = space_timesteps(T, f"ddim{steps}")
        except ValueError:
            use = None  # no integer stride gives exactly `steps`: fall back to even sections
    if use is None:
        use = space_timesteps(T, str(steps))
    return respace(diffusion, use)


def image_grid(images: Tensor, nrow: int | None = None, pad: int = 1, min_tile: int = 48) -> np.ndarray:
    """[N, C, H, W] in [0, 1] -> uint8 [rows*(H'+pad)+pad, cols*(W'+pad)+pad, 3]; tiny images (digits,
    8x8) are enlarged by an integer nearest-neighbour factor so that a tile is >= ``min_tile`` px."""
    x = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    elif c != 3:
        x = x[:, :3] if c > 3 else torch.cat([x, x[:, -1:].expand(n, 3 - c, h, w)], dim=1)
    k = max(1, math.ceil(min_tile / max(h, w)))
    if k > 1:
        x = x.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        h, w = h * k, w * k
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    grid = torch.ones(3, rows * (h + pad) + pad, cols * (w + pad) + pad)  # white separators
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = x[i]
    return (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def save_png(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``images`` ([N, C, H, W] in [0, 1]) as one PNG grid."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, nrow)).save(path)
    return path
