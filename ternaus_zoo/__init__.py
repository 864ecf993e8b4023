"""ternaus_zoo: segmentation and classification models, losses and training recipes for PyTorch.

``import ternaus_zoo`` loads the registry and the models only; the Lightning, data and inference
names below are imported on first use, so a user of the models needs none of the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

from ternaus_zoo.errors import UserError
from ternaus_zoo.models.factory import create_model, get_model_info, list_models
from ternaus_zoo.registry import ModelInfo, register_model
from ternaus_zoo.weights import EncoderWeights, WeightsError, load_weights

__version__ = "0.1.0"

_LAZY = {
    "build_loss": "ternaus_zoo.losses",
    "SegmentationMetrics": "ternaus_zoo.metrics",
    "MultilabelMetrics": "ternaus_zoo.metrics",
    "SegmentationDataset": "ternaus_zoo.data",
    "DataError": "ternaus_zoo.data",
    "SegmentationDataModule": "ternaus_zoo.data",
    "SegmentationModule": "ternaus_zoo.training",
    "TTA": "ternaus_zoo.inference",
    "Ensemble": "ternaus_zoo.inference",
    "SlidingWindowPredictor": "ternaus_zoo.inference",
    "model_from_checkpoint": "ternaus_zoo.inference",
    "from_pretrained": "ternaus_zoo.inference",
}

__all__ = [
    "EncoderWeights",
    "ModelInfo",
    "UserError",
    "WeightsError",
    "__version__",
    "create_model",
    "get_model_info",
    "list_models",
    "load_weights",
    "register_model",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ternaus_zoo' has no attribute {name!r}")
