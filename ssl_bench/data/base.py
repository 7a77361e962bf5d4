"""Dataset containers shared by every loader.

Images are always handed out as ``uint8`` tensors ``[B, C, H, W]``: augmentation
happens afterwards, batched on the training device (see ``augment.py``), so the
data pipeline only has to produce raw pixels in a reproducible order. The one
exception is the crop of a decoded-from-file split: ``batches(views=...)`` asks a
:class:`~ssl_bench.data.folder.FolderSplit` for ``uint8 [B, V, C, S, S]`` views cut
from the *full* image (see ``crops.py`` for why); in-memory splits ignore ``views``
and return whole images, which the method crops on the device.

Ordering rules (identical for every split type, see :func:`epoch_index_batches`):

* one permutation of the whole split per epoch, drawn from the caller's
  ``torch.Generator`` (or ``arange`` when ``shuffle=False``);
* with ``world_size > 1`` rank ``r`` takes ``perm[r::world_size]`` of that
  permutation, so every rank must pass a generator in the same state;
* every rank gets the same number of samples (the permutation is padded by
  wrapping around when ``drop_last=False`` and truncated when ``drop_last=True``),
  hence the same number of batches, so no rank waits forever in a collective.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ssl_bench.errors import ConfigError

if TYPE_CHECKING:
    from .crops import CropSpec

Batch = tuple[Tensor, Tensor]  # (uint8 [B, C, H, W] or, with views, [B, V, C, S, S]; int64 [B])


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that models and augmentations need.

    ``mean``/``std`` are per-channel statistics in [0, 1] pixel space (used by
    ``augment.normalize``). ``default_patch_size`` is the ViT patch size that gives
    a sensible token grid for ``image_size`` (see :func:`suggest_patch_size`).
    """

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_patch_size: int

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"{self.name}: mean/std need {self.channels} entries, got "
                f"{len(self.mean)}/{len(self.std)}"
            )
        if self.image_size % self.default_patch_size != 0:
            raise ValueError(
                f"{self.name}: patch size {self.default_patch_size} does not divide "
                f"image size {self.image_size}"
            )

    @property
    def num_patches(self) -> int:
        """Number of ViT tokens (without CLS) at the default patch size."""
        return (self.image_size // self.default_patch_size) ** 2


def suggest_patch_size(image_size: int) -> int:
    """Pick a ViT patch size for an arbitrary square image size.

    Rule: the largest of 16/8/4/2 that divides ``image_size`` and leaves a grid of
    at least 7x7 tokens; failing that, the largest leaving at least 4x4; else 1.
    This reproduces the built-in choices: 8 -> 2 (4x4), 28 -> 4 (7x7),
    32 -> 4 (8x8), 96 -> 8 (12x12), 224 -> 16 (14x14).
    """
    for min_grid in (7, 4):
        for p in (16, 8, 4, 2):
            if image_size % p == 0 and image_size // p >= min_grid:
                return p
    return 1


def epoch_index_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
) -> list[Tensor]:
    """Index batches (CPU int64 tensors) of one epoch for one rank.

    Consumes exactly one ``randperm`` from ``generator`` when shuffling, so the
    generator state advances identically on every rank.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    if shuffle and world_size > 1 and generator is None:
        # Without a shared generator every rank would draw its own permutation and
        # the shards would overlap; refuse instead of silently training on duplicates.
        raise ValueError("sharded shuffling needs an explicit generator seeded identically on all ranks")
    if n == 0:
        return []
    if shuffle:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(n, generator=generator, device=gen_device).cpu()
    else:
        perm = torch.arange(n)
    if world_size > 1:
        if drop_last:
            perm = perm[: (n // world_size) * world_size]
        else:
            total = math.ceil(n / world_size) * world_size
            if total > n:  # wrap around, as DistributedSampler does
                reps = math.ceil(total / n)
                perm = perm.repeat(reps)[:total]
        perm = perm[rank::world_size]
    batches = list(torch.split(perm, batch_size))
    if drop_last and batches and batches[-1].numel() < batch_size:
        batches.pop()
    return batches


def num_batches(n: int, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
    """Batches per rank per epoch, matching :func:`epoch_index_batches`."""
    if world_size > 1:
        per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    else:
        per_rank = n
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


def balanced_subset_indices(labels: Tensor, limit: int, seed: int = 0) -> Tensor:
    """Deterministic, class-balanced subset of ``limit`` indices (sorted).

    Samples are taken round-robin over classes in a seeded random order, so even a
    tiny ``limit`` covers as many classes as possible (unlike a plain stratified split,
    which fails when ``limit < num_classes``).
    """
    n = labels.numel()
    if limit >= n:
        return torch.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    lab = labels.cpu()[perm]
    # rank of each permuted sample within its class (0 for the first seen, ...)
    order = torch.argsort(lab, stable=True)
    sorted_lab = lab[order]
    first = torch.ones_like(sorted_lab, dtype=torch.bool)
    first[1:] = sorted_lab[1:] != sorted_lab[:-1]
    group_start = torch.cummax(torch.where(first, torch.arange(n), 0), dim=0).values
    within = torch.empty(n, dtype=torch.long)
    within[order] = torch.arange(n) - group_start
    # order by (within-class rank, position in the permutation)
    key = within * n + torch.arange(n)
    chosen = perm[torch.argsort(key)[:limit]]
    return torch.sort(chosen).values


class ImageSplit(ABC):
    """One split (train or test) of an image dataset."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def labels(self) -> Tensor:
        """All labels, int64 ``[N]`` on CPU."""

    @abstractmethod
    def subset(self, indices: Sequence[int] | Tensor) -> ImageSplit:
        """A split restricted to ``indices`` (used for ``limit_*`` options)."""

    @abstractmethod
    def _load(self, index_batches: list[Tensor], device: torch.device) -> Iterator[Batch]:
        """Materialise the given index batches on ``device``."""

    def num_batches(self, batch_size: int, *, drop_last: bool, world_size: int = 1) -> int:
        """Batches each rank sees per epoch (e.g. for LR schedules)."""
        return num_batches(len(self), batch_size, drop_last=drop_last, world_size=world_size)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        views: Sequence[CropSpec] | None = None,
        skip: int = 0,
    ) -> Iterator[Batch]:
        """Yield ``(images uint8 [B, C, H, W], labels int64 [B])`` on ``device``.

        ``views``: crops to cut from each full image, for splits that decode files
        (:class:`~ssl_bench.data.folder.FolderSplit` then yields ``[B, V, C, S, S]``);
        in-memory splits ignore it and yield whole images (the method crops them on
        the device), without drawing anything extra from ``generator``.

        ``skip``: how many of this rank's leading batches not to load (a training run
        resumed inside an epoch). The generator is consumed exactly as without it, so
        the batches that come are the tail of the unskipped sequence, and the skipped
        ones are never read or decoded.

        The index order is fixed eagerly (the generator is consumed at call time),
        so two calls with generators in the same state yield the same batches.
        """
        if skip < 0:
            raise ValueError(f"skip must be >= 0 batches, got {skip}")
        index_batches = epoch_index_batches(
            len(self),
            batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last,
            rank=rank,
            world_size=world_size,
        )
        return self._load_views(index_batches[skip:], torch.device(device), views, generator)

    def _load_views(
        self,
        index_batches: list[Tensor],
        device: torch.device,
        views: Sequence[CropSpec] | None,
        generator: torch.Generator | None,
    ) -> Iterator[Batch]:
        """Materialise batches, cropping ``views`` if this split can (called eagerly).

        Default: ignore ``views`` (full images; the method crops on the device).
        A split that crops while decoding overrides this; it may draw from
        ``generator`` here, right after the permutation.
        """
        del views, generator
        return self._load(index_batches, device)


class TensorSplit(ImageSplit):
    """A split held in memory as uint8 ``[N, C, H, W]`` images and int64 labels.

    The tensors are copied to the training device once (on first use) and batches
    are gathered there, so small datasets never touch the host after warm-up.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match {images.shape[0]} images")
        self.images = images.contiguous()  # [N, C, H, W] uint8
        self._labels = labels.cpu()  # [N] int64
        self._on_device: tuple[torch.device, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def labels(self) -> Tensor:
        return self._labels

    def subset(self, indices: Sequence[int] | Tensor) -> TensorSplit:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        return TensorSplit(self.images[idx], self._labels[idx])

    def to(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """Images and labels on ``device`` (cached: moved at most once per device switch)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = (device, self.images.to(device), self._labels.to(device))
        return self._on_device[1], self._on_device[2]

    def _load(self, index_batches: list[Tensor], device: torch.device) -> Iterator[Batch]:
        images, labels = self.to(device)
        for idx in index_batches:
            idx = idx.to(images.device, non_blocking=True)
            yield images[idx], labels[idx]


@dataclass
class ImageDataset:
    """A dataset: its facts plus a labelled train and test split, and a validation split when one was
    held back from the training data (``dataset.val_fraction``, see ``validation.py``)."""

    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit
    val: ImageSplit | None = None

    def split(self, name: str) -> ImageSplit:
        """The split an evaluation scores: ``"test"`` or ``"val"``."""
        if name == "test":
            return self.test
        if name == "val":
            if self.val is None:
                raise ConfigError("this dataset has no validation split; set one with --set dataset.val_fraction=0.1")
            return self.val
        raise ConfigError(f"unknown split {name!r}; expected 'test' or 'val'")

