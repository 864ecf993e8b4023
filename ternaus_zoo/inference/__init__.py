"""Inference: test-time augmentation, tiled prediction, ensembles, export and writing masks.

Every wrapper here is an ``nn.Module`` over a model returning logits, so they compose:
``SlidingWindowPredictor(TTA(Ensemble([...]), "d4"))``.
"""

from ternaus_zoo.inference.ensemble import (
    Ensemble,
    average_checkpoints,
    model_from_averaged_checkpoints,
    model_from_checkpoint,
    refresh_batchnorm,
)
from ternaus_zoo.inference.export import export_onnx, export_torchscript
from ternaus_zoo.inference.tiling import SlidingWindowPredictor, blend_weights, blend_window
from ternaus_zoo.inference.tta import D4, TTA, GeometricTransform
from ternaus_zoo.inference.writer import MaskWriter, probabilities_to_mask

__all__ = [
    "D4",
    "TTA",
    "Ensemble",
    "GeometricTransform",
    "MaskWriter",
    "SlidingWindowPredictor",
    "average_checkpoints",
    "blend_weights",
    "blend_window",
    "export_onnx",
    "export_torchscript",
    "model_from_averaged_checkpoints",
    "model_from_checkpoint",
    "probabilities_to_mask",
    "refresh_batchnorm",
]
