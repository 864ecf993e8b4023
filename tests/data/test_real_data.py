"""The real data sets under TERNAUS_ZOO_DATA (skipped with the reason where absent); a few files each."""

from __future__ import annotations

import numpy as np
import pytest

from ternaus_zoo.data import (
    SegmentationDataModule,
    SegmentationDataset,
    holdout_split,
    read_binary_mask,
    read_class_mask,
    read_image,
)

pytestmark = pytest.mark.data


def test_kvasir_pairs_and_benchmark_holdout(dataset_dir):
    folder = dataset_dir("kvasir-seg")
    dataset = SegmentationDataset(folder / "images", folder / "masks")
    assert len(dataset) == 1000
    assert all(path.suffix == ".jpg" for path in dataset.masks.values())
    holdout, rest = holdout_split(dataset.stems, every=5)
    assert len(holdout) == 200 and len(rest) == 800


def test_kvasir_jpeg_masks_binarise_to_about_15_percent(dataset_dir):
    folder = dataset_dir("kvasir-seg")
    stems = sorted(path.stem for path in (folder / "masks").iterdir())[::100]
    masks = [read_binary_mask(folder / "masks" / f"{stem}.jpg") for stem in stems]
    assert all(set(np.unique(mask).tolist()) <= {0, 1} for mask in masks)
    fraction = sum(mask.sum() for mask in masks) / sum(mask.size for mask in masks)
    assert 0.05 < fraction < 0.30
    image = read_image(folder / "images" / f"{stems[0]}.jpg")
    assert image.shape[:2] == masks[0].shape and image.shape[2] == 3


def test_camvid_masks_are_classes_0_to_10_with_void_11(dataset_dir):
    folder = dataset_dir("camvid-val")
    for path in sorted((folder / "masks").iterdir())[:5]:
        mask = read_class_mask(path, num_classes=11, ignore_index=11)
        assert mask.shape == (360, 480) and mask.max() <= 11


def test_membrane_has_30_grey_pairs(dataset_dir):
    folder = dataset_dir("membrane")
    dataset = SegmentationDataset(folder / "images", folder / "masks")
    assert len(dataset) == 30 and dataset.image_channels == 1
    item = dataset[0]
    assert item["image"].shape == (1, 512, 512)
    assert 0.6 < item["mask"].mean().item() < 0.9  # cell interior is about 78 %


def test_kvasir_data_module_uses_the_benchmark_split(data_root):
    data = SegmentationDataModule("kvasir-seg", str(data_root), holdout_every=5, num_workers=0, val_size=64)
    data.setup("fit")
    assert len(data.stems_of("test")) == 200
    assert len(data.stems_of("train")) == 640 and len(data.stems_of("val")) == 160
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["mask"].shape == (8, 1, 64, 64)
