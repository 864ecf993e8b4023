"""Small synthetic image/mask folders written with OpenCV into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .synthetic import disc_mask, random_image, write


@pytest.fixture
def make_folder(tmp_path):
    """``make_folder(n, image_ext=".png", mask_ext=".png", size=(H, W), classes=None)`` -> (images, masks).

    Binary masks hold a disc of 255; with ``classes=k`` masks hold class indices ``0..k-1`` in bands.
    """

    def make(
        n: int = 6,
        image_ext: str = ".png",
        mask_ext: str = ".png",
        size: tuple[int, int] = (40, 56),
        classes: int | None = None,
        root: Path | None = None,
    ) -> tuple[Path, Path]:
        root = root or tmp_path
        images, masks = root / "images", root / "masks"
        for index in range(n):
            stem = f"item{index:02d}"
            write(images / f"{stem}{image_ext}", random_image(*size, seed=index))
            if classes is None:
                mask = disc_mask(*size)
            else:
                mask = (np.arange(size[1])[None, :].repeat(size[0], 0) * classes // size[1]).astype(np.uint8)
            write(masks / f"{stem}{mask_ext}", mask)
        return images, masks

    return make
