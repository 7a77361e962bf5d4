"""MAE's patch layout ('nchpwq -> nhwpqc'): tokens row-major over the grid, channel fastest in a token.

The layout matters: norm_pix targets, PCA bases and pixel predictions all index into it.
"""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """[N, C, H, W] -> [N, h*w, p*p*C]"""
    n, c, h_px, w_px = images.shape
    p = patch_size
    if h_px % p or w_px % p:
        raise ValueError(f"image size {h_px}x{w_px} is not divisible by patch size {p}; pick a patch size that divides it")
    h, w = h_px // p, w_px // p
    x = images.reshape(n, c, h, p, w, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # n h w p q c
    return x.reshape(n, h * w, p * p * c)


def unpatchify(patches: Tensor, patch_size: int, channels: int, grid: tuple[int, int] | None = None) -> Tensor:
    """[N, h*w, p*p*C] -> [N, C, h*p, w*p]; square grid unless `grid` is given."""
    n, length, dim = patches.shape
    p, c = patch_size, channels
    if dim != p * p * c:
        raise ValueError(f"token dim {dim} != patch_size^2 * channels = {p * p * c}")
    if grid is None:
        h = w = int(round(length**0.5))
        if h * w != length:
            raise ValueError(f"{length} tokens do not form a square grid; pass grid=(h, w)")
    else:
        h, w = grid
    x = patches.reshape(n, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # n c h p w q
    return x.reshape(n, c, h * p, w * p)
