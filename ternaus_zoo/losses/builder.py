"""The name -> class table of the losses, weighted sums of losses, and ``build_loss`` from a config.

A YAML file names a loss as a string, a mapping of names to weights, or a mapping of names to keyword
arguments (with an optional ``weight``)::

    loss: bce_jaccard
    loss: {bce: 0.5, lovasz_hinge: 0.5}
    loss:
      lovasz_softmax: {weight: 1.0, ignore_index: 11}
      ce: {weight: 0.5, ignore_index: 11}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

from ternaus_zoo.errors import UnknownNameError, UserError
from ternaus_zoo.losses.classification import MultiLabelFocalLoss, WeightedBCELoss
from ternaus_zoo.losses.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss
from ternaus_zoo.losses.focal import BinaryFocalLoss, FocalLoss
from ternaus_zoo.losses.jaccard import BCEJaccardLoss, CrossEntropyJaccardLoss, SoftDiceLoss, SoftJaccardLoss
from ternaus_zoo.losses.lovasz import LovaszHingeLoss, LovaszSoftmaxLoss

LOSSES: dict[str, type[nn.Module]] = {
    "bce": BinaryCrossEntropyLoss,
    "bce_jaccard": BCEJaccardLoss,
    "jaccard": SoftJaccardLoss,
    "dice": SoftDiceLoss,
    "lovasz_hinge": LovaszHingeLoss,
    "binary_focal": BinaryFocalLoss,
    "ce": CrossEntropyLoss,
    "ce_jaccard": CrossEntropyJaccardLoss,
    "lovasz_softmax": LovaszSoftmaxLoss,
    "focal": FocalLoss,
    "multilabel_focal": MultiLabelFocalLoss,
    "weighted_bce": WeightedBCELoss,
}
"""Registered loss names. Each class has a ``task`` attribute: ``"binary"``, ``"multiclass"`` or ``"multilabel"``."""

LossConfig = str | Mapping[str, Any] | nn.Module


class LossConfigError(UserError, TypeError):
    """A loss config of the wrong shape, or keyword arguments its loss does not take (``model.loss``)."""


class WeightedSumLoss(nn.Module):
    """``sum_k weights[k] * losses[k](logits, target)`` of losses that take the same inputs.

    Args:
        losses: name -> loss module.
        weights: name -> weight (the same names); ``None`` weighs every loss by 1.
    """

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if not losses:
            raise ValueError("WeightedSumLoss needs at least one loss")
        weights = {name: 1.0 for name in losses} if weights is None else dict(weights)
        if set(weights) != set(losses):
            raise ValueError(f"weights {sorted(weights)} do not match losses {sorted(losses)}")
        self.losses = nn.ModuleDict(losses)
        self.weights = {name: float(weight) for name, weight in weights.items()}

    def terms(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Every loss's unweighted value, by name (for logging)."""
        return {name: loss(logits, target) for name, loss in self.losses.items()}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        terms = self.terms(logits, target)
        return torch.stack([self.weights[name] * value for name, value in terms.items()]).sum()

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


class PerChannelLoss(nn.Module):
    """A binary loss applied to every channel of multi-label masks on its own, averaged over the channels.

    For multi-label segmentation (``(B, K, H, W)`` logits and {0, 1} targets, classes may overlap): each class is
    its own sigmoid problem, so Jaccard or Lovasz are per class (a class of small objects is not drowned by a
    large one), as the class-averaged score the module monitors is.

    Args:
        loss: a loss of ``task == "binary"`` (``(B, 1, H, W)`` logits and targets).
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        if getattr(loss, "task", "binary") != "binary":
            raise ValueError(f"multi-label masks need binary losses, one per channel; {type(loss).__name__} is not")
        self.loss = loss

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.dim() != 4 or target.shape != logits.shape:
            raise ValueError(
                f"multi-label logits and targets must share one (B, K, H, W) shape, got {tuple(logits.shape)} "
                f"and {tuple(target.shape)}"
            )
        values = [self.loss(logits[:, k : k + 1], target[:, k : k + 1]) for k in range(logits.shape[1])]
        return torch.stack(values).mean()


def _loss_class(name: str) -> type[nn.Module]:
    if name not in LOSSES:
        raise UnknownNameError(f"unknown loss {name!r} (model.loss); known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def _build_one(
    name: str, kwargs: Mapping[str, Any], ignore_index: int | None = None, per_channel: bool = False
) -> nn.Module:
    cls = _loss_class(name)
    if ignore_index is not None and "ignore_index" in inspect.signature(cls).parameters:
        kwargs = {"ignore_index": ignore_index, **kwargs}
    if per_channel and cls.task != "binary":
        raise ValueError(f"loss {name!r} is {cls.task}: multi-label masks take binary losses, one per channel")
    try:
        loss = cls(**kwargs)
    except TypeError as error:
        raise LossConfigError(f"cannot build loss {name!r} ({cls.__name__}) with {dict(kwargs)}: {error}") from error
    return PerChannelLoss(loss) if per_channel else loss


def build_loss(config: LossConfig, ignore_index: int | None = None, per_channel: bool = False) -> nn.Module:
    """Build a loss from a name, a mapping name -> weight, or a mapping name -> keyword arguments.

    Args:
        config: ``"bce_jaccard"`` (a name of :data:`LOSSES`, default arguments); ``{"bce": 0.5,
            "lovasz_hinge": 0.5}`` (weights); ``{"lovasz_softmax": {"weight": 1.0, "ignore_index": 11}}``
            (keyword arguments of the loss, ``weight`` defaulting to 1); or an ``nn.Module``, returned as is.
        ignore_index: the default ``ignore_index`` of every named loss that takes one (a loss's own
            keyword argument wins), so a module's ``ignore_index`` reaches its loss without repeating it.
        per_channel: multi-label masks: every named loss (binary ones only) is a :class:`PerChannelLoss`.

    Returns:
        The loss for a name or a module; a :class:`WeightedSumLoss` for a mapping.

    Raises:
        UnknownNameError: an unknown name (a ``KeyError``; the message lists the known ones).
        LossConfigError: a config of another type, or keyword arguments the loss does not take (a ``TypeError``).
    """
    if isinstance(config, nn.Module):
        return config
    if isinstance(config, str):
        return _build_one(config, {}, ignore_index, per_channel)
    if not isinstance(config, Mapping):
        raise LossConfigError(f"a loss config is a name, a mapping or an nn.Module, got {type(config).__name__}")
    losses: dict[str, nn.Module] = {}
    weights: dict[str, float] = {}
    for name, spec in config.items():
        if isinstance(spec, Real) and not isinstance(spec, bool):
            kwargs: dict[str, Any] = {}
            weights[name] = float(spec)
        elif isinstance(spec, Mapping):
            kwargs = dict(spec)
            weights[name] = float(kwargs.pop("weight", 1.0))
        else:
            raise LossConfigError(f"loss {name!r}: expected a weight or a mapping of keyword arguments, got {spec!r}")
        losses[name] = _build_one(name, kwargs, ignore_index, per_channel)
    return WeightedSumLoss(losses, weights)
