"""Regression targets of the l-DAE deconstruction (Chen et al. 2024, §4.3, Eqs. 2-4).

Each target returns ``(target, weight)`` with the noise-level weight lambda_t already folded into
``weight`` (``schedule.loss_weight(t, prediction)``: 1 for eps, gamma^2/(gamma^2+sigma^2) for x0,
which is l-DAE's gamma_t^2 on variance-preserving schedules and 1/(1+sigma_t^2) on gamma = 1
schedules). A corruption without noise levels (masking) gives lambda = 1.

Some targets live in a rotated space (the full PCA basis of the original-image loss): the pipeline
passes its prediction through ``target.to_loss_space`` before ``targets.reconstruction_loss``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Target, Tokenizer
from ssl_bench.components.patches import patchify
from ssl_bench.components.schedules import NoiseSchedule


def pca_direction_weights(D: int, d: int, residual_weight: float = 0.1) -> Tensor:
    """[D]: 1 on the first d (in-latent) PCA directions, ``residual_weight`` on the other D - d (Eq. 4)."""
    if not 0 <= d <= D:
        raise ValueError(f"need 0 <= d <= D, got d={d}, D={D}")
    w = torch.full((D,), float(residual_weight))
    w[:d] = 1.0
    return w


class _LambdaTarget(Target):
    """Shares lambda_t = schedule.loss_weight(t, prediction) as a [N, 1, 1] weight."""

    prediction: ClassVar[Literal["eps", "x0"]] = "x0"

    def __init__(self, schedule: NoiseSchedule | None = None, masked_only: bool = True):
        super().__init__()
        self.schedule = schedule
        self.masked_only = masked_only

    def lam(self, corrupted: Corrupted, like: Tensor) -> Tensor:
        """[N, 1, 1]: lambda_t, or 1 when the corruption has no noise level (masking)."""
        if corrupted.t is None or self.schedule is None:
            return like.new_ones(like.shape[0], 1, 1)
        return self.schedule.loss_weight(corrupted.t, self.prediction, like.dtype).to(like.device).view(-1, 1, 1)


class NoiseTarget(_LambdaTarget):
    """eps-prediction (DDPM L_simple, Eq. 2): target = the eps that was added, lambda_t = 1."""

    prediction = "eps"
    requires: ClassVar[frozenset[str]] = frozenset({"noise"})

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        return corrupted.noise, self.lam(corrupted, z0)


class CleanLatentTarget(_LambdaTarget):
    """z0-prediction in latent space (Eq. 3): target = z0, lambda_t from the schedule's x0 rule."""

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        return z0, self.lam(corrupted, z0)


class InverseTokenizerImageTarget(_LambdaTarget):
    """Image output via the inverse tokenizer (Table 3 "operate on image output"): target = the
    patches of g(f(x0)), e.g. mu + V^T V (x0 - mu) for PCA, in the network's patch layout."""

    output_space: ClassVar[str] = "image"
    raw_pixels = True

    def __init__(self, tokenizer: Tokenizer, patch_size: int, schedule: NoiseSchedule | None = None, masked_only: bool = True):
        super().__init__(schedule, masked_only)
        self._tokenizer = [tokenizer]  # owned by the method, kept out of this module's state_dict
        self.patch_size = patch_size

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        recon = self._tokenizer[0].decode(z0)  # [N, C, H, W]
        return patchify(recon, self.patch_size), self.lam(corrupted, z0)


class OriginalImageTarget(_LambdaTarget):
    """The final l-DAE target (Eq. 4): the original clean image, error measured in the full PCA basis.

    r = B (x0 - pred) per patch, loss = lambda_t * sum_i w_i r_i^2 with w = 1 on the first d
    directions and ``residual_weight`` (0.1) on the remaining D - d. Implemented as a target in
    rotated coordinates: target = B (x0 - mu), ``to_loss_space(pred)`` = B (pred - mu), weight =
    lambda_t * w; mu cancels. ``residual_weight = 1`` is plain pixel MSE (B is orthonormal).
    Needs a patch-wise tokenizer with a full basis whose patch is the network's.
    """

    output_space: ClassVar[str] = "image"
    raw_pixels = True

    def __init__(self, tokenizer: Tokenizer, schedule: NoiseSchedule | None = None, residual_weight: float = 0.1, masked_only: bool = True):
        super().__init__(schedule, masked_only)
        self._tokenizer = [tokenizer]
        self.residual_weight = residual_weight
        D = getattr(tokenizer, "patch_dim", tokenizer.latent_dim)  # the pipeline refuses a tokenizer without one
        self.register_buffer("direction_weights", pca_direction_weights(D, tokenizer.latent_dim, residual_weight), persistent=False)  # [D]

    def incompatibility(self, tokenizer: Tokenizer) -> str | None:
        if not hasattr(tokenizer, "full_basis") or not hasattr(tokenizer, "patch_dim"):
            return (
                "the original-image loss is measured in the tokenizer's full basis, so it needs a patch-wise tokenizer "
                f"with a full basis (patch, pixel, patch-pca, patch-ae, patch-vae); {type(tokenizer).__name__} has none"
            )
        return None

    @property
    def patch_size(self) -> int:
        return self._tokenizer[0].patch_size

    def to_loss_space(self, pred: Tensor) -> Tensor:
        """pred patches [N, L, D] -> their full-basis coordinates [N, L, D]."""
        return self._tokenizer[0].project_full(pred)

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        coords = self._tokenizer[0].project_full(patchify(images, self.patch_size))  # [N, L, D]
        weight = self.lam(corrupted, coords) * self.direction_weights.to(coords).view(1, 1, -1)  # [N, 1, D]
        return coords, weight


BUILTIN_LATENT_TARGETS: dict[str, type[Target]] = {
    "noise": NoiseTarget,
    "clean-latent": CleanLatentTarget,
    "inverse-tokenizer-image": InverseTokenizerImageTarget,
    "original-image": OriginalImageTarget,
}
