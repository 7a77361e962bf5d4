"""Regression targets of the l-DAE deconstruction (METHODS.md §1.6, Eqs. 2-4; fact 27).

Each target returns ``(target, weight)`` with the noise-level weight lambda_t already folded into
``weight`` (``schedule.loss_weight(t, prediction)``: 1 for eps, gamma^2/(gamma^2+sigma^2) for x0,
which is l-DAE's gamma_t^2 on VP schedules and 1/(1+sigma_t^2) on gamma = 1 schedules).

Some targets live in a rotated space (the full PCA basis of the original-image loss): the method
passes its prediction through ``target.to_loss_space`` before the loss. Reduction: ``weighted_mean_sq``
= plain mean over batch, tokens and values of weight * (pred - target)^2. Unlike
``targets.weighted_mse`` it does *not* divide by the sum of the weights: that self-normalisation
would rescale every batch by its average lambda_t, whereas Eq. 4 is a plain mean of lambda_t-weighted
errors. Mean over values (not the sum of Eq. 4) only changes a constant factor.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Target
from ssl_bench.components.patches import patchify
from ssl_bench.components.schedules import NoiseSchedule


def weighted_mean_sq(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """mean(weight * (pred - target)^2); weight broadcastable to pred [N, L, P] -> scalar."""
    return ((pred - target) ** 2 * weight).mean()


def pca_direction_weights(D: int, d: int, residual_weight: float = 0.1) -> Tensor:
    """[D]: 1 on the first d (in-latent) PCA directions, ``residual_weight`` on the other D - d (Eq. 4)."""
    if not 0 <= d <= D:
        raise ValueError(f"need 0 <= d <= D, got d={d}, D={D}")
    w = torch.full((D,), float(residual_weight))
    w[:d] = 1.0
    return w


class _LambdaTarget(Target):
    """Shares lambda_t = schedule.loss_weight(t, prediction) as a [N, 1, 1] weight."""

    prediction: Literal["eps", "x0"] = "x0"

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.schedule = schedule

    def lam(self, corrupted: Corrupted, like: Tensor) -> Tensor:
        if corrupted.t is None:
            raise ValueError(f"{type(self).__name__} needs an additive-noise corruption (t is missing)")
        return self.schedule.loss_weight(corrupted.t, self.prediction, like.dtype).to(like.device).view(-1, 1, 1)

    def to_loss_space(self, pred: Tensor) -> Tensor:
        return pred


class NoiseTarget(_LambdaTarget):
    """eps-prediction (DDPM L_simple, Eq. 2): target = the eps that was added, lambda_t = 1."""

    prediction = "eps"

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        if corrupted.noise is None:
            raise ValueError("NoiseTarget needs the added noise in Corrupted.noise")
        return corrupted.noise, self.lam(corrupted, z0)


class CleanLatentTarget(_LambdaTarget):
    """z0-prediction in latent space (Eq. 3): target = z0, lambda_t from the schedule's x0 rule."""

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, Tensor]:
        return z0, self.lam(corrupted, z0)


class InverseTokenizerImageTarget(_LambdaTarget):
    """Image output via the inverse tokenizer (Table 3 row 4): target = patches of g(f(x0)),
    e.g. mu + V^T V (x0 - mu) for PCA, in the network's output patch layout (patch ``patch_size``)."""

    def __init__(self, schedule: NoiseSchedule, tokenizer: torch.nn.Module, patch_size: int):
        super().__init__(schedule)
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
    """

    def __init__(self, schedule: NoiseSchedule, tokenizer: torch.nn.Module, residual_weight: float = 0.1):
        super().__init__(schedule)
        if not hasattr(tokenizer, "full_basis"):
            raise ValueError(
                f"the original-image target needs a patch-wise tokenizer with a full basis (patch-pca, patch-ae, "
                f"patch-vae); {type(tokenizer).__name__} has none"
            )
        self._tokenizer = [tokenizer]
        self.residual_weight = residual_weight
        self.register_buffer(
            "direction_weights", pca_direction_weights(tokenizer.patch_dim, tokenizer.latent_dim, residual_weight), persistent=False
        )  # [D]

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
