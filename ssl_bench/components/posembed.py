"""Fixed 2-D sin-cos position embeddings (MAE / DiT convention, computed in float64).

First half of the channels encodes the column (w) index, second half the row (h) index; each half
is [sin block, cos block] with omega_k = 1 / 10000^(k / (D/4)). See facebookresearch/mae
``util/pos_embed.py::get_2d_sincos_pos_embed``.
"""

from __future__ import annotations

import numpy as np
import torch


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """positions [M] -> [M, dim] = [sin(pos * omega), cos(pos * omega)]"""
    if dim % 2:
        raise ValueError(f"1-D sin-cos embedding needs an even dim, got {dim}")
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)  # [M, dim/2]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int | None = None, cls_token: bool = False) -> torch.Tensor:
    """[grid_h * grid_w (+1), dim] float32, row-major tokens; an all-zero row first if `cls_token`."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    grid_w = grid_h if grid_w is None else grid_w
    cols, rows = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))  # [h, w] each
    emb = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)  # [h*w, dim]
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float()
