"""MoCo v3 contrastive loss (METHODS.md §3.2, fact 23). Pure functions.

Keys are stop-gradient targets: they come from the momentum encoder and are treated as constants
here in every setting (single process or distributed), so the function's gradient does not depend
on the world size. Under an initialised process group with more than one process the keys of all
processes are gathered, so every query is contrasted against the global batch of keys, and its
positive sits at row ``N_local * rank + i`` of the gathered keys.

Scaling: ``CE(q k^T / T) * 2T``. The 2T factor makes the gradient magnitude independent of T
(d/dlogits of CE is O(1); logits are divided by T) and is part of the official loss; with T = 0.2
the CE is multiplied by 0.4.

Precision: the loss is computed in float32 with autocast disabled, because bf16 logits divided by
T = 0.2 lose most of their mantissa (the official code runs it under fp16 AMP; fp32 is a
numerically safer superset).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def gather_keys(k: Tensor) -> Tensor:
    """All-gather ``[N_local, C]`` from every process -> ``[N_local * world, C]`` in rank order, no gradient."""
    parts = [torch.empty_like(k) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, k.contiguous())
    return torch.cat(parts, dim=0)


def contrastive_loss(
    q: Tensor, k: Tensor, temperature: float, rank: int | None = None, gather: bool = True
) -> Tensor:
    """InfoNCE of queries ``q [N, C]`` against keys ``k``, times ``2 * temperature``.

    * Distributed (process group initialised, world > 1, ``gather=True``): ``k [N, C]`` is this
      process's keys; they are all-gathered (no gradient) and ``rank`` defaults to this process's rank.
    * Otherwise ``k`` is used as given (``[M, C]`` with ``M >= N``): pass ``rank=r`` together with
      the already-global keys to compute what process ``r`` would (labels ``arange(N) + N * r``);
      ``rank`` defaults to 0, i.e. the plain single-process loss when ``M == N``.
    """
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=1)  # [N, C]
        k = F.normalize(k.detach().float(), dim=1)  # [N, C] (local) or [M, C] (global)
        if gather and _world_size() > 1:
            k = gather_keys(k)  # [N * world, C]
            if rank is None:
                rank = dist.get_rank()
        rank = 0 if rank is None else rank
        n = q.shape[0]
        if k.shape[0] < n * (rank + 1):
            raise ValueError(f"{k.shape[0]} keys cannot hold the positives of rank {rank} with {n} queries each")
        logits = q @ k.t() / temperature  # [N, M]
        labels = torch.arange(n, device=q.device) + n * rank  # [N]
        return F.cross_entropy(logits, labels) * (2.0 * temperature)


def symmetric_loss(
    q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, temperature: float, rank: int | None = None, gather: bool = True
) -> Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``: each view's query predicts the other view's momentum key."""
    return contrastive_loss(q1, k2, temperature, rank, gather) + contrastive_loss(q2, k1, temperature, rank, gather)
