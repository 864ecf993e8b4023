"""Writing small synthetic images and masks with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (OpenCV channel order) to ``path``, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels), path
    return path


def random_image(height: int, width: int, channels: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    high = np.iinfo(dtype).max
    pixels = np.random.default_rng(seed).integers(0, high, (height, width, channels), endpoint=True)
    return pixels.astype(dtype)[:, :, 0] if channels == 1 else pixels.astype(dtype)


def disc_mask(height: int, width: int, value: int = 255) -> np.ndarray:
    """A filled circle (value) on background (0), as uint8 ``(H, W)``."""
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), min(height, width) // 3, value, -1)
    return mask
