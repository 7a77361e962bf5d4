"""Frozen-feature extraction with the eval transform only, cached once per split in the run dir.

Distributed (torchrun, ``ctx.world_size > 1``): every rank extracts its shard of each split, the
sharding of :meth:`ImageSplit.batches` (rank r takes positions ``r, r + W, r + 2W, ...`` of the
split, wrapped around to equal length), and the shards are gathered on rank 0 batch by batch.
Interleaving the W gathered batches restores the split's order exactly; the wrapped-around padding
lands at the end and is cut off, so the result is the single-process extraction, row for row.
Only rank 0 holds the features (it alone evaluates and writes the cache): ImageNet's 1.28M x 768
float32 train features are ~4 GB, which every rank holding a copy would multiply by W.

Cache under DDP: rank 0 alone reads ``features.pt`` (the run directory need not be shared between
nodes) and broadcasts whether it can be used; on a hit no rank extracts, on a miss every rank does.
So every rank reaches the same collectives whatever the cache holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ssl_bench.data.augment import eval_transform
from ssl_bench.distributed import DistContext, broadcast_flag, gather_to_main
from ssl_bench.eval.base import EvalInputError
from ssl_bench.files import atomic_torch_save
from ssl_bench.progress import progress

FEATURES_NAME = "features.pt"
CACHE_KEYS = ("train", "train_labels", "test", "test_labels")

log = logging.getLogger("ssl_bench")


def _is_distributed(ctx: DistContext | None) -> bool:
    return ctx is not None and ctx.world_size > 1


def _is_main(ctx: DistContext | None) -> bool:
    return ctx is None or ctx.rank == 0


@torch.no_grad()
def extract_features(
    fn: Callable[[Tensor], Tensor], split: Any, info: Any, batch_size: int, device: torch.device,
    ctx: DistContext | None = None, desc: str = "features",
) -> tuple[Tensor, Tensor] | None:
    """Run `fn` on normalised, un-augmented images of `split` in order -> ([N, D] float32 cpu, [N] labels).

    With a distributed ``ctx`` every rank must call this; rank 0 gets the whole split (see the module
    docstring), the other ranks None.
    """
    n = len(split)
    if n == 0:
        raise EvalInputError("cannot extract features of an empty split; check the dataset's train/test data")
    world = ctx.world_size if _is_distributed(ctx) else 1
    rank = ctx.rank if _is_distributed(ctx) else 0
    batches = split.batches(batch_size, shuffle=False, generator=None, drop_last=False, rank=rank, world_size=world, device=device)
    total = split.num_batches(batch_size, drop_last=False, world_size=world) if hasattr(split, "num_batches") else None
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    for images, y in progress(batches, desc=desc, total=total, unit="batch", main=_is_main(ctx)):
        x = eval_transform(images, info.mean, info.std)  # [B, C, H, W]
        f = gather_to_main(fn(x).float(), ctx)  # [B * world, D] on rank 0, in split order
        if f is not None:
            feats.append(f.cpu())
        labels.append(y)
    # labels: one gather at the end ([N_local] per rank), on the features' device (NCCL needs CUDA)
    y_all = gather_to_main(torch.cat(labels).to(device), ctx)  # [N_local * world]
    if y_all is None:
        return None
    return torch.cat(feats)[:n], y_all.cpu()[:n]  # the wrapped-around padding is the tail: cut it


def pixel_features(images: Tensor) -> Tensor:
    """The `pixels` baseline: normalised pixels flattened [B, C*H*W]."""
    return images.flatten(1)


def normalised_key(key: Any) -> Any:
    """``key`` as it reads back from JSON (sorted, tuples as lists, other values as strings): the form
    the features cache (and the predictions file) store their key in, so equal settings compare equal."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def _read_cache(path: Path, protocol: dict[str, Any]) -> dict[str, Tensor] | None:
    """The cache at ``path`` when it is readable, complete and made with ``protocol``; else None."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling / zip error: the file is not a usable cache
        log.warning("features cache %s is unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)
        return None
    if not isinstance(cached, dict) or not all(k in cached for k in CACHE_KEYS):
        return None
    return cached if cached.get("protocol") == protocol else None


def cached_features(
    run_dir: Path, fn: Callable[[Tensor], Tensor], dataset: Any, batch_size: int, device: torch.device,
    protocol: dict[str, Any], recompute: bool = False, ctx: DistContext | None = None, label: str = "",
) -> dict[str, Tensor] | None:
    """Features of the train and test splits, from `run_dir/features.pt` when the protocol matches.

    The protocol is stored as JSON-normalised data, so any config value compares equal after a
    round trip. A cache that cannot be read (truncated by a kill, damaged) is recomputed with a
    warning, never trusted and never an error. A cache that cannot be written (a full disk, a
    read-only folder) raises :class:`ssl_bench.files.DiskWriteError`, one line naming the file.

    With a distributed ``ctx`` every rank must call this: rank 0 decides about the cache and
    broadcasts the decision, every rank extracts its shard on a miss, rank 0 returns the features
    and writes the cache, the other ranks return None. ``label`` prefixes the progress bars.
    """
    path = Path(run_dir) / FEATURES_NAME
    protocol = normalised_key(protocol)
    cached = _read_cache(path, protocol) if _is_main(ctx) and not recompute else None
    if broadcast_flag(cached is not None, ctx):
        return cached
    prefix = f"{label} features" if label else "features"
    train = extract_features(fn, dataset.train, dataset.info, batch_size, device, ctx, desc=f"{prefix}: train")
    test = extract_features(fn, dataset.test, dataset.info, batch_size, device, ctx, desc=f"{prefix}: test")
    if train is None or test is None:  # not rank 0
        return None
    out = {"train": train[0], "train_labels": train[1], "test": test[0], "test_labels": test[1], "protocol": protocol}
    atomic_torch_save(path, out)  # a full disk is one DiskWriteError line; an older cache is left whole
    return out
