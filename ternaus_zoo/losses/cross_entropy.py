"""Cross-entropy losses on logits with ``ignore_index`` and half-precision support.

Thin wrappers of ``torch.nn.functional``: they add the shape checks of the package, an ``ignore_index``
for binary masks, and a mean that stays 0 (not NaN) when every pixel is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ternaus_zoo.losses._common import (
    BinaryBatch,
    LossTask,
    MulticlassBatch,
    as_weight_tensor,
    check_class_weights,
    flatten_binary,
    flatten_multiclass,
    pixel_weights,
    weighted_mean,
)


def binary_cross_entropy(batch: BinaryBatch, pos_weight: Tensor | None = None) -> Tensor:
    """Mean BCE-with-logits over the valid pixels of a flattened binary batch."""
    if pos_weight is not None:
        pos_weight = pos_weight.to(batch.logits.dtype)
    values = F.binary_cross_entropy_with_logits(batch.logits, batch.target, reduction="none", pos_weight=pos_weight)
    return weighted_mean(values, pixel_weights(batch.valid, values.dtype))


def cross_entropy_from_log_probs(
    log_probs: Tensor, batch: MulticlassBatch, class_weights: Tensor | None = None
) -> Tensor:
    """Cross-entropy from ``log_softmax`` outputs ``(B, C, P)``, weighted as ``torch.nn.CrossEntropyLoss``.

    The mean is ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over valid pixels, as in torch.
    """
    check_class_weights(class_weights, log_probs.size(1))
    values = F.nll_loss(log_probs, batch.target, reduction="none")
    return weighted_mean(values, pixel_weights(batch.valid, values.dtype, class_weights, batch.target))


class BinaryCrossEntropyLoss(nn.Module):
    """Binary cross-entropy on logits (``F.binary_cross_entropy_with_logits``), mean over valid pixels.

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Args:
        pos_weight: weight of the positive class (``torch``'s ``pos_weight``), or ``None``.
        ignore_index: target value of pixels left out of the loss, or ``None``.
    """

    task: ClassVar[LossTask] = "binary"

    def __init__(self, pos_weight: float | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("pos_weight", as_weight_tensor(pos_weight, "pos_weight"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(flatten_binary(logits, target, self.ignore_index), self.pos_weight)


class CrossEntropyLoss(nn.Module):
    """Multi-class cross-entropy on logits (``log_softmax`` + ``nll_loss``), with ``torch``'s weighted mean.

    Unlike ``torch.nn.CrossEntropyLoss`` it returns 0 rather than NaN when every pixel is ignored and
    computes in float32 for half-precision logits.

    Shapes: logits ``(B, C, H, W)``; target ``(B, H, W)`` int64 in ``[0, C)`` or ``ignore_index``.

    Args:
        class_weights: ``C`` per-class weights, or ``None``.
        ignore_index: target value of pixels left out of the loss, or ``None``.
    """

    task: ClassVar[LossTask] = "multiclass"

    def __init__(self, class_weights: Sequence[float] | Tensor | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", as_weight_tensor(class_weights, "class_weights"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        batch = flatten_multiclass(logits, target, self.ignore_index)
        return cross_entropy_from_log_probs(torch.log_softmax(batch.logits, dim=1), batch, self.class_weights)
