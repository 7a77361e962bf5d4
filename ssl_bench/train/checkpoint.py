"""The checkpoint file: written atomically, read back with one clear error when it cannot be used.

Writes go through :func:`ssl_bench.files.atomic_torch_save` (temp file in the same directory, fsync,
rename over the old one): a crash mid-write leaves the previous checkpoint intact, and a failed
write (disk full, read-only directory, a second Ctrl-C while saving) removes the temp file and keeps
the previous checkpoint; OS errors become one CheckpointWriteError line. An unreadable checkpoint
raises a CheckpointError before anything is written, so nothing good is ever overwritten by a bad
resume.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import CheckpointError, CheckpointWriteError
from ssl_bench.files import DiskWriteError, atomic_torch_save

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically; a failed write is one :class:`CheckpointWriteError`
    line (``could not write checkpoint PATH: cause: fix (what is kept)``)."""
    path = Path(path)
    existed = False
    with contextlib.suppress(OSError):  # an unreadable directory: do not let the message itself fail
        existed = path.is_file()
    kept = "the previous checkpoint there is kept" if existed else "no earlier checkpoint existed there"
    try:
        atomic_torch_save(path, state, kept)
    except DiskWriteError as exc:
        # files.write_error's line, "could not write PATH: ...", named as the checkpoint it is
        message = str(exc).replace("could not write ", "could not write checkpoint ", 1)
        raise CheckpointWriteError(message) from None


def describe_position(epoch: int, epoch_step: int, steps_per_epoch: int) -> str:
    """Where a checkpoint stands, for messages: ``epoch`` epochs done plus ``epoch_step`` steps of the next."""
    if epoch_step:
        return f"epoch {epoch + 1}, after step {epoch_step} of {steps_per_epoch}"
    return f"end of epoch {epoch}"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume, or point --resume at a run directory that has one")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}). It was left untouched; "
            "delete it to retrain that run from scratch, or resume another run directory."
        ) from None
    for key in ("model", "epoch"):
        if key not in state:
            raise CheckpointError(f"checkpoint {path} has no '{key}' entry: it was not written by ssl-bench; nothing was overwritten")
    return state
