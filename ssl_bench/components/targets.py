"""Regression targets. Each returns (target, weight) so one weighted-MSE loss serves every method."""

from __future__ import annotations

from torch import Tensor

from ssl_bench.components.base import Corrupted, Target


class NormalizedPixelTarget(Target):
    """MAE's target: patch pixels, optionally normalised per patch (unbiased variance, eps 1e-6
    inside the sqrt); weight = the mask, so only removed patches count (METHODS.md 2.5, facts 18)."""

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6, masked_only: bool = True):
        super().__init__()
        self.norm_pix, self.eps, self.masked_only = norm_pix, eps, masked_only

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        target = z0  # [N, L, p*p*C] pixel patches (identity tokenizer)
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as torch's default and MAE
            target = (target - mean) / (var + self.eps) ** 0.5
        if self.masked_only:
            if corrupted.mask is None:
                raise ValueError("NormalizedPixelTarget(masked_only=True) needs a masking corruption")
            weight = corrupted.mask.unsqueeze(-1)  # [N, L, 1]
        else:
            weight = target.new_ones(target.shape[:2]).unsqueeze(-1)
        return target, weight


def weighted_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """MAE's reduction: mean over the token's values, then a weight-normalised sum over tokens.

    pred/target [N, L, P], weight [N, L, 1] or [N, L, P] -> scalar.
    """
    per_elem = (pred - target) ** 2
    if weight.shape[-1] == 1:
        per_token = per_elem.mean(dim=-1)  # [N, L]
        w = weight.squeeze(-1)
        return (per_token * w).sum() / w.sum().clamp_min(1e-12)
    return (per_elem * weight).sum() / weight.sum().clamp_min(1e-12)
