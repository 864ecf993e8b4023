"""Inference: test-time augmentation, tiled prediction, ensembles, export and prediction writers.

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
from ternaus_zoo.inference.onnx_predictor import OnnxPredictor
from ternaus_zoo.inference.predict import (
    TTA_CHOICES,
    FolderPredictor,
    PredictionSpec,
    build_predictor,
    load_predictor,
    predict_folder,
    prediction_spec,
    read_manifest,
)
from ternaus_zoo.inference.pretrained import (
    SavedPrediction,
    from_pretrained,
    predict_mask,
    read_pretrained,
    save_predictor_pretrained,
)
from ternaus_zoo.inference.tiling import SlidingWindowPredictor, blend_weights, blend_window
from ternaus_zoo.inference.tta import D4, TTA, GeometricTransform
from ternaus_zoo.inference.writers import (
    LabelWriter,
    MaskWriter,
    OutOfFoldWriter,
    cleaned_mask,
    probabilities_to_mask,
)

__all__ = [
    "D4",
    "TTA",
    "TTA_CHOICES",
    "Ensemble",
    "FolderPredictor",
    "GeometricTransform",
    "LabelWriter",
    "MaskWriter",
    "OnnxPredictor",
    "OutOfFoldWriter",
    "PredictionSpec",
    "SavedPrediction",
    "SlidingWindowPredictor",
    "average_checkpoints",
    "blend_weights",
    "blend_window",
    "build_predictor",
    "cleaned_mask",
    "export_onnx",
    "export_torchscript",
    "from_pretrained",
    "load_predictor",
    "model_from_averaged_checkpoints",
    "model_from_checkpoint",
    "predict_folder",
    "predict_mask",
    "prediction_spec",
    "probabilities_to_mask",
    "read_manifest",
    "read_pretrained",
    "refresh_batchnorm",
    "save_predictor_pretrained",
]
