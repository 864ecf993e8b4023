"""Each cleaning step on small hand-made masks whose answer is known, in the three mask modes."""

from __future__ import annotations

import numpy as np
import pytest

from ternaus_zoo.inference.postprocessing import (
    PostProcessingStep,
    apply_steps,
    component_areas,
    fill_holes,
    keep_largest_component,
    remove_small_components,
    steps_from_dicts,
)


def _canvas() -> np.ndarray:
    """A 10x10 mask: a 4x4 block (16 px) with a 1-px hole, a 2x2 block (4 px), a diagonal pair (2 px, 8-connected)."""
    mask = np.zeros((10, 10), bool)
    mask[1:5, 1:5] = True
    mask[2, 2] = False  # the hole: 15 px left in the block
    mask[7:9, 7:9] = True
    mask[0, 8] = mask[1, 9] = True
    return mask


def test_components_are_eight_connected():
    assert sorted(component_areas(_canvas()).tolist()) == [2, 4, 15]


def test_remove_small_components():
    cleaned = remove_small_components(_canvas(), min_area=3)
    expected = _canvas()
    expected[0, 8] = expected[1, 9] = False
    assert np.array_equal(cleaned, expected)
    assert not remove_small_components(_canvas(), min_area=16).any()


def test_keep_largest_component():
    expected = np.zeros((10, 10), bool)
    expected[1:5, 1:5] = True
    expected[2, 2] = False
    assert np.array_equal(keep_largest_component(_canvas()), expected)
    assert not keep_largest_component(np.zeros((3, 3), bool)).any()


def test_fill_holes_fills_enclosed_background_only():
    filled = fill_holes(_canvas())
    expected = _canvas()
    expected[2, 2] = True
    assert np.array_equal(filled, expected)
    ring_on_border = np.ones((3, 3), bool)
    ring_on_border[1, 2] = False  # open to the border: not a hole
    ring_on_border[1, 1] = False
    assert np.array_equal(fill_holes(ring_on_border), ring_on_border)


def test_remove_small_takes_a_fraction_of_the_image():
    step = PostProcessingStep("remove_small", "foreground", min_fraction=0.03)  # 3 px of 100
    assert sorted(component_areas(step(_canvas(), "binary")).tolist()) == [4, 15]


def test_class_masks_foreground_and_per_class():
    labels = np.zeros((8, 8), np.int64)
    labels[0:3, 0:3] = 1  # class 1, 9 px ...
    labels[1, 1] = 0  # ... with a background hole
    labels[0:3, 3:5] = 2  # class 2 touching it: one foreground component of 14 px
    labels[6:8, 6:8] = 2  # a second class-2 component of 4 px
    foreground = PostProcessingStep("keep_largest", "foreground")(labels, "classes")
    expected = labels.copy()
    expected[6:8, 6:8] = 0
    assert np.array_equal(foreground, expected)

    labels[6, 0] = 1  # a 1 px class-1 speck: the foreground's largest component loses it too
    per_class = PostProcessingStep("keep_largest", "per_class")(labels, "classes")
    assert np.array_equal(per_class, expected)  # class 1 keeps its 8 px, class 2 its 6 px block
    labels[6, 0] = 0

    filled = PostProcessingStep("fill_holes", "per_class")(labels, "classes")
    assert filled[1, 1] == 1 and np.array_equal(np.delete(filled.ravel(), 9), np.delete(labels.ravel(), 9))
    surrounded = np.ones((5, 5), np.int64)
    surrounded[2, 2] = 2  # another class inside class 1 is no hole
    assert np.array_equal(PostProcessingStep("fill_holes", "per_class")(surrounded, "classes"), surrounded)


def test_multilabel_foreground_is_the_union_of_the_channels():
    masks = np.zeros((2, 6, 6), bool)
    masks[0, 0:2, 0:2] = True  # 4 px, touching channel 1's block: together 8 px
    masks[1, 0:2, 2:4] = True
    masks[1, 5, 5] = True  # a 1 px speck
    union = PostProcessingStep("remove_small", "foreground", min_fraction=2 / 36)(masks, "multilabel")
    expected = masks.copy()
    expected[1, 5, 5] = False
    assert np.array_equal(union, expected)
    per_class = PostProcessingStep("keep_largest", "per_class")(masks, "multilabel")
    assert np.array_equal(per_class, expected)


def test_steps_round_trip_and_check_their_arguments():
    steps = [PostProcessingStep("remove_small", "foreground", 0.01), PostProcessingStep("fill_holes")]
    assert steps_from_dicts([step.to_dict() for step in steps]) == steps
    expected = remove_small_components(_canvas(), 1)
    expected[2, 2] = True
    assert np.array_equal(apply_steps(_canvas(), steps, "binary"), expected)
    with pytest.raises(ValueError, match="min_fraction"):
        PostProcessingStep("keep_largest", min_fraction=0.1)
    with pytest.raises(ValueError, match="one of"):
        PostProcessingStep("dilate")
