"""``ZooModule``: what the segmentation and classification modules share: the registry model and the weights
applied when fitting starts, the hyperparameters, the training options of
:class:`~ternaus_zoo.training.optimization.Optimization` (optimisers with discriminative rates, per-step
schedules, SWA), the encoder freeze (batch-norm statistics included) and the best/last/snapshot checkpoint
callbacks. Subclasses pass their model arguments and ``**optimization`` (the flat options) up, and say which
validation score picks the best checkpoint (:attr:`ZooModule.monitor`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ternaus_zoo.models.factory import create_model
from ternaus_zoo.registry import ModelInfo
from ternaus_zoo.training.optimization import OPTIMIZERS, Optimization
from ternaus_zoo.training.schedules import StepCyclicRates
from ternaus_zoo.weights import load_weights

__all__ = ["OPTIMIZERS", "Optimization", "ZooModule", "encoder_of", "norm_layers"]


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The pretrained part of a zoo model (the module its ``encoder_weights`` point at), if any."""
    spec = getattr(model, "encoder_weights", None)
    if spec is not None:
        return model.get_submodule(spec.encoder)
    return getattr(model, "encoder", None)


def norm_layers(module: nn.Module) -> Iterator[nn.Module]:
    """The layers of ``module`` with running statistics (batch, instance and sync batch norm)."""
    return (layer for layer in module.modules() if isinstance(layer, _NormBase))


class ZooModule(pl.LightningModule):
    """The shared base of ``SegmentationModule`` and ``ClassificationModule``.

    Args:
        model / model_kwargs / num_classes / in_channels: the registry model and its options.
        weights: ``None``, ``"imagenet"`` or a checkpoint path, applied when fitting starts (so that
            rebuilding from a checkpoint never downloads).
        **optimization: the fields of :class:`~ternaus_zoo.training.optimization.Optimization`, flat
            (``lr=3e-4, scheduler="onecycle"``).

    The hyperparameters are the subclass's arguments and every ``Optimization`` field, defaults included.
    """

    _encoder_frozen = False

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any] | None,
        num_classes: int,
        in_channels: int,
        weights: str | None,
        **optimization: Any,
    ) -> None:
        super().__init__()
        self.optimization = Optimization(**optimization)
        self.save_hyperparameters(self.optimization.hyperparameters())
        # Lightning reads the arguments of every __init__ up the call stack, the subclass's included
        self.save_hyperparameters()
        self.model = create_model(model, num_classes=num_classes, in_channels=in_channels, **(model_kwargs or {}))
        self._weights_applied = weights is None

    @property
    def info(self) -> ModelInfo:
        """The model's :class:`~ternaus_zoo.registry.ModelInfo`."""
        return self.model.info

    @property
    def monitor(self) -> str:
        """The validation score the best checkpoint is chosen by."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self._weights_applied:
            load_weights(self.model, self.hparams.weights)
            self._weights_applied = True

    # -- the encoder freeze ------------------------------------------------------------------------

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Freeze (or release) the encoder: no gradients for its parameters, and its normalisation layers in
        eval mode, so that their running statistics stay as loaded (kept through later :meth:`train` calls)."""
        encoder = encoder_of(self.model)
        if encoder is None:
            return
        self._encoder_frozen = frozen
        encoder.requires_grad_(not frozen)
        for layer in norm_layers(encoder):
            layer.train(self.training and not frozen)

    def train(self, mode: bool = True) -> ZooModule:
        """``nn.Module.train``, leaving the normalisation layers of a frozen encoder in eval mode."""
        super().train(mode)
        encoder = encoder_of(self.model) if mode and self._encoder_frozen else None
        if encoder is not None:
            for layer in norm_layers(encoder):
                layer.eval()
        return self

    def on_train_epoch_start(self) -> None:
        epochs = self.optimization.freeze_encoder_epochs
        if epochs > 0:
            self.freeze_encoder(self.current_epoch < epochs)

    # -- optimisers and checkpoints ----------------------------------------------------------------

    def configure_callbacks(self) -> list[Callback]:
        """The best checkpoint by :attr:`monitor` and ``last.ckpt`` after every epoch (Lightning's own
        ``save_last`` only follows a new best), plus the snapshots and SWA of the training options. With SWA
        there is no best checkpoint: ``last.ckpt`` holds the averaged weights, the model to keep."""
        if self._trainer is None or self.trainer.checkpoint_callback is None:  # checkpointing turned off
            return []
        best = ModelCheckpoint(
            monitor=self.monitor, mode="max", filename="best-epoch{epoch:03d}", auto_insert_metric_name=False
        )
        # saved at every training epoch's end, so a run that never validates (shorter than
        # check_val_every_n_epoch) still leaves a checkpoint
        last = ModelCheckpoint(
            filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
        )
        if self.optimization.swa_lr is not None:
            # SWA's model is the average, written to last.ckpt at the end; a "best" epoch checkpoint would hold
            # one epoch's weights and be taken instead of it (bagging and predict use the best)
            return [last, *self.optimization.callbacks()]
        return [best, last, *self.optimization.callbacks()]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The encoder at ``lr * encoder_lr_ratio``, everything else at ``lr``."""
        return self.optimization.parameter_groups(self.model, encoder_of(self.model))

    def _steps(self) -> tuple[int, int]:
        """Optimiser steps of the whole run and of one epoch."""
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        return total_steps, max(1, total_steps // max(1, self.trainer.max_epochs or 1))

    def configure_optimizers(self) -> dict[str, Any]:
        total_steps, steps_per_epoch = self._steps()
        optimizer, scheduler = self.optimization.build(
            self.parameter_groups(), total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )
        if isinstance(getattr(scheduler, "lr_lambdas", [None])[0], StepCyclicRates):
            self.cycle_steps = scheduler.lr_lambdas[0].cycle_steps  # read by CycleSnapshots
        if scheduler is None:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
