"""Multi-label classification losses on ``(B, C)`` logits and ``(B, C)`` 0/1 targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from ternaus_zoo.losses._common import LossTask, as_weight_tensor, check_class_weights, upcast
from ternaus_zoo.losses.focal import _check_alpha, sigmoid_focal_elementwise


def _check_multilabel(logits: Tensor, target: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"multi-label logits must be (B, C), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}")


class MultiLabelFocalLoss(nn.Module):
    """Sigmoid focal loss per label, summed over classes and averaged over samples.

    The recipe of the Human Protein Atlas Image Classification Kaggle competition (2018):
    ``loss = mean_b sum_c w_c * alpha_t * (1 - p_t)^gamma * BCE(x_bc, t_bc)``, with ``p_t`` the sigmoid
    probability of the true label, ``alpha`` as in :class:`BinaryFocalLoss` (``None``: no weighting) and
    optional per-class ``class_weights`` ``w_c``.

    Shapes: logits ``(B, C)``; target ``(B, C)``, float or int in {0, 1}.

    Reference: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """

    task: ClassVar[LossTask] = "multilabel"

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = _check_alpha(alpha)
        self.register_buffer("class_weights", as_weight_tensor(class_weights, "class_weights"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_multilabel(logits, target)
        check_class_weights(self.class_weights, logits.size(1))
        values = sigmoid_focal_elementwise(logits, target, self.gamma, self.alpha)
        if self.class_weights is not None:
            values = values * self.class_weights.to(values.dtype)
        return values.sum(1).mean()


class WeightedBCELoss(nn.Module):
    """Binary cross-entropy on logits with per-class weights, mean over all ``B * C`` entries.

    ``F.binary_cross_entropy_with_logits`` with ``weight=class_weights`` (scales every term of class
    ``c``) and ``pos_weight`` (scales the positive term of class ``c``), both of length ``C`` or ``None``.

    Shapes: logits ``(B, C)``; target ``(B, C)``, float or int in {0, 1}.
    """

    task: ClassVar[LossTask] = "multilabel"

    def __init__(
        self,
        class_weights: Sequence[float] | Tensor | None = None,
        pos_weight: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("class_weights", as_weight_tensor(class_weights, "class_weights"), persistent=False)
        self.register_buffer("pos_weight", as_weight_tensor(pos_weight, "pos_weight"), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_multilabel(logits, target)
        check_class_weights(self.class_weights, logits.size(1))
        check_class_weights(self.pos_weight, logits.size(1), "pos_weight")
        logits = upcast(logits)
        weight, pos_weight = (None if w is None else w.to(logits.dtype) for w in (self.class_weights, self.pos_weight))
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), weight=weight, pos_weight=pos_weight)
