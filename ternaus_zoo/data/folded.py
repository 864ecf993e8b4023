"""``FoldedDataModule``: what the segmentation and classification data modules share: the data set folder,
the deterministic split (hold-out, folds or a folds file), ``folds.csv`` and the loaders. Subclasses set the
attributes named in :meth:`FoldedDataModule._split` and :meth:`FoldedDataModule._loader` in ``__init__``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ternaus_zoo.data.datasets import worker_init_fn
from ternaus_zoo.data.folds import HOLDOUT, contiguous_groups, holdout_split, load_folds, make_folds, save_folds
from ternaus_zoo.data.io import format_examples, list_images, read_image
from ternaus_zoo.registry import ModelInfo, get_model_info

DATA_VARIABLE = "TERNAUS_ZOO_DATA"
FOLDS_FILE = "folds.csv"
# The module's hyperparameters, which the CLI links into the data module. Only the module saves them: Lightning
# refuses to merge two differing values, and a Python user may leave the data module's at None.
MODULE_OWNED = ("in_channels", "num_classes", "ignore_index")


class FoldedDataModule(pl.LightningDataModule):
    """Splits and loaders over ``root``, ``folds_file``, ``holdout_every``, ``group_blocks``, ``n_folds``,
    ``seed``, ``fold``, ``run_dir`` and ``num_workers``; the model's input channels and ``ModelInfo`` from
    ``images``, ``model_name``, ``_model_info`` and ``_in_channels``."""

    root: Path
    folds: dict[str, int]
    images: str
    model_name: str
    _model_info: ModelInfo | None
    _in_channels: int | None

    @property
    def in_channels(self) -> int:
        """Channels of the images fed to the model (reads the first image unless ``in_channels`` was given)."""
        if self._in_channels is None:
            first = next(iter(list_images(self._folder(self.images)).values()))
            self._in_channels = read_image(first).shape[2]
        return self._in_channels

    @property
    def info(self) -> ModelInfo:
        """The model's ``ModelInfo`` adapted to :attr:`in_channels` (statistics of the transforms)."""
        info = self._model_info if self._model_info is not None else get_model_info(self.model_name)
        return info.for_channels(self.in_channels)

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        if not folder.is_dir():
            hint = "" if os.environ.get(DATA_VARIABLE) else f" (set data_root or {DATA_VARIABLE})"
            raise FileNotFoundError(f"data set folder not found: {folder}{hint}")
        return folder

    def _split(self, stems: list[str]) -> dict[str, int]:
        """``{stem: fold}`` over ``stems``, with ``HOLDOUT`` (-1) for the hold-out."""
        if self.folds_file is not None:
            folds = load_folds(self.folds_file)
            missing, extra = sorted(set(stems) - set(folds)), sorted(set(folds) - set(stems))
            if missing or extra:
                raise ValueError(
                    f"{self.folds_file} does not match {self.root}: not in the file: {format_examples(missing)}; "
                    f"not in the data set: {format_examples(extra)}"
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
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > batch_size,
            num_workers=workers,
            persistent_workers=keep and workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=worker_init_fn,
        )
