"""Segmentation datasets: images and masks of two folders, paired by file stem
(:mod:`ternaus_zoo.data.listing`).

Items are the dicts of :mod:`ternaus_zoo.data.datasets` with a ``mask``: ``float32`` ``(1, H, W)`` in {0, 1} for
``mask_mode="binary"``, ``int64`` ``(H, W)`` class indices (and ``ignore_index``) for ``mask_mode="classes"``,
``float32`` ``(K, H, W)`` in {0, 1} for ``mask_mode="multilabel"`` (one channel per class; classes may overlap).

Pairing is checked when a dataset is built (cheap: file names only); file contents are checked when
read. With ``skip_bad=True`` nothing raises: every file is read once at construction
(:meth:`SegmentationDataset.validate`), bad items are dropped, logged on the ``ternaus_zoo.data``
logger and listed in ``dataset.skipped`` as ``(file, reason)``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ternaus_zoo.data.coco import CocoMasks, is_coco_file
from ternaus_zoo.data.datasets import Transform, _FolderDataset
from ternaus_zoo.data.errors import DataError, PathLike, format_examples
from ternaus_zoo.data.io import read_binary_mask, read_class_mask, read_image, read_multilabel_mask
from ternaus_zoo.data.listing import find_class_folders, list_class_masks, list_images, pair_by_stem

logger = logging.getLogger("ternaus_zoo.data")

MaskMode = Literal["binary", "classes", "multilabel"]
MASK_MODES = get_args(MaskMode)


class SegmentationDataset(_FolderDataset):
    """Images and masks of two folders, paired by stem whatever the extensions.

    Args:
        images_dir: folder of images: grey, RGB, RGBA, 8 or 16 bits (see :mod:`ternaus_zoo.data.io`).
        masks_dir: folder of masks, one per image, of the image's height and width; or a COCO annotation file
            (``.json``: polygons or RLE, rasterised per image, see :mod:`ternaus_zoo.data.coco`).
        mask_mode: ``"binary"``: first channel ``> threshold`` gives {0, 1} (JPEG masks included);
            ``"classes"``: single-channel class indices; ``"multilabel"``: one binary mask per class, either a
            sub-folder of ``masks_dir`` per class (``masks/road/ID.png``, ``masks/ground/ID.png``) or one
            multi-channel file per image (a TIFF or PNG with ``num_classes`` channels).
        threshold: binarisation threshold on the mask's raw values.
        num_classes: required for ``"classes"`` (values must be ``< num_classes`` or ``ignore_index``) and
            ``"multilabel"`` (the channels).
        ignore_index: a value of the mask files meaning "not labelled" (e.g. CamVid's void = 11).
        transform: albumentations-style callable ``transform(image=, mask=) -> {"image", "mask"}``.
        stems: restrict to these stems (a fold); they must exist in ``images_dir``.
        skip_bad: drop unpaired and unreadable items instead of raising; reads every file once.
        channels: convert every image to this many channels (default: keep the file's).
        mask_suffix: the mask of ``ID.png`` is ``ID{mask_suffix}.*`` (e.g. ``"_mask"``).
        class_folders: ``"multilabel"`` with a sub-folder per class: the sub-folders in channel order (default:
            every sub-folder, sorted by name).

    Raises:
        FileNotFoundError: a folder is missing.
        DataError: a folder is empty, two files share a stem, an image has no mask or a mask no image.
        ValueError: inconsistent options.
    """

    def __init__(
        self,
        images_dir: PathLike,
        masks_dir: PathLike,
        *,
        mask_mode: MaskMode = "binary",
        threshold: int = 127,
        num_classes: int | None = None,
        ignore_index: int | None = None,
        transform: Transform | None = None,
        stems: Iterable[str] | None = None,
        skip_bad: bool = False,
        channels: int | None = None,
        mask_suffix: str = "",
        class_folders: Iterable[str] | None = None,
    ) -> None:
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
        if mask_mode != "binary" and (num_classes is None or num_classes < 1):
            raise ValueError(f"mask_mode={mask_mode!r} needs num_classes >= 1 to check the masks, got {num_classes}")
        if ignore_index is not None and ignore_index < 0:
            raise ValueError(f"ignore_index must be a value found in the mask files (>= 0), got {ignore_index}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.masks_dir = Path(masks_dir)
        self.coco = CocoMasks(masks_dir) if is_coco_file(masks_dir) else None
        if self.coco is not None and mask_mode == "classes" and self.coco.num_classes > num_classes:
            raise DataError(
                self.masks_dir,
                f"has {self.coco.num_classes - 1} categories, so {self.coco.num_classes} classes with the background; "
                f"num_classes is {num_classes}",
            )
        self.mask_mode = mask_mode
        self.threshold = threshold
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.skip_bad = skip_bad
        self.mask_suffix = mask_suffix
        self.class_folders = (
            find_class_folders(self.masks_dir, num_classes, class_folders) if mask_mode == "multilabel" else None
        )
        super().__init__(images_dir, transform, channels, stems=None)
        self.masks = self._pair()
        if stems is not None:
            self._restrict(stems)
        if skip_bad:
            self.validate()

    def _mask_files(self) -> dict[str, Path]:
        """``{mask stem: file}``; for class folders, the stems every folder holds, pointing at the first's."""
        if self.coco is not None:
            return {stem: self.masks_dir for stem in self.coco.images}
        if not self.class_folders:
            return list_images(self.masks_dir)
        self._class_files = list_class_masks(self.masks_dir, self.class_folders)
        return self._class_files[self.class_folders[0]]

    def _pair(self) -> dict[str, Path]:
        """Match masks to images; drop (``skip_bad``) or raise on unpaired files."""
        pairing = pair_by_stem(self.images_dir, self.images, self.masks_dir, self._mask_files(), self.mask_suffix)
        self._skipped_stems.update(path.stem for path in pairing.no_mask)
        problems = pairing.problems()
        if problems and not self.skip_bad:
            raise pairing.error()
        self.stems = sorted(pairing.masks)
        if not self.stems:
            raise DataError(self.images_dir, f"no image has a mask in {self.masks_dir}")
        self._skip(problems)
        return pairing.masks

    def _skip(self, problems: list[tuple[Path, str]]) -> None:
        if not problems:
            return
        self.skipped += problems
        examples = format_examples(f"{path.name} ({reason})" for path, reason in problems)
        logger.warning("skipped %d item(s) of %s: %s", len(problems), self.images_dir, examples)

    def _load(self, stem: str) -> tuple[np.ndarray, np.ndarray]:
        """The item's image ``(H, W, C)`` and mask ``(H, W)`` as arrays, checked."""
        image_path, mask_path = self.images[stem], self.masks[stem]
        image = read_image(image_path, self.channels)
        if self.coco is not None:
            mask = self.coco.mask(stem, self.mask_mode)
        elif self.mask_mode == "multilabel":
            mask = self._multilabel_mask(mask_path)
        elif self.mask_mode == "binary":
            mask = read_binary_mask(mask_path, self.threshold)
        else:
            mask = read_class_mask(mask_path, self.num_classes, self.ignore_index)
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(
                image_path,
                f"image size {image.shape[:2]} differs from its mask's {mask.shape[:2]} ({mask_path})",
            )
        return image, mask

    def _multilabel_mask(self, first: Path) -> np.ndarray:
        """``(H, W, K)`` {0, 1}: the class folders' masks stacked, or the channels of one file."""
        if not self.class_folders:
            return read_multilabel_mask(first, self.num_classes, self.threshold)
        channels = [
            read_binary_mask(self._class_files[name][first.stem], self.threshold) for name in self.class_folders
        ]
        shapes = {channel.shape for channel in channels}
        if len(shapes) > 1:
            raise DataError(first, f"the class folders' masks of {first.stem} differ in size: {sorted(shapes)}")
        return np.stack(channels, axis=-1)

    def validate(self, workers: int = 2) -> list[tuple[Path, str]]:
        """Read every item once; return the problems as ``(file, reason)``.

        With ``skip_bad`` the bad items are dropped, logged and added to ``skipped``; otherwise a
        :class:`DataError` lists them all.
        """

        def check(stem: str) -> tuple[Path, str] | None:
            try:
                self._load(stem)
            except DataError as error:
                return error.path, error.reason
            return None

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(check, self.stems))
        problems = [result for result in results if result is not None]
        if problems and not self.skip_bad:
            examples = format_examples(f"{path} ({reason})" for path, reason in problems)
            raise DataError(self.images_dir, f"{len(problems)} bad item(s): {examples}")
        bad = {stem for stem, result in zip(self.stems, results, strict=True) if result is not None}
        self._skipped_stems |= bad
        self.stems = [stem for stem in self.stems if stem not in bad]
        if not self.stems:
            raise DataError(self.images_dir, f"every item is bad: {format_examples(problems)}")
        self._skip(problems)
        return problems

    def subset(self, stems: Iterable[str], transform: Transform | None = None) -> SegmentationDataset:
        """A dataset over ``stems`` (a fold) with its own ``transform``, without listing the folders again."""
        part = copy.copy(self)
        part.transform = transform
        part.skipped, part._skipped_stems = list(self.skipped), set(self._skipped_stems)
        part._restrict(stems)
        return part

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        sample = self._sample(stem, *self._load(stem))
        if self.mask_mode == "binary":
            sample["mask"] = sample["mask"].float().unsqueeze(0)
        elif self.mask_mode == "multilabel":  # (H, W, K) as the transforms keep it -> (K, H, W)
            sample["mask"] = sample["mask"].float().permute(2, 0, 1).contiguous()
        else:
            sample["mask"] = sample["mask"].long()
        return sample
