"""The registry of model builders: :func:`register_model` and :class:`ModelInfo`.

Builders are small functions decorated with :func:`register_model` (as in timm), each beside its family
in ``ternaus_zoo/models/``. Each registered name carries a :class:`ModelInfo` that the data pipeline,
padding and inference read, so that no statistic or size multiple is written twice. This module imports
no model: ``ternaus_zoo.models`` (``create_model``, ``list_models``, ``get_model_info``) imports the
families, whose decorators fill the registry. :func:`registered` imports them itself, on the first name that
no imported family has registered, so that ``import ternaus_zoo`` and ``import ternaus_zoo.data`` load no model
code (nor smp) until a model is named.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ternaus_zoo.deprecation import moved_names
from ternaus_zoo.errors import UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Task = Literal["segmentation", "classification"]


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a model without running it.

    ``size_multiple`` is the factor the input height and width must be divisible by (the model
    pads and crops back on its own; tiling and export use it to choose sizes). ``mean``/``std``
    are per-channel statistics of the pixel values scaled to [0, 1]; for ``in_channels`` other
    than 3 they are extended with the mean of the RGB values. ``class_names`` and ``thresholds``
    (one per class, tuned on validation data) are empty until a trained model carries them.
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
    class_names: tuple[str, ...] = ()
    thresholds: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInfo:
        """The info of :meth:`to_dict` (lists back to tuples); unknown keys are an error naming them."""
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"unknown ModelInfo keys {unknown}; known: {sorted(fields)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

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


def registered(name: str) -> tuple[Builder, ModelInfo]:
    """The builder and :class:`ModelInfo` registered under ``name``, with close names suggested when unknown.

    A name not registered yet imports the zoo's families (``ternaus_zoo.models``) once, then is looked up again.
    """
    if name not in _BUILDERS:
        importlib.import_module("ternaus_zoo.models")  # lazily: see the module docstring
    if name not in _BUILDERS:
        close = [known for known in _BUILDERS if name.lower() in known.lower() or known.lower() in name.lower()]
        hint = f" Did you mean {close}?" if close else ""
        raise UnknownNameError(f"unknown model {name!r}.{hint} Known models: {sorted(_BUILDERS)}")
    return _BUILDERS[name], _INFOS[name]


def registered_infos() -> dict[str, ModelInfo]:
    """Every registered name and its :class:`ModelInfo` (of the families imported so far)."""
    return dict(_INFOS)


# Deprecated: these moved to ternaus_zoo.models, so that the registry imports no model family.
__getattr__ = moved_names(
    __name__, dict.fromkeys(("create_model", "get_model_info", "list_models"), "ternaus_zoo.models.factory")
)
