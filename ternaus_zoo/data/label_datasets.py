"""Image-level labels for classification: a CSV of 0/1 columns, or labels derived from segmentation masks.

* :func:`read_label_csv` / :class:`MultiLabelDataset`: ``labels.csv`` with a name column and one 0/1
  column per label (the ``miml`` layout: ``Filenames,desert,mountains,sea,sunset,trees``) beside a folder of
  images named as in the CSV;
* :class:`MaskLabelDataset`: images and class-index masks (the ``camvid-val`` layout); class ``c`` is
  present when it covers at least ``min_fraction`` of the non-void pixels of the file, and the mask, after
  the image's augmentations, gives the auxiliary targets.

Items are dicts (split and loaded by :class:`~ternaus_zoo.data.classification_datamodule.ClassificationDataModule`):

* ``image``: ``float32`` ``(C_in, H, W)``, normalised by the transform;
* ``labels``: ``float32`` ``(C,)`` 0/1 (a multi-class data set is one-hot);
* ``aux_mask`` (:class:`MaskLabelDataset` with ``aux=True``): ``float32`` ``(C, H, W)`` auxiliary targets at
  the image's resolution after the transform: 1 where the pixel is of class ``c``, 0 elsewhere, -1
  (:data:`~ternaus_zoo.data.aux_targets.IGNORE`) at void pixels and in the padding; the training step pools
  them to the head's resolution after MixUp/CutMix (:func:`~ternaus_zoo.data.aux_targets.downsample_targets`);
* ``name``: the file name as in the CSV (``"12.jpg"``), or the stem for masks.
"""

from __future__ import annotations

import copy
import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ternaus_zoo.data.aux_targets import class_mask_to_targets, labels_from_mask
from ternaus_zoo.data.datasets import Transform, TransformedDataset, _image_tensor
from ternaus_zoo.data.errors import DataError, PathLike, format_examples
from ternaus_zoo.data.io import read_image
from ternaus_zoo.data.listing import list_images
from ternaus_zoo.data.mask_datasets import SegmentationDataset


def read_label_csv(
    path: PathLike, name_column: str | None = None, label_columns: Sequence[str] | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """Read a CSV of file names and 0/1 label columns.

    Args:
        path: the CSV file (header row first).
        name_column: the column of file names; default: the first column.
        label_columns: the label columns, in this order; default: every column but the name column.

    Returns:
        ``(names, label_names, labels)``: names in file order, label names, ``labels`` ``float32``
        ``(N, C)`` in {0, 1}.

    Raises:
        DataError (naming the file, and the line and column where it applies): no header, no rows, a missing
        column, a row of the wrong length, an empty or repeated name, a value other than 0 or 1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as file:
        rows = list(csv.reader(file))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(path, "empty CSV: expected a header (name column, then one column per label) and rows")
    header = [cell.strip() for cell in rows[0]]
    name_column = header[0] if name_column is None else name_column
    if name_column not in header:
        raise DataError(path, f"no column {name_column!r} in the header {header}")
    name_index = header.index(name_column)
    if label_columns is None:
        label_columns = [column for index, column in enumerate(header) if index != name_index]
    missing = [column for column in label_columns if column not in header]
    if missing:
        raise DataError(path, f"label columns {missing} are not in the header {header}")
    if not label_columns:
        raise DataError(path, f"no label columns in the header {header}")
    if len(rows) == 1:
        raise DataError(path, "the CSV has a header but no rows")
    indices = [header.index(column) for column in label_columns]
    names: list[str] = []
    labels = np.zeros((len(rows) - 1, len(label_columns)), np.float32)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(path, f"line {line}: {len(row)} values for {len(header)} columns: {row}")
        name = row[name_index].strip()
        if not name:
            raise DataError(path, f"line {line}: empty file name")
        names.append(name)
        for column, index in zip(label_columns, indices, strict=True):
            value = row[index].strip()
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if number not in (0.0, 1.0):
                raise DataError(path, f"line {line} ({name}), column {column!r}: expected 0 or 1, found {value!r}")
            labels[line - 2, label_columns.index(column)] = number
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataError(path, f"file names appear more than once: {format_examples(repeated)}")
    return names, list(label_columns), labels


class MultiLabelDataset(TransformedDataset):
    """Images of one folder with the labels of a CSV (see :func:`read_label_csv`).

    A name of the CSV is a file of ``images_dir`` (``"12.jpg"``); a name without an extension is matched to
    the file of that stem. Every file is checked to exist when the dataset is built.

    Args:
        images_dir: the folder of images.
        labels_csv: the CSV, or a pre-read ``(names, label_names, labels)`` triple.
        transform: albumentations-style ``transform(image=...) -> {"image": ...}``; ``None``: scaled to [0, 1].
        names: restrict to these names (a fold); they must be in the CSV.
        channels: convert every image to this many channels (default: the file's own).
        name_column / label_columns: see :func:`read_label_csv`.

    Items: ``image`` ``(C_in, H, W)`` float32, ``labels`` ``(C,)`` float32, ``name``.

    Raises:
        DataError: bad CSV (see :func:`read_label_csv`), or files of the CSV missing from ``images_dir``
            (all named, up to five).
        KeyError: ``names`` not in the CSV.
    """

    def __init__(
        self,
        images_dir: PathLike,
        labels_csv: PathLike | tuple[list[str], list[str], np.ndarray],
        transform: Transform | None = None,
        *,
        names: Iterable[str] | None = None,
        channels: int | None = None,
        name_column: str | None = None,
        label_columns: Sequence[str] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.images_dir}")
        if isinstance(labels_csv, tuple):
            all_names, self.label_names, labels = labels_csv
            self.csv_path: Path | None = None
        else:
            self.csv_path = Path(labels_csv)
            all_names, self.label_names, labels = read_label_csv(self.csv_path, name_column, label_columns)
        self.labels_by_name = {name: labels[row] for row, name in enumerate(all_names)}
        self.paths = self._resolve(all_names)
        self.transform = transform
        self.channels = channels
        self.names = sorted(all_names)
        if names is not None:
            self.names = self._restrict(names)

    def _resolve(self, names: list[str]) -> dict[str, Path]:
        paths, missing = {}, []
        stems: dict[str, Path] | None = None
        for name in names:
            path = self.images_dir / name
            if not path.is_file() and not Path(name).suffix:
                stems = list_images(self.images_dir) if stems is None else stems
                path = stems.get(name, path)
            if path.is_file():
                paths[name] = path
            else:
                missing.append(name)
        if missing:
            source = self.csv_path if self.csv_path is not None else "the label table"
            raise DataError(
                self.images_dir, f"{len(missing)} file(s) named in {source} are missing: {format_examples(missing)}"
            )
        return paths

    def _restrict(self, names: Iterable[str]) -> list[str]:
        wanted = sorted(set(names))
        unknown = [name for name in wanted if name not in self.labels_by_name]
        if unknown:
            raise KeyError(f"names not in the labels of {self.images_dir}: {format_examples(unknown)}")
        return wanted

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_matrix(self) -> np.ndarray:
        """``(N, C)`` float32 labels of the dataset's names, in order."""
        return np.stack([self.labels_by_name[name] for name in self.names]).astype(np.float32)

    def subset(self, names: Iterable[str], transform: Transform | None = None) -> MultiLabelDataset:
        """The dataset restricted to ``names`` (a fold), with its own transform; no file is listed again."""
        part = copy.copy(self)
        part.transform = transform
        part.names = self._restrict(names)
        return part

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        image = read_image(self.paths[name], self.channels)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {
            "image": _image_tensor(image),
            "labels": torch.from_numpy(self.labels_by_name[name].copy()),
            "name": name,
        }


class MaskLabelDataset(TransformedDataset):
    """Image-level labels and auxiliary targets derived from class-index segmentation masks.

    Class ``c`` is present in an image when its pixels cover at least ``min_fraction`` of the file's
    non-void pixels (and at least one pixel); the labels are computed on the whole file, before any crop.

    Args:
        images_dir / masks_dir: paired by stem (see :class:`~ternaus_zoo.data.mask_datasets.SegmentationDataset`).
        num_classes: ``C``; mask values must be ``< C`` or ``ignore_index``.
        ignore_index: void value (CamVid: 11), left out of the fractions and of the auxiliary targets.
        min_fraction: presence threshold in ``[0, 1]``.
        transform: albumentations-style ``transform(image=, mask=)`` (mask with nearest interpolation; pad
            the mask with ``ignore_index``).
        stems: restrict to these stems.
        aux: add ``aux_mask`` ``(C, H, W)`` (see the module docstring); off for evaluation, where it is unused.
        channels: convert images to this many channels.

    Items: ``image``, ``labels`` ``(C,)``, ``aux_mask`` (if ``aux``), ``name`` (the stem).
    """

    def __init__(
        self,
        images_dir: PathLike,
        masks_dir: PathLike,
        num_classes: int,
        *,
        ignore_index: int | None = None,
        min_fraction: float = 0.0,
        transform: Transform | None = None,
        stems: Iterable[str] | None = None,
        aux: bool = True,
        channels: int | None = None,
    ) -> None:
        if not 0.0 <= min_fraction <= 1.0:
            raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction}")
        self.pairs = SegmentationDataset(
            images_dir,
            masks_dir,
            mask_mode="classes",
            num_classes=num_classes,
            ignore_index=ignore_index,
            stems=stems,
            channels=channels,
        )
        self.num_classes, self.ignore_index, self.min_fraction = num_classes, ignore_index, min_fraction
        self.transform, self.aux = transform, aux
        self.label_names = [str(index) for index in range(num_classes)]
        self._labels: dict[str, torch.Tensor] = {}

    @property
    def names(self) -> list[str]:
        return self.pairs.stems

    @property
    def num_labels(self) -> int:
        return self.num_classes

    def labels_of(self, stem: str, mask: np.ndarray | None = None) -> torch.Tensor:
        """``(C,)`` float32 labels of ``stem`` (read once, then cached)."""
        if stem not in self._labels:
            if mask is None:
                mask = self.pairs._load(stem)[1]
            self._labels[stem] = labels_from_mask(
                torch.from_numpy(mask.astype(np.int64)), self.num_classes, self.ignore_index, self.min_fraction
            )
        return self._labels[stem]

    def label_matrix(self) -> np.ndarray:
        """``(N, C)`` float32 labels of every item (reads the masks not read yet)."""
        return torch.stack([self.labels_of(stem) for stem in self.names]).numpy()

    def subset(
        self, stems: Iterable[str], transform: Transform | None = None, aux: bool | None = None
    ) -> MaskLabelDataset:
        """The dataset restricted to ``stems``, with its own transform (and ``aux``); shares the label cache."""
        part = copy.copy(self)
        part.pairs = self.pairs.subset(stems)
        part.transform = transform
        part.aux = self.aux if aux is None else aux
        return part

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.names[index]
        image, mask = self.pairs._load(stem)
        labels = self.labels_of(stem, mask)
        if self.transform is not None:
            output = self.transform(image=image, mask=mask)
            image, mask = output["image"], output["mask"]
        item: dict[str, Any] = {"image": _image_tensor(image), "labels": labels.clone()}
        if self.aux:
            mask_tensor = torch.as_tensor(np.asarray(mask)).long()
            item["aux_mask"] = class_mask_to_targets(mask_tensor, self.num_classes, self.ignore_index)
        item["name"] = stem
        return item
