"""Out-of-fold (OOF) scores: pooling the ``.npz`` records of :class:`~ternaus_zoo.inference.writers.OutOfFoldWriter`
into micro and per-image Dice / IoU, and tuning the foreground threshold on their histograms; for multi-class
predictions, per-class confusion counts (:class:`ClassConfusion`) pooled into per-class IoU / Dice by name
(:func:`class_scores`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from ternaus_zoo.bagging.layout import PathLike
from ternaus_zoo.data.io import read_class_mask
from ternaus_zoo.metrics.functional import confusion_stats, dice_score, iou_score
from ternaus_zoo.metrics.segmentation import class_labels


def threshold_curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Micro IoU at thresholds ``j / bins``, ``j = 1..bins-1``, from the histograms of
    :func:`~ternaus_zoo.inference.writers.binary_oof_statistics` (foreground = probability in bin ``j`` or above).

    Scored in float64 (float32 would turn near-equal scores into ties for :func:`best_threshold`).

    Returns:
        ``(thresholds, iou)``, both ``(bins - 1,)``.
    """
    bins = len(positive)
    tp = torch.from_numpy(np.cumsum(positive[::-1])[::-1][1:].copy())  # foreground pixels in bins >= j
    fp = torch.from_numpy(np.cumsum(negative[::-1])[::-1][1:].copy())
    fn = int(positive.sum()) - tp
    # one "image" per threshold: reduction "none" scores each row on its own (1.0 where nothing is to be found)
    iou = iou_score(tp[:, None], fp[:, None], fn[:, None], reduction="none", dtype=torch.float64)[:, 0]
    return np.arange(1, bins) / bins, iou.numpy()


def best_threshold(thresholds: np.ndarray, scores: np.ndarray, default: float = 0.5) -> int:
    """Index of the largest score; among equal scores the threshold nearest ``default``."""
    candidates = np.flatnonzero(scores >= scores.max() - 1e-12)
    return int(candidates[np.argmin(np.abs(thresholds[candidates] - default))])


def summarise_oof(directories: Iterable[PathLike], threshold: float = 0.5) -> dict[str, Any]:
    """Pool the OOF files of one or several folds.

    Returns:
        ``n_images``; for binary predictions scored against their masks also ``dice``, ``iou`` (micro, at
        ``threshold``, at the masks' original resolution), ``dice_per_image`` (mean), and the OOF-tuned
        threshold ``best_threshold`` (largest micro IoU over ``j / 100``; ties: nearest ``threshold``) with
        ``iou_at_best`` and ``dice_at_best``.
    """
    count, stats, positive, negative = 0, [], None, None
    for directory in directories:
        for path in sorted(Path(directory).glob("*.npz")):
            count += 1
            with np.load(path) as record:
                if "stats" not in record:
                    continue
                stats.append(record["stats"])
                positive = record["positive_histogram"] + (0 if positive is None else positive)
                negative = record["negative_histogram"] + (0 if negative is None else negative)
    summary: dict[str, Any] = {"n_images": count}
    if positive is None or negative is None:
        return summary
    tp, fp, fn = torch.from_numpy(np.stack(stats)).unsqueeze(-1).unbind(1)  # each (n_scored, 1): one class
    thresholds, curve = threshold_curve(positive, negative)
    best = best_threshold(thresholds, curve, threshold)
    summary.update(
        threshold=threshold,
        dice=float(dice_score(tp, fp, fn, reduction="micro")),
        iou=float(iou_score(tp, fp, fn, reduction="micro")),
        dice_per_image=float(dice_score(tp, fp, fn, reduction="per_image")),
        best_threshold=float(thresholds[best]),
        iou_at_best=float(curve[best]),
        dice_at_best=float(2 * curve[best] / (1 + curve[best])),
    )
    return summary


class ClassConfusion(pl.Callback):
    """Per-class TP / FP / FN pixel counts of the multi-class or multi-label predictions of a ``predict`` run,
    scored against the masks at their original resolution (multi-class: the predicted class is the argmax of the
    probabilities; multi-label: each channel above ``threshold``, as the binary OOF statistics count).

    The prediction step must return ``{"name": [...], "probabilities": [(C, H, W) at the original size, ...]}``
    (``SegmentationModule.predict_step``); under DDP the counts are summed over the processes at the end.

    Args:
        masks: ``{stem: class mask file}``; unused with ``multilabel_masks``.
        num_classes: ``C``.
        ignore_index: mask value left out of the counts.
        multilabel_masks: for multi-label predictions, ``stem -> (C, H, W)`` bool ground truth (as the data set
            reads it: class folders or the channels of one file).
        threshold: the multi-label foreground threshold.

    After the run, :attr:`counts` is ``{"tp": [...], "fp": [...], "fn": [...]}`` (``C`` integers each).
    """

    def __init__(
        self,
        masks: Mapping[str, PathLike],
        num_classes: int,
        ignore_index: int | None = None,
        multilabel_masks: Callable[[str], np.ndarray] | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.masks, self.num_classes, self.ignore_index = masks, num_classes, ignore_index
        self.multilabel_masks, self.threshold = multilabel_masks, threshold
        self.totals = torch.zeros(3, num_classes, dtype=torch.long)
        self.counts: dict[str, list[int]] = {}

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.totals.zero_()

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for name, probabilities in zip(outputs["name"], outputs["probabilities"], strict=True):
            if self.multilabel_masks is not None:
                # per-channel counts of overlapping classes: confusion_stats scores one channel or an argmax
                truth = torch.from_numpy(np.asarray(self.multilabel_masks(name), dtype=bool))
                predicted = probabilities.detach().float().cpu() > self.threshold
                counts = [(predicted & truth), (predicted & ~truth), (~predicted & truth)]
                self.totals += torch.stack([count.sum((1, 2)) for count in counts])
                continue
            mask = read_class_mask(self.masks[name], self.num_classes, self.ignore_index)
            tp, fp, fn, _ = confusion_stats(
                probabilities[None].detach().float().cpu(),
                torch.from_numpy(mask.astype(np.int64))[None],
                mode="multiclass",
                num_classes=self.num_classes,
                ignore_index=self.ignore_index,
            )
            self.totals += torch.cat([tp, fp, fn])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        totals = trainer.strategy.reduce(self.totals.to(pl_module.device), reduce_op="sum")
        tp, fp, fn = totals.cpu().tolist()
        self.counts = {"tp": tp, "fp": fp, "fn": fn}


def _finite(value: Tensor) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def class_scores(counts: Mapping[str, Sequence[int]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class IoU / Dice of pooled confusion counts (``{"tp", "fp", "fn"}``, one integer per class).

    Returns:
        ``class_names`` (``names``, else ``class0 ..``), ``iou_per_class`` and ``dice_per_class``
        (``{name: score}``; ``None`` for a class absent from both the predictions and the masks), ``miou``
        (their mean over the present classes) and the ``class_counts`` themselves.
    """
    tp, fp, fn = (torch.tensor([list(counts[key])], dtype=torch.long) for key in ("tp", "fp", "fn"))
    labels = class_labels(tp.shape[1], names)
    iou = iou_score(tp, fp, fn, reduction="per_class")
    dice = dice_score(tp, fp, fn, reduction="per_class")
    return {
        "class_names": labels,
        "miou": _finite(iou.nanmean()),
        "iou_per_class": {name: _finite(value) for name, value in zip(labels, iou, strict=True)},
        "dice_per_class": {name: _finite(value) for name, value in zip(labels, dice, strict=True)},
        "class_counts": {key: [int(value) for value in counts[key]] for key in ("tp", "fp", "fn")},
    }


def pool_class_scores(summaries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`class_scores` of the summed ``class_counts`` of several folds' OOF summaries (``{}`` when one of
    them has none, e.g. binary folds)."""
    summaries = list(summaries)
    if not summaries or any("class_counts" not in summary for summary in summaries):
        return {}
    first = summaries[0]
    totals = {
        key: [sum(values) for values in zip(*(summary["class_counts"][key] for summary in summaries), strict=True)]
        for key in ("tp", "fp", "fn")
    }
    return class_scores(totals, first.get("class_names"))
