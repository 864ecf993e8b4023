"""``ZooModule``: what the segmentation and classification modules share: the weights applied when fitting
starts, the encoder freeze, optimisers with discriminative rates, per-step schedules, and the best/last/
snapshot/SWA checkpoint callbacks. Subclasses build ``self.model``, save the hyperparameters named below and
say which validation score picks the best checkpoint (:attr:`ZooModule.monitor`).

Hyperparameters read here: ``weights``, ``optimizer``, ``lr``, ``encoder_lr_ratio``, ``weight_decay``,
``freeze_encoder_epochs``, ``scheduler``, ``scheduler_kwargs``, ``swa_lr``, ``swa_epoch_start``.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, StochasticWeightAveraging
from torch import nn

from ternaus_zoo.training.callbacks import CycleSnapshots
from ternaus_zoo.training.schedules import StepCyclicRates, build_scheduler
from ternaus_zoo.weights import load_weights

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The pretrained part of a zoo model (the module its ``encoder_weights`` point at), if any."""
    spec = getattr(model, "encoder_weights", None)
    if spec is not None:
        return model.get_submodule(spec.encoder)
    return getattr(model, "encoder", None)


class ZooModule(pl.LightningModule):
    """The shared base of ``SegmentationModule`` and ``ClassificationModule``."""

    model: nn.Module
    _weights_applied: bool

    @property
    def monitor(self) -> str:
        """The validation score the best checkpoint is chosen by."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self._weights_applied:
            load_weights(self.model, self.hparams.weights)
            self._weights_applied = True

    def on_train_epoch_start(self) -> None:
        encoder = encoder_of(self.model)
        if encoder is not None and self.hparams.freeze_encoder_epochs > 0:
            trainable = self.current_epoch >= self.hparams.freeze_encoder_epochs
            for parameter in encoder.parameters():
                parameter.requires_grad_(trainable)

    def configure_callbacks(self) -> list[Callback]:
        """The best checkpoint by :attr:`monitor` and ``last.ckpt`` after every epoch (Lightning's own
        ``save_last`` only follows a new best)."""
        if self._trainer is None or self.trainer.checkpoint_callback is None:  # checkpointing turned off
            return []
        best = ModelCheckpoint(
            monitor=self.monitor, mode="max", filename="best-epoch{epoch:03d}", auto_insert_metric_name=False
        )
        last = ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False)
        callbacks: list[Callback] = [best, last]
        if self.hparams.scheduler == "step_cyclic":
            callbacks.append(CycleSnapshots())
        if self.hparams.swa_lr is not None:
            callbacks.append(
                StochasticWeightAveraging(swa_lrs=self.hparams.swa_lr, swa_epoch_start=self.hparams.swa_epoch_start)
            )
        return callbacks

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The encoder at ``lr * encoder_lr_ratio``, everything else at ``lr``."""
        encoder = encoder_of(self.model)
        encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
        rest = [p for p in self.model.parameters() if id(p) not in encoder_ids]
        groups = [{"params": rest, "lr": self.hparams.lr, "name": "decoder"}]
        if encoder_ids:
            groups.append(
                {
                    "params": list(encoder.parameters()),
                    "lr": self.hparams.lr * self.hparams.encoder_lr_ratio,
                    "name": "encoder",
                }
            )
        return groups

    def _steps(self) -> tuple[int, int]:
        """Optimiser steps of the whole run and of one epoch."""
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return total_steps, max(1, total_steps // max(1, self.trainer.max_epochs or 1))

    def configure_optimizers(self) -> dict[str, Any]:
        options: dict[str, Any] = {"weight_decay": self.hparams.weight_decay}
        if self.hparams.optimizer == "sgd":
            options.update(momentum=0.9, nesterov=True)
        optimizer = OPTIMIZERS[self.hparams.optimizer](self.parameter_groups(), lr=self.hparams.lr, **options)
        total_steps, steps_per_epoch = self._steps()
        scheduler = build_scheduler(
            optimizer,
            self.hparams.scheduler,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            **(self.hparams.scheduler_kwargs or {}),
        )
        if isinstance(getattr(scheduler, "lr_lambdas", [None])[0], StepCyclicRates):
            self.cycle_steps = scheduler.lr_lambdas[0].cycle_steps  # read by CycleSnapshots
        if scheduler is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
