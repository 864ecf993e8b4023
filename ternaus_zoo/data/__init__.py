"""Data: folders of images and masks -> pairs -> folds -> albumentations -> tensors.

``SegmentationDataset`` pairs ``images/`` and ``masks/`` by stem; ``make_folds``/``holdout_split``
cut deterministic splits; ``train_transforms``/``val_transforms`` build albumentations 2 pipelines
from a model's ``ModelInfo``; ``SegmentationDataModule`` ties them together for Lightning.
"""

from ternaus_zoo.data.datamodule import SegmentationDataModule
from ternaus_zoo.data.datasets import ImageFolderDataset, SegmentationDataset, worker_init_fn
from ternaus_zoo.data.folds import (
    HOLDOUT,
    contiguous_groups,
    holdout_split,
    load_folds,
    make_folds,
    save_folds,
)
from ternaus_zoo.data.io import DataError, list_images, read_binary_mask, read_class_mask, read_image, to_float
from ternaus_zoo.data.transforms import (
    build_transforms,
    restore_original_size,
    train_transforms,
    val_transforms,
    valid_size,
)

__all__ = [
    "HOLDOUT",
    "DataError",
    "ImageFolderDataset",
    "SegmentationDataModule",
    "SegmentationDataset",
    "build_transforms",
    "contiguous_groups",
    "holdout_split",
    "list_images",
    "load_folds",
    "make_folds",
    "read_binary_mask",
    "read_class_mask",
    "read_image",
    "restore_original_size",
    "save_folds",
    "to_float",
    "train_transforms",
    "val_transforms",
    "valid_size",
    "worker_init_fn",
]
