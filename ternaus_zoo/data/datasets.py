"""Folder datasets: the images of a folder by stem, for prediction, and what every dataset of folders shares
(an item dict, a transform reseeded per DataLoader worker).

Items are dicts:

* ``image``: ``float32`` tensor ``(C, H, W)``; normalised by the transform, or only scaled to [0, 1]
  when ``transform`` is ``None``.
* ``name``: the file stem (a list of stems once batched).
* ``original_size``: ``int64`` tensor ``(2,)`` = ``(H, W)`` of the file (``(B, 2)`` once batched), to
  bring predictions back to the file's resolution.

:class:`~ternaus_zoo.data.mask_datasets.SegmentationDataset` adds a ``mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ternaus_zoo.data.errors import PathLike, format_examples
from ternaus_zoo.data.io import read_image, to_float
from ternaus_zoo.data.listing import list_images

Transform = Callable[..., dict[str, Any]]


def _image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A transform's image output (tensor ``(C, H, W)``, or numpy ``(H, W, C)``) as float ``(C, H, W)``."""
    if isinstance(image, torch.Tensor):
        return image.float()
    return torch.from_numpy(np.ascontiguousarray(to_float(image).transpose(2, 0, 1)))


class TransformedDataset(Dataset):
    """A dataset with an albumentations ``transform`` that :func:`worker_init_fn` reseeds per worker."""

    transform: Transform | None

    def reseed(self, seed: int) -> None:
        """Reseed the transform's own random state (albumentations 2 ignores the global seeds)."""
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(seed % 2**32)


class _FolderDataset(TransformedDataset):
    """Images of one folder by stem, optionally restricted to ``stems``; shared by both datasets."""

    def __init__(
        self,
        images_dir: PathLike,
        transform: Transform | None,
        channels: int | None,
        stems: Iterable[str] | None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.images = list_images(self.images_dir)
        self.transform = transform
        self.channels = channels
        self.stems = list(self.images)
        self.skipped: list[tuple[Path, str]] = []
        self._skipped_stems: set[str] = set()
        if stems is not None:
            self._restrict(stems)

    def _restrict(self, stems: Iterable[str]) -> None:
        """Keep only ``stems`` (sorted); stems skipped as bad are dropped, unknown ones raise."""
        wanted = sorted(set(stems))
        available = set(self.stems)
        unknown = [stem for stem in wanted if stem not in available and stem not in self._skipped_stems]
        if unknown:
            raise KeyError(f"stems not in this dataset of {self.images_dir}: {format_examples(unknown)}")
        self.stems = [stem for stem in wanted if stem in available]

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def image_channels(self) -> int:
        """Channels of the images as read (the first image is read to find out)."""
        return read_image(self.images[self.stems[0]], self.channels).shape[2]

    def _sample(self, stem: str, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        """Apply the transform to the arrays as read and build the item dict."""
        return make_item(stem, image, self.transform, mask)


def make_item(
    name: str, image: np.ndarray, transform: Transform | None = None, mask: np.ndarray | None = None
) -> dict[str, Any]:
    """The item dict (see the module docstring) of an ``(H, W, C)`` image as read (and its mask), transformed."""
    sample: dict[str, Any] = {}
    original_size = torch.tensor(image.shape[:2], dtype=torch.int64)
    if transform is not None:
        output = transform(image=image) if mask is None else transform(image=image, mask=mask)
        image, mask = output["image"], output.get("mask")
    sample["image"] = _image_tensor(image)
    if mask is not None:
        sample["mask"] = torch.as_tensor(mask)
    sample["name"] = name
    sample["original_size"] = original_size
    return sample


def raw_item(name: str, image: np.ndarray) -> dict[str, Any]:
    """The item of an ``(H, W, C)`` image as read, untransformed: ``image`` ``(C, H, W)`` in its stored dtype."""
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return {"image": pixels, "name": name, "original_size": torch.tensor(image.shape[:2], dtype=torch.int64)}


class ImageFolderDataset(_FolderDataset):
    """Every image of a folder, for prediction: items hold ``image``, ``name``, ``original_size``.

    Args:
        images_dir: folder of images (any OpenCV format; sub-folders are not searched).
        transform: an albumentations-style callable ``transform(image=...) -> {"image": ...}``, e.g.
            :func:`ternaus_zoo.data.transforms.val_transforms`.
        channels: convert every image to this many channels (default: keep the file's).
        stems: restrict to these stems.
        raw: the image as read, ``(C, H, W)`` ``uint8`` (``float32`` in [0, 1] for deeper files), no transform:
            for tiled prediction, which normalises tile by tile instead of the whole image in float32.
    """

    def __init__(
        self,
        images_dir: PathLike,
        transform: Transform | None = None,
        *,
        channels: int | None = None,
        stems: Iterable[str] | None = None,
        raw: bool = False,
    ) -> None:
        if raw and transform is not None:
            raise ValueError("raw=True reads images as they are: give no transform")
        super().__init__(images_dir, transform, channels, stems)
        self.raw = raw

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        image = read_image(self.images[stem], self.channels)
        return raw_item(stem, image) if self.raw else self._sample(stem, image)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV thread per worker and a distinct augmentation stream.

    ``cv2.setNumThreads(0)`` stops each worker from starting a thread pool of its own (workers x
    cores threads on a few cores). albumentations 2 keeps its random state inside ``Compose`` and
    ignores the global seeds, so forked workers would otherwise repeat each other's augmentations
    (and, without persistent workers, repeat them every epoch); the dataset's transform is reseeded
    from the worker's torch seed, which differs per worker and epoch and follows ``seed_everything``.
    """
    cv2.setNumThreads(0)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)
