"""Stateful segmentation metrics that accumulate over batches and synchronise under distributed training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ternaus_zoo.metrics.functional import confusion_stats, dice_score, iou_score

__all__ = ["SegmentationMetrics", "class_labels"]

_SCORE_UNIT = 2**30
"""The per-image score sums are int64 counts of ``2**-30``: exact, order-independent sums without float64 (which
Apple MPS lacks); each score is rounded by at most ``2**-31``, and ``2**33`` image-class pairs fit."""


def class_labels(num_classes: int, names: Sequence[str] | None = None) -> list[str]:
    """The names per-class scores are reported under: ``names``, else ``class0 .. class<C-1>``."""
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes: {list(names)}")
        return [str(name) for name in names]
    return [f"class{index}" for index in range(num_classes)]


def _fixed_point(scores: Tensor) -> Tensor:
    """float32 scores in ``[0, 1]`` as int64 multiples of ``1 / _SCORE_UNIT`` (the scaling by 2**30 is exact)."""
    return (scores * _SCORE_UNIT).round().long()


class SegmentationMetrics(Metric):
    """IoU and Dice over a data set, both micro (pooled pixels) and per image, as a ``torchmetrics.Metric``.

    The states are fixed-size sums, whatever the size of the data set: per class, the TP/FP/FN pixel counts and the
    sums of the per-image IoU and Dice, plus the number of images; all are reduced across processes with ``"sum"``.

    Args:
        num_classes: ``1`` for binary segmentation (output ``(B, 1, H, W)`` or ``(B, H, W)``, target 0/1),
            otherwise the number of classes (output ``(B, C, H, W)`` scores or ``(B, H, W)`` indices, target
            ``(B, H, W)`` indices).
        multilabel: ``(B, C, H, W)`` outputs scored as ``C`` binary masks (classes may overlap), against
            ``(B, C, H, W)`` 0/1 targets; the scores are those of the multi-class mode.
        threshold: probability threshold for binary and multi-label predictions (positive where
            ``probability >= threshold``).
        from_logits: whether binary outputs are logits (a sigmoid is applied).
        ignore_index: target value whose pixels are excluded (in multi-class mode, outside ``[0, num_classes)``).
        **kwargs: passed to ``torchmetrics.Metric`` (``dist_sync_fn``, ``process_group``, ...).

    ``compute()`` returns a dict of float32 tensors:

    * ``iou``, ``dice``: scalars, micro over the set (counts summed over images and classes, then the ratio; see
      :mod:`ternaus_zoo.metrics.functional`).
    * ``iou_per_image``, ``dice_per_image``: scalars, the mean over images (and classes) of each image's score,
      where a class absent from both the prediction and the target of an image scores 1.0 for that image.
    * multi-class only: ``miou`` (scalar, mean of ``iou_per_class`` over the classes present in the predictions or
      targets), ``iou_per_class`` and ``dice_per_class`` (``(C,)``: the counts of each class summed over the set,
      then the ratio; NaN for absent classes). The per-class values are not scalars: drop them before
      ``LightningModule.log_dict`` (``SegmentationModule`` logs them one per class name).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    fp: Tensor
    fn: Tensor
    iou_image_sum: Tensor
    dice_image_sum: Tensor
    num_images: Tensor

    def __init__(
        self,
        num_classes: int = 1,
        threshold: float = 0.5,
        from_logits: bool = True,
        ignore_index: int | None = None,
        multilabel: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.threshold = threshold
        self.from_logits = from_logits
        self.ignore_index = ignore_index
        self.mode = "multilabel" if multilabel else "binary" if num_classes == 1 else "multiclass"

        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("iou_image_sum", "dice_image_sum"):  # fixed point, see _SCORE_UNIT
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add a batch: ``output`` and ``target`` as described in the class docstring."""
        options = {"threshold": self.threshold, "from_logits": self.from_logits, "ignore_index": self.ignore_index}
        if self.mode == "multilabel":  # one binary problem per channel
            if output.shape[1] != self.num_classes or target.shape != output.shape:
                raise ValueError(
                    f"multi-label output and target must both be (B, {self.num_classes}, H, W), got "
                    f"{tuple(output.shape)} and {tuple(target.shape)}"
                )
            channels = [
                confusion_stats(output[:, k], target[:, k], mode="binary", **options) for k in range(self.num_classes)
            ]
            tp, fp, fn, _ = (torch.cat(counts, dim=1) for counts in zip(*channels, strict=True))
        else:
            number = None if self.mode == "binary" else self.num_classes
            tp, fp, fn, _ = confusion_stats(output, target, mode=self.mode, num_classes=number, **options)
        self.tp += tp.sum(0)
        self.fp += fp.sum(0)
        self.fn += fn.sum(0)
        self.iou_image_sum += _fixed_point(iou_score(tp, fp, fn, reduction="none")).sum(0)
        self.dice_image_sum += _fixed_point(dice_score(tp, fp, fn, reduction="none")).sum(0)
        self.num_images += tp.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """The scores over everything seen since the last ``reset()``; see the class docstring for the keys."""
        tp, fp, fn = self.tp[None], self.fp[None], self.fn[None]  # (1, C): the whole set as one "image"
        pairs = int(self.num_images) * self.num_classes
        result = {
            "iou": iou_score(tp, fp, fn, reduction="micro"),
            "dice": dice_score(tp, fp, fn, reduction="micro"),
            "iou_per_image": (self.iou_image_sum.sum() / (pairs * _SCORE_UNIT)).float(),
            "dice_per_image": (self.dice_image_sum.sum() / (pairs * _SCORE_UNIT)).float(),
        }
        if self.mode != "binary":
            per_class = iou_score(tp, fp, fn, reduction="per_class")
            result["miou"] = per_class.nanmean()
            result["iou_per_class"] = per_class
            result["dice_per_class"] = dice_score(tp, fp, fn, reduction="per_class")
        if pairs == 0:  # nothing seen: no score is defined
            result = {key: torch.full_like(value, float("nan")) for key, value in result.items()}
        return result
