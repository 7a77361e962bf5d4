"""Momentum (EMA) encoders: the cosine momentum schedule, the in-place update, and a frozen copy.

A momentum encoder is the slowly moving copy of the trained encoder that produces the targets of
MoCo (v1-v3) and BYOL: ``theta_k <- m theta_k + (1 - m) theta_q`` after every step, with ``m``
raised from ``m0`` to 1 along a half cosine (MoCo v3: Chen, Xie, He 2021, §3 and Alg. 1; the
schedule is the official ``--moco-m-cos``: facebookresearch/moco-v3 ``main_moco.py``,
``adjust_moco_momentum``; the update is ``moco/builder.py``, ``MoCo._update_momentum_encoder``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def momentum_at(epoch_progress: float, total_epochs: float, m0: float) -> float:
    """Cosine momentum schedule (``--moco-m-cos``): ``1 - 0.5 (1 + cos(pi e / E)) (1 - m0)``.

    ``e`` is the fractional epoch (``epoch + i / iters_per_epoch``). m(0) = m0, m(E/2) =
    (1 + m0) / 2, m(E) = 1: the keys move less and less as training converges.
    """
    if total_epochs <= 0:
        return m0
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch_progress / total_epochs)) * (1.0 - m0)


@torch.no_grad()
def momentum_update_(momentum_params: Sequence[Tensor], base_params: Sequence[Tensor], m: float) -> None:
    """In place: ``theta_k <- m * theta_k + (1 - m) * theta_q`` for every pair.

    Written as a multiply and an add (the official formula), not ``lerp_``, which rounds
    differently; ``_foreach`` ops do all pairs in a few kernel launches instead of one per tensor.
    """
    if len(momentum_params) != len(base_params):
        raise ValueError(f"{len(momentum_params)} momentum params vs {len(base_params)} base params")
    if not momentum_params:
        return
    momentum_params, base_params = list(momentum_params), list(base_params)
    torch._foreach_mul_(momentum_params, m)
    torch._foreach_add_(momentum_params, base_params, alpha=1.0 - m)


class MomentumEncoder:
    """Frozen deep copies of some modules, updated as an EMA of the originals.

    ``MomentumEncoder(backbone, projector)`` deep-copies each module (same weights at the start),
    sets ``requires_grad=False`` on every copied parameter (so the optimiser never sees them and DDP
    neither reduces nor waits for their gradients), and pairs each copied parameter with its
    original once, keeping only the pairs whose original is trainable *at construction*: frozen
    parameters (a fixed patch projection, a fixed position embedding) are identical copies, and
    ``m a + (1 - m) a`` is ``a`` in exact arithmetic but can drift by an ulp per step in float32.

    It is a plain object, not an ``nn.Module``: the owner registers the copies under its own
    attribute names (``self.momentum_backbone, self.momentum_projector = enc.modules``) so they are
    in its state dict, follow its ``.to()`` and keep the checkpoint keys the method chooses. The
    pairs stay valid because ``.to()`` and ``load_state_dict`` update parameters in place. Freeze
    what must stay frozen *before* constructing it.
    """

    def __init__(self, *base: nn.Module) -> None:
        if not base:
            raise ValueError("MomentumEncoder needs at least one module to copy")
        self.base: tuple[nn.Module, ...] = base
        self.modules: tuple[nn.Module, ...] = tuple(copy.deepcopy(m) for m in base)
        for p in self.momentum_parameters():
            p.requires_grad_(False)
        pairs = [
            (k, q) for q, k in zip(self.base_parameters(), self.momentum_parameters(), strict=True) if q.requires_grad
        ]
        self._targets: list[Tensor] = [k for k, _ in pairs]
        self._sources: list[Tensor] = [q for _, q in pairs]

    def base_parameters(self) -> list[nn.Parameter]:
        """All parameters of the original modules, in module order."""
        return [p for m in self.base for p in m.parameters()]

    def momentum_parameters(self) -> list[nn.Parameter]:
        """All parameters of the copies, in the same order as :meth:`base_parameters`."""
        return [p for m in self.modules for p in m.parameters()]

    @property
    def num_updated(self) -> int:
        """How many parameter tensors :meth:`update_` moves (the originally trainable ones)."""
        return len(self._targets)

    @torch.no_grad()
    def update_(self, m: float) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` over the trainable pairs (buffers untouched:
        BatchNorm running statistics of a copy are its own, as in the official code)."""
        momentum_update_(self._targets, self._sources, m)
