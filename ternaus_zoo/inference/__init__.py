"""Inference: writing predictions (and, later, TTA, tiling and ensembles)."""

from ternaus_zoo.inference.writer import MaskWriter, probabilities_to_mask

__all__ = ["MaskWriter", "probabilities_to_mask"]
