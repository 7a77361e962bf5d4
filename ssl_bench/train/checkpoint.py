"""Atomic checkpoints: write to a temp file in the same directory, then rename over the old one.

A crash mid-write leaves the previous checkpoint intact; an unreadable checkpoint raises a
CheckpointError before anything is written, so nothing good is ever overwritten by a bad resume.
A failed write (disk full, read-only directory, a second Ctrl-C while saving) removes the temp
file and keeps the previous checkpoint; OS errors become one CheckpointWriteError line.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import CheckpointError, CheckpointWriteError

CHECKPOINT_NAME = "checkpoint.pt"


# errno -> (what happened, what to do); the rest fall back to the OS's own words
_WRITE_FIXES = {
    errno.ENOSPC: ("no space left on device", "free space or use --out elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space or use --out elsewhere"),
    errno.EROFS: ("read-only file system", "use --out on a writable disk"),
    errno.EACCES: ("permission denied", "make the directory writable or use --out elsewhere"),
    errno.EPERM: ("operation not permitted", "make the directory writable or use --out elsewhere"),
}


def _write_error(path: Path, exc: OSError) -> CheckpointWriteError:
    cause, fix = _WRITE_FIXES.get(exc.errno, (exc.strerror or str(exc), "check the disk or use --out elsewhere"))
    try:
        existed = path.is_file()
    except OSError:  # an unreadable directory: do not let the message itself fail
        existed = False
    kept = "the previous checkpoint there is kept" if existed else "no earlier checkpoint existed there"
    return CheckpointWriteError(f"could not write checkpoint {path}: {cause}: {fix} ({kept})")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename).

    torch.save is given an open Python file rather than a path so that a full disk surfaces as an
    OSError with its errno (with a path, torch's zip writer reports an opaque RuntimeError).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish a file whose data is still in cache
        os.replace(tmp, path)
    except BaseException as exc:  # OSError, or KeyboardInterrupt from a second Ctrl-C mid-save
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


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
