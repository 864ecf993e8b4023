"""One registry for every model of the zoo: ``create_model``, ``list_models``, ``register_model``.

Builders are small functions decorated with :func:`register_model` (as in timm). Each registered
name carries a :class:`ModelInfo` that the data pipeline, padding and inference read, so that no
statistic or size multiple is written twice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ternaus_zoo.weights import load_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Task = Literal["segmentation", "classification"]


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a model without running it.

    ``size_multiple`` is the factor the input height and width must be divisible by (the model
    pads and crops back on its own; tiling and export use it to choose sizes). ``mean``/``std``
    are per-channel statistics of the pixel values scaled to [0, 1]; for ``in_channels`` other
    than 3 they are extended with the mean of the RGB values.
    """

    name: str
    task: Task
    description: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    size_multiple: int = 32
    in_channels: int = 3
    num_classes: int = 1
    pretrained: tuple[str, ...] = ("imagenet",)

    def for_channels(self, in_channels: int) -> ModelInfo:
        """The same info with mean/std adapted to ``in_channels`` (extra channels get the RGB mean)."""
        return dataclasses.replace(
            self,
            in_channels=in_channels,
            mean=_adapt_stats(self.mean, in_channels),
            std=_adapt_stats(self.std, in_channels),
        )


def _adapt_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == channels:
        return values
    average = sum(values) / len(values)
    if channels < len(values):
        return (average,) * channels
    return tuple(values) + (average,) * (channels - len(values))


Builder = Callable[..., nn.Module]
_BUILDERS: dict[str, Builder] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``info.name``.

    The builder takes ``num_classes``, ``in_channels`` and its own keyword arguments and returns a
    plain, randomly initialised ``nn.Module``; :func:`create_model` then applies the weights.
    """

    def decorator(builder: Builder) -> Builder:
        if info.name in _BUILDERS:
            raise ValueError(f"model {info.name!r} is already registered (by {_BUILDERS[info.name].__module__})")
        _BUILDERS[info.name] = builder
        _INFOS[info.name] = info
        return builder

    return decorator


def _ensure_families_imported() -> None:
    # Importing the models package runs every family's @register_model.
    import ternaus_zoo.models  # noqa: F401


def list_models(pattern: str = "*", task: Task | None = None) -> list[str]:
    """Sorted registered names matching the shell-style ``pattern`` (and ``task`` if given)."""
    _ensure_families_imported()
    return sorted(
        name for name, info in _INFOS.items() if fnmatch.fnmatch(name, pattern) and (task is None or info.task == task)
    )


def _lookup(name: str) -> tuple[Builder, ModelInfo]:
    _ensure_families_imported()
    if name not in _BUILDERS:
        close = [known for known in _BUILDERS if name.lower() in known.lower() or known.lower() in name.lower()]
        hint = f" Did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Known models: {sorted(_BUILDERS)}")
    return _BUILDERS[name], _INFOS[name]


def get_model_info(name: str) -> ModelInfo:
    """The registered :class:`ModelInfo` of ``name`` (before any build-time options)."""
    return _lookup(name)[1]


def create_model(
    name: str,
    *,
    num_classes: int = 1,
    in_channels: int = 3,
    weights: str | os.PathLike | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"unet11"`` or ``"smp.Unet"``.
        num_classes: output channels (segmentation) or classes (classification).
        in_channels: input channels; pretrained first convolutions are adapted.
        weights: ``None`` (random init), ``"imagenet"`` (torchvision weights, cached under
            ``TORCH_HOME``) or a path to a local checkpoint (full model, encoder only, original
            TernausNet or Lightning checkpoint).
        kwargs: the family's own options (for example ``num_filters`` or ``encoder_name``).

    Returns:
        An ``nn.Module`` whose ``info`` attribute is its :class:`ModelInfo`. Segmentation models map
        ``(B, in_channels, H, W)`` to logits ``(B, num_classes, H, W)``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    builder, info = _lookup(name)
    model = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    load_weights(model, weights)
    model.info = dataclasses.replace(
        info.for_channels(in_channels),
        num_classes=num_classes,
        size_multiple=getattr(model, "size_multiple", info.size_multiple),
    )
    return model
