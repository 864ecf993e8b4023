"""Callbacks the recipes need that Lightning lacks."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class CycleSnapshots(Callback):
    """Saves ``snapshot-cycleNN.ckpt`` after every ``cycle_steps`` optimiser steps: one run of a
    cyclic schedule then yields a snapshot ensemble (the Carvana recipe).

    Args:
        cycle_steps: steps in one cycle of the schedule; ``None``: the module's ``cycle_steps``
            attribute, read when training starts (it is known once the optimiser is configured).
        dirpath: folder of the snapshots; default: the trainer's ``log_dir/checkpoints``.
    """

    def __init__(self, cycle_steps: int | None = None, dirpath: str | None = None) -> None:
        self.cycle_steps = cycle_steps
        self.dirpath = dirpath

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.cycle_steps is None:
            self.cycle_steps = getattr(pl_module, "cycle_steps", None)
        if self.cycle_steps is None or self.cycle_steps < 1:
            raise ValueError(f"CycleSnapshots needs cycle_steps >= 1, got {self.cycle_steps}")

    def snapshot_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step = trainer.global_step
        if step > 0 and step % self.cycle_steps == 0:
            trainer.save_checkpoint(self.snapshot_dir(trainer) / f"snapshot-cycle{step // self.cycle_steps:02d}.ckpt")
