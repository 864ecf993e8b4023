"""Segmentation and classification losses; every loss takes logits and returns a scalar.

* binary segmentation, logits ``(B, 1, H, W)`` or ``(B, H, W)`` and 0/1 targets of the same shape:
  :class:`BinaryCrossEntropyLoss`, :class:`BCEJaccardLoss`, :class:`SoftJaccardLoss`,
  :class:`SoftDiceLoss`, :class:`LovaszHingeLoss`, :class:`BinaryFocalLoss`;
* multi-class segmentation, logits ``(B, C, H, W)`` and int64 targets ``(B, H, W)``:
  :class:`CrossEntropyLoss`, :class:`CrossEntropyJaccardLoss`, :class:`LovaszSoftmaxLoss`, :class:`FocalLoss`;
* multi-label classification, logits and 0/1 targets ``(B, C)``: :class:`MultiLabelFocalLoss`,
  :class:`WeightedBCELoss`.

Half-precision logits are computed in float32. :func:`build_loss` builds a loss or a
:class:`WeightedSumLoss` from a name or a mapping (as read from YAML), by the names of :data:`LOSSES`. Rare classes
get ``class_weights`` (``ce``, ``ce_jaccard``; ``alpha`` of ``focal``), e.g. :func:`frequency_weights` of their
pixel frequencies.
"""

from ternaus_zoo.losses._common import LossTask, frequency_weights
from ternaus_zoo.losses.builder import LOSSES, LossConfig, PerChannelLoss, WeightedSumLoss, build_loss
from ternaus_zoo.losses.classification import MultiLabelFocalLoss, WeightedBCELoss
from ternaus_zoo.losses.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss
from ternaus_zoo.losses.focal import BinaryFocalLoss, FocalLoss
from ternaus_zoo.losses.jaccard import BCEJaccardLoss, CrossEntropyJaccardLoss, SoftDiceLoss, SoftJaccardLoss
from ternaus_zoo.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss, lovasz_grad, lovasz_hinge, lovasz_softmax

__all__ = [
    "LOSSES",
    "BCEJaccardLoss",
    "BinaryCrossEntropyLoss",
    "BinaryFocalLoss",
    "CrossEntropyJaccardLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LossConfig",
    "LossTask",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "MultiLabelFocalLoss",
    "PerChannelLoss",
    "SoftDiceLoss",
    "SoftJaccardLoss",
    "WeightedBCELoss",
    "WeightedSumLoss",
    "build_loss",
    "frequency_weights",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_softmax",
]
