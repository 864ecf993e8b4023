"""Mask cleaning after thresholding: drop small connected components, keep the largest one, fill holes.

Each step works on a predicted mask at the image's original resolution, in any mask mode:

* binary: ``(H, W)`` bool;
* classes: ``(H, W)`` integer class indices, 0 the background;
* multi-label: ``(C, H, W)`` bool, one channel per class.

``scope="foreground"`` treats every non-background pixel together (the union of the channels of a multi-label
mask); ``scope="per_class"`` treats each class (channel) on its own. Components are 8-connected (OpenCV), holes are
background regions that do not touch the border (SciPy's ``binary_fill_holes``, 4-connected background).

The steps are chosen on out-of-fold evidence by ``ternaus-zoo select`` (``planning/selection.py``) and applied
by prediction; they live here, below both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "STEP_NAMES",
    "PostProcessingStep",
    "apply_steps",
    "component_areas",
    "fill_holes",
    "keep_largest_component",
    "remove_small_components",
    "steps_from_dicts",
]

StepName = Literal["remove_small", "keep_largest", "fill_holes"]
Scope = Literal["foreground", "per_class"]
STEP_NAMES: tuple[str, ...] = ("remove_small", "keep_largest", "fill_holes")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (H, W) int32, areas (n,))`` of the 8-connected components of a bool mask; label 0 is the rest."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, stats[1:count, cv2.CC_STAT_AREA]


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Pixel areas ``(n,)`` of the 8-connected components of a bool ``(H, W)`` mask."""
    return _components(mask)[1]


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` (bool ``(H, W)``) without its components of fewer than ``min_area`` pixels."""
    labels, areas = _components(mask)
    keep = np.concatenate([[False], areas >= min_area])
    return keep[labels]


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """Only the largest component of ``mask`` (bool ``(H, W)``; the first in scan order among equals)."""
    labels, areas = _components(mask)
    if len(areas) == 0:
        return mask.copy()
    return labels == int(np.argmax(areas)) + 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` (bool ``(H, W)``) with the background regions it encloses set to foreground."""
    return ndimage.binary_fill_holes(mask)


@dataclass(frozen=True)
class PostProcessingStep:
    """One cleaning step: ``name`` in :data:`STEP_NAMES`, ``scope``, and for ``remove_small`` the smallest kept
    component as a fraction of the image's area (``min_fraction``)."""

    name: StepName
    scope: Scope = "foreground"
    min_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.name not in STEP_NAMES:
            raise ValueError(f"post-processing step must be one of {STEP_NAMES}, got {self.name!r}")
        if self.scope not in ("foreground", "per_class"):
            raise ValueError(f"scope must be 'foreground' or 'per_class', got {self.scope!r}")
        if (self.name == "remove_small") != (self.min_fraction is not None):
            raise ValueError(f"min_fraction is given with remove_small, and only there: {self}")

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> PostProcessingStep:
        return cls(**dict(entry))

    def describe(self) -> str:
        size = f" < {self.min_fraction:.3g} of the image" if self.min_fraction is not None else ""
        return f"{self.name}{size} ({self.scope})"

    def _binary(self, mask: np.ndarray) -> np.ndarray:
        if self.name == "remove_small":
            return remove_small_components(mask, max(1, int(np.ceil(self.min_fraction * mask.size))))
        if self.name == "keep_largest":
            return keep_largest_component(mask)
        return fill_holes(mask)

    def __call__(self, mask: np.ndarray, mode: str) -> np.ndarray:
        """The cleaned copy of ``mask`` (see the module docstring for the shapes of each ``mode``)."""
        if mode == "binary":
            return self._binary(mask)
        if mode == "multilabel":
            if self.scope == "per_class":
                return np.stack([self._binary(channel) for channel in mask])
            return mask & self._binary(mask.any(0))[None]
        # class indices: removed pixels become background; a class's holes are filled only where they are background
        if self.scope == "foreground":
            kept = self._binary(mask != 0)
            return np.where(kept & (mask != 0), mask, 0).astype(mask.dtype)
        result = mask.copy()
        for value in np.unique(mask[mask != 0]):
            region = mask == value
            cleaned = self._binary(region)
            result[region & ~cleaned] = 0
            result[cleaned & (mask == 0)] = value
        return result


def apply_steps(mask: np.ndarray, steps: Iterable[PostProcessingStep], mode: str) -> np.ndarray:
    """``mask`` after each of ``steps`` in order."""
    for step in steps:
        mask = step(mask, mode)
    return mask


def steps_from_dicts(entries: Sequence[Mapping[str, Any]]) -> list[PostProcessingStep]:
    """The steps of a saved list (``selection.json``, a saved-model folder's ``postprocessing``)."""
    return [PostProcessingStep.from_dict(entry) for entry in entries]
