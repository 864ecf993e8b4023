"""Auxiliary targets on hand-made masks, the label CSV and its errors, mask-derived labels, the classification
data module's splits and batches, and a few real-data checks (miml, camvid-val)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ternaus_zoo.data import holdout_split
from ternaus_zoo.data.aux_targets import (
    IGNORE,
    class_mask_to_targets,
    downsample_targets,
    labels_from_mask,
    labels_to_targets,
)
from ternaus_zoo.data.classification_datamodule import ClassificationDataModule
from ternaus_zoo.data.errors import DataError
from ternaus_zoo.data.label_datasets import MaskLabelDataset, MultiLabelDataset, read_label_csv

LABELS = ("cat", "dog", "sky")


def write_csv_set(root: Path, n: int = 10, size: tuple[int, int] = (36, 44)) -> Path:
    """``root/images/{i}.png`` and ``root/labels.csv`` (``Filenames,cat,dog,sky``); returns ``root``."""
    (root / "images").mkdir(parents=True)
    rows = ["Filenames," + ",".join(LABELS)]
    rng = np.random.default_rng(0)
    for index in range(n):
        cv2.imwrite(str(root / "images" / f"{index}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        rows.append(f"{index}.png," + ",".join(str(v) for v in ((index >> np.arange(3)) & 1)))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def write_mask_set(root: Path, n: int = 5) -> Path:
    """Masks 20x30 of classes 0..2 with void 3: class 2 covers 2 + index pixels of 590 known ones."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(n):
        mask = np.zeros((20, 30), np.uint8)
        mask[:, 15:] = 1
        mask[0, :10] = 3  # 10 void pixels
        mask[5, 0 : 2 + index] = 2
        cv2.imwrite(str(root / "masks" / f"f{index}.png"), mask)
        cv2.imwrite(str(root / "images" / f"f{index}.png"), np.full((20, 30, 3), 20 * index, np.uint8))
    return root


# -- auxiliary targets ------------------------------------------------------------------------------


def test_class_mask_to_targets_one_hot_with_void():
    mask = torch.tensor([[0, 1, 2], [2, 3, 0]])
    targets = class_mask_to_targets(mask, num_classes=3, ignore_index=3)
    assert targets.shape == (3, 2, 3) and targets.dtype == torch.float32
    assert targets[:, 1, 1].tolist() == [IGNORE] * 3
    assert targets[:, 0, 0].tolist() == [1, 0, 0] and targets[:, 1, 0].tolist() == [0, 0, 1]
    batched = class_mask_to_targets(mask[None].repeat(2, 1, 1), 3, 3)
    assert batched.shape == (2, 3, 2, 3) and torch.equal(batched[1], targets)
    with pytest.raises(ValueError, match=r"\[3\] are outside 0..2"):
        class_mask_to_targets(mask, num_classes=3)


def test_labels_to_targets_broadcast_and_hpa_channel():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    broadcast = labels_to_targets(labels, size=(2, 3))
    assert broadcast.shape == (2, 2, 2, 3) and broadcast[0, 0].eq(1).all() and broadcast[0, 1].eq(0).all()
    channel = torch.tensor([[[0.9, 0.1, 0.6], [0.0, 0.7, 0.2]]]).repeat(2, 1, 1)
    hpa = labels_to_targets(labels, channel=channel, threshold=0.5)
    stain = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    assert torch.equal(hpa[0, 0], stain) and hpa[0, 1].eq(0).all() and torch.equal(hpa[1, 1], stain)
    with pytest.raises(ValueError, match="does not match labels"):
        labels_to_targets(labels, channel=channel[0])


def test_downsample_area_gives_cell_fractions_and_max_any_pixel():
    # one class, 4x4, stride 2: cells hold 4, 1, 0 and 2 positive pixels
    target = torch.tensor(
        [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        dtype=torch.float32,
    )[None]
    soft, valid = downsample_targets(target, stride=2)
    assert soft.shape == (1, 2, 2) and valid.all()
    assert torch.allclose(soft[0], torch.tensor([[1.0, 0.25], [0.0, 0.5]]))
    hard, _ = downsample_targets(target, stride=2, mode="max")
    assert torch.equal(hard[0], torch.tensor([[1.0, 1.0], [0.0, 1.0]]))


def test_downsample_ignores_void_and_partial_cells():
    # 3x5, stride 2 -> 2x3 cells; the last row and column are partial, void pixels do not count
    target = torch.zeros(1, 3, 5)
    target[0, 0, 0] = 1
    target[0, 0, 1] = IGNORE
    target[0, 1, :2] = IGNORE  # cell (0, 0): 1 known pixel, positive
    target[0, 2, 4] = 1  # cell (1, 2): a single pixel, positive
    target[0, 2, 2:4] = IGNORE  # cell (1, 1): all void
    soft, valid = downsample_targets(target[None], stride=2)
    assert soft.shape == valid.shape == (1, 1, 2, 3)
    assert soft[0, 0, 0, 0] == 1.0 and soft[0, 0, 1, 2] == 1.0
    assert not valid[0, 0, 1, 1] and soft[0, 0, 1, 1] == 0 and valid.sum() == 5
    assert soft[0, 0, 0, 1] == 0.0 and soft[0, 0, 1, 0] == 0.0


def test_downsample_of_an_image_size_matches_the_aux_head():
    soft, valid = downsample_targets(torch.rand(2, 3, 33, 40), stride=8)
    assert soft.shape == (2, 3, 5, 5) and valid.all()
    with pytest.raises(ValueError, match="mode"):
        downsample_targets(torch.rand(1, 3, 8, 8), stride=2, mode="mean")


def test_labels_from_mask_min_fraction_over_non_void_pixels():
    mask = torch.zeros(10, 10, dtype=torch.int64)
    mask[0, :5] = 1  # 5 of 90 known pixels
    mask[9, :] = 3  # 10 void
    mask[5, 5] = 2  # 1 pixel
    assert labels_from_mask(mask, 3, ignore_index=3).tolist() == [1, 1, 1]
    assert labels_from_mask(mask, 3, ignore_index=3, min_fraction=5 / 90).tolist() == [1, 1, 0]
    assert labels_from_mask(mask, 3, ignore_index=3, min_fraction=0.06).tolist() == [1, 0, 0]
    assert labels_from_mask(torch.full((2, 2), 3), 3, ignore_index=3).tolist() == [0, 0, 0]


# -- CSV and datasets -------------------------------------------------------------------------------


def test_read_label_csv(tmp_path):
    root = write_csv_set(tmp_path)
    names, label_names, labels = read_label_csv(root / "labels.csv")
    assert names[:2] == ["0.png", "1.png"] and label_names == list(LABELS)
    assert labels.shape == (10, 3) and labels.dtype == np.float32 and labels[5].tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty CSV"),
        ("Filenames,a,b\n", "header but no rows"),
        ("Filenames,a,b\nx.png,1,2\n", r"line 2 \(x.png\), column 'b': expected 0 or 1, found '2'"),
        ("Filenames,a,b\nx.png,1,yes\n", "expected 0 or 1, found 'yes'"),
        ("Filenames,a,b\nx.png,1,0\ny.png,0,0\nx.png,0,1\n", "appear more than once: x.png"),
        ("Filenames,a,b\nx.png,1\n", "line 2: 2 values for 3 columns"),
        ("Filenames\nx.png\n", "no label columns"),
    ],
)
def test_read_label_csv_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        read_label_csv(path)
    assert str(path) in str(error.value)


def test_missing_images_are_named(tmp_path):
    root = write_csv_set(tmp_path)
    (root / "images" / "3.png").unlink()
    (root / "images" / "7.png").unlink()
    with pytest.raises(DataError, match=r"2 file\(s\) named in .*labels.csv are missing: 3.png, 7.png"):
        MultiLabelDataset(root / "images", root / "labels.csv")


def test_multilabel_dataset_items_and_stem_names(tmp_path):
    root = write_csv_set(tmp_path)
    dataset = MultiLabelDataset(root / "images", root / "labels.csv", names=["3.png", "1.png"])
    assert dataset.names == ["1.png", "3.png"] and len(dataset) == 2
    item = dataset[1]
    assert item["image"].shape == (3, 36, 44) and item["image"].max() <= 1.0
    assert item["labels"].tolist() == [1, 1, 0] and item["name"] == "3.png"
    (root / "labels.csv").write_text("name,cat,dog,sky\n2,0,1,0\n")  # a stem, no extension
    assert MultiLabelDataset(root / "images", root / "labels.csv")[0]["labels"].tolist() == [0, 1, 0]
    with pytest.raises(KeyError, match=r"99\.png"):
        dataset.subset(["99.png"])


def test_mask_label_dataset_labels_and_aux_targets(tmp_path):
    root = write_mask_set(tmp_path)
    dataset = MaskLabelDataset(root / "images", root / "masks", 3, ignore_index=3, min_fraction=4 / 590)
    assert dataset.names == [f"f{i}" for i in range(5)]
    # class 2 covers 2 + index of 590 known pixels
    assert dataset.label_matrix()[:, 2].tolist() == [0, 0, 1, 1, 1]
    item = dataset[0]
    assert item["labels"].tolist() == [1, 1, 0] and item["name"] == "f0"
    aux = item["aux_mask"]
    assert aux.shape == (3, 20, 30) and aux[:, 0, :10].eq(IGNORE).all()
    assert aux[1, 3, 15:].eq(1).all() and aux[0, 3, :15].eq(1).all() and aux[2, 5, :2].eq(1).all()
    assert "aux_mask" not in dataset.subset(["f1"], aux=False)[0]


def test_datamodule_holdout_folds_and_batches(tmp_path):
    root = write_csv_set(tmp_path, n=20)
    module = ClassificationDataModule(
        str(root), model_name="aux_resnet18", image_size=32, batch_size=4, num_workers=0, run_dir=str(tmp_path)
    )
    module.setup("fit")
    names = sorted(f"{i}.png" for i in range(20))
    assert module.stems_of("test") == names[::5]
    assert len(module.stems_of("val")) == 4 and len(module.stems_of("train")) == 12
    assert (tmp_path / "folds.csv").is_file() and module.label_names == list(LABELS)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 3)
    assert batch["labels"].dtype == torch.float32 and len(batch["name"]) == 4
    val = next(iter(module.val_dataloader()))
    assert val["image"].shape == (4, 3, 32, 32)
    assert next(iter(module.predict_dataloader()))["name"] == names[::5][:4]
    assert module.prior().shape == (3,)
    with pytest.raises(ValueError, match=r"3 label columns .* num_classes=5"):
        ClassificationDataModule(str(root), num_classes=5, num_workers=0).setup("fit")


def test_datamodule_from_masks_contiguous_blocks(tmp_path):
    root = write_mask_set(tmp_path, n=10)
    module = ClassificationDataModule(
        str(root),
        masks="masks",
        num_classes=3,
        ignore_index=3,
        holdout_every=0,
        n_folds=5,
        group_blocks=5,
        fold=4,
        model_name="aux_resnet18",
        image_size=16,
        batch_size=2,
        num_workers=0,
    )
    module.setup("fit")
    val = module.stems_of("val")
    assert val in [[f"f{2 * block}", f"f{2 * block + 1}"] for block in range(5)]  # one contiguous block
    batch = next(iter(module.train_dataloader()))
    assert batch["aux_mask"].shape == (2, 3, 16, 16) and batch["labels"].shape == (2, 3)
    assert "aux_mask" not in next(iter(module.val_dataloader()))


def test_multilabel_module_is_a_deprecated_alias():
    from ternaus_zoo.data import multilabel

    with pytest.warns(DeprecationWarning, match=r"moved to ternaus_zoo\.data\.classification_datamodule"):
        assert multilabel.ClassificationDataModule is ClassificationDataModule
    with pytest.warns(DeprecationWarning, match="label_datasets"):
        from ternaus_zoo.data.multilabel import read_label_csv as moved
    assert moved is read_label_csv
    with pytest.raises(AttributeError, match="no attribute 'absent'"):
        multilabel.absent  # noqa: B018


# -- real data --------------------------------------------------------------------------------------


@pytest.mark.data
def test_miml_csv_2000_rows_5_labels_and_holdout(dataset_dir):
    folder = dataset_dir("miml")
    names, label_names, labels = read_label_csv(folder / "labels.csv")
    assert len(names) == 2000 and label_names == ["desert", "mountains", "sea", "sunset", "trees"]
    assert (labels.sum(1) >= 2).sum() == 457
    module = ClassificationDataModule(str(folder), num_classes=5, num_workers=0, image_size=64)
    module.setup("fit")  # every named file exists
    holdout, _ = holdout_split(names, 5)
    assert module.stems_of("test") == holdout and len(holdout) == 400
    item = module.val_dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["labels"].shape == (5,)


@pytest.mark.data
def test_camvid_labels_from_two_masks(dataset_dir):
    folder = dataset_dir("camvid-val")
    stems = sorted(path.stem for path in (folder / "masks").iterdir())[:2]
    dataset = MaskLabelDataset(folder / "images", folder / "masks", 11, ignore_index=11, min_fraction=0.01, stems=stems)
    for stem, labels in zip(stems, dataset.label_matrix(), strict=True):
        mask = cv2.imread(str(folder / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        known = mask[mask != 11]
        expected = np.bincount(known, minlength=11)[:11] / known.size >= 0.01
        assert labels.tolist() == expected.astype(np.float32).tolist()
    assert dataset[0]["aux_mask"].shape == (11, 360, 480)
