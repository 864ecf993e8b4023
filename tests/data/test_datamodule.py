"""SegmentationDataModule on a tiny synthetic folder: splits, loaders, folds.csv, Lightning and CLI use."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from ternaus_zoo.data import HOLDOUT, SegmentationDataModule, load_folds, worker_init_fn

from .synthetic import random_image, write


@pytest.fixture
def toy_root(tmp_path, make_folder):
    make_folder(12, size=(40, 56), root=tmp_path / "toy")
    return tmp_path


def module(root, **options) -> SegmentationDataModule:
    defaults = {"data_root": str(root), "num_workers": 0, "batch_size": 2, "image_size": 32, "n_folds": 3}
    return SegmentationDataModule("toy", **{**defaults, **options})


def test_splits_and_loaders(toy_root):
    data = module(toy_root, holdout_every=4, fold=1)
    data.setup("fit")
    assert data.stems_of("test") == [f"item{index:02d}" for index in (0, 4, 8)]
    train, val = data.stems_of("train"), data.stems_of("val")
    assert len(train) == 6 and len(val) == 3 and not set(train) & set(val)
    assert not (set(train) | set(val)) & set(data.stems_of("test"))

    loader = data.train_dataloader()
    assert loader.drop_last and loader.worker_init_fn is worker_init_fn and not loader.pin_memory
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].shape == (2, 1, 32, 32)
    assert batch["original_size"].tolist() == [[40, 56], [40, 56]] and len(batch["name"]) == 2

    val_batch = next(iter(data.val_dataloader()))  # full resolution, padded to 32, one per batch
    assert val_batch["image"].shape == (1, 3, 64, 64) and val_batch["mask"].shape == (1, 1, 64, 64)
    assert len(data.test_dataloader().dataset) == 3

    predict = next(iter(data.predict_dataloader()))  # the hold-out images, no masks
    assert set(predict) == {"image", "name", "original_size"} and predict["name"] == ["item00"]


def test_val_size_batches_fixed_squares_and_classes_pad_with_ignore(tmp_path, make_folder):
    make_folder(9, size=(40, 56), classes=3, root=tmp_path / "toy")
    data = module(tmp_path, mask_mode="classes", num_classes=3, ignore_index=255, val_size=48)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].dtype == torch.int64
    assert set(batch["mask"].unique().tolist()) == {0, 1, 2, 255}
    with pytest.raises(RuntimeError, match="holdout_every"):
        data.test_dataloader()


def test_folds_csv_is_written_and_reproduces_the_split(toy_root, tmp_path):
    first = module(toy_root, holdout_every=3, seed=5, run_dir=str(tmp_path / "run"))
    first.setup("fit")
    saved = load_folds(tmp_path / "run" / "folds.csv")
    assert saved == first.folds and sum(fold == HOLDOUT for fold in saved.values()) == 4
    again = module(toy_root, folds_file=str(tmp_path / "run" / "folds.csv"), fold=2)
    again.setup("fit")
    assert again.folds == saved and again.stems_of("val") == [s for s, f in saved.items() if f == 2]


def test_folds_file_must_match_the_folder(toy_root, tmp_path):
    (tmp_path / "folds.csv").write_text("stem,fold\nitem00,0\nghost,1\n")
    data = module(toy_root, folds_file=str(tmp_path / "folds.csv"))
    with pytest.raises(ValueError, match=r"not in the file: item01.*not in the data set: ghost"):
        data.setup("fit")


def test_group_blocks_keep_contiguous_validation(toy_root):
    data = module(toy_root, group_blocks=3, fold=0, seed=1)
    data.setup("fit")
    indices = [int(stem[4:]) for stem in data.stems_of("val")]
    assert indices == list(range(indices[0], indices[0] + 4))


def test_data_root_from_environment_and_grey_channels(tmp_path, monkeypatch):
    for index in range(4):
        write(tmp_path / "grey" / "images" / f"{index}.png", random_image(32, 32, channels=1, seed=index))
        write(tmp_path / "grey" / "masks" / f"{index}.png", np.zeros((32, 32), np.uint8))
    monkeypatch.setenv("TERNAUS_ZOO_DATA", str(tmp_path))
    data = SegmentationDataModule("grey", n_folds=2, num_workers=0, image_size=32)
    assert data.in_channels == 1 and len(data.info.mean) == 1
    data.setup("fit")
    assert next(iter(data.train_dataloader()))["image"].shape == (2, 1, 32, 32)
    forced = SegmentationDataModule("grey", n_folds=2, num_workers=0, image_size=32, in_channels=3)
    forced.setup("fit")
    assert next(iter(forced.val_dataloader()))["image"].shape == (1, 3, 32, 32)


def test_errors(toy_root, tmp_path):
    with pytest.raises(ValueError, match=r"fold must be in 0\.\.2"):
        module(toy_root, fold=3)
    with pytest.raises(FileNotFoundError, match="absent"):
        SegmentationDataModule("absent", data_root=str(tmp_path)).setup("fit")
    with pytest.raises(RuntimeError, match="setup"):
        module(toy_root).train_dataloader()


def test_workers_options(toy_root):
    data = module(toy_root, num_workers=2, val_size=32)
    data.setup("fit")
    train, val = data.train_dataloader(), data.val_dataloader()
    assert train.num_workers == 2 and train.persistent_workers and val.persistent_workers
    assert val.batch_size == 2


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def training_step(self, batch, batch_index):
        return nn.functional.binary_cross_entropy_with_logits(self.conv(batch["image"]), batch["mask"])

    def validation_step(self, batch, batch_index):
        loss = nn.functional.binary_cross_entropy_with_logits(self.conv(batch["image"]), batch["mask"])
        self.log("val_loss", loss, batch_size=len(batch["name"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_runs_under_a_trainer_and_writes_folds_to_its_log_dir(toy_root, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    trainer = pl.Trainer(
        max_epochs=1,
        logger=CSVLogger(tmp_path / "logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        log_every_n_steps=1,
    )
    data = module(toy_root, holdout_every=4)
    trainer.fit(_Tiny(), datamodule=data)
    assert load_folds(f"{trainer.log_dir}/folds.csv") == data.folds


def test_lightning_cli_can_parse_the_arguments():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SegmentationDataModule, "data")
    config = parser.parse_args(["--data.dataset=kvasir-seg", "--data.scale=[0.3, 1.0]", "--data.val_size=320"])
    assert config.data.scale == (0.3, 1.0) and config.data.val_size == 320 and config.data.mask_mode == "binary"
