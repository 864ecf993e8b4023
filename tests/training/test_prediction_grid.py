"""The prediction grid: image | mask | prediction of fixed validation images, to TensorBoard and PNG files."""

from __future__ import annotations

import cv2
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from ternaus_zoo.training import PredictionGrid, SegmentationModule
from tests.training.test_module import TINY_UNET
from tests.training.test_module import _data as tiny_data


def test_grid_of_fixed_validation_images_goes_to_tensorboard_and_png(shapes_folder, tmp_path, monkeypatch):
    logged = []
    logger = TensorBoardLogger(tmp_path, name="tb")
    monkeypatch.setattr(logger.experiment, "add_image", lambda tag, grid, global_step: logged.append((tag, grid)))
    data = tiny_data(shapes_folder)
    module = SegmentationModule(**TINY_UNET)
    trainer = pl.Trainer(max_epochs=3, logger=logger, callbacks=[PredictionGrid(every_n_epochs=2, num_images=3)],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(module, datamodule=data)
    # epoch 2 (every 2nd) and epoch 3 (the last), not the sanity check
    assert [tag for tag, _ in logged] == ["val/predictions"] * 2
    grid = logged[-1][1]
    assert grid.shape == (3, 3 * 32 + 4 * 2, 3 * 32 + 4 * 2)  # 3 rows of image | mask | prediction, 2 px padding
    data.setup("validate")
    mask = data.val_dataset[0]["mask"][0]
    torch.testing.assert_close(grid[0, 2 : 2 + 32, 36 : 36 + 32], mask.float())  # row 1, column 2: the mask
    pictures = sorted((tmp_path / "tb" / "version_0" / "predictions").glob("*.png"))
    assert [path.name for path in pictures] == ["epoch001.png", "epoch002.png"]
    assert cv2.imread(str(pictures[-1])).shape == (grid.shape[1], grid.shape[2], 3)
