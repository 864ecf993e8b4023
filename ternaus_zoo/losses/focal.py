"""Focal losses for segmentation: sigmoid (binary masks) and softmax (class maps).

Reference: T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollar, "Focal Loss for Dense Object Detection",
ICCV 2017: ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, averaged here over the valid pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from ternaus_zoo.losses._common import (
    LossTask,
    as_weight_tensor,
    check_class_weights,
    flatten_binary,
    flatten_multiclass,
    pixel_weights,
    upcast,
    weighted_mean,
)


def _check_alpha(alpha: float | None) -> float | None:
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
    return alpha


def sigmoid_focal_elementwise(logits: Tensor, target: Tensor, gamma: float, alpha: float | None) -> Tensor:
    """Unreduced sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``) in float32 for half inputs."""
    logits = upcast(logits)
    return sigmoid_focal_loss(logits, target.to(logits.dtype), alpha=-1 if alpha is None else alpha, gamma=gamma)


class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss ``-alpha_t (1 - p_t)^gamma log(p_t)``, mean over the valid pixels.

    ``alpha`` weighs the foreground (``alpha``) against the background (``1 - alpha``); ``None`` weighs
    both by 1. With ``gamma=0`` and ``alpha=None`` it is the binary cross-entropy.

    Shapes: logits ``(B, 1, H, W)`` or ``(B, H, W)``; target the same shape, float or int in {0, 1}.

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    task: ClassVar[LossTask] = "binary"

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = _check_alpha(alpha)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        batch = flatten_binary(logits, target, self.ignore_index)
        values = sigmoid_focal_elementwise(batch.logits, batch.target, self.gamma, self.alpha)
        return weighted_mean(values, pixel_weights(batch.valid, values.dtype))


class FocalLoss(nn.Module):
    """Softmax focal loss ``-alpha[t] (1 - p_t)^gamma log(p_t)``, mean over the valid pixels.

    Written by hand: neither torch nor torchvision has a multi-class focal loss. ``p_t`` is the softmax
    probability of the target class; ``alpha`` is ``None`` or one weight per class (the mean divides by
    the number of valid pixels, as the paper normalises by the number of anchors). With ``gamma=0`` and
    ``alpha=None`` it is the cross-entropy.

    Shapes: logits ``(B, C, H, W)``; target ``(B, H, W)`` int64 in ``[0, C)`` or ``ignore_index``.

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    task: ClassVar[LossTask] = "multiclass"

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: Sequence[float] | Tensor | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.register_buffer("alpha", as_weight_tensor(alpha, "alpha"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        batch = flatten_multiclass(logits, target, self.ignore_index)
        check_class_weights(self.alpha, batch.logits.size(1), "alpha")
        log_pt = torch.log_softmax(batch.logits, dim=1).gather(1, batch.target.unsqueeze(1)).squeeze(1)
        values = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        if self.alpha is not None:
            values = values * self.alpha.to(values.dtype)[batch.target]
        return weighted_mean(values, pixel_weights(batch.valid, values.dtype))
