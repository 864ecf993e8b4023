"""Multi-label segmentation masks: a folder per class or a multi-channel file, classes that overlap."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch

from ternaus_zoo.data import SegmentationDataModule, SegmentationDataset
from ternaus_zoo.data.errors import DataError
from ternaus_zoo.data.io import read_multilabel_mask


def write_class_folders(root: Path, count: int = 6, size: int = 24) -> dict[str, np.ndarray]:
    """``images/`` and ``masks/{ground,road}/``: road is the top band, ground the top two bands (road within it)."""
    (root / "images").mkdir(parents=True)
    expected = {}
    for index in range(count):
        stem = f"frame{index}"
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((size, size, 3), 30 * index, np.uint8))
        road = np.zeros((size, size), np.uint8)
        road[: 4 + index] = 1
        ground = np.zeros((size, size), np.uint8)
        ground[: 10 + index] = 1
        for name, mask in (("road", road), ("ground", ground)):
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "masks" / name / f"{stem}.png"), mask * 255)
        expected[stem] = np.stack([road, ground])
    return expected


def test_class_folders_stack_in_the_given_order_and_may_overlap(tmp_path):
    expected = write_class_folders(tmp_path)
    dataset = SegmentationDataset(
        tmp_path / "images", tmp_path / "masks", mask_mode="multilabel", num_classes=2, class_folders=["road", "ground"]
    )
    item = dataset[1]
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (2, 24, 24)
    np.testing.assert_array_equal(item["mask"].numpy(), expected["frame1"])
    assert (item["mask"][0] <= item["mask"][1]).all() and item["mask"][0].sum() > 0  # road lies within ground
    default = SegmentationDataset(tmp_path / "images", tmp_path / "masks", mask_mode="multilabel", num_classes=2)
    np.testing.assert_array_equal(default[1]["mask"].numpy(), expected["frame1"][::-1])  # sorted: ground, road


def test_class_folders_that_disagree_are_named(tmp_path):
    write_class_folders(tmp_path)
    (tmp_path / "masks" / "road" / "frame3.png").unlink()
    with pytest.raises(DataError, match=r"masks/road: holds other masks than ground/: frame3"):
        SegmentationDataset(tmp_path / "images", tmp_path / "masks", mask_mode="multilabel", num_classes=2)
    with pytest.raises(DataError, match="need 3 of them"):
        SegmentationDataset(tmp_path / "images", tmp_path / "masks", mask_mode="multilabel", num_classes=3)


def test_multichannel_tiff_and_png_masks(tmp_path):
    stack = np.zeros((3, 8, 8), np.uint8)
    stack[0, :2] = 255
    stack[1, :4] = 255
    stack[2, 6:] = 255
    tifffile.imwrite(tmp_path / "three.tif", stack, photometric="minisblack")  # three pages, one per class
    np.testing.assert_array_equal(read_multilabel_mask(tmp_path / "three.tif", 3), stack.transpose(1, 2, 0) // 255)
    cv2.imwrite(str(tmp_path / "three.png"), stack.transpose(1, 2, 0)[..., ::-1])  # PNG channels in BGR order
    np.testing.assert_array_equal(read_multilabel_mask(tmp_path / "three.png", 3), stack.transpose(1, 2, 0) // 255)
    with pytest.raises(DataError, match="one channel per class: 3, not 2"):
        read_multilabel_mask(tmp_path / "three.png", 2)


def test_data_module_loads_multilabel_batches_with_augmentations(tmp_path):
    write_class_folders(tmp_path / "streets")
    module = SegmentationDataModule(
        "streets", str(tmp_path), mask_mode="multilabel", num_classes=2, class_names=["road", "ground"],
        n_folds=3, image_size=16, val_size=24, batch_size=2, num_workers=0, scale=(0.5, 1.0),
    )  # fmt: skip
    module.setup("fit")
    train = next(iter(module.train_dataloader()))
    assert train["mask"].shape == (2, 2, 16, 16) and set(train["mask"].unique().tolist()) <= {0.0, 1.0}
    val = next(iter(module.val_dataloader()))
    assert val["mask"].shape[1] == 2
    assert (val["mask"][:, 0] <= val["mask"][:, 1]).all()  # the geometry is shared by both channels
