"""The training loop, in the style of the official MAE/DiT scripts: short and explicit.

Reproducibility: every random draw comes from generators seeded by (seed, epoch, rank), so a run
resumed from the checkpoint of epoch e replays epoch e exactly as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import resource
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ssl_bench.components.base import Method
from ssl_bench.errors import CheckpointError, NonFiniteLossError
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from ssl_bench.train.distributed import DistContext, all_reduce_mean

log = logging.getLogger("ssl_bench.train")


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


def _autocast(device: torch.device, amp: str):
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    if use_bf16:
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


def build_optimizer(method: Method, tcfg: Any, global_batch: int) -> tuple[torch.optim.Optimizer, float]:
    lr = tcfg.blr * global_batch / 256
    groups = method.param_groups(tcfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(tcfg.betas)), lr


def train(
    method: Method,
    train_split: Any,
    cfg: Any,
    run_dir: Path,
    ctx: DistContext,
    resume: bool = False,
) -> TrainResult:
    tcfg = cfg.train
    device = ctx.device
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
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME
    start_epoch, step, elapsed = 0, 0, 0.0
    if resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        try:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint {ckpt_path} does not match this model/config ({exc}); nothing was overwritten"
            ) from None
        start_epoch, step, elapsed = state["epoch"], state["step"], state.get("train_time_s", 0.0)
        if ctx.is_main:
            log.info("resumed from %s at epoch %d (step %d)", ckpt_path, start_epoch, step)

    model: torch.nn.Module = method
    if ctx.distributed:
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.get("compile"):
        model = torch.compile(model)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    images_seen, loss_value, session_time = 0, float("nan"), 0.0
    method.train()
    for epoch in range(start_epoch, tcfg.epochs):
        t0 = time.perf_counter()
        order_gen = make_generator(torch.device("cpu"), cfg.seed, epoch, rank=0, stream=1)  # same on all ranks
        step_gen = make_generator(device, cfg.seed, epoch, rank=ctx.rank, stream=2)
        batches = train_split.batches(
            local_batch, shuffle=True, generator=order_gen, drop_last=True,
            rank=ctx.rank, world_size=ctx.world_size, device=device,
        )
        steps = _optimizer_steps(batches, accum, steps_per_epoch)
        bar = tqdm(steps, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=not ctx.is_main or None, leave=False)
        loss_sum, n_steps = torch.zeros((), device=device), 0
        for micro_batches in bar:
            scheduler.step_update(num_updates=step)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for i, (images, labels) in enumerate(micro_batches):
                # DDP all-reduces the gradients once per optimiser step, on the last micro-batch
                last = i == len(micro_batches) - 1
                with contextlib.nullcontext() if last or not ctx.distributed else model.no_sync():
                    with _autocast(device, tcfg.amp):
                        micro_loss = model(images, labels, step_gen).loss / accum  # the mean over micro-batches
                    micro_loss.backward()
                loss = loss + micro_loss.detach().float()
            # one host sync per optimiser step; a non-finite loss never reaches optimizer.step()
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; stopping. The last good "
                    f"checkpoint ({ckpt_path}, end of epoch {epoch}) is kept. Lower train.blr or enable "
                    "train.grad_clip, then resume with --resume."
                )
            if tcfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), tcfg.grad_clip)
            optimizer.step()
            method.on_train_step_end(epoch + (n_steps + 1) / steps_per_epoch, tcfg.epochs)
            loss_sum += loss
            n_steps += 1
            step += 1
            images_seen += global_batch
            if n_steps % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        epoch_time = time.perf_counter() - t0
        elapsed += epoch_time
        session_time += epoch_time
        loss_value = float(all_reduce_mean(loss_sum / max(n_steps, 1), ctx))
        if ctx.is_main:
            if (epoch + 1) % tcfg.checkpoint_every == 0 or epoch + 1 == tcfg.epochs:
                save_checkpoint(ckpt_path, {
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "train_time_s": elapsed,
                    "config_json": json.dumps(cfg.to_dict(), default=str, sort_keys=True),
                })
            line = (
                f"epoch {epoch + 1}/{tcfg.epochs} loss {loss_value:.4f} lr {optimizer.param_groups[0]['lr']:.3e} "
                f"time {epoch_time:.1f}s {n_steps * global_batch / max(epoch_time, 1e-9):.0f} img/s"
            )
            log.info(line)
    if ctx.distributed:
        torch.distributed.barrier()
    throughput = images_seen / session_time if images_seen else float("nan")
    if start_epoch >= tcfg.epochs and ctx.is_main:
        log.info("checkpoint already at epoch %d: nothing to train", start_epoch)
    return TrainResult(tcfg.epochs, step, elapsed, throughput, peak_memory_mb(device), loss_value)
