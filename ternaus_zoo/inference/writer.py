"""Deprecated: the prediction writers moved to :mod:`ternaus_zoo.inference.writers`."""

from ternaus_zoo.deprecation import moved_names

_NAMES = ("MaskWriter", "probabilities_to_mask")
__getattr__ = moved_names(__name__, dict.fromkeys(_NAMES, "ternaus_zoo.inference.writers"))
