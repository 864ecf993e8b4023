"""``FoldedDataModule``: what the segmentation and classification data modules share: the data set folder,
the model's input channels and statistics, the deterministic split (hold-out, folds or a folds file),
``folds.csv``, the transforms of each split and the loaders. Subclasses read their data set
(:meth:`FoldedDataModule._read`) and say how to predict; their ``__init__`` passes the options below up.

Splits, all deterministic:

* ``holdout_every=k > 0``: the benchmark hold-out ``sorted(stems)[::k]`` is the ``test`` split and never
  enters a fold;
* the remaining stems are cut into ``n_folds`` folds by :func:`~ternaus_zoo.data.folds.make_folds` (``seed``;
  ``group_blocks > 0`` keeps contiguous blocks of the sorted stems together, for video frames); fold ``fold``
  validates, the others train;
* or ``folds_file``: a ``stem,fold`` CSV written by an earlier run (hold-out rows have fold -1).

The split is written to ``folds.csv`` in ``run_dir`` (or the trainer's ``log_dir``) at setup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.datasets import worker_init_fn
from ternaus_zoo.data.errors import DataError, format_examples
from ternaus_zoo.data.folds import HOLDOUT, contiguous_groups, holdout_split, load_folds, make_folds, save_folds
from ternaus_zoo.data.io import read_image
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.data.patches import patch_transforms
from ternaus_zoo.data.transforms import train_transforms, val_transforms
from ternaus_zoo.errors import BadValueError, MissingPathError
from ternaus_zoo.registry import ModelInfo, registered

DATA_VARIABLE = "TERNAUS_ZOO_DATA"
FOLDS_FILE = "folds.csv"
# The module's hyperparameters, which the CLI links into the data module. Only the module saves them: Lightning
# refuses to merge two differing values, and a Python user may leave the data module's at None.
MODULE_OWNED = ("in_channels", "num_classes", "ignore_index")


class FoldedDataModule(pl.LightningDataModule):
    """The folds, transforms and loaders of one data set folder.

    Args:
        dataset: sub-folder of ``data_root`` (e.g. ``"kvasir-seg"``), or a path.
        data_root: folder holding the data sets; default: the ``TERNAUS_ZOO_DATA`` variable.
        images: images sub-folder of the data set.
        model_name: registry name whose ``ModelInfo`` gives mean/std and ``size_multiple``.
        info: a ``ModelInfo`` to use instead of ``model_name``'s.
        in_channels: convert images to this many channels; default: the files' own count.
        num_classes: number of classes (of class masks, or labels).
        ignore_index: void value of class masks (also fills their evaluation padding).
        fold: the validation fold, ``0..n_folds-1``.
        n_folds: number of folds.
        seed: seed of the fold assignment (not of the augmentations).
        holdout_every: ``k > 0`` holds out ``sorted(stems)[::k]`` as the test split.
        group_blocks: ``> 0``: cut the sorted stems into that many contiguous blocks, each kept in
            one fold (use ``n_folds`` blocks for one block per fold).
        folds_file: reuse the split of a ``folds.csv`` instead of computing it.
        image_size: side of the training crops (when ``patch_size`` is ``None``).
        scale: area range of the random resized crop (when ``patch_size`` is ``None``).
        patch_size: train on random ``patch_size x patch_size`` patches of the image at the working scale
            (its longest side resized to ``val_size``, or native resolution when ``val_size`` is ``None``),
            padded when smaller (see :func:`~ternaus_zoo.data.patches.patch_transforms`); a multiple of the
            model's ``size_multiple``. ``None``: random resized crops of 50-100 % of the image to ``image_size``.
        patch_scale: range of the random factor applied to the working scale of the patches.
        foreground_share: the share of patches centred on a pixel of a class drawn uniformly among the classes
            present in the mask (binary: the foreground; classes other than 0 and ``ignore_index``; multi-label:
            the channels with a pixel), for data where foreground or some classes are rare.
        d4: D4 augmentation (flips and 90-degree rotations); ``False``: horizontal flips only.
        color: colour augmentations.
        val_size: longest side of the evaluation images (resized, then padded to a square); ``None`` keeps
            full resolution (padded to the model's ``size_multiple``).
        batch_size: training batch size (and evaluation's when ``val_size`` is set).
        num_workers: loader processes; 0 loads in the main process.
        predict_dir: folder of images to predict; default: the hold-out images.
        run_dir: where ``folds.csv`` is written; default: the trainer's ``log_dir``.
    """

    unsaved_hyperparameters: tuple[str, ...] = ()
    """A subclass's arguments that the module saves instead (see :data:`MODULE_OWNED`)."""

    def __init__(
        self,
        dataset: str | None = None,
        data_root: str | None = None,
        *,
        images: str = "images",
        model_name: str = "unet11",
        info: ModelInfo | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        fold: int = 0,
        n_folds: int = 5,
        seed: int = 0,
        holdout_every: int = 0,
        group_blocks: int = 0,
        folds_file: str | None = None,
        image_size: int = 256,
        scale: tuple[float, float] = (0.5, 1.0),
        patch_size: int | None = None,
        patch_scale: tuple[float, float] = (0.85, 1.15),
        foreground_share: float = 0.0,
        d4: bool = True,
        color: bool = True,
        val_size: int | None = None,
        batch_size: int = 8,
        num_workers: int = 2,
        predict_dir: str | None = None,
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        # Lightning reads the arguments of every __init__ up the call stack, the subclass's included
        self.save_hyperparameters(ignore=["info", *MODULE_OWNED, *self.unsaved_hyperparameters])
        counts = {"n_folds": (n_folds, 2), "fold": (fold, 0), "seed": (seed, 0), "holdout_every": (holdout_every, 0),
                  "group_blocks": (group_blocks, 0), "image_size": (image_size, 1), "batch_size": (batch_size, 1),
                  "num_workers": (num_workers, 0), "val_size": (1 if val_size is None else val_size, 1)}  # fmt: skip
        for name, (value, minimum) in counts.items():
            if value < minimum:
                raise BadValueError(f"data.{name} must be at least {minimum}, got {value}")
        if fold >= n_folds:
            raise BadValueError(f"data.fold must be in 0..{n_folds - 1} (data.n_folds={n_folds}), got {fold}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise BadValueError(f"data.scale must be [low, high] with 0 < low <= high <= 1, got {list(scale)}")
        if folds_file is not None and not Path(folds_file).is_file():
            raise MissingPathError(f"data.folds_file {folds_file} does not exist")
        if patch_size is not None and patch_size < 1:
            raise BadValueError(f"data.patch_size must be a positive number of pixels, got {patch_size}")
        if not 0 < patch_scale[0] <= patch_scale[1]:
            raise BadValueError(f"data.patch_scale must be [low, high] with 0 < low <= high, got {list(patch_scale)}")
        if not 0 <= foreground_share <= 1:
            raise BadValueError(f"data.foreground_share must be in [0, 1], got {foreground_share}")
        root = data_root if data_root is not None else os.environ.get(DATA_VARIABLE)
        # no data set: predicting a folder of images (predict_dir) reads nothing else
        self.root = None if dataset is None else Path(root) / dataset if root else Path(dataset)
        self.dataset, self.images = dataset, images
        self.model_name, self._model_info, self._in_channels = model_name, info, in_channels
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.fold, self.n_folds, self.seed = fold, n_folds, seed
        self.holdout_every, self.group_blocks, self.folds_file = holdout_every, group_blocks, folds_file
        self.image_size, self.scale, self.d4, self.color, self.val_size = image_size, scale, d4, color, val_size
        self.patch_size, self.patch_scale, self.foreground_share = patch_size, patch_scale, foreground_share
        self.batch_size, self.num_workers = batch_size, num_workers
        self.predict_dir, self.run_dir = predict_dir, run_dir
        self.folds: dict[str, int] = {}
        self._full: Any = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    @property
    def in_channels(self) -> int:
        """Channels of the images fed to the model (reads the first image unless ``in_channels`` was given)."""
        if self._in_channels is None:
            first = next(iter(list_images(self._folder(self.images)).values()))
            self._in_channels = read_image(first).shape[2]
        return self._in_channels

    @property
    def info(self) -> ModelInfo:
        """The model's ``ModelInfo`` adapted to :attr:`in_channels` (statistics of the transforms).

        The ``info`` given, else that of the module being trained (its own statistics, e.g. a data set's mean and
        std for a model trained from scratch), else the registry entry of ``model_name``: read without building
        the model, since the data layer does not import the model families.
        """
        module = self.trainer.lightning_module if self.trainer is not None else None
        info = self._model_info or getattr(module, "info", None) or registered(self.model_name)[1]
        return info.for_channels(self.in_channels)

    def _folder(self, name: str, file: bool = False) -> Path:
        """``root / name``, a folder (or, ``file=True``, a file) that must exist."""
        if self.root is None:
            raise BadValueError("data.dataset is required: the data set's folder (data.predict_dir alone predicts one)")
        folder = self.root / name
        if not (folder.is_file() if file else folder.is_dir()):
            hint = "" if os.environ.get(DATA_VARIABLE) else f" (set data_root or {DATA_VARIABLE})"
            raise MissingPathError(f"data set {'file' if file else 'folder'} not found: {folder}{hint}")
        return folder

    def _split(self, stems: list[str]) -> dict[str, int]:
        """``{stem: fold}`` over ``stems``, with ``HOLDOUT`` (-1) for the hold-out."""
        if self.folds_file is not None:
            folds = load_folds(self.folds_file)
            missing, extra = sorted(set(stems) - set(folds)), sorted(set(folds) - set(stems))
            if missing or extra:
                raise DataError(
                    self.folds_file,
                    f"does not match {self.root}: not in the file: {format_examples(missing)}; "
                    f"not in the data set: {format_examples(extra)}",
                )
            return folds
        split: dict[str, int] = {}
        rest = stems
        if self.holdout_every > 0:
            holdout, rest = holdout_split(stems, self.holdout_every)
            split.update(dict.fromkeys(holdout, HOLDOUT))
        groups = contiguous_groups(rest, self.group_blocks) if self.group_blocks > 0 else None
        split.update(make_folds(rest, self.n_folds, self.seed, groups))
        return dict(sorted(split.items()))

    def stems_of(self, split: Literal["train", "val", "test"]) -> list[str]:
        """Sorted stems of a split (after :meth:`setup`)."""
        if split == "test":
            return [stem for stem, fold in self.folds.items() if fold == HOLDOUT]
        if split == "val":
            return [stem for stem, fold in self.folds.items() if fold == self.fold]
        return [stem for stem, fold in self.folds.items() if fold not in (HOLDOUT, self.fold)]

    def save_folds(self, directory: str | os.PathLike) -> Path:
        """Write the split as ``directory/folds.csv`` (``stem,fold``; hold-out = -1); returns the path."""
        return save_folds(self.folds, Path(directory) / FOLDS_FILE)

    def _run_dir(self) -> str | None:
        """Where this process writes ``folds.csv``: ``run_dir`` or the trainer's log dir, on rank 0 only."""
        trainer = self.trainer
        if trainer is None:
            return self.run_dir
        # trainer.log_dir broadcasts from rank 0, so every process must ask for it, not only rank 0
        directory = self.run_dir if self.run_dir is not None else trainer.log_dir
        return directory if trainer.is_global_zero else None

    def _loader(self, dataset: Dataset, batch_size: int, *, train: bool = False, keep: bool = False) -> DataLoader:
        workers = self.num_workers
        sampler = None
        if not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's evaluation sampler pads an uneven split by repeating images, which metrics would then
            # count twice; this one gives each process its share, every image once (shares may differ by one)
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=keep and workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=worker_init_fn,
        )

    # -- the data set and its splits ---------------------------------------------------------------

    def _read(self) -> tuple[Any, list[str]]:
        """The whole data set (every split's items, with a ``subset(stems, transform)`` method) and the stems
        the split is cut over."""
        raise NotImplementedError

    def _subset(self, stems: list[str], transform: A.Compose, *, train: bool) -> Dataset:
        """The items ``stems`` of the whole data set, with ``transform``."""
        return self._full.subset(stems, transform)

    def setup(self, stage: str | None = None) -> None:
        """Read the data set once, split it, build the datasets of every stage (none to predict ``predict_dir``)."""
        if stage == "predict" and self.predict_dir is not None:
            return
        if self._full is None:
            self._full, stems = self._read()
            self.folds = self._split(stems)
            if self.fold not in self.folds.values():
                raise ValueError(f"fold {self.fold} is empty in the split of {self.root}")
        directory = self._run_dir()
        if directory is not None:
            self.save_folds(directory)
        info = self.info
        train = self.train_transforms(info)
        evaluation = self.eval_transforms(info)
        self.train_dataset = self._subset(self.stems_of("train"), train, train=True)
        self.val_dataset = self._subset(self.stems_of("val"), evaluation, train=False)
        test = self.stems_of("test")
        self.test_dataset = self._subset(test, evaluation, train=False) if test else None

    @property
    def mask_fill(self) -> int:
        """The value masks are padded with in evaluation: ``ignore_index``, else 0."""
        return self.ignore_index if self.ignore_index is not None else 0

    def train_transforms(self, info: ModelInfo) -> A.Compose:
        """The training pipeline: patches at the working scale (``patch_size``), else random resized crops."""
        if self.patch_size is None:
            return train_transforms(info, self.image_size, scale=tuple(self.scale), d4=self.d4, color=self.color)
        if self.patch_size % info.size_multiple:
            raise BadValueError(
                f"data.patch_size {self.patch_size} is not a multiple of {self.model_name}'s size_multiple "
                f"{info.size_multiple}: the patch is also the tile of prediction"
            )
        ignore = (0,) if self.ignore_index is None else (0, self.ignore_index)
        return patch_transforms(
            info,
            self.patch_size,
            self.val_size,
            scale=tuple(self.patch_scale),
            d4=self.d4,
            color=self.color,
            mask_fill=self.mask_fill,
            foreground_share=self.foreground_share,
            ignore_values=ignore,
        )

    def eval_transforms(self, info: ModelInfo) -> A.Compose:
        """The evaluation pipeline (validation, test and prediction): ``val_transforms`` at ``val_size``."""
        return val_transforms(info, self.val_size, mask_fill=self.mask_fill)

    # -- loaders -----------------------------------------------------------------------------------

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
        """Shuffled training batches of ``batch_size`` (the last one dropped when smaller)."""
        dataset = self._require(self.train_dataset, "training")
        if self.num_workers == 0:  # workers are reseeded by worker_init_fn; the main process here
            dataset.reseed(torch.initial_seed())
        return self._loader(dataset, self.batch_size, train=True, keep=True)

    def val_dataloader(self) -> DataLoader:
        """The validation fold, ``eval_batch_size`` items per batch."""
        return self._loader(self._require(self.val_dataset, "validation"), self.eval_batch_size, keep=True)

    def test_dataloader(self) -> DataLoader:
        """The hold-out (``holdout_every > 0``), ``eval_batch_size`` items per batch."""
        return self._loader(self._require(self.test_dataset, "test"), self.eval_batch_size)
