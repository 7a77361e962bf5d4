"""MAE random masking (He et al. 2022, §3 "Masking"; facebookresearch/mae models_mae.py
``random_masking``): per-sample shuffle by argsort of uniform noise, keep the first L * (1 - r)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Corruption


class RandomMasking(Corruption):
    """Removes a random ``mask_ratio`` of the tokens of every sample (the same count per sample, so
    the visible tokens form a dense [N, L_keep, D] batch)."""

    produces: ClassVar[frozenset[str]] = frozenset({"mask"})

    def __init__(self, mask_ratio: float = 0.75):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:  # 0 removes nothing: MAE's loss would count no token at all
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio

    def forward(self, z0: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        n, length = z0.shape[:2]
        len_keep = int(length * (1 - self.mask_ratio))
        noise = torch.rand(n, length, device=z0.device, generator=generator)  # [N, L]
        ids_shuffle = torch.argsort(noise, dim=1)  # small noise = kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]  # [N, L_keep]
        mask = torch.ones(n, length, device=z0.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # back to the original order; 1 = removed
        return Corrupted(ids_keep=ids_keep, ids_restore=ids_restore, mask=mask)
