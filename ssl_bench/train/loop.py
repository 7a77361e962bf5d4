"""The training loop, in the style of the official MAE/DiT scripts: short and explicit.

Reproducibility: every random draw comes from generators seeded by (seed, epoch, rank), so a run
resumed from the checkpoint of epoch e replays epoch e exactly as an uninterrupted run would.

Interrupts: while :func:`train` runs, SIGINT (Ctrl-C) and SIGTERM (schedulers, ``kill``) only set a
flag. At the next optimiser-step boundary rank 0 writes a checkpoint -- mid-epoch, it also carries
the position inside the epoch, every rank's step generator and the epoch's running sums, so a resume
continues exactly as the uninterrupted run -- and every rank raises :class:`TrainingInterrupted`. A
second SIGINT raises KeyboardInterrupt at once (the atomic write keeps the previous checkpoint); a
repeated SIGTERM is ignored (see :class:`_StopRequest`).
A KeyboardInterrupt *raised by code* (a method, a test) is not a signal: it propagates untouched
and writes nothing, so the last end-of-epoch checkpoint is what a resume starts from.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel

from ssl_bench.components.base import Method
from ssl_bench.data.base import ImageSplit, epoch_index_batches
from ssl_bench.errors import CheckpointError, NonFiniteLossError, TrainingInterrupted
from ssl_bench.progress import progress
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ssl_bench.train.distributed import DistContext, all_reduce_mean
from ssl_bench.train.epoch_log import EpochLogs, MetricsWriter, epoch_record, format_logs
from ssl_bench.train.optim import apply_fixed_lr, build_optimizer, scheduled_lr

log = logging.getLogger("ssl_bench.train")

__all__ = ["TrainResult", "build_optimizer", "make_generator", "peak_memory_mb", "train"]


@dataclass
class TrainResult:
    epochs: int
    steps: int
    wall_time_s: float
    throughput_img_s: float
    peak_mem_mb: float
    final_loss: float


def make_generator(device: torch.device, seed: int, epoch: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + epoch) * 1009 + rank) * 7 + stream)
    return g


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def uses_bf16(device: torch.device, amp: str) -> bool:
    """``train.amp``: "bf16" always, "auto" on CUDA only (bf16 is ~10x slower than fp32 on most CPUs)."""
    return amp == "bf16" or (amp == "auto" and device.type == "cuda")


def _autocast(device: torch.device, amp: str):
    if uses_bf16(device, amp):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer_steps(
    micro_batches: Iterable[tuple[Tensor, Tensor]], accum: int, steps: int
) -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Group micro-batches into ``steps`` optimiser steps of ``accum`` each; a trailing
    incomplete group is dropped, as drop_last drops a trailing incomplete batch."""
    it = iter(micro_batches)
    for _ in range(steps):
        group = list(itertools.islice(it, accum))
        if len(group) < accum:
            return
        yield group


def _epoch_batches(
    train_split: Any, local_batch: int, order_gen: torch.Generator, ctx: DistContext, skip: int, views: Any = None
) -> Iterable[tuple[Tensor, Tensor]]:
    """The epoch's micro-batches for this rank, without the first ``skip`` (a mid-epoch resume).

    The order is the same permutation either way (one randperm from ``order_gen``). When the split
    uses :meth:`ImageSplit.batches` unchanged, this does what it does (index batches, then
    ``_load_views`` with no views and the same generator) on the batches after the resume point,
    so skipped batches are never loaded (a folder dataset would otherwise decode up to an epoch of
    images to throw away); any other split is read and discarded up to the resume point.
    """
    kwargs = dict(shuffle=True, generator=order_gen, drop_last=True, rank=ctx.rank, world_size=ctx.world_size)
    if skip == 0:
        return train_split.batches(local_batch, device=ctx.device, views=views, **kwargs)
    if isinstance(train_split, ImageSplit) and type(train_split).batches is ImageSplit.batches:
        index_batches = epoch_index_batches(len(train_split), local_batch, **kwargs)
        return train_split._load_views(index_batches[skip:], torch.device(ctx.device), views, order_gen)
    return itertools.islice(train_split.batches(local_batch, device=ctx.device, views=views, **kwargs), skip, None)


class _StopRequest:
    """SIGINT/SIGTERM handler for the duration of :func:`train`: the first signal only sets a flag
    (training stops at the next optimiser-step boundary, after a checkpoint); a second SIGINT (a
    user pressing Ctrl-C again) raises KeyboardInterrupt at once. A repeated SIGTERM is ignored:
    machines send it more than once without meaning "hurry" (Slurm signals every process of a job
    step, and torchrun's agent forwards the same signal to its workers), and they follow up with
    SIGKILL when they stop waiting."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt("second SIGINT: stopping without waiting for the checkpoint")
            log.warning("SIGTERM received again: still finishing this step and its checkpoint (Ctrl-C stops at once)")
            return
        self.signum = signum
        log.warning(
            "%s received: finishing this optimiser step, then writing a checkpoint and stopping "
            "(Ctrl-C again stops at once, keeping only the previous checkpoint)",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> _StopRequest:
        # Python only lets the main thread install handlers; elsewhere signals keep their old behaviour
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def requested(self, ctx: DistContext) -> bool:
        """Whether to stop now. Single process: a flag read, no device sync. Under DDP every rank
        must stop at the same step (or the others would wait forever in the next all-reduce), so
        the flag is all-reduced (max): one tiny collective per step."""
        if not ctx.distributed:
            return self.signum is not None
        flag = torch.tensor(0.0 if self.signum is None else 1.0, device=ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal to another process"


def _gather_rank_states(state: dict[str, Any], ctx: DistContext) -> list[dict[str, Any]]:
    """Every rank's mid-epoch state (step generator, running sums), in rank order, for rank 0 to save."""
    if not ctx.distributed:
        return [state]
    gathered: list[dict[str, Any] | None] = [None] * ctx.world_size
    torch.distributed.all_gather_object(gathered, state)
    return [s for s in gathered if s is not None]


def _resume_command(cfg: Any, run_dir: Path) -> str:
    name = (cfg.get("method") or {}).get("name") or "METHOD"
    return f"ssl-bench run {name} --resume {run_dir}"


def _non_finite_message(loss: float, epoch: int, step: int, ckpt_path: Path, last_ckpt: str | None, cfg: Any, run_dir: Path) -> str:
    """One line that names only a checkpoint that exists, and never suggests resuming with a changed
    lr (a resume must keep the run's training flags): rerun with a lower lr or with clipping, or
    resume unchanged only if the NaN was a fluke."""
    head = f"loss became {loss} at epoch {epoch}, step {step}; stopping."
    rerun = f"rerun with a lower train.blr (now {cfg.train.blr:g}) or with train.grad_clip set (e.g. --set train.grad_clip=1.0)"
    if last_ckpt is None or not ckpt_path.is_file():
        return f"{head} No checkpoint has been written yet, so there is nothing to resume: {rerun}."
    return (
        f"{head} The last good checkpoint is kept: {ckpt_path} ({last_ckpt}). To fix it, {rerun}; resume that "
        f"checkpoint unchanged (`{_resume_command(cfg, run_dir)}`) only if the NaN was a fluke."
    )


def _describe_checkpoint(epoch: int, epoch_step: int, steps_per_epoch: int) -> str:
    if epoch_step:
        return f"epoch {epoch + 1}, after step {epoch_step} of {steps_per_epoch}"
    return f"end of epoch {epoch}"


def train(
    method: Method,
    train_split: Any,
    cfg: Any,
    run_dir: Path,
    ctx: DistContext,
    resume: bool = False,
    resume_state: dict[str, Any] | None = None,
    resume_command: str | None = None,
) -> TrainResult:
    """Train ``method`` for ``cfg.train.epochs``, checkpointing into ``run_dir``.

    Writes (rank 0) the epoch lines of the ``ssl_bench.train`` logger, ``run_dir/metrics.jsonl``
    and, with tensorboard installed, ``run_dir/tb/``. Raises :class:`TrainingInterrupted` after
    SIGINT/SIGTERM (checkpoint written), :class:`NonFiniteLossError` on a NaN/inf loss.
    ``resume_state``: the checkpoint already loaded by the caller (on CPU; moved as it is loaded).
    """
    tcfg = cfg.train
    device = ctx.device

    run_dir = Path(run_dir)
    n_train = len(train_split)
    global_batch = min(tcfg.batch_size, n_train)
    accum = int(tcfg.get("accum_iter") or 1)
    if accum < 1:
        raise ValueError(f"train.accum_iter must be >= 1, got {tcfg.get('accum_iter')!r}")
    if global_batch % (ctx.world_size * accum):
        raise ValueError(
            f"batch size {global_batch} is not divisible by {ctx.world_size} processes x {accum} accumulation "
            f"steps; pick a batch size that is a multiple of {ctx.world_size * accum}"
        )
    local_batch = global_batch // (ctx.world_size * accum)  # one micro-batch on one process
    steps_per_epoch = n_train // global_batch  # optimiser steps
    if accum > 1 and method.batch_coupled_loss and ctx.is_main:
        log.warning(
            "train.accum_iter=%d with %s: its loss couples the samples of a batch (negatives, BatchNorm), "
            "so each micro-batch of %d per process is not equivalent to one batch of %d",
            accum, type(method).__name__, local_batch, global_batch,
        )
    total_steps = steps_per_epoch * tcfg.epochs
    warmup_steps = steps_per_epoch * tcfg.warmup_epochs
    if warmup_steps >= total_steps:  # e.g. --epochs 1 with 1 warm-up epoch: keep a cosine half to decay
        warmup_steps = total_steps // 2
        if ctx.is_main:
            log.info("warm-up (%d epochs) >= the whole run: warming up for %d of %d steps instead", tcfg.warmup_epochs, warmup_steps, total_steps)

    method.to(device)
    optimizer, lr = build_optimizer(method, tcfg, global_batch)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(total_steps - warmup_steps, 1),
        lr_min=tcfg.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=0.0,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    ckpt_path = run_dir / CHECKPOINT_NAME
    start_epoch, step, elapsed = 0, 0, 0.0
    start_epoch_step, resumed_epoch_time, resumed_rank_state = 0, 0.0, None
    last_ckpt: str | None = None  # what the checkpoint on disk holds, for the NaN message
    if resume:
        # the runner has read (and checked) the checkpoint already: reuse it rather than read it twice
        state = resume_state if resume_state is not None else load_checkpoint(ckpt_path, map_location=device)
        try:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {ckpt_path} does not match this model/config ({exc}); nothing was overwritten"
            ) from None
        start_epoch, step, elapsed = state["epoch"], state["step"], state.get("train_time_s", 0.0)
        start_epoch_step = int(state.get("epoch_step", 0))
        if start_epoch_step:
            rank_states = state.get("rank_states") or []
            if len(rank_states) != ctx.world_size:
                raise CheckpointError(
                    f"checkpoint {ckpt_path} was written mid-epoch by {len(rank_states)} process(es); resume it with "
                    f"the same number (torchrun --nproc_per_node {len(rank_states)}), not {ctx.world_size}; nothing was overwritten"
                )
            if start_epoch_step >= steps_per_epoch:
                raise CheckpointError(
                    f"checkpoint {ckpt_path} stopped after step {start_epoch_step} of an epoch, but this config has "
                    f"{steps_per_epoch} steps per epoch; resume with the run's own train.batch_size and dataset; nothing was overwritten"
                )
            resumed_rank_state = rank_states[ctx.rank]
            resumed_epoch_time = float(state.get("epoch_time_s", 0.0))
            elapsed -= resumed_epoch_time  # train_time_s includes the partial epoch, counted again at its end
        last_ckpt = _describe_checkpoint(start_epoch, start_epoch_step, steps_per_epoch)
        if ctx.is_main:
            log.info("resumed from %s at %s (step %d)", ckpt_path, last_ckpt, step)

    model: torch.nn.Module = method
    if ctx.distributed:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.get("compile"):
        model = torch.compile(model)

    def checkpoint_state(epoch: int, epoch_step: int, **extra: Any) -> dict[str, Any]:
        return {
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,  # epochs completed
            "step": step,
            "train_time_s": elapsed,
            "epoch_step": epoch_step,  # optimiser steps done in epoch `epoch` (0: an epoch boundary)
            "config_json": json.dumps(cfg.to_dict(), default=str, sort_keys=True),
            **extra,
        }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    images_seen, loss_value, session_time = 0, float("nan"), 0.0
    writer = MetricsWriter(run_dir, start_epoch if resume else None, step) if ctx.is_main else None
    method.train()
    try:
        with _StopRequest() as stop:
            for epoch in range(start_epoch, tcfg.epochs):
                t0 = time.perf_counter()
                skip = start_epoch_step if epoch == start_epoch else 0
                order_gen = make_generator(torch.device("cpu"), cfg.seed, epoch, rank=0, stream=1)  # same on all ranks
                step_gen = make_generator(device, cfg.seed, epoch, rank=ctx.rank, stream=2)
                loss_sum, n_steps, epoch_logs, prior_time = torch.zeros((), device=device), 0, EpochLogs(), 0.0
                if skip:  # a mid-epoch checkpoint: continue where it stopped, as the uninterrupted run
                    step_gen.set_state(resumed_rank_state["step_gen"].cpu())
                    loss_sum = resumed_rank_state["loss_sum"].to(device)
                    epoch_logs.load_state_dict(resumed_rank_state["logs"], device)
                    n_steps, prior_time = skip, resumed_epoch_time
                batches = _epoch_batches(train_split, local_batch, order_gen, ctx, skip * accum, method.train_views())
                steps = _optimizer_steps(batches, accum, steps_per_epoch - skip)
                bar = progress(steps, desc=f"epoch {epoch + 1}/{tcfg.epochs}", total=steps_per_epoch, initial=skip, main=ctx.is_main)
                stopping = False
                for micro_batches in bar:
                    scheduler.step_update(num_updates=step)
                    apply_fixed_lr(optimizer, lr)
                    optimizer.zero_grad(set_to_none=True)
                    loss = torch.zeros((), device=device)
                    for i, (images, labels) in enumerate(micro_batches):
                        # DDP all-reduces the gradients once per optimiser step, on the last micro-batch
                        last = i == len(micro_batches) - 1
                        with contextlib.nullcontext() if last or not ctx.distributed else model.no_sync():
                            with _autocast(device, tcfg.amp):
                                out = model(images, labels, step_gen)
                                micro_loss = out.loss / accum  # the mean over micro-batches
                            micro_loss.backward()
                        loss = loss + micro_loss.detach().float()
                        epoch_logs.add(out.logs, accum)
                    # one host sync per optimiser step; a non-finite loss never reaches optimizer.step()
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(_non_finite_message(loss.item(), epoch + 1, step, ckpt_path, last_ckpt, cfg, run_dir))
                    if tcfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(method.parameters(), tcfg.grad_clip)
                    optimizer.step()
                    method.on_train_step_end(epoch + (n_steps + 1) / steps_per_epoch, tcfg.epochs)
                    loss_sum += loss
                    n_steps += 1
                    step += 1
                    images_seen += global_batch
                    if n_steps % 10 == 0:
                        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduled_lr(optimizer):.2e}")
                    if stop.requested(ctx):  # the step is complete: a consistent point to checkpoint
                        stopping = True
                        break
                bar.close()
                epoch_time = prior_time + time.perf_counter() - t0
                session_time += time.perf_counter() - t0

                if stopping and n_steps < steps_per_epoch:  # stopped inside the epoch: save the position in it
                    rank_states = _gather_rank_states({
                        "step_gen": step_gen.get_state(),
                        "loss_sum": loss_sum.detach().cpu(),
                        "logs": epoch_logs.state_dict(),
                    }, ctx)
                    if ctx.is_main:
                        save_checkpoint(ckpt_path, checkpoint_state(
                            epoch, n_steps, train_time_s=elapsed + epoch_time, epoch_time_s=epoch_time,
                            rank_states=rank_states, world_size=ctx.world_size,
                        ))
                    raise _interrupted(stop, ckpt_path, cfg, run_dir, epoch, n_steps, step, steps_per_epoch, ctx, resume_command)

                elapsed += epoch_time
                loss_value = float(all_reduce_mean(loss_sum / max(n_steps, 1), ctx))
                logs = epoch_logs.means(ctx, device)
                # a signal while the epoch's last step ran, or the epoch's sums were reduced: stop here
                # too -- even after the last epoch, so the evaluation that follows is not started
                stopping = stopping or stop.requested(ctx)
                save = (epoch + 1) % tcfg.checkpoint_every == 0 or epoch + 1 == tcfg.epochs or stopping
                if save:
                    last_ckpt = _describe_checkpoint(epoch + 1, 0, steps_per_epoch)
                if ctx.is_main:
                    img_s = n_steps * global_batch / max(epoch_time, 1e-9)
                    current_lr = scheduled_lr(optimizer)
                    log.info(
                        f"epoch {epoch + 1}/{tcfg.epochs} loss {loss_value:.4f} lr {current_lr:.3e} "
                        f"time {epoch_time:.1f}s {img_s:.0f} img/s{format_logs(logs)}"
                    )
                    # the line before the checkpoint: a kill in between leaves a line the resume drops
                    # and writes again, never a checkpointed epoch without its line
                    writer.write(epoch_record(epoch + 1, step, current_lr, epoch_time, img_s, loss_value, logs))
                    if save:
                        save_checkpoint(ckpt_path, checkpoint_state(epoch + 1, 0))
                if stopping:
                    raise _interrupted(stop, ckpt_path, cfg, run_dir, epoch + 1, 0, step, steps_per_epoch, ctx, resume_command)
    finally:
        if writer is not None:
            writer.close()
    if ctx.distributed:
        torch.distributed.barrier()
    throughput = images_seen / session_time if images_seen else float("nan")
    if start_epoch >= tcfg.epochs and ctx.is_main:
        log.info("checkpoint already at epoch %d: nothing to train", start_epoch)
    return TrainResult(tcfg.epochs, step, elapsed, throughput, peak_memory_mb(device), loss_value)


def _interrupted(
    stop: _StopRequest, ckpt_path: Path, cfg: Any, run_dir: Path, epoch: int, epoch_step: int, step: int,
    steps_per_epoch: int, ctx: DistContext, resume_command: str | None = None,
) -> TrainingInterrupted:
    """The error every rank raises once rank 0 has written the checkpoint (the barrier makes the
    other ranks wait for it, so no process exits while the file is half written)."""
    if ctx.distributed:
        torch.distributed.barrier()
    where = _describe_checkpoint(epoch, epoch_step, steps_per_epoch)
    msg = (
        f"training stopped by {stop.name} at {where} (global step {step}); checkpoint written to {ckpt_path}. "
        f"Resume with: {resume_command or _resume_command(cfg, run_dir)}"
    )
    return TrainingInterrupted(msg, str(ckpt_path), epoch, epoch_step, step, stop.name)
