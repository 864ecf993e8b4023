"""Masks drawn as pictures: the overlay's colours and opacity, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ternaus_zoo.data.display import CLASS_COLOURS, colour_masks, overlay


def test_class_mask_overlay_paints_each_class_but_background_in_its_colour():
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 2], [3, 0, 255]], np.uint8)  # 255: past the palette, drawn white
    painted = overlay(image, mask, binary=False, alpha=0.25)
    assert painted.dtype == np.uint8 and painted.shape == (2, 3, 3)
    assert painted[0, 0].tolist() == [100, 100, 100] and painted[1, 1].tolist() == [100, 100, 100]
    # 0.75 * 100 + 0.25 * colour
    assert painted[0, 1].tolist() == [round(75 + 0.25 * c) for c in CLASS_COLOURS[1]]
    assert painted[0, 2].tolist() == [round(75 + 0.25 * c) for c in CLASS_COLOURS[2]]
    assert painted[1, 0].tolist() == [round(75 + 0.25 * c) for c in CLASS_COLOURS[3]]
    assert painted[1, 2].tolist() == [round(75 + 0.25 * 255)] * 3


def test_binary_overlay_of_grey_and_deep_images():
    grey = np.zeros((2, 2, 1), np.uint8)
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    painted = overlay(grey, mask, binary=True)
    assert painted[0, 0].tolist() == [0, 0, 0]
    assert painted[0, 1].tolist() == [round(0.5 * c) for c in CLASS_COLOURS[1]]
    deep = np.full((2, 2, 3), 0.5, np.float32)  # a 16-bit file as read: float in [0, 1]
    assert overlay(deep, mask, binary=True)[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(ValueError, match="differ in size"):
        overlay(grey, mask[:1], binary=True)


def test_colour_masks_of_indices_and_probabilities():
    labels = torch.tensor([[[0, 2]]])
    pictures = colour_masks(labels)
    assert pictures.shape == (1, 3, 1, 2)
    assert torch.allclose(pictures[0, :, 0, 1], torch.tensor(CLASS_COLOURS[2]) / 255)
    probabilities = torch.tensor([[[[0.25, 1.5]]]])
    assert torch.equal(colour_masks(probabilities)[0, :, 0, 1], torch.ones(3))
    assert torch.equal(colour_masks(probabilities)[0, :, 0, 0], torch.full((3,), 0.25))
