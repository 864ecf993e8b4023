"""``ZooModule``: what the segmentation and classification modules share: the registry model and the weights
applied when fitting starts, the hyperparameters, the training options of
:class:`~ternaus_zoo.training.optimization.Optimization` (optimisers with discriminative rates, schedules that
follow the run's progress in steps or training time, SWA), the encoder freeze (batch-norm statistics included)
and the best/last/snapshot checkpoint callbacks. Subclasses pass their model arguments and ``**optimization``
(the flat options) up, and say which validation score picks the best checkpoint (:attr:`ZooModule.monitor`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from ternaus_zoo.errors import BadValueError
from ternaus_zoo.models.factory import create_model
from ternaus_zoo.registry import ModelInfo
from ternaus_zoo.training.callbacks import SpacedLastCheckpoint
from ternaus_zoo.training.optimization import OPTIMIZERS, Optimization
from ternaus_zoo.training.progress import RunProgress, TrainingClock
from ternaus_zoo.training.schedules import Shape, progress_scheduler
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
    # the training clock's time source (a fake one in tests); the clock itself is made for every run
    time_source: Callable[[], float] = time.monotonic
    training_clock: TrainingClock | None = None
    run_progress: RunProgress | None = None
    schedule: Shape | None = None

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

    def on_train_batch_start(self, batch: Any, batch_index: int) -> None:
        fraction = self.optimization.freeze_encoder_fraction
        if fraction > 0:
            frozen = self.progress() < fraction
            if frozen != self._encoder_frozen:
                self.freeze_encoder(frozen)

    # -- progress ----------------------------------------------------------------------------------

    def progress(self) -> float:
        """The fraction of the run done so far, in steps or in training time."""
        if self.run_progress is None:
            raise RuntimeError("the run's progress is known once the optimiser is configured")
        return float(self.run_progress(self.trainer.global_step))

    def completed_cycles(self) -> int:
        """The cycles of the schedule completed so far (read by ``CycleSnapshots``)."""
        if self.run_progress is None or not hasattr(self.schedule, "completed_cycles"):
            raise RuntimeError(f"the {self.optimization.scheduler!r} schedule has no cycles")
        return self.schedule.completed_cycles(self.run_progress(self.trainer.global_step))

    def _run_progress(self) -> tuple[RunProgress, int | None]:
        """The run's progress, and its optimiser steps per epoch (``None`` for a loader without a length).

        Raises:
            BadValueError: no time budget and no bounded number of steps (``trainer.max_time`` alone).
        """
        trainer = self.trainer
        estimated = trainer.estimated_stepping_batches
        total_steps = max(1, int(estimated)) if math.isfinite(estimated) else None
        if total_steps is None and self.training_clock is None:
            raise BadValueError(
                "trainer.max_time alone gives the schedule no length: set model.train_minutes (a training-time "
                "budget the schedule follows), trainer.max_epochs or trainer.max_steps"
            )
        batches = trainer.num_training_batches
        steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None
        return RunProgress(total_steps=total_steps, clock=self.training_clock), steps_per_epoch

    # -- optimisers and checkpoints ----------------------------------------------------------------

    def configure_callbacks(self) -> list[Callback]:
        """The training clock of ``train_minutes``; the best checkpoint by :attr:`monitor` and ``last.ckpt`` after
        every epoch (Lightning's own ``save_last`` only follows a new best), plus the snapshots and SWA of the
        training options. With SWA there is no best checkpoint: ``last.ckpt`` holds the averaged weights, the
        model to keep."""
        self.training_clock = self.optimization.clock(self.time_source)
        # first: the snapshots read the progress it updates after each batch
        clock = [self.training_clock] if self.training_clock is not None else []
        if self._trainer is None or self.trainer.checkpoint_callback is None:  # checkpointing turned off
            return clock
        best = ModelCheckpoint(
            monitor=self.monitor, mode="max", filename="best-epoch{epoch:03d}", auto_insert_metric_name=False
        )
        # saved at every training epoch's end, so a run that never validates (shorter than
        # check_val_every_n_epoch) still leaves a checkpoint
        if self.training_clock is not None:  # a time-budgeted run: written as often as it validates, and at its end
            interval = self.training_clock.val_every_seconds or self.training_clock.budget_seconds / 8
            last: ModelCheckpoint = SpacedLastCheckpoint(interval)
        else:
            last = ModelCheckpoint(
                filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True
            )
        if self.optimization.swa_lr is not None:
            # SWA's model is the average, written to last.ckpt at the end; a "best" epoch checkpoint would hold
            # one epoch's weights and be taken instead of it (bagging and predict use the best)
            return [*clock, last, *self.optimization.callbacks()]
        return [*clock, best, last, *self.optimization.callbacks()]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The encoder at ``lr * encoder_lr_ratio``, everything else at ``lr``."""
        return self.optimization.parameter_groups(self.model, encoder_of(self.model))

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimiser and, for a schedule other than ``constant``, a ``LambdaLR`` of the run's progress
        stepped every optimiser step."""
        optimizer = self.optimization.build_optimizer(self.parameter_groups())
        if not self.optimization.follows_progress:
            return {"optimizer": optimizer}
        self.run_progress, steps_per_epoch = self._run_progress()
        self.schedule = self.optimization.shape(self.run_progress, steps_per_epoch)
        if self.schedule is None:
            return {"optimizer": optimizer}
        scheduler = progress_scheduler(optimizer, self.schedule, self.run_progress)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
