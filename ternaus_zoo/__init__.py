"""ternaus_zoo: segmentation and classification models, losses and training recipes for PyTorch."""

from ternaus_zoo.registry import ModelInfo, create_model, get_model_info, list_models, register_model
from ternaus_zoo.weights import EncoderWeights, WeightsError, load_weights

__version__ = "0.1.0"

__all__ = [
    "EncoderWeights",
    "ModelInfo",
    "WeightsError",
    "__version__",
    "create_model",
    "get_model_info",
    "list_models",
    "load_weights",
    "register_model",
]
