"""Soft Jaccard and Dice losses, and their sums with cross-entropy from TernausNet's robot-surgery work.

Soft scores use probabilities ``p`` (sigmoid or softmax of the logits) and targets ``t`` summed over the
whole batch (``per_image=False``, the default, as in the references) or over each image
(``per_image=True``, then averaged over images), with a smoothing ``eps``::

    J = (sum(p * t) + eps) / (sum(p) + sum(t) - sum(p * t) + eps)
    D = (2 * sum(p * t) + eps) / (sum(p) + sum(t) + eps)

Pixels whose target equals ``ignore_index`` are left out of every sum.

References:
    V. Iglovikov, S. Mushinskiy, V. Osin, "Satellite Imagery Feature Detection using Deep Convolutional
    Neural Network: A Kaggle Competition", arXiv:1706.06169 (BCE - log Jaccard).
    A. Shvets, A. Rakhlin, A. Kalinin, V. Iglovikov, "Automatic Instrument Segmentation in
    Robot-Assisted Surgery Using Deep Learning", ICMLA 2018, arXiv:1803.01207 (binary and multi-class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from ternaus_zoo.losses._common import (
    BinaryBatch,
    LossTask,
    MulticlassBatch,
    as_weight_tensor,
    flatten_binary,
    flatten_multiclass,
)
from ternaus_zoo.losses.cross_entropy import binary_cross_entropy, cross_entropy_from_log_probs

DEFAULT_EPS = 1e-7
TERNAUSNET_EPS = 1e-15
"""The smoothing of the robot-surgery code, the default of the losses that reproduce it."""


def soft_score(intersection: Tensor, cardinality: Tensor, *, dice: bool, eps: float) -> Tensor:
    """Soft Dice or Jaccard index from ``sum(p * t)`` and ``sum(p) + sum(t)`` (elementwise)."""
    if dice:
        return (2 * intersection + eps) / (cardinality + eps)
    return (intersection + eps) / (cardinality - intersection + eps)


def score_to_loss(score: Tensor, log: bool) -> Tensor:
    """``-log(score)`` or ``1 - score``."""
    return -torch.log(score) if log else 1 - score


def binary_overlap_sums(batch: BinaryBatch, per_image: bool) -> tuple[Tensor, Tensor]:
    """``sum(p * t)`` and ``sum(p) + sum(t)`` of sigmoid probabilities: ``(B,)`` per image or scalars."""
    probs = torch.sigmoid(batch.logits)
    if batch.valid is not None:
        probs = torch.where(batch.valid, probs, 0)
    intersection = (probs * batch.target).sum(-1)
    cardinality = probs.sum(-1) + batch.target.sum(-1)
    if not per_image:
        return intersection.sum(), cardinality.sum()
    return intersection, cardinality


def multiclass_overlap_sums(probs: Tensor, batch: MulticlassBatch, per_image: bool) -> tuple[Tensor, Tensor]:
    """Per-class ``sum(p_c * [t == c])`` and ``sum(p_c) + sum([t == c])``: ``(B, C)`` per image or ``(1, C)``.

    Scatter-adds the probability of each pixel's own class instead of building a one-hot target.
    """
    if batch.valid is not None:
        probs = torch.where(batch.valid.unsqueeze(1), probs, 0)
    num_images, num_classes = probs.shape[:2]
    prob_of_target = probs.gather(1, batch.target.unsqueeze(1)).squeeze(1)
    ones = torch.ones_like(prob_of_target) if batch.valid is None else batch.valid.to(probs.dtype)
    zeros = probs.new_zeros(num_images, num_classes)
    intersection = zeros.scatter_add(1, batch.target, prob_of_target)
    cardinality = probs.sum(-1) + zeros.scatter_add(1, batch.target, ones)
    if not per_image:
        return intersection.sum(0, keepdim=True), cardinality.sum(0, keepdim=True)
    return intersection, cardinality


def _check_weight(jaccard_weight: float) -> float:
    if not 0 <= jaccard_weight <= 1:
        raise ValueError(f"jaccard_weight must be in [0, 1], got {jaccard_weight}")
    return float(jaccard_weight)


class _BinaryOverlapLoss(nn.Module):
    task: ClassVar[LossTask] = "binary"
    dice: ClassVar[bool] = False

    def __init__(
        self, eps: float = DEFAULT_EPS, per_image: bool = False, log_loss: bool = False, ignore_index: int | None = None
    ) -> None:
        super().__init__()
        self.eps = eps
        self.per_image = per_image
        self.log_loss = log_loss
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        intersection, cardinality = binary_overlap_sums(
            flatten_binary(logits, target, self.ignore_index), self.per_image
        )
        score = soft_score(intersection, cardinality, dice=self.dice, eps=self.eps)
        return score_to_loss(score, self.log_loss).mean()


class SoftJaccardLoss(_BinaryOverlapLoss):
    """Soft Jaccard loss ``1 - J`` (or ``-log J`` with ``log_loss=True``) of sigmoid probabilities.

    ``J = (sum(p t) + eps) / (sum(p) + sum(t) - sum(p t) + eps)`` over the whole batch, or per image and
    then averaged with ``per_image=True``.

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Reference: M. A. Rahman, Y. Wang, "Optimizing Intersection-Over-Union in Deep Neural Networks for
    Image Segmentation", ISVC 2016.
    """


class SoftDiceLoss(_BinaryOverlapLoss):
    """Soft Dice loss ``1 - D`` (or ``-log D`` with ``log_loss=True``) of sigmoid probabilities.

    ``D = (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)`` over the whole batch, or per image and then
    averaged with ``per_image=True``.

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Reference: F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural Networks for
    Volumetric Medical Image Segmentation", 3DV 2016.
    """

    dice: ClassVar[bool] = True


class BCEJaccardLoss(nn.Module):
    """``(1 - w) * BCE - w * log(J)`` (or ``(1 - w) * BCE + w * (1 - J)`` with ``log_jaccard=False``).

    The binary loss of TernausNet (robot-surgery ``LossBinary``): BCE-with-logits averaged over pixels,
    and the soft Jaccard ``J`` of sigmoid probabilities over the whole batch (``per_image=False``; with
    ``per_image=True``, the Jaccard term is averaged over images). The default ``eps=1e-15`` is that
    code's; an all-background batch then costs ``-log(eps / (sum(p) + eps))``, large but finite.

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Reference: A. Shvets et al., "Automatic Instrument Segmentation in Robot-Assisted Surgery Using Deep
    Learning", ICMLA 2018 (arXiv:1803.01207); V. Iglovikov et al., arXiv:1706.06169.
    """

    task: ClassVar[LossTask] = "binary"

    def __init__(
        self,
        jaccard_weight: float = 0.3,
        log_jaccard: bool = True,
        eps: float = TERNAUSNET_EPS,
        per_image: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.jaccard_weight = _check_weight(jaccard_weight)
        self.log_jaccard = log_jaccard
        self.eps = eps
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        batch = flatten_binary(logits, target, self.ignore_index)
        intersection, cardinality = binary_overlap_sums(batch, self.per_image)
        jaccard = soft_score(intersection, cardinality, dice=False, eps=self.eps)
        jaccard_term = score_to_loss(jaccard, self.log_jaccard).mean()
        return (1 - self.jaccard_weight) * binary_cross_entropy(batch) + self.jaccard_weight * jaccard_term


class CrossEntropyJaccardLoss(nn.Module):
    """``(1 - w) * CE - w * sum_c log(J_c)`` (or ``+ w * sum_c (1 - J_c)`` with ``log_jaccard=False``).

    The multi-class loss of TernausNet (robot-surgery ``LossMulti``): cross-entropy (optionally with
    ``class_weights``, torch's weighted mean) plus, for every class ``c``, the soft Jaccard ``J_c`` of the
    softmax probability of ``c`` against the mask ``[t == c]``, summed over classes (not averaged, as in
    the reference) and computed over the whole batch (``per_image=True``: per image, then averaged).
    A class absent from the target and predicted near 0 costs about ``-log(eps / sum(p_c))``.

    Shapes: logits ``(B, C, H, W)``; target ``(B, H, W)`` int64 in ``[0, C)`` or ``ignore_index``.

    Reference: A. Shvets et al., "Automatic Instrument Segmentation in Robot-Assisted Surgery Using Deep
    Learning", ICMLA 2018 (arXiv:1803.01207).
    """

    task: ClassVar[LossTask] = "multiclass"

    def __init__(
        self,
        jaccard_weight: float = 0.3,
        log_jaccard: bool = True,
        class_weights: Sequence[float] | Tensor | None = None,
        eps: float = TERNAUSNET_EPS,
        per_image: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.jaccard_weight = _check_weight(jaccard_weight)
        self.log_jaccard = log_jaccard
        self.eps = eps
        self.per_image = per_image
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", as_weight_tensor(class_weights, "class_weights"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        batch = flatten_multiclass(logits, target, self.ignore_index)
        log_probs = torch.log_softmax(batch.logits, dim=1)
        cross_entropy = cross_entropy_from_log_probs(log_probs, batch, self.class_weights)
        intersection, cardinality = multiclass_overlap_sums(log_probs.exp(), batch, self.per_image)
        jaccard = soft_score(intersection, cardinality, dice=False, eps=self.eps)
        jaccard_term = score_to_loss(jaccard, self.log_jaccard).sum(-1).mean()
        return (1 - self.jaccard_weight) * cross_entropy + self.jaccard_weight * jaccard_term
