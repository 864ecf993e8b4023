"""Masks from a COCO annotation file: polygons, compressed and uncompressed RLE, the class order, overlaps."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask  # the coco extra, part of the test extra

from ternaus_zoo.data import SegmentationDataModule, SegmentationDataset
from ternaus_zoo.data.coco import CocoMasks
from ternaus_zoo.data.errors import DataError

HEIGHT, WIDTH = 12, 16


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE, by hand: run lengths of the column-major pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": [HEIGHT, WIDTH], "counts": runs}


def write_coco(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Three images: ``a`` with a polygon "road" (category 7) and a smaller RLE "car" (category 3) on it,
    ``b`` with an uncompressed-RLE car, ``c`` with no annotation. Returns the file and the expected masks."""
    (root / "images").mkdir(parents=True)
    for stem in "abc":
        cv2.imwrite(str(root / "images" / f"{stem}.png"), np.full((HEIGHT, WIDTH, 3), 80, np.uint8))
    car_a = np.zeros((HEIGHT, WIDTH), np.uint8)
    car_a[4:7, 5:9] = 1
    car_b = np.zeros((HEIGHT, WIDTH), np.uint8)
    car_b[0:3, 10:16] = 1
    car_b[8:12, 0:2] = 1
    compressed = coco_mask.encode(np.asfortranarray(car_a))
    compressed["counts"] = compressed["counts"].decode("ascii")  # as JSON files hold it
    road = [[2.0, 2.0, 14.0, 2.0, 14.0, 10.0, 2.0, 10.0]]  # a rectangle, corners x, y
    content = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": "sub/b.jpg", "height": HEIGHT, "width": WIDTH},
            {"id": 3, "file_name": "c.png", "height": HEIGHT, "width": WIDTH},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "segmentation": compressed, "iscrowd": 1},
            {"id": 11, "image_id": 1, "category_id": 7, "segmentation": road, "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 3, "segmentation": uncompressed_rle(car_b), "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "road"}, {"id": 3, "name": "car"}],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(content))
    road_mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(road, HEIGHT, WIDTH)))
    expected_a = np.where(road_mask == 1, 2, 0).astype(np.uint8)  # road: the larger id, class 2
    expected_a[car_a == 1] = 1  # the car lies on the road and is smaller: it keeps its pixels
    return path, {"a": expected_a, "b": car_b, "c": np.zeros((HEIGHT, WIDTH), np.uint8)}


def test_categories_become_classes_in_id_order_and_smaller_annotations_win(tmp_path):
    path, expected = write_coco(tmp_path)
    masks = CocoMasks(path)
    assert masks.category_ids == [3, 7] and masks.class_names == ["background", "car", "road"]
    assert masks.num_classes == 3
    for stem, mask in expected.items():
        np.testing.assert_array_equal(masks.mask(stem), mask, err_msg=stem)
    road = masks.mask("a")
    assert (road == 2).sum() > 60  # the rectangle of 12 x 8 minus the car's 12 pixels, at pycocotools' edges
    np.testing.assert_array_equal(masks.mask("a", "binary"), (expected["a"] > 0).astype(np.uint8))


def test_dataset_pairs_images_with_the_annotation_files_entries(tmp_path):
    path, expected = write_coco(tmp_path)
    dataset = SegmentationDataset(tmp_path / "images", path, mask_mode="classes", num_classes=3)
    assert dataset.stems == ["a", "b", "c"]
    for index, stem in enumerate(dataset.stems):
        np.testing.assert_array_equal(dataset[index]["mask"].numpy(), expected[stem])
    binary = SegmentationDataset(tmp_path / "images", path)
    assert binary[1]["mask"].shape == (1, HEIGHT, WIDTH) and binary[1]["mask"].sum() == expected["b"].sum()
    with pytest.raises(DataError, match="2 categories, so 3 classes"):
        SegmentationDataset(tmp_path / "images", path, mask_mode="classes", num_classes=2)


def test_image_missing_from_the_annotation_file_is_unpaired(tmp_path):
    path, _ = write_coco(tmp_path)
    cv2.imwrite(str(tmp_path / "images" / "d.png"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(DataError, match=r"without a mask.*d\.png"):
        SegmentationDataset(tmp_path / "images", path)
    assert SegmentationDataset(tmp_path / "images", path, skip_bad=True).stems == ["a", "b", "c"]


def test_bad_annotation_files_are_named(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json.*not a readable COCO"):
        SegmentationDataset(tmp_path / "images", broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="not a COCO annotation file"):
        SegmentationDataset(tmp_path / "images", other)


def test_data_module_reads_an_annotation_file_named_by_masks(tmp_path):
    write_coco(tmp_path / "streets")
    module = SegmentationDataModule(
        "streets", str(tmp_path), masks="annotations.json", mask_mode="classes", num_classes=3,
        n_folds=3, image_size=16, val_size=16, batch_size=1, num_workers=0,
    )  # fmt: skip
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert batch["mask"].dtype.is_floating_point is False and int(batch["mask"].max()) <= 2
    missing = SegmentationDataModule("streets", str(tmp_path), masks="nope.json", num_workers=0)
    with pytest.raises(Exception, match=r"data set file not found.*nope\.json"):
        missing.setup("fit")
