"""Regression targets and the one loss every reconstruction method uses.

Each target returns ``(target, weight)`` so that MAE's normalised pixels, l-DAE's weighted PCA
coordinates and a DDM's noise all go through ``reconstruction_loss``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ssl_bench.components.base import Corrupted, Target
from ssl_bench.components.patches import patchify


def reconstruction_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None, token_mask: Tensor | None = None) -> Tensor:
    """Weighted squared error, pred / target [N, L, P], weight broadcastable to them (None = 1).

    Without ``token_mask``: the plain mean over batch, tokens and values of weight * (pred - target)^2
    (l-DAE Eq. 4 up to the constant 1/P; the weight is *not* normalised by its sum, which would rescale
    every batch by its average lambda_t). With ``token_mask`` [N, L] (1 = the corruption removed the
    token): the mean over a token's values, then the mean over the removed tokens only — MAE's
    ``forward_loss`` (facebookresearch/mae models_mae.py). Both are one formula,
    sum(m w e^2) / (P sum m) with m = 1 everywhere when nothing was removed.
    """
    err = (pred - target) ** 2
    if weight is not None:
        err = err * weight
    if token_mask is None:
        return err.mean()
    per_token = err.mean(dim=-1)  # [N, L]
    return (per_token * token_mask).sum() / token_mask.sum().clamp_min(1e-12)


class NormalizedPixelTarget(Target):
    """MAE's target (He et al. 2022, §3 "Reconstruction target"): the pixels of each patch, optionally
    normalised per patch with the unbiased variance and eps 1e-6 inside the sqrt (``norm_pix_loss``,
    facebookresearch/mae models_mae.py ``forward_loss``). Patches are cut from the (augmented) image
    at the network's patch size, so the target is the same whatever the tokenizer."""

    output_space: ClassVar[str] = "image"

    def __init__(self, patch_size: int, norm_pix: bool = True, eps: float = 1e-6, masked_only: bool = True):
        super().__init__()
        self.patch_size, self.norm_pix, self.eps, self.masked_only = patch_size, norm_pix, eps, masked_only
        self.raw_pixels = not norm_pix

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor | None]:
        target = patchify(images, self.patch_size)  # [N, L, p*p*C]
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as torch's default and MAE
            target = (target - mean) / (var + self.eps) ** 0.5
        return target, None
