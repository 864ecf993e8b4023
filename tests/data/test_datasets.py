"""Pairing by stem, item dicts, and every kind of bad input: raised by default, skipped on request."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ternaus_zoo.data import DataError, ImageFolderDataset, SegmentationDataset, train_transforms, worker_init_fn
from ternaus_zoo.registry import ModelInfo

from .synthetic import disc_mask, random_image, write

INFO = ModelInfo(name="test", task="segmentation", description="test", size_multiple=16)


def test_pairs_by_stem_across_extensions(make_folder):
    images, masks = make_folder(4, image_ext=".jpg", mask_ext=".png")
    write(images / "extra.tif", random_image(40, 56, seed=9))
    write(masks / "extra.bmp", disc_mask(40, 56))
    dataset = SegmentationDataset(images, masks)
    assert dataset.stems == ["extra", "item00", "item01", "item02", "item03"]
    assert dataset.masks["extra"].suffix == ".bmp"


def test_binary_item_without_transform(make_folder):
    images, masks = make_folder(2, size=(20, 30))
    item = SegmentationDataset(images, masks)[0]
    assert set(item) == {"image", "mask", "name", "original_size"}
    assert item["image"].shape == (3, 20, 30) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    assert item["mask"].shape == (1, 20, 30) and item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["name"] == "item00" and item["original_size"].tolist() == [20, 30]


def test_class_item_and_transform(make_folder):
    images, masks = make_folder(2, size=(20, 30), classes=4)
    dataset = SegmentationDataset(
        images, masks, mask_mode="classes", num_classes=4, transform=train_transforms(INFO, 16)
    )
    item = dataset[1]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (16, 16)
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) <= {0, 1, 2, 3}
    assert item["original_size"].tolist() == [20, 30]


def test_16_bit_class_masks(tmp_path):
    mask = np.array([[0, 299], [1000, 5]], np.uint16)
    write(tmp_path / "images" / "a.png", random_image(2, 2))
    write(tmp_path / "masks" / "a.png", mask)
    dataset = SegmentationDataset(tmp_path / "images", tmp_path / "masks", mask_mode="classes", num_classes=300)
    with pytest.raises(DataError, match="1000"):
        dataset[0]
    dataset = SegmentationDataset(
        tmp_path / "images", tmp_path / "masks", mask_mode="classes", num_classes=300, ignore_index=1000
    )
    assert dataset[0]["mask"].tolist() == mask.tolist()
    dataset.transform = train_transforms(INFO, 4)
    assert set(dataset[0]["mask"].unique().tolist()) <= {0, 5, 299, 1000}


def test_mask_suffix(tmp_path):
    write(tmp_path / "images" / "a.png", random_image(8, 8))
    write(tmp_path / "masks" / "a_mask.png", disc_mask(8, 8))
    dataset = SegmentationDataset(tmp_path / "images", tmp_path / "masks", mask_suffix="_mask")
    assert dataset.stems == ["a"] and dataset[0]["name"] == "a"


def test_classes_mode_needs_num_classes(make_folder):
    images, masks = make_folder(1)
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationDataset(images, masks, mask_mode="classes")
    with pytest.raises(ValueError, match="mask_mode"):
        SegmentationDataset(images, masks, mask_mode="multi")


def test_missing_masks_are_listed(make_folder):
    images, masks = make_folder(8)
    for index in range(7):
        (masks / f"item{index:02d}.png").unlink()
    with pytest.raises(DataError, match=r"7 image\(s\) without a mask .*item00\.png.*\(and 2 more\)"):
        SegmentationDataset(images, masks)


def test_mask_without_image_is_named(make_folder):
    images, masks = make_folder(2)
    write(masks / "orphan.png", disc_mask(40, 56))
    with pytest.raises(DataError, match=r"1 mask\(s\) without an image .*orphan\.png"):
        SegmentationDataset(images, masks)


def test_duplicate_stems_are_named(make_folder):
    images, masks = make_folder(2)
    write(images / "item00.jpg", random_image(40, 56))
    with pytest.raises(DataError, match=r"item00\.jpg and item00\.png"):
        SegmentationDataset(images, masks)


def test_empty_and_missing_folders(tmp_path, make_folder):
    images, masks = make_folder(1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        SegmentationDataset(images, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="absent"):
        SegmentationDataset(tmp_path / "absent", masks)


def test_size_mismatch_names_both_files_when_read(make_folder):
    images, masks = make_folder(2)
    write(masks / "item01.png", disc_mask(10, 10))
    dataset = SegmentationDataset(images, masks)  # construction checks names only
    with pytest.raises(DataError, match=r"item01\.png: image size \(40, 56\) differs from its mask's \(10, 10\)"):
        dataset[1]


def test_bad_class_values_raise_when_read(make_folder):
    images, masks = make_folder(2, classes=5)
    dataset = SegmentationDataset(images, masks, mask_mode="classes", num_classes=4)
    with pytest.raises(DataError, match=r"item00\.png: mask values 4 are outside"):
        dataset[0]


def test_ignore_index_passes_through(make_folder):
    images, masks = make_folder(1, classes=5)
    dataset = SegmentationDataset(images, masks, mask_mode="classes", num_classes=4, ignore_index=4)
    assert dataset[0]["mask"].unique().tolist() == [0, 1, 2, 3, 4]


def test_validate_lists_every_bad_file(make_folder):
    images, masks = make_folder(4)
    (images / "item01.png").write_bytes(b"")
    write(masks / "item02.png", disc_mask(10, 10))
    dataset = SegmentationDataset(images, masks)
    with pytest.raises(DataError, match=r"2 bad item\(s\).*item01\.png \(empty file.*item02\.png \(image size"):
        dataset.validate()


def test_skip_bad_counts_logs_and_exposes(make_folder, caplog):
    images, masks = make_folder(6)
    (masks / "item00.png").unlink()  # image without mask
    write(masks / "orphan.png", disc_mask(40, 56))  # mask without image
    (images / "item01.png").write_bytes(b"garbage")  # unreadable
    write(masks / "item02.png", disc_mask(10, 10))  # size mismatch
    with caplog.at_level(logging.WARNING, logger="ternaus_zoo.data"):
        dataset = SegmentationDataset(images, masks, skip_bad=True)
    assert dataset.stems == ["item03", "item04", "item05"]
    reasons = {path.name: reason for path, reason in dataset.skipped}
    assert set(reasons) == {"item00.png", "orphan.png", "item01.png", "item02.png"}
    assert "no mask" in reasons["item00.png"] and "not a readable image" in reasons["item01.png"]
    assert "skipped 2 item(s)" in caplog.text and "orphan.png" in caplog.text
    assert all(record.name == "ternaus_zoo.data" for record in caplog.records)
    # stems of skipped items are dropped from a subset; unknown stems still raise
    assert dataset.subset(["item00", "item03"]).stems == ["item03"]
    with pytest.raises(KeyError, match="nope"):
        dataset.subset(["nope"])


def test_stems_restrict_and_unknown_stems_raise(make_folder):
    images, masks = make_folder(5)
    dataset = SegmentationDataset(images, masks, stems=["item03", "item01"])
    assert dataset.stems == ["item01", "item03"] and len(dataset) == 2
    with pytest.raises(KeyError, match="item99"):
        SegmentationDataset(images, masks, stems=["item01", "item99"])


def test_subset_shares_files_but_not_transform(make_folder):
    images, masks = make_folder(4)
    dataset = SegmentationDataset(images, masks)
    part = dataset.subset(["item02"], transform=train_transforms(INFO, 16))
    assert len(part) == 1 and part[0]["image"].shape == (3, 16, 16)
    assert dataset.transform is None and len(dataset) == 4


def test_transform_for_wrong_channel_count_is_refused(make_folder):
    images, masks = make_folder(1)
    grey_info = INFO.for_channels(1)
    dataset = SegmentationDataset(images, masks, transform=train_transforms(grey_info, 16))
    with pytest.raises(ValueError, match=r"built for 1-channel images but got 3.*for_channels\(3\)"):
        dataset[0]
    converted = SegmentationDataset(images, masks, transform=train_transforms(grey_info, 16), channels=1)
    assert converted.image_channels == 1 and converted[0]["image"].shape == (1, 16, 16)


def test_image_folder_dataset(tmp_path):
    write(tmp_path / "b.png", random_image(9, 11, channels=1))
    write(tmp_path / "a.jpg", random_image(7, 5))
    dataset = ImageFolderDataset(tmp_path)
    assert len(dataset) == 2
    item = dataset[0]
    assert set(item) == {"image", "name", "original_size"}
    assert item["name"] == "a" and item["image"].shape == (3, 7, 5) and item["original_size"].tolist() == [7, 5]
    assert dataset[1]["image"].shape == (1, 9, 11)
    assert ImageFolderDataset(tmp_path, channels=3)[1]["image"].shape == (3, 9, 11)


def test_workers_get_distinct_augmentations(tmp_path):
    """albumentations 2 keeps its random state in Compose: without reseeding, forked workers repeat
    each other (batches 0 and 1 equal, 2 and 3 equal) and every epoch repeats the previous one."""
    pixels = random_image(64, 64, channels=1)
    for index in range(4):
        write(tmp_path / "images" / f"{index}.png", pixels)
        write(tmp_path / "masks" / f"{index}.png", disc_mask(64, 64))
    transform = train_transforms(INFO.for_channels(1), 16, color=False)
    dataset = SegmentationDataset(tmp_path / "images", tmp_path / "masks", transform=transform)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)
    epochs = [[batch["image"].sum().item() for batch in loader] for _ in range(2)]
    assert epochs[0] != epochs[1]
    for sums in epochs:
        assert (sums[0], sums[2]) != (sums[1], sums[3])
