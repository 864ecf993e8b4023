"""Ensembles of models, models rebuilt from checkpoints, and weight averaging of one run's checkpoints.

``Ensemble(models, reduction="mean", activation="sigmoid")`` averages probabilities. The geometric mean
is the principled alternative for probabilities: for ``activation="sigmoid"`` (binary and multi-label)
it is the normalised ``prod(p_i) ** (1/n) / (prod(p_i) ** (1/n) + prod(1 - p_i) ** (1/n))`` per label,
for ``"softmax"`` (multi-class) ``prod(p_i) ** (1/n)`` renormalised over the classes. Both equal the
activation of the mean of the logits (the odds, or the class ratios, are exponentials of the logits,
and the normaliser cancels), which is how they are computed here: exactly, without ``log(0)``, and
with ops that export to ONNX.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ternaus_zoo.errors import MissingPathError
from ternaus_zoo.inference.tta import Activation, apply_activation
from ternaus_zoo.models import create_model
from ternaus_zoo.weights import WeightsError, load_checkpoint, load_container, read_checkpoint

Reduction = Literal["mean", "geometric_mean"]
PathLike = str | os.PathLike
ModelLoader = Callable[[PathLike], nn.Module]


class Ensemble(nn.Module):
    """Average the predictions of several models with the same input and output shapes.

    Args:
        models: modules mapping ``(B, C_in, H, W)`` to logits ``(B, K, H, W)`` or ``(B, K)``.
        reduction: ``"mean"``: the (weighted) arithmetic mean of the probabilities; ``"geometric_mean"``:
            their normalised (weighted) geometric mean, ``activation(sum_i w_i * logits_i)``.
        activation: ``"sigmoid"`` (binary, multi-label), ``"softmax"`` (multi-class, over dim 1) or
            ``None``: the mean of the logits is returned (the logit of the normalised geometric mean for
            either activation), so the ensemble is again a "logits out" model (for TTA or tiling that apply
            the activation themselves).
        weights: one non-negative weight per model, normalised to sum to one; default equal.

    Forward:
        ``(B, C_in, H, W)`` -> probabilities (or logits when ``activation=None``) of the models' shape.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        reduction: Reduction = "mean",
        activation: Activation = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if reduction not in ("mean", "geometric_mean"):
            raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'geometric_mean'")
        if activation not in ("sigmoid", "softmax", None):
            raise ValueError(f"unknown activation {activation!r}; choose 'sigmoid', 'softmax' or None")
        if weights is None:
            weights = [1.0] * len(models)
        if len(weights) != len(models) or any(weight < 0 for weight in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(models)} non-negative numbers with a positive sum, got {weights}")
        self.models = nn.ModuleList(models)
        self.reduction = reduction
        self.activation = activation
        self.weights = tuple(float(weight) / sum(weights) for weight in weights)
        infos = [model.info for model in models if getattr(model, "info", None) is not None]
        if infos:
            multiple = math.lcm(*(info.size_multiple for info in infos))
            self.info = dataclasses.replace(infos[0], size_multiple=multiple)

    @classmethod
    def from_checkpoints(cls, paths: Sequence[PathLike], loader: ModelLoader | None = None, **kwargs: Any) -> Ensemble:
        """An ensemble of the models in ``paths``, each rebuilt by ``loader`` (:func:`model_from_checkpoint`)."""
        loader = loader or model_from_checkpoint
        return cls([loader(path) for path in paths], **kwargs)

    def forward(self, images: Tensor) -> Tensor:
        total: Tensor | None = None
        for weight, model in zip(self.weights, self.models, strict=True):
            logits = model(images)
            term = (
                logits
                if self.reduction == "geometric_mean" or self.activation is None
                else (apply_activation(logits, self.activation))
            )
            total = weight * term if total is None else total + weight * term
        assert total is not None
        if self.reduction == "geometric_mean":
            return apply_activation(total, self.activation)
        return total

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, activation={self.activation!r}, weights={self.weights}"


def model_from_checkpoint(path: PathLike) -> nn.Module:
    """Rebuild a zoo model from a Lightning checkpoint alone, in eval mode on the CPU.

    The checkpoint's ``hyper_parameters`` name the registry model (``model``), its ``model_kwargs``,
    ``num_classes`` and ``in_channels``; the ``state_dict`` (keys ``model.<name>``) is loaded strictly by
    :func:`ternaus_zoo.weights.load_checkpoint`. The ``weights`` hyperparameter is not applied (no download).
    ``label_names`` / ``class_names`` and tuned ``thresholds`` go into ``model.info``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"checkpoint {path} does not exist")
    content = load_container(path)
    hyper_parameters = content.get("hyper_parameters") if isinstance(content, Mapping) else None
    if not isinstance(hyper_parameters, Mapping) or not isinstance(hyper_parameters.get("model"), str):
        found = sorted(hyper_parameters) if isinstance(hyper_parameters, Mapping) else None
        raise WeightsError(
            f"{path} has no hyper_parameters['model'] naming a registry model (hyper_parameters keys: {found}); "
            "pass loader=<function building the model> instead"
        )
    model = create_model(
        hyper_parameters["model"],
        num_classes=int(hyper_parameters.get("num_classes", 1)),
        in_channels=int(hyper_parameters.get("in_channels", 3)),
        **dict(hyper_parameters.get("model_kwargs") or {}),
    )
    load_checkpoint(model, path)
    state = content.get("state_dict") or {}
    # the class names (a classifier's label_names, a segmentation module's class_names) and a classifier's tuned
    # thresholds travel with the model (its info), e.g. into a saved folder
    names = hyper_parameters.get("label_names") or hyper_parameters.get("class_names")
    thresholds = state.get("thresholds")
    if names or thresholds is not None:
        model.info = dataclasses.replace(
            model.info,
            class_names=tuple(names or ()),
            thresholds=tuple(float(value) for value in thresholds.flatten()) if thresholds is not None else (),
        )
    return model.eval()


def average_checkpoints(sources: Sequence[PathLike | Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of the weights of several checkpoints of one run (e.g. the last K epochs).

    Floating-point tensors are averaged (in float64, cast back to their dtype); integer and boolean
    tensors (``num_batches_tracked``) are taken from the last source. Checkpoints are read one at a time.

    Args:
        sources: checkpoint paths (any format :func:`ternaus_zoo.weights.read_checkpoint` reads: Lightning
            keys keep their ``model.`` prefix) or state dicts, all with the same keys and shapes.

    Returns:
        A state dict with the keys of the sources. BatchNorm running statistics are averaged like the
        weights, but they do not belong to the averaged weights: refresh them with :func:`refresh_batchnorm`.
    """
    if not sources:
        raise ValueError("average_checkpoints needs at least one checkpoint")
    totals: dict[str, Tensor] = {}
    reference: dict[str, Tensor] = {}
    first_name = ""
    for index, source in enumerate(sources):
        name = str(source) if isinstance(source, (str, os.PathLike)) else f"state dict #{index}"
        state = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else dict(source)
        if index == 0:
            reference, first_name = state, name
            totals = {
                key: value.detach().to(torch.float64, copy=True)
                for key, value in state.items()
                if value.is_floating_point()
            }
            continue
        if set(state) != set(reference):
            missing = sorted(set(reference) - set(state))[:5]
            extra = sorted(set(state) - set(reference))[:5]
            raise WeightsError(f"{name} does not match {first_name}: missing keys {missing}, unexpected keys {extra}")
        for key, value in state.items():
            if value.shape != reference[key].shape:
                raise WeightsError(
                    f"{name}: key {key!r} has shape {tuple(value.shape)}, "
                    f"{first_name} has {tuple(reference[key].shape)}"
                )
            if key in totals:
                totals[key] += value.to(torch.float64)
            else:
                reference[key] = value  # integer buffers: keep the last
    return {
        key: (totals[key] / len(sources)).to(value.dtype) if key in totals else value.clone()
        for key, value in reference.items()
    }


def refresh_batchnorm(
    model: nn.Module, loader: Iterable[Any], device: torch.device | str | None = None, image_key: str = "image"
) -> nn.Module:
    """Recompute BatchNorm running statistics with one pass over ``loader`` (after weight averaging).

    Batches may be tensors ``(B, C, H, W)``, ``(images, ...)`` tuples or dicts holding ``image_key``. Uses
    :func:`torch.optim.swa_utils.update_bn` (without gradients); the model's mode is restored.
    """

    def images() -> Iterable[Tensor]:
        for batch in loader:
            if isinstance(batch, Mapping):
                yield batch[image_key]
            elif isinstance(batch, (list, tuple)):
                yield batch[0]
            else:
                yield batch

    with torch.no_grad():
        torch.optim.swa_utils.update_bn(images(), model, device=device)
    return model


def model_from_averaged_checkpoints(
    paths: Sequence[PathLike],
    loader: ModelLoader | None = None,
    bn_loader: Iterable[Any] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """One model whose weights are the mean of the checkpoints in ``paths`` (one run's last K epochs).

    The model is rebuilt from the last checkpoint by ``loader`` (default :func:`model_from_checkpoint`).
    Averaged weights do not match averaged BatchNorm statistics; pass ``bn_loader`` (training images) to
    recompute them with :func:`refresh_batchnorm`. Returns the model in eval mode.
    """
    if not paths:
        raise ValueError("model_from_averaged_checkpoints needs at least one checkpoint")
    model = (loader or model_from_checkpoint)(paths[-1])
    state = average_checkpoints(paths)
    keys = set(model.state_dict())
    if set(state) != keys:  # a Lightning module's keys: keep those of its `model.` (not loss or metric buffers)
        state = {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}
    if set(state) != keys:
        missing = sorted(keys - set(state))[:5]
        extra = sorted(set(state) - keys)[:5]
        raise WeightsError(f"averaged {paths[-1]} does not fit the model: missing keys {missing}, unexpected {extra}")
    model.load_state_dict(state, strict=True)
    if bn_loader is not None:
        if device is not None:
            model.to(device)
        refresh_batchnorm(model, bn_loader, device=device)
    return model.eval()
