"""Errors users see. Each message names the problem and the fix."""

from __future__ import annotations

import difflib
from typing import Any, Iterable


class SSLBenchError(Exception):
    """Base class: the CLI prints these as one clear message instead of a traceback."""


class UnknownComponentError(SSLBenchError, KeyError):
    def __init__(self, kind: str, name: str, available: Iterable[str]):
        names = sorted(available)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        msg = (
            f"unknown {kind} '{name}'.{hint} Available {kind}s: {', '.join(names) or '(none)'}."
            " Run `ssl-bench list` to see every registered component."
        )
        super().__init__(msg)
        self.kind, self.name, self.available, self.suggestion = kind, name, names, (close[0] if close else None)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class PluginClashError(SSLBenchError):
    """Two packages registered the same name for the same kind."""


class CheckpointError(SSLBenchError):
    """A checkpoint could not be read; nothing was overwritten."""


class NonFiniteLossError(SSLBenchError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


class ConfigError(SSLBenchError, ValueError):
    """A config value is invalid or inconsistent."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, read-only or not writable): the temp file is
    removed and the previous checkpoint is kept, so the user only has to fix the disk and resume."""


class TrainingInterrupted(SSLBenchError):
    """SIGINT/SIGTERM stopped training at an optimiser-step boundary after a checkpoint was written.

    Carries where to resume from, so the CLI can print the exact command and exit with 130 (the
    shell's code for Ctrl-C) instead of a traceback.
    """

    def __init__(self, message: str, path: str, epoch: int, epoch_step: int, step: int, signal_name: str):
        super().__init__(message)
        self.path = path  # the checkpoint written before stopping
        self.epoch = epoch  # epochs completed (the checkpoint's "epoch")
        self.epoch_step = epoch_step  # optimiser steps done inside the next epoch (0: an epoch boundary)
        self.step = step  # global optimiser step
        self.signal_name = signal_name

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:  # picklable with its fields (multiprocessing, torchrun's error files)
        return type(self), (self.args[0], self.path, self.epoch, self.epoch_step, self.step, self.signal_name)


class DisabledComponentError(UnknownComponentError, PluginClashError):
    """A name exists but is switched off (a clash or an invalid registration), so asking for it says why.

    A subclass of `UnknownComponentError` so callers that handle unknown names handle this one too.
    """

    def __init__(self, kind: str, name: str, reason: str):
        SSLBenchError.__init__(self, f"{kind} '{name}' is disabled: {reason}")
        self.kind, self.name, self.available, self.suggestion, self.reason = kind, name, [], None, reason


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C outside the training loop's step boundaries (data loading, evaluation, a second Ctrl-C):
    the run is marked ``interrupted`` and its last checkpoint is kept; the message carries the command
    that continues it. Still a KeyboardInterrupt, so nothing that lets errors pass (``except
    Exception``) swallows it."""
