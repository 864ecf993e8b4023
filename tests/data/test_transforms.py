"""albumentations pipelines: shapes, dtypes, mask values after augmentation, padding, inversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ternaus_zoo.data import build_transforms, restore_original_size, train_transforms, val_transforms, valid_size
from ternaus_zoo.registry import ModelInfo

from .synthetic import disc_mask, random_image

INFO = ModelInfo(name="test", task="segmentation", description="test", size_multiple=32)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("image_size", [(20, 17), (300, 180)])  # smaller and larger than the crop
def test_train_shapes_and_binary_mask_values(channels, image_size):
    transform = train_transforms(INFO.for_channels(channels), 64)
    image = random_image(*image_size, channels=3)[:, :, :1].repeat(channels, 2)
    mask = (disc_mask(*image_size) > 0).astype(np.uint8)
    for _ in range(5):
        output = transform(image=image, mask=mask)
        assert output["image"].shape == (channels, 64, 64) and output["image"].dtype == torch.float32
        assert output["mask"].shape == (64, 64)
        assert set(output["mask"].unique().tolist()) <= {0, 1}


def test_train_keeps_the_class_set_and_16_bit_input():
    classes = np.random.default_rng(0).choice([0, 3, 7, 11], size=(90, 70)).astype(np.uint8)
    image = np.random.default_rng(1).random((90, 70, 3), dtype=np.float32)
    for _ in range(5):
        output = train_transforms(INFO, 48)(image=image, mask=classes)
        assert set(output["mask"].unique().tolist()) <= {0, 3, 7, 11}


def test_normalisation_uses_info_statistics():
    info = ModelInfo(name="t", task="segmentation", description="", mean=(0.5,), std=(0.25,), in_channels=1)
    grey = np.full((32, 32, 1), 255, np.uint8)
    output = val_transforms(info)(image=grey)["image"]
    torch.testing.assert_close(output, torch.full((1, 32, 32), 2.0))
    as_float = val_transforms(info)(image=np.ones((32, 32, 1), np.float32))["image"]
    torch.testing.assert_close(as_float, output)


def test_hue_saturation_only_for_rgb():
    names = [type(step).__name__ for step in train_transforms(INFO).transforms]
    assert "HueSaturationValue" in names and "D4" in names
    names = [type(step).__name__ for step in train_transforms(INFO.for_channels(1), d4=False).transforms]
    assert "HueSaturationValue" not in names and "HorizontalFlip" in names and "D4" not in names
    names = [type(step).__name__ for step in train_transforms(INFO, color=False).transforms]
    assert "RandomBrightnessContrast" not in names


@pytest.mark.parametrize("size", [(33, 70), (64, 64), (5, 3)])
def test_val_pads_to_the_multiple_top_left(size):
    image, mask = random_image(*size), np.ones(size, np.uint8)
    output = val_transforms(INFO, mask_fill=255)(image=image, mask=mask)
    height, width = output["image"].shape[1:]
    assert height % 32 == 0 and width % 32 == 0 and height - size[0] < 32 and width - size[1] < 32
    assert (output["mask"][: size[0], : size[1]] == 1).all()
    assert (output["mask"] == 255).sum() == height * width - size[0] * size[1]
    assert (output["image"][:, size[0] :, :] == 0).all()


@pytest.mark.parametrize("size", [(1072, 1920), (529, 622), (360, 480), (100, 50), (17, 300)])
@pytest.mark.parametrize("val_size", [224, 250])
def test_val_size_gives_a_fixed_square_and_valid_size_matches(size, val_size):
    image = np.zeros((*size, 3), np.uint8)
    output = val_transforms(INFO, val_size, mask_fill=7)(image=image, mask=np.ones(size, np.uint8))
    side = -(-val_size // 32) * 32
    assert output["image"].shape == (3, side, side)
    height, width = valid_size(size, val_size)
    assert max(height, width) == val_size
    assert (output["mask"][:height, :width] == 1).all() and (output["mask"] == 1).sum() == height * width


def test_restore_original_size_inverts_the_geometry():
    size = (90, 120)
    mask = disc_mask(*size) // 255
    output = val_transforms(INFO, 64)(image=random_image(*size), mask=mask)["mask"]
    restored = restore_original_size(output[None, None].float(), size, 64, mode="nearest")
    assert restored.shape == (1, 1, *size)
    assert (restored[0, 0].numpy() != mask).mean() < 0.05
    full = val_transforms(INFO)(image=random_image(*size), mask=mask)["mask"]
    assert torch.equal(restore_original_size(full[None], size), torch.from_numpy(mask)[None])


def test_build_transforms_from_config():
    train = build_transforms({"name": "train", "size": 32, "d4": False, "scale": [0.3, 1.0]}, INFO)
    assert train(image=random_image(50, 50), mask=np.zeros((50, 50), np.uint8))["image"].shape == (3, 32, 32)
    val = build_transforms({"name": "val", "size": 40}, INFO)
    assert val(image=random_image(50, 20))["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match="name"):
        build_transforms({"size": 32}, INFO)
    with pytest.raises(TypeError, match="flips"):
        build_transforms({"name": "train", "flips": True}, INFO)
