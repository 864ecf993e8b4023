from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ternaus_zoo.data.shapes import draw_shapes


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    """A tiny data set on disk: 8 pairs of ``images/*.jpg`` and ``masks/*.png`` (0/255), of two sizes."""
    root = tmp_path / "shapes"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(8):
        image, mask = draw_shapes(48, np.random.default_rng(index))
        if index % 2:
            image, mask = image[:37, :45], mask[:37, :45]
        cv2.imwrite(str(root / "images" / f"case{index}.jpg"), image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"case{index}.png"), mask * 255)
    return root


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """8 images with class-index masks: 0 background, 1 left half of a square, 2 right half, 9 ignored."""
    root = tmp_path / "classes"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        image = rng.integers(0, 80, size=(40, 40, 3), dtype=np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        top, left = rng.integers(0, 20, size=2)
        mask[top : top + 16, left : left + 8] = 1
        mask[top : top + 16, left + 8 : left + 16] = 2
        image[mask == 1] = (200, 50, 50)
        image[mask == 2] = (50, 200, 50)
        mask[:2] = 9
        cv2.imwrite(str(root / "images" / f"f{index}.png"), image)
        cv2.imwrite(str(root / "masks" / f"f{index}.png"), mask)
    return root
