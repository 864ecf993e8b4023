"""``ClassificationDataModule``: the splits and loaders of a classification data set, a label CSV (``miml``)
or class masks (``camvid-val``), read by :mod:`ternaus_zoo.data.label_datasets`."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.datasets import ImageFolderDataset
from ternaus_zoo.data.folded import FoldedDataModule
from ternaus_zoo.data.label_datasets import MaskLabelDataset, MultiLabelDataset


class ClassificationDataModule(FoldedDataModule):
    """Splits and loaders of a classification data set: a label CSV (``miml``) or class masks (``camvid-val``).

    Layout: ``{data_root}/{dataset}/{images}/`` with ``{data_root}/{dataset}/{labels_csv}`` or, when ``masks``
    is set, ``{data_root}/{dataset}/{masks}/`` (labels and auxiliary targets derived by
    :class:`~ternaus_zoo.data.label_datasets.MaskLabelDataset`). The splits are
    :class:`~ternaus_zoo.data.folded.FoldedDataModule`'s, over the names of the CSV (or the mask stems), with
    the project's benchmark hold-out ``sorted(names)[::5]`` by default; fold ``fold`` validates and tunes the
    thresholds, the others train.

    Transforms come from the model's ``ModelInfo``: :func:`~ternaus_zoo.data.transforms.train_transforms` at
    ``image_size`` for training, :func:`~ternaus_zoo.data.transforms.val_transforms` at ``val_size`` (default:
    ``image_size``; longest side resized, padded to a square) for validation, test and prediction, so every
    loader batches ``batch_size`` images.

    Args:
        dataset: sub-folder of ``data_root`` (``"miml"``) or a path.
        data_root: folder holding the data sets; default: the ``TERNAUS_ZOO_DATA`` variable.
        labels_csv: the CSV file name inside the data set (ignored with ``masks``).
        masks: masks sub-folder: derive the labels from class masks instead of a CSV.
        model_name: whose ``ModelInfo`` gives mean/std (linked from the model by the CLI).
        min_fraction: presence threshold of a class in a mask (see ``MaskLabelDataset``).
        aux: give the training batches ``aux_mask`` (masks only).
        holdout_every: ``k > 0`` holds out ``sorted(names)[::k]`` as the test split.
        image_size: side of the training crops.
        d4: D4 augmentation (flips and 90-degree rotations); ``False``: horizontal flips only.
        val_size: side of the evaluation images (default ``image_size``).
        batch_size: batch size of every loader.
        **options: the other split, transform and loader options (``num_classes``, checked
            against the CSV or the class count of the masks, ``fold``, ``predict_dir``, whose images are named
            by file stem while the hold-out's are named as in the CSV ...): see
            :class:`~ternaus_zoo.data.folded.FoldedDataModule`.
    """

    def __init__(
        self,
        dataset: str | None = None,
        data_root: str | None = None,
        *,
        labels_csv: str = "labels.csv",
        masks: str | None = None,
        model_name: str = "aux_resnet34",
        min_fraction: float = 0.0,
        aux: bool = True,
        holdout_every: int = 5,
        image_size: int = 224,
        d4: bool = False,
        val_size: int | None = None,
        batch_size: int = 16,
        **options: Any,
    ) -> None:
        super().__init__(
            dataset,
            data_root,
            model_name=model_name,
            holdout_every=holdout_every,
            image_size=image_size,
            d4=d4,
            val_size=val_size if val_size is not None else image_size,
            batch_size=batch_size,
            **options,
        )
        self.labels_csv, self.masks, self.min_fraction, self.aux = labels_csv, masks, min_fraction, aux

    @property
    def label_names(self) -> list[str]:
        """Names of the labels (CSV columns, or class indices for masks); after :meth:`setup`."""
        return list(self._full.label_names) if self._full is not None else []

    def _read(self) -> tuple[MultiLabelDataset | MaskLabelDataset, list[str]]:
        """Read the labels once: the CSV, or every mask."""
        images = self._folder(self.images)
        if self.masks is not None:
            if self.num_classes is None:
                raise ValueError("labels from masks need num_classes (the classes of the masks)")
            full = MaskLabelDataset(
                images,
                self._folder(self.masks),
                self.num_classes,
                ignore_index=self.ignore_index,
                min_fraction=self.min_fraction,
                channels=self._in_channels,
            )
            return full, list(full.names)
        full = MultiLabelDataset(images, self.root / self.labels_csv, channels=self._in_channels)
        if self.num_classes is not None and full.num_labels != self.num_classes:
            raise ValueError(
                f"{self.root / self.labels_csv} has {full.num_labels} label columns {full.label_names} "
                f"but the model has num_classes={self.num_classes}"
            )
        return full, list(full.names)

    def _subset(self, stems: list[str], transform: A.Compose, *, train: bool) -> Dataset:
        """Training items of masks carry ``aux_mask`` when ``aux`` is set; evaluation items never do."""
        if isinstance(self._full, MaskLabelDataset):
            return self._full.subset(stems, transform, aux=train and self.aux)
        return super()._subset(stems, transform, train=train)

    def predict_dataloader(self) -> DataLoader:
        """Images of ``predict_dir`` (every image, by stem) or the hold-out items; ``batch_size`` per batch."""
        if self.predict_dir is not None:
            dataset: Dataset = ImageFolderDataset(
                self.predict_dir, self.eval_transforms(self.info), channels=self._in_channels
            )
        else:
            dataset = self._require(self.test_dataset, "test")
            if not len(dataset):
                raise RuntimeError("nothing to predict: set predict_dir, or holdout_every to predict the hold-out")
        return self._loader(dataset, self.batch_size)

    def prior(self) -> np.ndarray:
        """``(C,)`` fraction of positive training items per label (the label-prior baseline)."""
        return self._require(self.train_dataset, "training").label_matrix().mean(0)
