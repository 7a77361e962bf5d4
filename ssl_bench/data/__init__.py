"""Datasets (uint8 batches in a reproducible, DDP-sharded order) and batched augmentation."""

from .base import (
    DatasetInfo,
    ImageDataset,
    ImageSplit,
    TensorSplit,
    balanced_subset_indices,
    suggest_patch_size,
)
from .datasets import (
    BUILTIN_DATASETS,
    DatasetLayoutError,
    DatasetNotFoundError,
    default_data_root,
    load_dataset,
)
from .folder import FolderSplit
from .validation import DEFAULT_VAL_SEED, validation_indices, with_validation

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_VAL_SEED",
    "DatasetInfo",
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "FolderSplit",
    "ImageDataset",
    "ImageSplit",
    "TensorSplit",
    "balanced_subset_indices",
    "default_data_root",
    "load_dataset",
    "suggest_patch_size",
    "validation_indices",
    "with_validation",
]
