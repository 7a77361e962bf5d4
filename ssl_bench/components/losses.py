"""Joint-embedding losses: InfoNCE with all-gathered keys (MoCo v3) and negative cosine (SimSiam).

Pure functions of the embeddings. Both compute in float32 with autocast disabled: bf16 logits
divided by a temperature of 0.2 lose most of their mantissa, and a cosine near 1 (the regime of a
trained Siamese network) is exactly where bf16 rounding hides the differences the loss measures.
The official codes run these losses in fp16 AMP (MoCo v3) or fp32 (SimSiam); fp32 is the
numerically safe superset of both.

InfoNCE (MoCo v3: Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers", §3 and Alg. 1; facebookresearch/moco-v3 ``moco/builder.py``,
``MoCo.contrastive_loss``, which also holds the 2T factor below):

* keys are stop-gradient targets: they come from a momentum encoder and are treated as constants
  here in every setting (single process or distributed), so the gradient does not depend on the
  world size;
* under an initialised process group with more than one process the keys of all processes are
  gathered (``concat_all_gather`` in the official code), so every query is contrasted against the
  global batch of keys, and its positive sits at row ``N_local * rank + i`` of the gathered keys;
* scaling ``CE(q k^T / T) * 2T``: the 2T factor makes the gradient magnitude independent of T
  (d/dlogits of CE is O(1); logits are divided by T) and is part of the official loss; with
  T = 0.2 the cross-entropy is multiplied by 0.4.

Negative cosine (SimSiam: Chen & He 2021, "Exploring Simple Siamese Representation Learning",
Alg. 1 and Eq. 1-4; facebookresearch/simsiam ``main_simsiam.py``:
``loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5`` with
``criterion = nn.CosineSimilarity(dim=1)``, the targets detached in ``simsiam/builder.py``): the
target side gets no gradient, the stop-gradient that the paper shows prevents collapse (§4.1).
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


def info_nce(q: Tensor, k: Tensor, temperature: float, rank: int | None = None, gather: bool = True) -> Tensor:
    """InfoNCE of queries ``q [N, C]`` against keys ``k``, times ``2 * temperature`` (MoCo v3's ``ctr``).

    * Distributed (process group initialised, world > 1, ``gather=True``): ``k [N, C]`` is this
      process's keys; they are all-gathered (no gradient) and ``rank`` defaults to this process's rank.
    * Otherwise ``k`` is used as given (``[M, C]`` with ``M >= N``): pass ``rank=r`` together with
      the already-global keys to compute what process ``r`` would (labels ``arange(N) + N * r``);
      ``rank`` defaults to 0, i.e. the plain single-process loss when ``M == N``.

    ``q`` and ``k`` need not be normalised (they are L2-normalised here); ``k`` gets no gradient.
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


def symmetric_info_nce(
    q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, temperature: float, rank: int | None = None, gather: bool = True
) -> Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)``: each view's query predicts the other view's momentum key
    (MoCo v3 Alg. 1; a sum, not a mean, as the official ``MoCo.forward``)."""
    return info_nce(q1, k2, temperature, rank, gather) + info_nce(q2, k1, temperature, rank, gather)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's ``D(p, z) = -mean_i cos(p_i, stopgrad(z_i))`` for ``p, z [N, C]`` (Eq. 1 with the
    stop-gradient of Eq. 3). In [-1, 1]; -1 when every prediction points along its target."""
    with torch.autocast(device_type=p.device.type, enabled=False):
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def symmetric_negative_cosine(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """``D(p1, z2) / 2 + D(p2, z1) / 2`` (SimSiam Eq. 4, Alg. 1): minimum -1."""
    return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
