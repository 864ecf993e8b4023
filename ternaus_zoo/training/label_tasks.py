"""What differs between multi-label and single-label (multi-class) classification, one strategy object each:
the label format, the loss, probabilities, predicted labels and the metric update.

* :class:`MultiLabel` (``task="multilabel"``): one sigmoid per label, a multi-label loss from
  :func:`ternaus_zoo.losses.build_loss`, labels by per-label thresholds (tuned on the validation fold);
* :class:`SingleLabel` (``task="multiclass"``): softmax cross-entropy with label smoothing, labels by argmax.

Labels are ``(B, C)`` 0/1 (one-hot or soft for single-label), or ``(B,)`` class indices for single-label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ternaus_zoo.losses import LOSSES, build_loss
from ternaus_zoo.metrics.classification import MultilabelMetrics

ClassificationTask = Literal["multilabel", "multiclass"]


class SoftCrossEntropy(nn.Module):
    """Softmax cross-entropy of logits ``(B, C)`` against probability targets ``(B, C)`` (float32), with
    optional per-class weights and label smoothing."""

    def __init__(self, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, weight=self.class_weights, label_smoothing=self.label_smoothing)


def argmax_one_hot(probabilities: Tensor) -> Tensor:
    """``(B, C)`` int64 one-hot of the most probable class."""
    return F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1])


def multilabel_loss(loss: str | dict[str, Any] | None, class_weights: Sequence[float] | None) -> nn.Module:
    """:func:`~ternaus_zoo.losses.build_loss` of ``loss`` (default ``weighted_bce``), ``class_weights`` passed to
    a loss given by name; every term must be a multi-label loss."""
    loss = "weighted_bce" if loss is None else loss
    if class_weights is not None:
        if not isinstance(loss, str):
            raise ValueError("class_weights goes with a loss given by name; put it in the loss mapping instead")
        loss = {loss: {"class_weights": list(class_weights)}}
    module = build_loss(loss)
    parts = module.losses.values() if hasattr(module, "losses") else [module]
    wrong = [type(part).__name__ for part in parts if getattr(part, "task", "multilabel") != "multilabel"]
    if wrong:
        names = sorted(name for name, cls in LOSSES.items() if getattr(cls, "task", None) == "multilabel")
        raise ValueError(f"task='multilabel' needs multi-label losses ({names}); got {wrong}")
    return module


class LabelTask:
    """The label format and decisions of one kind of classification over ``num_classes`` labels."""

    name: ClassVar[ClassificationTask]
    thresholded: ClassVar[bool]
    """Whether labels are decided by per-label thresholds (which validation can tune)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def build_loss(
        self, loss: str | dict[str, Any] | None, class_weights: Sequence[float] | None, label_smoothing: float
    ) -> nn.Module:
        """The loss of logits ``(B, C)`` and float labels ``(B, C)``."""
        raise NotImplementedError

    def targets(self, labels: Tensor) -> Tensor:
        """Labels as float ``(B, C)``."""
        if labels.dim() != 2 or labels.shape[1] != self.num_classes:
            raise ValueError(f"labels must be (B, {self.num_classes}), got {tuple(labels.shape)}")
        return labels.float()

    def probabilities(self, logits: Tensor) -> Tensor:
        """``(B, C)`` float32 probabilities (bfloat16 logits upcast first, so that validation, where thresholds
        are tuned, and prediction see the same values)."""
        raise NotImplementedError

    def predict(self, probabilities: Tensor, thresholds: Tensor) -> Tensor:
        """``(B, C)`` int64 0/1 labels."""
        raise NotImplementedError

    def update(self, metrics: MultilabelMetrics, probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Add a batch to ``metrics``; returns the batch scores to log beside them."""
        raise NotImplementedError


class MultiLabel(LabelTask):
    """One sigmoid per label; a label is present when its probability reaches its threshold."""

    name = "multilabel"
    thresholded = True

    def build_loss(
        self, loss: str | dict[str, Any] | None, class_weights: Sequence[float] | None, label_smoothing: float
    ) -> nn.Module:
        return multilabel_loss(loss, class_weights)

    def targets(self, labels: Tensor) -> Tensor:
        if labels.dim() == 1:
            raise ValueError(f"multi-label labels must be (B, C), got {tuple(labels.shape)}")
        return super().targets(labels)

    def probabilities(self, logits: Tensor) -> Tensor:
        return logits.float().sigmoid()

    def predict(self, probabilities: Tensor, thresholds: Tensor) -> Tensor:
        return (probabilities >= thresholds.to(probabilities)).long()

    def update(self, metrics: MultilabelMetrics, probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
        metrics.update(probabilities, targets)
        return {}


class SingleLabel(LabelTask):
    """Softmax over the classes; the predicted class is the most probable (thresholds are unused)."""

    name = "multiclass"
    thresholded = False

    def build_loss(
        self, loss: str | dict[str, Any] | None, class_weights: Sequence[float] | None, label_smoothing: float
    ) -> nn.Module:
        if loss is not None:
            raise ValueError("task='multiclass' uses softmax cross-entropy: leave loss unset (None)")
        return SoftCrossEntropy(class_weights, label_smoothing)

    def targets(self, labels: Tensor) -> Tensor:
        if labels.dim() == 1:
            return F.one_hot(labels.long(), self.num_classes).float()
        return super().targets(labels)

    def probabilities(self, logits: Tensor) -> Tensor:
        return logits.float().softmax(dim=1)

    def predict(self, probabilities: Tensor, thresholds: Tensor) -> Tensor:
        return argmax_one_hot(probabilities)

    def update(self, metrics: MultilabelMetrics, probabilities: Tensor, targets: Tensor) -> dict[str, Tensor]:
        predicted = argmax_one_hot(probabilities)
        metrics.update(predicted.float(), targets.round())
        return {"accuracy": (predicted.argmax(1) == targets.argmax(1)).float().mean()}


TASKS: dict[str, type[LabelTask]] = {task.name: task for task in (MultiLabel, SingleLabel)}


def label_task(task: str, num_classes: int) -> LabelTask:
    """The strategy of ``task`` (``"multilabel"`` or ``"multiclass"``)."""
    if task not in TASKS:
        raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
    return TASKS[task](num_classes)
