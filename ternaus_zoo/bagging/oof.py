"""Out-of-fold (OOF) scores: pooling the ``.npz`` records of :class:`~ternaus_zoo.inference.writers.OutOfFoldWriter`
into micro and per-image Dice / IoU, and tuning the foreground threshold on their histograms."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ternaus_zoo.bagging.layout import PathLike
from ternaus_zoo.metrics.functional import dice_score, iou_score


def threshold_curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Micro IoU at thresholds ``j / bins``, ``j = 1..bins-1``, from the histograms of
    :func:`~ternaus_zoo.inference.writers.binary_oof_statistics` (foreground = probability in bin ``j`` or above).

    Computed in float64 (the metrics' float32 would turn near-equal scores into ties for :func:`best_threshold`).

    Returns:
        ``(thresholds, iou)``, both ``(bins - 1,)``.
    """
    bins = len(positive)
    tp = np.cumsum(positive[::-1])[::-1][1:].astype(np.float64)  # foreground pixels in bins >= j
    fp = np.cumsum(negative[::-1])[::-1][1:].astype(np.float64)
    fn = positive.sum() - tp
    denominator = tp + fp + fn
    iou = np.divide(tp, denominator, out=np.ones_like(tp), where=denominator > 0)
    return np.arange(1, bins) / bins, iou


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
