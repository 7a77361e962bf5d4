"""Frozen-feature extraction with the eval transform only, cached once per split in the run dir."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ssl_bench.data.augment import eval_transform

FEATURES_NAME = "features.pt"

log = logging.getLogger("ssl_bench")


@torch.no_grad()
def extract_features(
    fn: Callable[[Tensor], Tensor], split: Any, info: Any, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Run `fn` on normalised, un-augmented images of `split` in order -> ([N, D] float32 cpu, [N] labels)."""
    feats, labels = [], []
    for images, y in split.batches(batch_size, shuffle=False, generator=None, drop_last=False, device=device):
        x = eval_transform(images, info.mean, info.std)  # [B, C, H, W]
        feats.append(fn(x).float().cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def pixel_features(images: Tensor) -> Tensor:
    """The `pixels` baseline: normalised pixels flattened [B, C*H*W]."""
    return images.flatten(1)


def cached_features(
    run_dir: Path, fn: Callable[[Tensor], Tensor], dataset: Any, batch_size: int, device: torch.device,
    protocol: dict[str, Any], recompute: bool = False,
) -> dict[str, Tensor]:
    """Features of the train and test splits, from `run_dir/features.pt` when the protocol matches.

    The protocol is stored as JSON-normalised data, so any config value compares equal after a
    round trip. A cache that cannot be read (truncated by a kill, damaged) is recomputed with a
    warning, never trusted and never an error.
    """
    path = Path(run_dir) / FEATURES_NAME
    protocol = json.loads(json.dumps(protocol, sort_keys=True, default=str))
    if path.is_file() and not recompute:
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            ok = isinstance(cached, dict) and all(k in cached for k in ("train", "train_labels", "test", "test_labels"))
        except Exception as exc:  # any unpickling / zip error: the file is not a usable cache
            cached, ok = None, False
            log.warning("features cache %s is unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)
        if ok and cached.get("protocol") == protocol:
            return cached
    train_f, train_y = extract_features(fn, dataset.train, dataset.info, batch_size, device)
    test_f, test_y = extract_features(fn, dataset.test, dataset.info, batch_size, device)
    out = {"train": train_f, "train_labels": train_y, "test": test_f, "test_labels": test_y, "protocol": protocol}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    return out
