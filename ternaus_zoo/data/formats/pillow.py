"""Pillow: GIF (the first frame), and palette PNG masks.

Pillow, not OpenCV: OpenCV has no GIF decoder before 4.11 (and 4.11 builds it only on request; this package
accepts OpenCV >= 4.8), and its decoders always expand a palette to colours, losing the palette indices that
class masks are made of.

A palette ("P" mode) file read as a *mask* gives each pixel's palette index (a VOC-style class mask) when its
palette has colours; when every colour its pixels use is grey, it is a grey image stored with a palette (GIF
always stores one; Pillow writes a 0/255 mask as a black/white palette) and gives those grey levels, as the same
mask saved without a palette would. Read as an *image*, a GIF gives its colours (RGB, or RGBA when it has a
transparent colour), or one grey channel when its colours are all grey; palette PNG images stay with OpenCV,
which gives their colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ternaus_zoo.data.errors import DECODER_ERRORS, DataError


def _grey_levels(image: Image.Image, indices: np.ndarray) -> np.ndarray | None:
    """The grey level of each pixel of a palette image, or ``None`` if a colour it uses is not grey."""
    palette = np.zeros((256, 3), np.uint8)
    entries = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)[:256]
    palette[: len(entries)] = entries
    used = palette[np.flatnonzero(np.bincount(indices.ravel(), minlength=256))]
    if not ((used == used[:, :1]).all()):
        return None
    return palette[:, 0][indices]


def read_pillow(path: Path, mask: bool) -> np.ndarray:
    """A GIF (first frame) or palette PNG as ``(H, W, C)`` in RGB(A) order (see the module docstring)."""
    try:
        with Image.open(path) as image:
            image.seek(0)  # the first frame of an animated GIF
            image.load()
            transparent = "A" in image.mode or "transparency" in image.info
            pixels = None
            if image.mode in ("P", "PA"):
                indices = np.asarray(image)
                indices = indices[:, :, 0] if indices.ndim == 3 else indices  # "PA": index and alpha
                grey = _grey_levels(image, indices)
                if mask:
                    pixels = indices if grey is None else grey
                elif grey is not None and not transparent:
                    pixels = grey  # a grey image that its writer stored with a palette
            elif image.mode in ("L", "RGB", "RGBA"):
                pixels = np.asarray(image)
            if pixels is None:  # colour palettes, "1", "LA"...: their colours, keeping the transparency
                pixels = np.asarray(image.convert("RGBA" if transparent else "RGB"))
    except (*DECODER_ERRORS, Image.DecompressionBombError) as error:
        raise DataError(path, f"not a readable image (corrupt or unsupported format): {error}") from error
    return pixels[:, :, None] if pixels.ndim == 2 else pixels
