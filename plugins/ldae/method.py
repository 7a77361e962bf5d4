"""l-DAE (Chen, Liu, Xie, He 2024, "Deconstructing Denoising Diffusion Models for Self-Supervised
Learning", §4.3-4.4, Fig. 1): the final configuration of the core ``DenoisingMethod``.

Patch-wise PCA tokenizer, noise added in the PCA latent (gamma = 1, sigma_t linear 0 -> sqrt 2),
the noisy image reconstructed by inverse PCA as the DiT's input, and the original clean image as
the target, its error weighted 1 / 0.1 on the in-latent / residual PCA directions with
lambda_t = 1 / (1 + sigma_t^2) (Eq. 4). Everything is in ``default_config.py``; the class only binds it.
"""

from __future__ import annotations

from pathlib import Path

from ssl_bench.methods.denoising import DenoisingMethod


class LDAE(DenoisingMethod):
    """l-DAE: ``DenoisingMethod`` with the defaults of ``default_config.py``."""

    default_config = Path(__file__).parent / "default_config.py"


__all__ = ["LDAE"]
