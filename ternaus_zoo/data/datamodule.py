"""``SegmentationDataModule``: a data set folder, its folds and its loaders, configured for LightningCLI.

Layout: ``{data_root}/{dataset}/{images}/`` and ``{data_root}/{dataset}/{masks}/``, paired by stem
(see :class:`~ternaus_zoo.data.datasets.SegmentationDataset`). Splits, all deterministic:

* ``holdout_every=k > 0``: the benchmark hold-out ``sorted(stems)[::k]`` is the ``test`` split and
  never enters a fold;
* the remaining stems are cut into ``n_folds`` folds by :func:`~ternaus_zoo.data.folds.make_folds`
  (``seed``; ``group_blocks > 0`` keeps contiguous blocks of the sorted stems together, for video
  frames); fold ``fold`` validates, the others train;
* or ``folds_file``: a ``stem,fold`` CSV written by an earlier run (hold-out rows have fold -1).

The split is written to ``folds.csv`` in ``run_dir`` (or the trainer's ``log_dir``) at setup.

Validation and test batches: with ``val_size`` the images are resized (longest side) and padded to a
fixed square, so they batch with ``batch_size``; without it they keep their resolution (padded to
the model's ``size_multiple``) and are loaded one per batch, since sizes may differ. Prediction is
always one image per batch, at ``val_size`` or full resolution; ``original_size`` and
:func:`~ternaus_zoo.data.transforms.restore_original_size` bring outputs back to the file's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import albumentations as A
import torch
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.datasets import ImageFolderDataset, SegmentationDataset
from ternaus_zoo.data.folded import DATA_VARIABLE, MODULE_OWNED, FoldedDataModule
from ternaus_zoo.data.transforms import train_transforms, val_transforms
from ternaus_zoo.registry import ModelInfo


class SegmentationDataModule(FoldedDataModule):
    """Folds and loaders of one segmentation data set folder.

    Args:
        dataset: sub-folder of ``data_root`` (e.g. ``"kvasir-seg"``), or a path.
        data_root: folder holding the data sets; default: the ``TERNAUS_ZOO_DATA`` variable.
        images: images sub-folder of the data set.
        masks: masks sub-folder of the data set.
        model_name: registry name whose ``ModelInfo`` gives mean/std and ``size_multiple``.
        info: a ``ModelInfo`` to use instead of ``model_name``'s.
        in_channels: convert images to this many channels; default: the files' own count.
        mask_mode: ``"binary"`` or ``"classes"`` (see ``SegmentationDataset``).
        num_classes: number of classes for ``"classes"`` masks.
        ignore_index: mask value to ignore (also fills the validation padding of class masks).
        mask_threshold: binarisation threshold of binary masks (raw mask values above it are foreground).
        mask_suffix: masks are named ``ID{mask_suffix}.*``.
        fold: the validation fold, ``0..n_folds-1``.
        n_folds: number of folds.
        seed: seed of the fold assignment (not of the augmentations).
        holdout_every: ``k > 0`` holds out ``sorted(stems)[::k]`` as the test split.
        group_blocks: ``> 0``: cut the sorted stems into that many contiguous blocks, each kept in
            one fold (use ``n_folds`` blocks for one block per fold).
        folds_file: reuse the split of a ``folds.csv`` instead of computing it.
        image_size: side of the training crops.
        scale: area range of the random resized crop.
        d4: D4 augmentation (flips and 90-degree rotations); ``False``: horizontal flips only.
        color: colour augmentations.
        val_size: longest side of validation/test/prediction images; ``None`` keeps full resolution.
        batch_size: training batch size (and validation's when ``val_size`` is set).
        num_workers: loader processes; 0 loads in the main process.
        predict_dir: folder of images to predict; default: the hold-out images.
        run_dir: where ``folds.csv`` is written; default: the trainer's ``log_dir``.
        skip_bad: skip (and log) unpaired or unreadable items instead of raising; reads every file
            once at setup.
    """

    def __init__(
        self,
        dataset: str,
        data_root: str | None = None,
        images: str = "images",
        masks: str = "masks",
        model_name: str = "unet11",
        info: ModelInfo | None = None,
        in_channels: int | None = None,
        mask_mode: Literal["binary", "classes"] = "binary",
        num_classes: int | None = None,
        ignore_index: int | None = None,
        mask_threshold: int = 127,
        mask_suffix: str = "",
        fold: int = 0,
        n_folds: int = 5,
        seed: int = 0,
        holdout_every: int = 0,
        group_blocks: int = 0,
        folds_file: str | None = None,
        image_size: int = 256,
        scale: tuple[float, float] = (0.5, 1.0),
        d4: bool = True,
        color: bool = True,
        val_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        predict_dir: str | None = None,
        run_dir: str | None = None,
        skip_bad: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["info", *MODULE_OWNED])
        if not 0 <= fold < n_folds:
            raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
        root = data_root if data_root is not None else os.environ.get(DATA_VARIABLE)
        self.root = Path(root) / dataset if root else Path(dataset)
        self.dataset, self.images, self.masks = dataset, images, masks
        self.model_name, self._model_info, self._in_channels = model_name, info, in_channels
        self.mask_mode, self.num_classes, self.ignore_index = mask_mode, num_classes, ignore_index
        self.mask_threshold, self.mask_suffix, self.skip_bad = mask_threshold, mask_suffix, skip_bad
        self.fold, self.n_folds, self.seed = fold, n_folds, seed
        self.holdout_every, self.group_blocks, self.folds_file = holdout_every, group_blocks, folds_file
        self.image_size, self.scale, self.d4, self.color, self.val_size = image_size, scale, d4, color, val_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.predict_dir, self.run_dir = predict_dir, run_dir
        self.folds: dict[str, int] = {}
        self._full: SegmentationDataset | None = None
        self.train_dataset: SegmentationDataset | None = None
        self.val_dataset: SegmentationDataset | None = None
        self.test_dataset: SegmentationDataset | None = None

    # -- splits ------------------------------------------------------------------------------------

    # -- Lightning hooks ---------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """List and pair the files once, split them, build the datasets of every stage."""
        if self._full is None:
            self._full = SegmentationDataset(
                self._folder(self.images),
                self._folder(self.masks),
                mask_mode=self.mask_mode,
                threshold=self.mask_threshold,
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
                skip_bad=self.skip_bad,
                channels=self._in_channels,
                mask_suffix=self.mask_suffix,
            )
            self.folds = self._split(self._full.stems)
            if self.fold not in self.folds.values():
                raise ValueError(f"fold {self.fold} is empty in the split of {self.root}")
        directory = self._run_dir()
        if directory is not None:
            self.save_folds(directory)
        info = self.info
        evaluation = self.eval_transforms(info)
        train = train_transforms(info, self.image_size, scale=tuple(self.scale), d4=self.d4, color=self.color)
        self.train_dataset = self._full.subset(self.stems_of("train"), train)
        self.val_dataset = self._full.subset(self.stems_of("val"), evaluation)
        test = self.stems_of("test")
        self.test_dataset = self._full.subset(test, evaluation) if test else None

    def eval_transforms(self, info: ModelInfo) -> A.Compose:
        """The evaluation pipeline (validation, test and prediction): ``val_transforms`` at ``val_size``."""
        fill = self.ignore_index if self.mask_mode == "classes" and self.ignore_index is not None else 0
        return val_transforms(info, self.val_size, mask_fill=fill)

    def _require(self, dataset: Dataset | None, what: str) -> Dataset:
        if dataset is None:
            if self._full is not None and what == "test":
                raise RuntimeError("no test split: set holdout_every > 0 (or a folds_file with fold -1 rows)")
            raise RuntimeError(f"no {what} data: call setup() first")
        return dataset

    @property
    def eval_batch_size(self) -> int:
        """``batch_size`` when ``val_size`` fixes the evaluation size, else 1 (images may differ in size)."""
        return self.batch_size if self.val_size is not None else 1

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches: ``image`` ``(B, C, s, s)``, ``mask`` ``(B, 1, s, s)`` or ``(B, s, s)``."""
        dataset = self._require(self.train_dataset, "training")
        if self.num_workers == 0:  # workers are reseeded by worker_init_fn; the main process here
            dataset.reseed(torch.initial_seed())
        return self._loader(dataset, self.batch_size, train=True, keep=True)

    def val_dataloader(self) -> DataLoader:
        """Validation fold, ``eval_batch_size`` images per batch."""
        return self._loader(self._require(self.val_dataset, "validation"), self.eval_batch_size, keep=True)

    def test_dataloader(self) -> DataLoader:
        """The hold-out (``holdout_every > 0``), ``eval_batch_size`` images per batch."""
        return self._loader(self._require(self.test_dataset, "test"), self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """Images of ``predict_dir`` (default: the hold-out images), one per batch, without masks."""
        stems = None
        if self.predict_dir is not None:
            folder = Path(self.predict_dir)
        else:
            stems = self.stems_of("test")
            if not stems:
                raise RuntimeError("nothing to predict: set predict_dir, or holdout_every to predict the hold-out")
            folder = self._folder(self.images)
        dataset = ImageFolderDataset(folder, self.eval_transforms(self.info), channels=self._in_channels, stems=stems)
        return self._loader(dataset, 1)
