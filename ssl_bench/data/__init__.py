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

__all__ = [
    "BUILTIN_DATASETS",
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
]
