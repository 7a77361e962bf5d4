"""Blockwise masking (BEiT: Bao, Dong, Piao, Wei 2022, §2.5 and Algorithm 1): remove rectangular blocks
of neighbouring tokens instead of independent ones, so a removed token's neighbours are usually
removed too and the model cannot copy them.

A third-party *corruption*: it plugs into any built-in reconstruction method (mae, ldae, ddm) with
``--set method.corruption.name=block-masking``. Like MAE's random masking it removes exactly the
same number of tokens from every sample (``L - int(L * (1 - mask_ratio))``), so the visible tokens
still form a dense batch: blocks are drawn until they cover at least that many tokens, then covered
tokens are removed first (in random order), uncovered ones kept first.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ssl_bench.components.base import Corrupted, Corruption


class BlockMasking(Corruption):
    """Remove ``mask_ratio`` of the tokens of a square token grid in random rectangular blocks.

    Each block has an area drawn uniformly in [``min_block``, what is still needed] (in tokens) and a
    log-uniform aspect ratio in [1/max_aspect, max_aspect], as BEiT's ``MaskingGenerator``.
    """

    produces: ClassVar[frozenset[str]] = frozenset({"mask"})

    def __init__(self, mask_ratio: float = 0.4, min_block: int = 4, max_aspect: float = 3.0):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if min_block < 1 or max_aspect < 1.0:
            raise ValueError(f"need min_block >= 1 and max_aspect >= 1, got {min_block}, {max_aspect}")
        self.mask_ratio, self.min_block, self.max_aspect = mask_ratio, min_block, max_aspect

    def _coverage(self, side: int, num_mask: int, generator: torch.Generator | None) -> Tensor:
        """[side, side] 0/1: blocks drawn until at least ``num_mask`` tokens are covered."""
        cover = torch.zeros(side, side)
        log_lo, log_hi = -math.log(self.max_aspect), math.log(self.max_aspect)
        for _ in range(100 * side * side):  # bounded: each draw covers >= 1 new token with positive probability
            need = num_mask - int(cover.sum())
            if need <= 0:
                break
            u = torch.rand(4, generator=generator)
            area = self.min_block + u[0].item() * max(need - self.min_block, 0)
            aspect = math.exp(log_lo + u[1].item() * (log_hi - log_lo))
            h = max(1, min(side, round(math.sqrt(area * aspect))))
            w = max(1, min(side, round(math.sqrt(area / aspect))))
            top = int(u[2].item() * (side - h + 1))
            left = int(u[3].item() * (side - w + 1))
            cover[top : top + h, left : left + w] = 1.0
        return cover.flatten()  # [L]

    def forward(self, z0: Tensor, generator: torch.Generator | None = None) -> Corrupted:
        n, length = z0.shape[:2]
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"block masking needs a square token grid, got {length} tokens")
        len_keep = int(length * (1 - self.mask_ratio))
        # The blocks are drawn by a small Python loop on the CPU. A GPU step generator cannot draw CPU
        # numbers, so it seeds a CPU one (one draw, one sync per step; a CPU generator is used as is).
        if generator is not None and generator.device.type != "cpu":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator().manual_seed(seed)
        cover = torch.stack([self._coverage(side, length - len_keep, generator) for _ in range(n)])  # [N, L]
        noise = torch.rand(n, length, generator=generator)
        ids_shuffle = torch.argsort(cover + 0.5 * noise, dim=1).to(z0.device)  # uncovered first = kept
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones(n, length, device=z0.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # 1 = removed
        return Corrupted(ids_keep=ids_shuffle[:, :len_keep], ids_restore=ids_restore, mask=mask)
