"""Prediction writers: Lightning callbacks writing every batch's predictions to disk as they come.

* :class:`MaskWriter`: ``<name>.png`` masks (and optionally ``<name>.npy`` probabilities) of segmentation;
* :class:`LabelWriter`: one CSV of a classifier's probabilities and 0/1 labels;
* :class:`OutOfFoldWriter`: ``<name>.npz`` out-of-fold records of a bagging fold, scored against the masks;
* :class:`MaskTiff`: a mask too large to hold, written into a TIFF block by block (tiled prediction of large TIFFs).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from ternaus_zoo.data.display import overlay
from ternaus_zoo.data.io import read_binary_mask, read_image
from ternaus_zoo.data.transforms import valid_size
from ternaus_zoo.inference.postprocessing import PostProcessingStep, apply_steps
from ternaus_zoo.metrics import class_labels

HISTOGRAM_BINS = 100

PathLike = str | os.PathLike


def probabilities_to_mask(probabilities: Tensor, threshold: float = 0.5, multilabel: bool = False) -> np.ndarray:
    """``(C, H, W)`` probabilities to a ``uint8`` mask: ``(H, W)`` 0/255 for one channel, ``(H, W)`` class indices
    for several, ``(C, H, W)`` 0/255 for multi-label ones (each channel thresholded on its own)."""
    if probabilities.shape[0] == 1 or multilabel:
        masks = ((probabilities > threshold).to(torch.uint8) * 255).cpu().numpy()
        return masks if multilabel else masks[0]
    return probabilities.argmax(dim=0).to(torch.uint8).cpu().numpy()


def cleaned_mask(
    probabilities: Tensor, threshold: float = 0.5, multilabel: bool = False, steps: Sequence[PostProcessingStep] = ()
) -> np.ndarray:
    """The mask :class:`MaskWriter` writes: :func:`probabilities_to_mask`, then each cleaning step in order (on a
    binary mask, class indices or multi-label channels; see :mod:`~ternaus_zoo.inference.postprocessing`)."""
    mask = probabilities_to_mask(probabilities, threshold, multilabel)
    if not steps:
        return mask
    mode = "multilabel" if multilabel else "binary" if probabilities.shape[0] == 1 else "classes"
    cleaned = apply_steps(mask if mode == "classes" else mask > 0, steps, mode)
    return cleaned.astype(np.uint8) * (1 if mode == "classes" else 255)


class MaskTiff:
    """An uncompressed ``uint8`` TIFF of ``(H, W)`` (or ``(H, W, K)``) written block by block, never held whole.

    The file is created empty (tifffile lays the pixels out contiguously, row after row); each block's rows are
    then written at their place with plain file writes, so no more than a block is ever in memory (a memory map
    would count every page written in the process's resident memory until it is dropped).
    """

    def __init__(self, path: PathLike, height: int, width: int, channels: int = 1) -> None:
        self.path = Path(path)
        self.width, self.channels = width, channels
        shape = (height, width) if channels == 1 else (height, width, channels)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(
            self.path,
            shape=shape,
            dtype=np.uint8,
            photometric="minisblack",
            bigtiff=height * width * channels >= 2**32 - 2**25,
        )
        with tifffile.TiffFile(self.path) as tiff:
            self._offset = tiff.pages[0].dataoffsets[0]  # its strips follow each other: one run of rows

    def write(self, y: int, x: int, block: np.ndarray) -> None:
        """Put ``block`` (``(h, w)`` or ``(h, w, K)`` ``uint8``) with its top-left pixel at ``(y, x)``."""
        row_bytes = self.width * self.channels
        block = np.ascontiguousarray(block, dtype=np.uint8)
        with self.path.open("r+b") as file:
            for row, pixels in enumerate(block):
                file.seek(self._offset + (y + row) * row_bytes + x * self.channels)
                file.write(pixels.tobytes())


class PerImageWriter(BasePredictionWriter):
    """A writer of one file (or a few) per predicted image into ``output_dir``; subclasses implement
    :meth:`write_image`. The prediction step returns ``{"name": [...], "probabilities": [(C, H, W), ...]}``."""

    def __init__(self, output_dir: PathLike) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_image(self, name: str, probabilities: Tensor) -> None:
        raise NotImplementedError

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, probabilities in zip(prediction["name"], prediction["probabilities"], strict=True):
            self.write_image(name, probabilities)


class MaskWriter(PerImageWriter):
    """Writes ``<output_dir>/<name>.png`` for every predicted image, at the image's original size; multi-label
    masks as ``<output_dir>/<class name>/<name>.png``, one 0/255 PNG per class (the layout the data sets read).

    The prediction step must return ``{"name": [...], "probabilities": [(C, H, W), ...]}``.

    Args:
        output_dir: folder for the masks (created).
        threshold: foreground threshold of single-channel outputs.
        save_probabilities: also write ``<name>.npy`` with the ``float16`` probabilities ``(C, H, W)``.
        overlay: also write ``<output_dir>/overlays/<name>.png``, the image with its mask painted on (one colour
            per class); the image is read again from the prediction data set's file.
        multilabel: the probabilities are multi-label; default: the module's ``hparams.multilabel``.
        class_names: the class folders of multi-label masks; default: the module's ``class_names``, else
            ``class0``, ``class1``, ...
        postprocessing: cleaning steps applied in order to each thresholded mask at the image's original size
            (those ``ternaus-zoo select`` kept; the probabilities saved are not cleaned).
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        threshold: float = 0.5,
        save_probabilities: bool = False,
        overlay: bool = False,
        multilabel: bool | None = None,
        class_names: list[str] | None = None,
        postprocessing: Sequence[PostProcessingStep] = (),
    ) -> None:
        super().__init__(output_dir)
        self.threshold = threshold
        self.postprocessing = list(postprocessing)
        self.save_probabilities = save_probabilities
        self.overlay = overlay
        self.multilabel = multilabel
        self.class_names = class_names
        self._multilabel, self._class_names = bool(multilabel), class_names  # resolved against the module
        self._sources: dict[str, Path] = {}

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        hparams = getattr(pl_module, "hparams", {})
        resolved = self.multilabel if self.multilabel is not None else hparams.get("multilabel", False)
        self._multilabel = bool(resolved)
        self._class_names = self.class_names if self.class_names is not None else hparams.get("class_names")
        if self.overlay and self._multilabel:
            raise ValueError("overlay=True draws one class per pixel: not for multi-label masks")
        if not self.overlay:
            return
        loaders = trainer.predict_dataloaders
        datasets = [loader.dataset for loader in (loaders if isinstance(loaders, Sequence) else [loaders])]
        self._sources = {stem: path for dataset in datasets for stem, path in getattr(dataset, "images", {}).items()}
        if not self._sources:
            raise ValueError("overlay=True needs a prediction data set of image files (with an `images` mapping)")

    def write_image(self, name: str, probabilities: Tensor) -> None:
        mask = cleaned_mask(probabilities, self.threshold, self._multilabel, self.postprocessing)
        if self._multilabel:
            paths = [self.output_dir / folder / f"{name}.png" for folder in class_labels(len(mask), self._class_names)]
            for path, channel in zip(paths, mask, strict=True):
                path.parent.mkdir(exist_ok=True)
                if not cv2.imwrite(str(path), channel):
                    raise OSError(f"could not write {path}")
        elif not cv2.imwrite(str(self.output_dir / f"{name}.png"), mask):
            raise OSError(f"could not write {self.output_dir / name}.png")
        if self.save_probabilities:
            np.save(self.output_dir / f"{name}.npy", probabilities.to(torch.float16).cpu().numpy())
        if self.overlay:
            painted = overlay(read_image(self._sources[name]), mask, binary=probabilities.shape[0] == 1)
            folder = self.output_dir / "overlays"
            folder.mkdir(exist_ok=True)
            if not cv2.imwrite(str(folder / f"{name}.png"), painted[..., ::-1]):
                raise OSError(f"could not write {folder / name}.png")


class LabelWriter(BasePredictionWriter):
    """Writes the predictions of a classifier to one CSV file as batches come.

    Columns: ``name``, ``prob_<label>`` for every label, then ``<label>`` (0/1) for every label. Label names
    are the module's ``label_names``, else the data module's, else ``0..C-1``. The prediction step must return
    ``{"name": [...], "probabilities": (B, C), "labels": (B, C)}`` (see ``ClassificationModule.predict_step``).
    With several processes each writes ``<stem>.rank<r>.csv``.

    Args:
        output_path: the CSV file (its folder is created; an existing file is replaced).
        digits: decimals of the probabilities.
    """

    def __init__(self, output_path: str = "predictions.csv", digits: int = 5) -> None:
        super().__init__(write_interval="batch")
        self.output_path = Path(output_path)
        self.digits = digits
        self._header_written = False

    def path(self, trainer: Trainer) -> Path:
        if trainer.world_size > 1:
            return self.output_path.with_name(f"{self.output_path.stem}.rank{trainer.global_rank}.csv")
        return self.output_path

    @staticmethod
    def label_names(trainer: Trainer, pl_module: LightningModule, count: int) -> list[str]:
        names = getattr(pl_module.hparams, "label_names", None) or getattr(trainer.datamodule, "label_names", None)
        return list(names) if names and len(names) == count else [str(index) for index in range(count)]

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._header_written = False

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        probabilities, labels = prediction["probabilities"], prediction["labels"]
        path = self.path(trainer)
        mode = "a" if self._header_written else "w"
        if not self._header_written:
            path.parent.mkdir(parents=True, exist_ok=True)
        with path.open(mode, newline="") as file:
            writer = csv.writer(file)
            if not self._header_written:
                names = self.label_names(trainer, pl_module, probabilities.shape[1])
                writer.writerow(["name", *(f"prob_{name}" for name in names), *names])
                self._header_written = True
            for name, probs, predicted in zip(prediction["name"], probabilities.tolist(), labels.tolist(), strict=True):
                writer.writerow([name, *(f"{value:.{self.digits}f}" for value in probs), *map(int, predicted)])


def binary_oof_statistics(
    probabilities: Tensor, mask: Tensor, threshold: float = 0.5, bins: int = HISTOGRAM_BINS
) -> dict[str, np.ndarray]:
    """Scores of one binary prediction at the mask's resolution.

    Args:
        probabilities: ``(H, W)`` foreground probabilities.
        mask: ``(H, W)`` ground truth, nonzero = foreground.
        threshold: foreground is ``probabilities > threshold``.
        bins: histogram bins over ``[0, 1]``.

    Returns:
        ``stats``: ``int64`` ``(3,)`` TP, FP, FN at ``threshold``; ``positive_histogram`` and
        ``negative_histogram``: ``int64`` ``(bins,)`` counts of the probabilities of foreground and
        background pixels, from which :func:`ternaus_zoo.bagging.threshold_curve` scores every threshold
        ``j / bins``.
    """
    if probabilities.shape != mask.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and mask {tuple(mask.shape)} differ in shape")
    probabilities = probabilities.float()
    truth = mask.bool()
    predicted = probabilities > threshold
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    index = (probabilities * bins).long().clamp_(0, bins - 1)
    return {
        "stats": np.array([tp, fp, fn], dtype=np.int64),
        "positive_histogram": torch.bincount(index[truth], minlength=bins).numpy().astype(np.int64),
        "negative_histogram": torch.bincount(index[~truth], minlength=bins).numpy().astype(np.int64),
    }


def to_eval_size(probabilities: Tensor, eval_size: int | None) -> Tensor:
    """``(C, H, W)`` at the original size to ``(C, h, w)`` at ``valid_size((H, W), eval_size)`` (area)."""
    size = valid_size(tuple(probabilities.shape[-2:]), eval_size)
    if size == tuple(probabilities.shape[-2:]):
        return probabilities
    return F.interpolate(probabilities[None].float(), size=size, mode="area")[0]


class OutOfFoldWriter(PerImageWriter):
    """Write every prediction as ``<output_dir>/<name>.npz``, as it comes.

    Each file holds ``probabilities`` ``(C, h, w)`` ``float16`` at the evaluation size (``(h, w) =
    valid_size(original_size, eval_size)``: the image resized so that its longest side is ``eval_size``,
    without padding) and ``original_size`` ``(2,)``; for binary predictions with ``masks`` also the
    :func:`binary_oof_statistics` (``stats``, ``positive_histogram``, ``negative_histogram``) scored at
    the mask's original resolution.

    The prediction step must return ``{"name": [...], "probabilities": [(C, H, W) at the original
    size, ...]}`` (``SegmentationModule.predict_step``).

    Args:
        output_dir: folder of the ``.npz`` files (created).
        eval_size: the data module's ``val_size``: probabilities are stored at that size.
        threshold: foreground threshold of the binary ``stats``.
        masks: ``{stem: mask file}``; with binary (single-channel) predictions each file is read at its
            original size and scored (``stats`` and histograms); ``None``: no scores.
        mask_threshold: binarisation of the mask files (``mask > mask_threshold``).
    """

    def __init__(
        self,
        output_dir: PathLike,
        eval_size: int | None,
        threshold: float = 0.5,
        masks: Mapping[str, PathLike] | None = None,
        mask_threshold: int = 127,
    ) -> None:
        super().__init__(output_dir)
        self.eval_size = eval_size
        self.threshold = threshold
        self.masks = masks
        self.mask_threshold = mask_threshold

    def write_image(self, name: str, probabilities: Tensor) -> None:
        probabilities = probabilities.detach().float().cpu()
        record: dict[str, np.ndarray] = {
            "probabilities": to_eval_size(probabilities, self.eval_size).half().numpy(),
            "original_size": np.array(probabilities.shape[-2:], dtype=np.int64),
        }
        if self.masks is not None and probabilities.shape[0] == 1:
            mask = torch.from_numpy(read_binary_mask(self.masks[name], self.mask_threshold))
            record.update(binary_oof_statistics(probabilities[0], mask, self.threshold))
        np.savez(self.output_dir / f"{name}.npz", **record)
