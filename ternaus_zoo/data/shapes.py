"""Synthetic shapes on textured backgrounds: a data set that needs no files and no network, for the
demo and for end-to-end tests of the pipeline."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ternaus_zoo.data.transforms import val_transforms
from ternaus_zoo.registry import ModelInfo


def draw_shapes(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ``uint8`` image ``(size, size, 3)`` with 1-3 filled shapes and their ``{0, 1}`` mask."""
    background = rng.integers(40, 200, size=3)
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    image += rng.normal(0, 25, size=(size, size, 3))  # texture, so colour alone does not give the mask away
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        centre = rng.integers(size // 8, size - size // 8, size=2)
        radius = int(rng.integers(size // 10, size // 4))
        kind = rng.integers(3)
        layer = np.zeros_like(mask)
        if kind == 0:
            cv2.circle(layer, tuple(int(c) for c in centre), radius, 1, thickness=-1)
        elif kind == 1:
            cv2.rectangle(layer, tuple(int(c) for c in centre - radius), tuple(int(c) for c in centre + radius), 1, -1)
        else:
            angles = rng.uniform(0, 2 * np.pi, size=3)
            points = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            cv2.fillPoly(layer, [points.astype(np.int32)], 1)
        image[layer > 0] = np.asarray(colour, np.float32) + rng.normal(0, 10, size=(int(layer.sum()), 3))
        mask |= layer
    return np.clip(image, 0, 255).astype(np.uint8), mask


class ShapesDataset(Dataset):
    """``length`` deterministic items (item ``i`` is drawn from seed ``seed + i``), as the folder
    datasets give them: ``image`` ``(3, size, size)`` normalised for ``info``, ``mask`` ``(1, size, size)``
    float {0, 1}, ``name`` and ``original_size``."""

    def __init__(self, length: int, info: ModelInfo, size: int = 96, seed: int = 0) -> None:
        self.length, self.size, self.seed = length, size, seed
        self.transform = val_transforms(info)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} shapes")
        image, mask = draw_shapes(self.size, np.random.default_rng(self.seed + index))
        output = self.transform(image=image, mask=mask)
        return {
            "image": output["image"],
            "mask": torch.as_tensor(output["mask"]).float().unsqueeze(0),
            "name": f"shapes_{self.seed + index}",
            "original_size": torch.tensor([self.size, self.size]),
        }
