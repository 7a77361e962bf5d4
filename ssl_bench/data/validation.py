"""A validation split carved out of the training data, so hyper-parameters are chosen without the test set.

``dataset.val_fraction`` holds back a stratified fraction of the TRAINING split (after
``limit_train``), never of the test split: the held-back images are removed from training, so neither
pre-training nor the probes ever see them, and the test split is left exactly as it was.

The split is drawn by scikit-learn's ``train_test_split(stratify=labels)`` with its own seed
(``dataset.val_seed``), independent of the run's seed: every grid point and every seed of a sweep
holds back the same images, so their validation scores are paired comparisons on one set.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ssl_bench.errors import ConfigError

from .base import ImageDataset

#: The split seed when ``dataset.val_seed`` is not given.
DEFAULT_VAL_SEED = 0


def validation_indices(labels: Tensor, fraction: float, seed: int = DEFAULT_VAL_SEED) -> tuple[Tensor, Tensor]:
    """(kept training indices, validation indices) of a split with ``labels`` ([N] int64), both sorted.

    Stratified: each class is held back in proportion (within one image of ``fraction`` of it).
    A split too small to hold back one image per class, or a class with a single image, is one
    ConfigError naming the fix.
    """
    from sklearn.model_selection import train_test_split

    y = labels.cpu().numpy()
    classes = len(np.unique(y))
    try:
        train_idx, val_idx = train_test_split(np.arange(len(y)), test_size=fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise ConfigError(
            f"dataset.val_fraction={fraction!r} cannot hold back a stratified validation split from {len(y)} training "
            f"images in {classes} classes ({exc}); use a larger dataset.val_fraction or more training data "
            "(a larger dataset.limit_train)"
        ) from None
    return torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(val_idx))


def with_validation(dataset: ImageDataset, fraction: float, seed: int = DEFAULT_VAL_SEED) -> ImageDataset:
    """``dataset`` with ``fraction`` of its training split moved into a ``val`` split; test unchanged.

    ``info`` (the normalisation statistics among it) stays that of the whole training split, so
    the images a model sees are normalised the same with or without a validation split.
    """
    keep, held = validation_indices(dataset.train.labels, fraction, seed)
    return replace(dataset, train=dataset.train.subset(keep), val=dataset.train.subset(held))
