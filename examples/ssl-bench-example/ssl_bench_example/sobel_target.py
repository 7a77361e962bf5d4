"""An edge target: regress the Sobel gradient magnitude of each patch instead of its pixels.

A third-party *target* in the spirit of MaskFeat (Wei et al. 2022, which regresses HOG features of
the masked patches): low-level structure rather than raw intensities. It plugs into any built-in
reconstruction method with ``--set method.target.name=sobel-edges`` and, like MAE's target, counts
only the tokens the corruption removed (all tokens under additive noise).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.components.base import Corrupted, Target
from ssl_bench.components.patches import patchify

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


class SobelTarget(Target):
    """Per pixel sqrt(gx^2 + gy^2) of the channel-mean image (3x3 Sobel, replicate border), cut into
    the network's patches and repeated over the channels: [N, L, p*p*C] (output space 'image').
    With ``norm`` each patch is standardised, as MAE's norm-pix, so flat regions do not dominate."""

    output_space: ClassVar[str] = "image"

    def __init__(self, patch_size: int, norm: bool = True, masked_only: bool = True):
        super().__init__()
        self.patch_size, self.norm, self.masked_only = patch_size, norm, masked_only
        kernels = torch.stack([_SOBEL_X, _SOBEL_X.T]).unsqueeze(1)  # [2, 1, 3, 3]
        self.register_buffer("kernels", kernels, persistent=False)

    def forward(self, images: Tensor, z0: Tensor, corrupted: Corrupted) -> tuple[Tensor, None]:
        gray = images.mean(dim=1, keepdim=True)  # [N, 1, H, W]
        grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), self.kernels.to(gray))  # [N, 2, H, W]
        edges = grad.pow(2).sum(dim=1, keepdim=True).sqrt().expand_as(images)  # [N, C, H, W]
        target = patchify(edges.contiguous(), self.patch_size)  # [N, L, p*p*C]
        if self.norm:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return target, None
