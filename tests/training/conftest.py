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
