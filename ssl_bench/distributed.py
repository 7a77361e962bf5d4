"""Device selection, torchrun/DDP setup and the few collectives the rest of the package needs.

The ground floor: training, evaluation and the progress bars all ask it which rank they are and
move tensors between ranks through it, so none of them depends on another for that. It imports
nothing from ``ssl_bench``. On CPU the same code runs with gloo (how the tests run it).

Every collective here is a no-op on a single process, so callers write one code path; under DDP
every rank must call it (a rank that skips a collective leaves the others waiting forever).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto") -> torch.device:
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {pref} was asked for but CUDA is not available; use --device cpu or auto")
    return dev


def init_distributed(device_pref: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_pref)
    if world <= 1:
        return DistContext(0, 1, 0, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world, local, device)


def is_main_rank() -> bool:
    """True outside torch.distributed and on rank 0: for code that has no DistContext at hand."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None and ctx.distributed:
        dist.barrier()


def all_reduce_mean(value: Tensor, ctx: DistContext | None) -> Tensor:
    """The mean of ``value`` over ranks (a new tensor); ``value`` itself on a single process."""
    if ctx is None or not ctx.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / ctx.world_size


def any_rank(flag: bool, ctx: DistContext | None) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request that reached
    one process): a MAX all-reduce of one number, so all ranks take the same branch."""
    if ctx is None or not ctx.distributed:
        return flag
    t = torch.tensor(1.0 if flag else 0.0, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_flag(flag: bool, ctx: DistContext | None) -> bool:
    """Rank 0's ``flag`` on every rank (a decision only rank 0 can take, e.g. a cache hit)."""
    if ctx is None or not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=ctx.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(obj: Any, ctx: DistContext | None) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order, on every rank (``[obj]`` on a single process)."""
    if ctx is None or not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_to_main(x: Tensor, ctx: DistContext | None) -> Tensor | None:
    """Rows of every rank's ``x`` [B, ...] interleaved in rank order on rank 0; None on the others.

    Every rank must pass the same shape. Row ``j`` of rank ``r`` becomes row ``j * W + r``: for a
    shard taken as ``perm[r::W]`` (``epoch_index_batches``) this is the unsharded order again.
    Single process: ``x`` itself. Gathers on ``x``'s device (CUDA for NCCL, CPU for gloo).
    """
    if ctx is None or not ctx.distributed:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)] if ctx.rank == 0 else None
    dist.gather(x, parts, dst=0)
    if parts is None:
        return None
    return torch.stack(parts, dim=1).flatten(0, 1)  # [B, W, ...] -> [B * W, ...]


def broadcast_object(obj: object, ctx: DistContext | None) -> object:
    """Rank 0's ``obj`` (picklable) on every rank, e.g. the run directory only rank 0 may create."""
    if ctx is None or not ctx.distributed:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
