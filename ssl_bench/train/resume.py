"""What a training checkpoint holds, and how a run continues from it exactly.

A checkpoint (``checkpoint.pt``, written by :class:`RunCheckpoint`) holds the weights, the optimiser
state, the epochs and global optimiser steps completed and the training time. One written inside an
epoch (a stop request, ``interrupt.py``) also holds the optimiser steps done in that epoch and, per
rank, the epoch's state (:func:`rank_state`: the step generator, the running loss and log sums), so
the resume continues that epoch as the uninterrupted run would: bit-identical.

Who loads what: the caller loads the checkpoint and its weights into the model, strictly, before
anything is written (the run path does it; :func:`load_for_resume` for callers that hold only a run
directory), and hands the loaded dict to ``train(..., resume_state=state)``; :func:`restore` then
restores only the rest -- the optimiser, the counters and the mid-epoch state -- and checks that the
mid-epoch state fits this launch (the same process count and epoch length).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssl_bench.components.base import Method
from ssl_bench.distributed import DistContext, gather_objects
from ssl_bench.errors import CheckpointError
from ssl_bench.train.checkpoint import CHECKPOINT_NAME, describe_position, load_checkpoint, save_checkpoint
from ssl_bench.train.engine import EpochState


@dataclass
class Position:
    """Where training starts: the checkpoint's counters (all zero for a fresh run)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # global optimiser steps completed
    train_time_s: float = 0.0  # training seconds of the completed epochs
    epoch_step: int = 0  # optimiser steps done inside epoch ``epoch`` (0: at an epoch boundary)
    epoch_time_s: float = 0.0  # seconds spent in that partial epoch
    rank_state: dict[str, Any] | None = None  # this rank's mid-epoch state (see rank_state)


def load_for_resume(method: Method, run_dir: Path) -> dict[str, Any]:
    """The checkpoint in ``run_dir`` (on CPU), with its weights loaded into ``method`` (strict).

    What ``train(method, ..., resume_state=...)`` continues from, for callers that hold only a run
    directory. A checkpoint of another model fails here, before anything is written."""
    path = Path(run_dir) / CHECKPOINT_NAME
    state = load_checkpoint(path)
    load_weights(method, state, path)
    return state


def load_weights(method: torch.nn.Module, state: dict[str, Any], where: Any) -> None:
    """The checkpoint ``state``'s model weights into ``method`` (strict): a checkpoint of another
    model or config is one line naming ``where`` it came from, and nothing is changed."""
    try:
        method.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint in {where} does not match this model/config ({str(exc).splitlines()[0]}); nothing was changed"
        ) from None


def restore(
    state: dict[str, Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int, ctx: DistContext, path: Path
) -> Position:
    """Load the optimiser state of the checkpoint ``state`` (read from ``path``) and return its
    position; the model's weights are the caller's (they are already loaded)."""
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match this model/config ({exc}); nothing was overwritten"
        ) from None
    position = Position(state["epoch"], state["step"], state.get("train_time_s", 0.0), int(state.get("epoch_step", 0)))
    if position.epoch_step:
        rank_states = state.get("rank_states") or []
        if len(rank_states) != ctx.world_size:
            raise CheckpointError(
                f"checkpoint {path} was written mid-epoch by {len(rank_states)} process(es); resume it with "
                f"the same number (torchrun --nproc_per_node {len(rank_states)}), not {ctx.world_size}; nothing was overwritten"
            )
        if position.epoch_step >= steps_per_epoch:
            raise CheckpointError(
                f"checkpoint {path} stopped after step {position.epoch_step} of an epoch, but this config has "
                f"{steps_per_epoch} steps per epoch; resume with the run's own train.batch_size and dataset; nothing was overwritten"
            )
        position.rank_state = rank_states[ctx.rank]
        position.epoch_time_s = float(state.get("epoch_time_s", 0.0))
        position.train_time_s -= position.epoch_time_s  # train_time_s includes the partial epoch, counted again at its end
    return position


def rank_state(state: EpochState) -> dict[str, Any]:
    """This rank's mid-epoch state as a checkpoint stores it (on CPU)."""
    return {"step_gen": state.step_gen.get_state(), "loss_sum": state.loss_sum.detach().cpu(), "logs": state.logs.state_dict()}


def continue_epoch(state: EpochState, position: Position, device: torch.device) -> None:
    """Put the freshly started ``state`` of the checkpoint's epoch where the checkpoint stopped."""
    saved = position.rank_state
    assert saved is not None, "continue_epoch needs a mid-epoch position"
    state.step_gen.set_state(saved["step_gen"].cpu())
    state.loss_sum = saved["loss_sum"].to(device)
    state.logs.load_state_dict(saved["logs"], device)
    state.n_steps, state.prior_time = position.epoch_step, position.epoch_time_s


@dataclass
class RunCheckpoint:
    """The run's checkpoint file: rank 0 writes it; every rank knows what it holds (``holds``, a
    :func:`describe_position`, None while no checkpoint of this run exists), for messages."""

    path: Path
    method: Method
    optimizer: torch.optim.Optimizer
    cfg: Any
    steps_per_epoch: int
    holds: str | None = None

    def _state(self, epoch: int, epoch_step: int, step: int, train_time_s: float, **extra: Any) -> dict[str, Any]:
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,  # epochs completed
            "step": step,
            "train_time_s": train_time_s,
            "epoch_step": epoch_step,  # optimiser steps done in epoch `epoch` (0: an epoch boundary)
            "config_json": json.dumps(self.cfg.to_dict(), default=str, sort_keys=True),
            **extra,
        }

    def save(self, epoch: int, step: int, train_time_s: float, ctx: DistContext) -> None:
        """At the end of epoch ``epoch`` (1-based: ``epoch`` epochs completed). Every rank calls it."""
        self.holds = describe_position(epoch, 0, self.steps_per_epoch)
        if ctx.is_main:
            save_checkpoint(self.path, self._state(epoch, 0, step, train_time_s))

    def save_mid_epoch(
        self, epoch: int, state: EpochState, step: int, train_time_s: float, epoch_time_s: float, ctx: DistContext
    ) -> None:
        """After ``state.n_steps`` steps of epoch ``epoch`` (0-based), which ran ``epoch_time_s`` on
        top of the ``train_time_s`` of the completed epochs, with every rank's epoch state: every
        rank must call it (the states are gathered), rank 0 writes."""
        rank_states = gather_objects(rank_state(state), ctx)
        if ctx.is_main:
            save_checkpoint(self.path, self._state(
                epoch, state.n_steps, step, train_time_s + epoch_time_s, epoch_time_s=epoch_time_s,
                rank_states=rank_states, world_size=ctx.world_size,
            ))
        self.holds = describe_position(epoch, state.n_steps, self.steps_per_epoch)
