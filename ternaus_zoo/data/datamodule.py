"""``SegmentationDataModule``: a data set folder, its folds and its loaders, configured for LightningCLI.

Layout: ``{data_root}/{dataset}/{images}/`` and ``{data_root}/{dataset}/{masks}/``, paired by stem
(see :class:`~ternaus_zoo.data.mask_datasets.SegmentationDataset`). The splits (hold-out, folds, ``folds.csv``)
are :class:`~ternaus_zoo.data.folded.FoldedDataModule`'s.

Validation and test batches: with ``val_size`` the images are resized (longest side) and padded to a
fixed square, so they batch with ``batch_size``; without it they keep their resolution (padded to
the model's ``size_multiple``) and are loaded one per batch, since sizes may differ. Prediction is
always one image per batch, at ``val_size`` or full resolution; ``original_size`` and
:func:`~ternaus_zoo.data.transforms.restore_original_size` bring outputs back to the file's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import DataLoader

from ternaus_zoo.data.coco import is_coco_file
from ternaus_zoo.data.datasets import ImageFolderDataset
from ternaus_zoo.data.folded import FoldedDataModule
from ternaus_zoo.data.mask_datasets import SegmentationDataset
from ternaus_zoo.errors import BadValueError


def check_class_names(names: Sequence[str] | None, num_classes: int | None, option: str) -> list[str] | None:
    """``names`` as a list, checked: one distinct, non-empty name per class (``num_classes=None``: any count).

    Raises:
        BadValueError: naming ``option``, the number of names and ``num_classes``.
    """
    if names is None:
        return None
    if isinstance(names, str):
        raise BadValueError(f"{option} must be a list of names, one per class, got the string {names!r}")
    names = [str(name) for name in names]
    if num_classes is not None and len(names) != num_classes:
        raise BadValueError(f"{option} has {len(names)} names for num_classes={num_classes}: {names}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated or not all(name.strip() for name in names):
        raise BadValueError(f"{option} must be distinct, non-empty names, got {names}")
    return names


class SegmentationDataModule(FoldedDataModule):
    """Folds and loaders of one segmentation data set folder.

    Args:
        dataset: sub-folder of ``data_root`` (e.g. ``"kvasir-seg"``), or a path.
        data_root: folder holding the data sets; default: the ``TERNAUS_ZOO_DATA`` variable.
        masks: masks sub-folder of the data set, or its COCO annotation file (``annotations.json``: polygons
            or RLE, category ids to classes 1, 2, ... in id order; needs ``pip install pycocotools``).
        mask_mode: ``"binary"``, ``"classes"`` or ``"multilabel"`` (one binary mask per class, classes may
            overlap: a sub-folder of ``masks`` per class, or multi-channel files; see ``SegmentationDataset``).
            ``"multilabel"`` makes the module score and predict each class with its own sigmoid.
        mask_threshold: binarisation threshold of binary masks (raw mask values above it are foreground).
        mask_suffix: masks are named ``ID{mask_suffix}.*``.
        skip_bad: skip (and log) unpaired or unreadable items instead of raising; reads every file
            once at setup.
        class_names: one name per class (``["background", "road", ...]``), as many as ``num_classes``;
            the module adopts them when fitting starts, logs its per-class IoU/Dice under them
            (``val/iou/road``) and saves them in the checkpoint. Saved by the module, not here.
        **options: the split, transform and loader options (``model_name``, ``fold``,
            ``holdout_every``, ``image_size``, ``val_size``, ``batch_size`` ...): see
            :class:`~ternaus_zoo.data.folded.FoldedDataModule`.
    """

    def __init__(
        self,
        dataset: str | None = None,
        data_root: str | None = None,
        *,
        masks: str = "masks",
        mask_mode: Literal["binary", "classes", "multilabel"] = "binary",
        mask_threshold: int = 127,
        mask_suffix: str = "",
        skip_bad: bool = False,
        class_names: list[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(dataset, data_root, **options)
        if mask_threshold < 0:
            raise BadValueError(f"data.mask_threshold must be at least 0, got {mask_threshold}")
        self.masks, self.mask_mode = masks, mask_mode
        self.mask_threshold, self.mask_suffix, self.skip_bad = mask_threshold, mask_suffix, skip_bad
        expected = self.num_classes if self.num_classes is not None or mask_mode != "binary" else 1
        self.class_names = check_class_names(class_names, expected, "data.class_names")

    # the module saves the names (it adopts them when fitting starts): both saving them would make Lightning refuse
    # to merge a module's and a data module's hyperparameters that differ (names given to only one of them)
    unsaved_hyperparameters = ("class_names",)

    def _read(self) -> tuple[SegmentationDataset, list[str]]:
        """List and pair the files once."""
        full = SegmentationDataset(
            self._folder(self.images),
            self._folder(self.masks, file=is_coco_file(self.masks)),
            mask_mode=self.mask_mode,
            threshold=self.mask_threshold,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            skip_bad=self.skip_bad,
            channels=self._in_channels,
            mask_suffix=self.mask_suffix,
            class_folders=self.class_names if self.mask_mode == "multilabel" else None,
        )
        return full, full.stems

    @property
    def mask_fill(self) -> int:
        """``ignore_index`` for class masks, else 0."""
        return super().mask_fill if self.mask_mode == "classes" else 0

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
