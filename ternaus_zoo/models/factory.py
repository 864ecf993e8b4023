"""``create_model``, ``list_models`` and ``get_model_info`` over every family of the zoo.

This module imports every family (each registers its builders on import) and then asks the registry;
the registry itself imports no model, so the arrows run one way: factory -> families -> registry.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import os
from collections.abc import Sequence

from torch import nn

from ternaus_zoo.errors import BadValueError

# Importing the families runs their @register_model decorators.
from ternaus_zoo.models import albunet, aux_resnet, gapnet, linknet, smp_adapter, ternausnet, unet  # noqa: F401
from ternaus_zoo.registry import ModelInfo, Task, registered, registered_infos
from ternaus_zoo.weights import load_weights


def list_models(pattern: str = "*", task: Task | None = None) -> list[str]:
    """Sorted registered names matching the shell-style ``pattern`` (and ``task`` if given)."""
    return sorted(
        name
        for name, info in registered_infos().items()
        if fnmatch.fnmatch(name, pattern) and (task is None or info.task == task)
    )


def get_model_info(name: str) -> ModelInfo:
    """The registered :class:`ModelInfo` of ``name`` (before any build-time options)."""
    return registered(name)[1]


def create_model(
    name: str,
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    weights: str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"unet11"`` or ``"smp.Unet"``.
        num_classes: output channels (segmentation) or classes (classification).
        in_channels: input channels; pretrained first convolutions are adapted.
        weights: ``None`` (random init), a pretrained tag (``"imagenet"``, or a torchvision weights name
            such as ``"imagenet1k_v2"``; cached under ``TORCH_HOME``) or a path to a local checkpoint
            (full model, encoder only, original TernausNet or Lightning checkpoint).
        mean / std: the input statistics (pixels in [0, 1], one per channel) the model is normalised with, where
            they are not the registered ones (ImageNet's): a model trained from scratch with its data set's own.
            They go into ``model.info`` and ``build_config``, so a checkpoint or saved folder keeps them.
        kwargs: the family's own options (for example ``num_filters`` or ``encoder_name``).

    Returns:
        An ``nn.Module`` whose ``info`` attribute is its :class:`ModelInfo` and whose ``build_config``
        (``name``, ``num_classes``, ``in_channels``, ``kwargs``) rebuilds its architecture through
        :func:`create_model`. Segmentation models map ``(B, in_channels, H, W)`` to logits
        ``(B, num_classes, H, W)``.
    """
    if num_classes < 1:
        raise BadValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise BadValueError(f"in_channels must be >= 1, got {in_channels}")
    builder, info = registered(name)
    statistics = {
        key: tuple(float(value) for value in values)
        for key, values in (("mean", mean), ("std", std))
        if values is not None
    }
    wrong = {key: values for key, values in statistics.items() if len(values) != in_channels}
    if wrong:
        raise BadValueError(f"{sorted(wrong)} of {name!r} need one value per input channel ({in_channels}): {wrong}")
    try:  # the options checked against the builder's signature before it runs (model.model_kwargs)
        inspect.signature(builder).bind(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as error:
        raise BadValueError(f"{name!r} does not take the options {sorted(kwargs)}: {error}") from None
    model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    load_weights(model, weights)
    # The registered info describes the builder's defaults; an smp encoder or a U-Net depth changes the multiple.
    model.info = dataclasses.replace(
        info.for_channels(in_channels),
        num_classes=num_classes,
        size_multiple=getattr(model, "size_multiple", info.size_multiple),
        **statistics,
    )
    options = {**kwargs, **{key: list(values) for key, values in statistics.items()}}
    model.build_config = {"name": name, "num_classes": num_classes, "in_channels": in_channels, "kwargs": options}
    return model
