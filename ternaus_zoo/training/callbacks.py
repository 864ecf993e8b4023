"""Callbacks the recipes need that Lightning lacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import Tensor
from torchvision.utils import make_grid

from ternaus_zoo.data.display import colour_masks


class SpacedLastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at a training epoch's end only once ``interval_s`` of wall time has passed since it was last
    written, and always when the run stops: on a small data set an epoch is a few steps, and writing the model and
    the optimiser's moments after each would take much of a time-budgeted run."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True,
                         **kwargs)  # fmt: skip
        self.interval_s, self.clock = interval_s, clock
        self._written_at = clock()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if trainer.should_stop or last_epoch or self.clock() - self._written_at >= self.interval_s:
            super().on_train_epoch_end(trainer, pl_module)
            self._written_at = self.clock()


class CycleSnapshots(Callback):
    """Saves ``snapshot-cycleNN.ckpt`` at the end of every cycle of the schedule: one run of a cyclic schedule
    then yields a snapshot ensemble (the Carvana recipe).

    Args:
        cycle_steps: a cycle every so many optimiser steps; ``None``: the cycles the module's schedule has
            completed (its ``completed_cycles()``, which follows the run's progress, in steps or training time).
        dirpath: folder of the snapshots; default: the trainer's ``log_dir/checkpoints``.
    """

    def __init__(self, cycle_steps: int | None = None, dirpath: str | None = None) -> None:
        if cycle_steps is not None and cycle_steps < 1:
            raise ValueError(f"CycleSnapshots needs cycle_steps >= 1, got {cycle_steps}")
        self.cycle_steps = cycle_steps
        self.dirpath = dirpath
        self._saved = 0

    def completed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> int:
        """The cycles completed so far."""
        if self.cycle_steps is not None:
            return trainer.global_step // self.cycle_steps
        return pl_module.completed_cycles()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved = self.completed(trainer, pl_module)  # a resumed run has saved the cycles before

    def snapshot_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        done = self.completed(trainer, pl_module)
        if done > self._saved:
            self._saved = done
            trainer.save_checkpoint(self.snapshot_dir(trainer) / f"snapshot-cycle{done:02d}.ckpt")


def _display(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Normalised ``(B, C, H, W)`` images back to ``(B, 3, H, W)`` in [0, 1] (grey repeated, extra channels dropped)."""
    pixels = (images * std + mean).clamp(0, 1)
    return pixels[:, :3] if pixels.shape[1] >= 3 else pixels[:, :1].expand(-1, 3, -1, -1)


def _top_label(masks: Tensor) -> Tensor:
    """``(B, K, H, W)`` multi-label masks or probabilities to ``(B, H, W)``: 1 + the highest class present, else 0."""
    present = masks > 0.5
    labels = torch.arange(1, masks.shape[1] + 1, device=masks.device).view(1, -1, 1, 1)
    return (present * labels).amax(dim=1)


class PredictionGrid(Callback):
    """Every ``every_n_epochs`` validation epochs, a grid of image / mask / prediction for the first
    ``num_images`` validation images (always the same ones), so a run can be looked at while it trains.

    Logged to every logger that takes images (TensorBoard's ``add_image``, or a ``log_image`` method as in
    W&B and Neptune) under ``val/predictions``, and written as ``<log_dir>/predictions/epochNNN.png``.
    Does nothing for data without masks (classification).
    """

    def __init__(self, every_n_epochs: int = 5, num_images: int = 4) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(f"every_n_epochs and num_images must be >= 1, got {every_n_epochs}, {num_images}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return not trainer.sanity_checking and (epoch % self.every_n_epochs == 0 or last)

    def grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor | None:
        """``(3, H, W)`` rows of image | mask | prediction, or ``None`` when there is nothing to draw."""
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "val_dataset", None)
        if dataset is None or len(dataset) == 0:
            return None
        items = [dataset[index] for index in range(min(self.num_images, len(dataset)))]
        if "mask" not in items[0]:
            return None
        size = items[0]["image"].shape[-2:]
        items = [item for item in items if item["image"].shape[-2:] == size]  # one size a grid (no val_size)
        images = torch.stack([item["image"] for item in items]).to(pl_module.device)
        masks = torch.stack([item["mask"] for item in items]).to(pl_module.device)
        with torch.no_grad():
            logits = pl_module(images)
        if not isinstance(logits, Tensor) or logits.ndim != 4:  # a classifier (its masks feed an auxiliary loss)
            return None
        logits = logits.float()
        info = datamodule.info
        mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
        if getattr(pl_module.hparams, "multilabel", False):  # overlapping classes: the last one present on top
            predicted, truth = colour_masks(_top_label(logits.sigmoid())), colour_masks(_top_label(masks))
        else:
            predicted = colour_masks(logits.sigmoid() if logits.shape[1] == 1 else logits.argmax(1))
            truth = colour_masks(masks)
        tiles = torch.stack([_display(images.float(), mean, std), truth, predicted], dim=1).flatten(0, 1)
        return make_grid(tiles.cpu(), nrow=3, padding=2, pad_value=1.0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        # trainer.log_dir broadcasts from rank 0 under DDP: every process asks, then only rank 0 draws
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "predictions"
        if not trainer.is_global_zero:
            return
        grid = self.grid(trainer, pl_module)
        if grid is None:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/predictions", grid, global_step=trainer.global_step)
            elif hasattr(logger, "log_image"):
                logger.log_image(key="val/predictions", images=[grid], step=trainer.global_step)
        folder.mkdir(parents=True, exist_ok=True)
        picture = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(str(folder / f"epoch{trainer.current_epoch:03d}.png"), picture[..., ::-1])
