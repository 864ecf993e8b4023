"""Masks as pictures: one colour per class, for the training's prediction grid and the writer's overlays."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# distinct colours (RGB) for class masks: class k gets colour k; the ignore index and any class past 11 get white.
# Binary foreground is drawn in colour 1.
CLASS_COLOURS = [
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (255, 255, 255),
]  # fmt: skip


def colour_masks(labels: Tensor) -> Tensor:
    """``(B, H, W)`` class indices to ``(B, 3, H, W)`` pictures in [0, 1]; ``(B, 1, H, W)`` probabilities
    or 0/1 masks stay grey."""
    if labels.ndim == 4:
        return labels.float().clamp(0, 1).expand(-1, 3, -1, -1)
    palette = torch.tensor(CLASS_COLOURS, dtype=torch.float32, device=labels.device) / 255
    return palette[labels.long().clamp(0, len(CLASS_COLOURS) - 1)].permute(0, 3, 1, 2)


def overlay(image: np.ndarray, mask: np.ndarray, *, binary: bool, alpha: float = 0.5) -> np.ndarray:
    """An ``(H, W, C)`` image as read (``uint8``, or float in [0, 1]) with its ``(H, W)`` ``uint8`` mask painted on.

    Binary masks (0/255) paint their foreground in ``CLASS_COLOURS[1]``; class masks paint every class but 0
    in its colour. Returns ``(H, W, 3)`` ``uint8`` RGB; ``alpha`` is the paint's opacity.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    pixels = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    pixels = np.repeat(pixels[..., :1], 3, axis=2) if pixels.shape[2] < 3 else pixels[..., :3]
    labels = (mask > 0).astype(np.int64) if binary else mask.astype(np.int64)
    palette = np.asarray(CLASS_COLOURS, dtype=np.float32)
    paint = palette[np.clip(labels, 0, len(CLASS_COLOURS) - 1)]
    painted = labels[..., None] > 0
    blended = np.where(painted, (1 - alpha) * pixels + alpha * paint, pixels)
    return blended.round().astype(np.uint8)
