"""Data: folders of images and masks -> pairs -> folds -> albumentations -> tensors.

``SegmentationDataset`` pairs ``images/`` and ``masks/`` by stem; ``make_folds``/``holdout_split``
cut deterministic splits; ``train_transforms``/``val_transforms`` build albumentations 2 pipelines
from a model's ``ModelInfo``; ``SegmentationDataModule`` ties them together for Lightning, and
``ClassificationDataModule`` does the same for image-level labels (a label CSV, or labels derived from masks).
"""

from ternaus_zoo.data.aux_targets import class_mask_to_targets, downsample_targets, labels_from_mask, labels_to_targets
from ternaus_zoo.data.classification_datamodule import ClassificationDataModule
from ternaus_zoo.data.datamodule import SegmentationDataModule
from ternaus_zoo.data.datasets import ImageFolderDataset, worker_init_fn
from ternaus_zoo.data.errors import DataError
from ternaus_zoo.data.folds import (
    HOLDOUT,
    contiguous_groups,
    holdout_split,
    load_folds,
    make_folds,
    save_folds,
)
from ternaus_zoo.data.io import read_binary_mask, read_class_mask, read_image, to_float
from ternaus_zoo.data.label_datasets import MaskLabelDataset, MultiLabelDataset, read_label_csv
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.data.mask_datasets import SegmentationDataset
from ternaus_zoo.data.shapes import ShapesDataset, draw_shapes
from ternaus_zoo.data.transforms import (
    build_transforms,
    restore_original_size,
    train_transforms,
    val_transforms,
    valid_size,
)

__all__ = [
    "HOLDOUT",
    "ClassificationDataModule",
    "DataError",
    "ImageFolderDataset",
    "MaskLabelDataset",
    "MultiLabelDataset",
    "SegmentationDataModule",
    "SegmentationDataset",
    "ShapesDataset",
    "build_transforms",
    "class_mask_to_targets",
    "contiguous_groups",
    "downsample_targets",
    "draw_shapes",
    "holdout_split",
    "labels_from_mask",
    "labels_to_targets",
    "list_images",
    "load_folds",
    "make_folds",
    "read_binary_mask",
    "read_class_mask",
    "read_image",
    "read_label_csv",
    "restore_original_size",
    "save_folds",
    "to_float",
    "train_transforms",
    "val_transforms",
    "valid_size",
    "worker_init_fn",
]
