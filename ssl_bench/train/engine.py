"""One epoch of pre-training: ``train_one_epoch``, in the shape of MAE's ``engine_pretrain.py``
(facebookresearch/mae, ``train_one_epoch``): per optimiser step, set the scheduled lr, run each
micro-batch forward and backward under autocast with the loss divided by ``accum_iter``, refuse a
non-finite loss before ``optimizer.step()``, step, and keep the epoch's running sums.

Where it differs from MAE's, and why:

* the lr is set per optimiser step from the *global* step (timm's ``CosineLRScheduler.step_update``),
  not per iteration from a fractional epoch, so a resume inside an epoch continues the same curve;
* DDP all-reduces the gradients once per optimiser step: every micro-batch but the last runs under
  ``no_sync()`` (MAE all-reduces on every micro-batch);
* the loss is read on the host once per optimiser step (one sync), and the method's logs are summed
  on the device (``EpochLogs``) and read once per epoch;
* bf16 autocast needs no loss scaler (MAE's fp16 ``NativeScaler``), so ``optimizer.step()`` is direct;
* a stop request (SIGINT/SIGTERM, ``interrupt.py``) ends the epoch at the next step boundary, where
  the caller writes a checkpoint that continues exactly from there (``resume.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import resource
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ssl_bench.components.base import Method
from ssl_bench.distributed import DistContext
from ssl_bench.errors import NonFiniteLossError
from ssl_bench.progress import progress
from ssl_bench.train.epoch_log import EpochLogs
from ssl_bench.train.interrupt import StopRequest
from ssl_bench.train.optim import apply_fixed_lr, scheduled_lr

MicroBatch = tuple[Tensor, Tensor]  # (uint8 images [B, C, H, W] or views [B, V, C, S, S], int64 labels [B])


def make_generator(device: torch.device, seed: int, epoch: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A generator seeded by (seed, epoch, rank, stream): every random draw of a run comes from one
    of these, so a resumed epoch replays the uninterrupted run's draws."""
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1009 + rank) * 7 + stream)
    return g


def uses_bf16(device: torch.device, amp: str) -> bool:
    """``train.amp``: "bf16" always, "auto" on CUDA only (bf16 is ~10x slower than fp32 on most CPUs)."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision context for ``train.amp`` (see :func:`uses_bf16`)."""
    if uses_bf16(device, amp):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def optimizer_steps(micro_batches: Iterable[MicroBatch], accum: int, steps: int) -> Iterator[list[MicroBatch]]:
    """Group micro-batches into ``steps`` optimiser steps of ``accum`` each; a trailing
    incomplete group is dropped, as drop_last drops a trailing incomplete batch."""
    it = iter(micro_batches)
    for _ in range(steps):
        group = list(itertools.islice(it, accum))
        if len(group) < accum:
            return
        yield group


@dataclass(frozen=True)
class StepPlan:
    """How a run's images become optimiser steps: one global batch per step, split over the
    processes and, on each, over ``accum`` micro-batches of ``local_batch`` images."""

    global_batch: int
    accum: int
    local_batch: int  # one micro-batch on one process
    steps_per_epoch: int  # optimiser steps
    epochs: int

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass
class EpochState:
    """One rank's running position inside an epoch: what a mid-epoch checkpoint saves
    (``resume.rank_state``) so that a resume averages the same numbers as the uninterrupted run."""

    step_gen: torch.Generator  # the method's random draws (masks, noise, crops) in this epoch
    loss_sum: Tensor  # 0-d, the optimiser steps' losses summed on the device
    logs: EpochLogs = field(default_factory=EpochLogs)
    n_steps: int = 0  # optimiser steps done in this epoch
    prior_time: float = 0.0  # seconds this epoch ran before the checkpoint it resumed from

    @classmethod
    def start(cls, seed: int, epoch: int, ctx: DistContext) -> EpochState:
        step_gen = make_generator(ctx.device, seed, epoch, rank=ctx.rank, stream=2)
        return cls(step_gen, torch.zeros((), device=ctx.device))


def train_one_epoch(
    model: torch.nn.Module,
    method: Method,
    micro_batches: Iterable[MicroBatch],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    base_lr: float,
    state: EpochState,
    *,
    epoch: int,
    step: int,
    plan: StepPlan,
    tcfg: Any,
    ctx: DistContext,
    stop: StopRequest,
    non_finite: Callable[[float, int], str],
) -> tuple[int, bool]:
    """Train epoch ``epoch`` (0-based) from optimiser step ``state.n_steps`` of it to its end, or to
    the first step boundary after a stop request. Returns (global step, whether it stopped early).

    ``model`` is what runs the forward (``method``, or its DDP / compiled wrapper); ``method`` owns
    the parameters and the step-end hook. ``micro_batches`` are this rank's, from the epoch's first
    not yet trained step on. ``non_finite(loss, step)`` gives the message of the
    :class:`NonFiniteLossError` raised when a step's loss is NaN/inf (nothing is stepped then).
    """
    device, accum, spe = ctx.device, plan.accum, plan.steps_per_epoch
    steps = optimizer_steps(micro_batches, accum, spe - state.n_steps)
    bar = progress(steps, desc=f"epoch {epoch + 1}/{plan.epochs}", total=spe, initial=state.n_steps, main=ctx.is_main)
    stopped = False
    for group in bar:
        scheduler.step_update(num_updates=step)
        apply_fixed_lr(optimizer, base_lr)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for i, (images, labels) in enumerate(group):
            # DDP all-reduces the gradients once per optimiser step, on the last micro-batch
            last = i == len(group) - 1
            with contextlib.nullcontext() if last or not ctx.distributed else model.no_sync():
                with autocast(device, tcfg.amp):
                    out = model(images, labels, state.step_gen)
                    micro_loss = out.loss / accum  # the mean over micro-batches
                micro_loss.backward()
            loss = loss + micro_loss.detach().float()
            state.logs.add(out.logs, accum)
        # one host sync per optimiser step; a non-finite loss never reaches optimizer.step()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(non_finite(loss.item(), step))
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(method.parameters(), tcfg.grad_clip)
        optimizer.step()
        method.on_train_step_end(epoch + (state.n_steps + 1) / spe, plan.epochs)
        state.loss_sum += loss
        state.n_steps += 1
        step += 1
        if state.n_steps % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduled_lr(optimizer):.2e}")
        if stop.requested(ctx):  # the step is complete: a consistent point to checkpoint
            stopped = True
            break
    bar.close()
    return step, stopped
