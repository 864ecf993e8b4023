"""Segmentation (IoU, Dice) and multi-label classification (F1, F-beta, recall, threshold search) metrics.

Functional: :func:`confusion_stats` then :func:`iou_score` / :func:`dice_score` / :func:`mean_iou` (and
:func:`binary_summary`, the scores the benchmarks report of binary masks);
:func:`multilabel_fbeta` / :func:`multilabel_f1` / :func:`multilabel_recall`, :func:`search_thresholds`.
Stateful (``torchmetrics.Metric``, distributed-safe): :class:`SegmentationMetrics`, :class:`MultilabelMetrics`.
"""

from ternaus_zoo.metrics.classification import (
    MultilabelMetrics,
    apply_thresholds,
    multilabel_f1,
    multilabel_fbeta,
    multilabel_recall,
    search_thresholds,
)
from ternaus_zoo.metrics.functional import binary_summary, confusion_stats, dice_score, iou_score, mean_iou
from ternaus_zoo.metrics.segmentation import SegmentationMetrics, class_labels

__all__ = [
    "MultilabelMetrics",
    "SegmentationMetrics",
    "apply_thresholds",
    "binary_summary",
    "class_labels",
    "confusion_stats",
    "dice_score",
    "iou_score",
    "mean_iou",
    "multilabel_f1",
    "multilabel_fbeta",
    "multilabel_recall",
    "search_thresholds",
]
