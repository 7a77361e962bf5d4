"""Atomic checkpoints: write to a temp file in the same directory, then rename over the old one.

A crash mid-write leaves the previous checkpoint intact; an unreadable checkpoint raises a
CheckpointError before anything is written, so nothing good is ever overwritten by a bad resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
