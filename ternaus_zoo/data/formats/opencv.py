"""OpenCV, the fast path: PNG, JPEG, BMP, WebP, JPEG 2000, PBM/PGM/PPM, and single-page TIFF of up to
4 channels, stored interleaved, in ``uint8``, ``uint16``, ``float32`` or 1 bit.

Files are read in full (no ``cv2.IMREAD_REDUCED_*``): the geometry of image and mask must agree to the pixel,
and the augmentations crop before they resize, so a reduced read would save little. EXIF and TIFF orientation
are ignored (``IMREAD_UNCHANGED``) for images and masks alike, so they stay aligned.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ternaus_zoo.data.errors import DataError, PathLike


def decode(path: PathLike) -> np.ndarray:
    """The file's pixels as OpenCV stores them (``cv2.IMREAD_UNCHANGED``: BGR order, native dtype).

    Raises:
        DataError: the file is missing, empty, or not an image OpenCV can decode.
    """
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(path, f"cannot be read: {error}") from error
    if buffer.size == 0:
        raise DataError(path, "empty file (0 bytes)")
    pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.size == 0:
        raise DataError(path, "not a readable image (corrupt or unsupported format)")
    return pixels


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """OpenCV's BGR/BGRA ``(H, W[, C])`` to RGB/RGBA ``(H, W, C)``."""
    if pixels.ndim == 2:
        return pixels[:, :, None]
    if pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels


def read_rgb(path: PathLike) -> np.ndarray:
    """The file as ``(H, W, C)`` in RGB(A) order and its own dtype."""
    return to_rgb(decode(path))
