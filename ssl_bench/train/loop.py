"""The training loop, in the style of the official MAE/DiT scripts (MAE's ``main_pretrain.py``
around ``engine_pretrain.train_one_epoch``): build the optimiser and the lr schedule, continue a
resumed run where its checkpoint stopped, then per epoch ``train_one_epoch`` (``engine.py``), the
epoch line, its metrics and the checkpoint.

Reproducibility: every random draw comes from generators seeded by (seed, epoch, rank), so a run
resumed from the checkpoint of epoch e replays epoch e exactly as an uninterrupted run would; a
checkpoint written inside an epoch carries the state that continues it exactly (``resume.py``).
Stopping on SIGINT/SIGTERM with a checkpoint: ``interrupt.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ssl_bench.components.base import Method
from ssl_bench.distributed import DistContext, all_reduce_mean, barrier
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, describe_position
from ssl_bench.train.engine import (
    EpochState,
    MicroBatch,
    StepPlan,
    make_generator,
    peak_memory_mb,
    train_one_epoch,
)
from ssl_bench.train.epoch_log import MetricsWriter, epoch_record, format_logs
from ssl_bench.train.interrupt import StopRequest, interrupted
from ssl_bench.train.optim import build_optimizer, build_scheduler, scheduled_lr
from ssl_bench.train.resume import Position, RunCheckpoint, continue_epoch, restore

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


def plan_steps(tcfg: Any, n_train: int, ctx: DistContext, method: Method) -> tuple[StepPlan, int]:
    """(the batch arithmetic of ``train.batch_size`` / ``train.accum_iter`` over the processes,
    the warm-up steps); a batch that does not split evenly is refused."""
    global_batch = min(tcfg.batch_size, n_train)
    accum = int(tcfg.get("accum_iter") or 1)
    if accum < 1:
        raise ValueError(f"train.accum_iter must be >= 1, got {tcfg.get('accum_iter')!r}")
    if global_batch % (ctx.world_size * accum):
        raise ValueError(
            f"batch size {global_batch} is not divisible by {ctx.world_size} processes x {accum} accumulation "
            f"steps; pick a batch size that is a multiple of {ctx.world_size * accum}"
        )
    plan = StepPlan(global_batch, accum, global_batch // (ctx.world_size * accum), n_train // global_batch, tcfg.epochs)
    if accum > 1 and method.batch_coupled_loss and ctx.is_main:
        log.warning(
            "train.accum_iter=%d with %s: its loss couples the samples of a batch (negatives, BatchNorm), "
            "so each micro-batch of %d per process is not equivalent to one batch of %d",
            accum, type(method).__name__, plan.local_batch, global_batch,
        )
    warmup_steps = plan.steps_per_epoch * tcfg.warmup_epochs
    if warmup_steps >= plan.total_steps:  # e.g. --epochs 1 with 1 warm-up epoch: keep a cosine half to decay
        warmup_steps = plan.total_steps // 2
        if ctx.is_main:
            log.info("warm-up (%d epochs) >= the whole run: warming up for %d of %d steps instead", tcfg.warmup_epochs, warmup_steps, plan.total_steps)
    return plan, warmup_steps


def default_resume_command(cfg: Any, run_dir: Path) -> str:
    name = (cfg.get("method") or {}).get("name") or "METHOD"
    return f"ssl-bench run {name} --resume {run_dir}"


def non_finite_message(loss: float, step: int, *, epoch: int, ckpt: RunCheckpoint, blr: float, resume_command: str) -> str:
    """One line that names only a checkpoint that exists, and never suggests resuming with a changed
    lr (a resume must keep the run's training flags): rerun with a lower lr or with clipping, or
    resume unchanged only if the NaN was a fluke."""
    head = f"loss became {loss} at epoch {epoch}, step {step}; stopping."
    rerun = f"rerun with a lower train.blr (now {blr:g}) or with train.grad_clip set (e.g. --set train.grad_clip=1.0)"
    if ckpt.holds is None or not ckpt.path.is_file():
        return f"{head} No checkpoint has been written yet, so there is nothing to resume: {rerun}."
    return (
        f"{head} The last good checkpoint is kept: {ckpt.path} ({ckpt.holds}). To fix it, {rerun}; resume that "
        f"checkpoint unchanged (`{resume_command}`) only if the NaN was a fluke."
    )


def _epoch_batches(
    split: Any, plan: StepPlan, order_gen: torch.Generator, ctx: DistContext, steps_done: int, views: Any
) -> Iterable[MicroBatch]:
    """This rank's micro-batches of the epoch from the first step not trained yet: the order is one
    permutation drawn from ``order_gen`` (the same on every rank) and the split never loads the
    micro-batches of the ``steps_done`` steps a mid-epoch checkpoint already holds."""
    skip = steps_done * plan.accum  # passed only when needed: a split's own batches() need take it only to resume
    return split.batches(
        plan.local_batch, shuffle=True, generator=order_gen, drop_last=True, rank=ctx.rank, world_size=ctx.world_size,
        device=ctx.device, views=views, **({"skip": skip} if skip else {}),
    )


def _wrap(method: Method, ctx: DistContext, compile_model: bool) -> torch.nn.Module:
    """What runs the forward pass: ``method``, in DDP under torchrun, compiled with ``train.compile``."""
    model: torch.nn.Module = method
    if ctx.distributed:
        model = DistributedDataParallel(method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return torch.compile(model) if compile_model else model


def _log_epoch(
    writer: MetricsWriter | None, optimizer: torch.optim.Optimizer, plan: StepPlan, epoch: int, step: int,
    state: EpochState, epoch_time: float, loss: float, logs: dict[str, float],
) -> None:
    """The epoch line of ``train.log`` and its ``metrics.jsonl`` record (rank 0: the one with a writer)."""
    if writer is None:
        return
    img_s = state.n_steps * plan.global_batch / max(epoch_time, 1e-9)
    current_lr = scheduled_lr(optimizer)
    log.info(
        f"epoch {epoch}/{plan.epochs} loss {loss:.4f} lr {current_lr:.3e} "
        f"time {epoch_time:.1f}s {img_s:.0f} img/s{format_logs(logs)}"
    )
    writer.write(epoch_record(epoch, step, current_lr, epoch_time, img_s, loss, logs))


def train(
    method: Method,
    train_split: Any,
    cfg: Any,
    run_dir: Path,
    ctx: DistContext,
    resume_state: dict[str, Any] | None = None,
    resume_command: str | None = None,
) -> TrainResult:
    """Train ``method`` for ``cfg.train.epochs``, checkpointing into ``run_dir``.

    Writes (rank 0) the epoch lines of the ``ssl_bench.train`` logger, ``run_dir/metrics.jsonl``
    and, with tensorboard installed, ``run_dir/tb/``. Raises :class:`TrainingInterrupted` after
    SIGINT/SIGTERM (checkpoint written), :class:`NonFiniteLossError` on a NaN/inf loss.

    ``resume_state``: the checkpoint to continue (on CPU), whose weights the caller has already
    loaded into ``method`` (``resume.load_for_resume``); None starts a fresh run. ``resume_command``:
    the command the interrupted and non-finite-loss messages print (default
    ``ssl-bench run METHOD --resume RUN_DIR``).
    """
    tcfg, device, run_dir = cfg.train, ctx.device, Path(run_dir)
    plan, warmup_steps = plan_steps(tcfg, len(train_split), ctx, method)
    method.to(device)
    optimizer, lr = build_optimizer(method, tcfg, plan.global_batch)
    scheduler = build_scheduler(optimizer, tcfg, plan.total_steps, warmup_steps)
    ckpt = RunCheckpoint(run_dir / CHECKPOINT_NAME, method, optimizer, cfg, plan.steps_per_epoch)
    resume_command = resume_command or default_resume_command(cfg, run_dir)
    start = Position()
    if resume_state is not None:
        start = restore(resume_state, optimizer, plan.steps_per_epoch, ctx, ckpt.path)
        ckpt.holds = describe_position(start.epoch, start.epoch_step, plan.steps_per_epoch)
        if ctx.is_main:
            log.info("resumed from %s at %s (step %d)", ckpt.path, ckpt.holds, start.step)
    model = _wrap(method, ctx, bool(tcfg.get("compile")))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step, elapsed, images_seen, loss_value, session_time = start.step, start.train_time_s, 0, float("nan"), 0.0
    writer = MetricsWriter(run_dir, None if resume_state is None else start.epoch, step) if ctx.is_main else None
    method.train()
    try:
        with StopRequest() as stop:
            for epoch in range(start.epoch, tcfg.epochs):
                t0 = time.perf_counter()
                order_gen = make_generator(torch.device("cpu"), cfg.seed, epoch, rank=0, stream=1)  # same on all ranks
                state = EpochState.start(cfg.seed, epoch, ctx)
                if epoch == start.epoch and start.epoch_step:  # a mid-epoch checkpoint: continue where it stopped
                    continue_epoch(state, start, device)
                steps_before = state.n_steps
                batches = _epoch_batches(train_split, plan, order_gen, ctx, steps_before, method.train_views())
                non_finite = partial(non_finite_message, epoch=epoch + 1, ckpt=ckpt, blr=tcfg.blr, resume_command=resume_command)
                step, stopped = train_one_epoch(
                    model, method, batches, optimizer, scheduler, lr, state,
                    epoch=epoch, step=step, plan=plan, tcfg=tcfg, ctx=ctx, stop=stop, non_finite=non_finite,
                )
                epoch_time = state.prior_time + time.perf_counter() - t0
                session_time += time.perf_counter() - t0
                images_seen += (state.n_steps - steps_before) * plan.global_batch
                if stopped and state.n_steps < plan.steps_per_epoch:  # stopped inside the epoch: save the position in it
                    ckpt.save_mid_epoch(epoch, state, step, elapsed, epoch_time, ctx)
                    raise interrupted(stop, ckpt.path, epoch, state.n_steps, plan.steps_per_epoch, step, resume_command, ctx)
                elapsed += epoch_time
                loss_value = float(all_reduce_mean(state.loss_sum / max(state.n_steps, 1), ctx))
                logs = state.logs.means(ctx, device)
                # a signal while the epoch's last step ran, or the epoch's sums were reduced: stop here
                # too -- even after the last epoch, so the evaluation that follows is not started
                stopped = stopped or stop.requested(ctx)
                # the line before the checkpoint: a kill in between leaves a line the resume drops
                # and writes again, never a checkpointed epoch without its line
                _log_epoch(writer, optimizer, plan, epoch + 1, step, state, epoch_time, loss_value, logs)
                if (epoch + 1) % tcfg.checkpoint_every == 0 or epoch + 1 == tcfg.epochs or stopped:
                    ckpt.save(epoch + 1, step, elapsed, ctx)
                if stopped:
                    raise interrupted(stop, ckpt.path, epoch + 1, 0, plan.steps_per_epoch, step, resume_command, ctx)
    finally:
        if writer is not None:
            writer.close()
    barrier(ctx)
    if start.epoch >= tcfg.epochs and ctx.is_main:
        log.info("checkpoint already at epoch %d: nothing to train", start.epoch)
    throughput = images_seen / session_time if images_seen else float("nan")
    return TrainResult(tcfg.epochs, step, elapsed, throughput, peak_memory_mb(device), loss_value)
