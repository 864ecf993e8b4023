"""ternaus_zoo: segmentation and classification models, losses and training recipes for PyTorch.

``import ternaus_zoo`` loads the registry only; every other name below (the models' factory included) is
imported on first use, so that a user of the data layer never loads model code, and a user of the models
needs none of Lightning, data or inference.
"""

from __future__ import annotations

import importlib
from typing import Any

from ternaus_zoo.errors import UserError
from ternaus_zoo.registry import ModelInfo, register_model

__version__ = "0.1.0"

_LAZY = {
    "create_model": "ternaus_zoo.models.factory",
    "get_model_info": "ternaus_zoo.models.factory",
    "list_models": "ternaus_zoo.models.factory",
    "EncoderWeights": "ternaus_zoo.weights",
    "WeightsError": "ternaus_zoo.weights",
    "load_weights": "ternaus_zoo.weights",
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
    "predict_mask": "ternaus_zoo.inference",
    "OnnxPredictor": "ternaus_zoo.inference",
}

__all__ = ["ModelInfo", "UserError", "__version__", "register_model", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ternaus_zoo' has no attribute {name!r}")
