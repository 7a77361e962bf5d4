"""Stopping a training run cleanly on SIGINT (Ctrl-C) or SIGTERM (schedulers, ``kill``).

While :func:`~ssl_bench.train.loop.train` runs, the first signal only sets a flag
(:class:`StopRequest`). At the next optimiser-step boundary rank 0 writes a checkpoint -- mid-epoch,
it also carries the position inside the epoch, every rank's step generator and the epoch's running
sums (``resume.py``) -- and every rank raises :class:`~ssl_bench.errors.TrainingInterrupted`
(:func:`interrupted`), which the CLI prints once, with the resume command, and exits 130.

A second SIGINT raises KeyboardInterrupt at once (the atomic write keeps the previous checkpoint);
a repeated SIGTERM is ignored. A KeyboardInterrupt *raised by code* (a method, a test) is not a
signal: it propagates untouched and writes nothing, so the last end-of-epoch checkpoint is what a
resume starts from.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from ssl_bench.distributed import DistContext, any_rank, barrier
from ssl_bench.errors import TrainingInterrupted
from ssl_bench.train.checkpoint import describe_position

log = logging.getLogger("ssl_bench.train")


class StopRequest:
    """SIGINT/SIGTERM handler for the duration of training: the first signal only sets a flag
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

    def __enter__(self) -> StopRequest:
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
        return any_rank(self.signum is not None, ctx)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal to another process"


def interrupted(
    stop: StopRequest, ckpt_path: Path, epoch: int, epoch_step: int, steps_per_epoch: int, step: int,
    resume_command: str, ctx: DistContext,
) -> TrainingInterrupted:
    """The error every rank raises once rank 0 has written the checkpoint (the barrier makes the
    other ranks wait for it, so no process exits while the file is half written).

    Not logged here: the CLI prints the raised error, once (logging it too printed it twice)."""
    barrier(ctx)
    where = describe_position(epoch, epoch_step, steps_per_epoch)
    msg = (
        f"training stopped by {stop.name} at {where} (global step {step}); checkpoint written to {ckpt_path}. "
        f"Resume with: {resume_command}"
    )
    return TrainingInterrupted(msg, str(ckpt_path), epoch, epoch_step, step, stop.name)
