"""``Optimization``: how a zoo module trains: the optimiser and its discriminative rates, the per-step
schedule, the training-time budget it follows, the encoder freeze and stochastic weight averaging, as one typed,
validated object.

The modules take its fields as flat keyword arguments, spelt as in the YAML configs and on the command line
(``model.lr``, ``model.scheduler_kwargs``); :class:`~ternaus_zoo.training.base.ZooModule` builds the object
from them and saves every field as a hyperparameter, so checkpoints keep the flat keys.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from pytorch_lightning.callbacks import Callback, StochasticWeightAveraging
from torch import nn

from ternaus_zoo.errors import BadValueError
from ternaus_zoo.training.callbacks import CycleSnapshots
from ternaus_zoo.training.progress import RunProgress, TrainingClock
from ternaus_zoo.training.schedules import SCHEDULES, Shape, check_scheduler_options, schedule_shape

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
# what scheduler_kwargs may set: schedule_shape's options with a default (the others come from the run)
SCHEDULER_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(schedule_shape).parameters.items()
    if parameter.default is not inspect.Parameter.empty
)


@dataclass(frozen=True)
class Optimization:
    """The training options shared by the segmentation and classification modules.

    Args:
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: base learning rate of the decoder (or head); the encoder gets ``lr * encoder_lr_ratio``.
        encoder_lr_ratio: the encoder's share of ``lr`` (discriminative rates).
        weight_decay: decoupled for AdamW, L2 otherwise.
        freeze_encoder_epochs: during the first N epochs the encoder takes no steps and its batch-norm layers
            keep their running statistics.
        freeze_encoder_fraction: the same during the first fraction of the run (of its steps or its time budget).
        scheduler: one of :data:`ternaus_zoo.training.schedules.SCHEDULES`, a function of the run's progress
            applied every step.
        scheduler_kwargs: its options (``max_lr``, ``cycles``, ``mode`` ...).
        swa_lr: turn on stochastic weight averaging (Lightning's callback) at this learning rate.
        swa_epoch_start: epoch (or fraction of the epochs) where averaging starts.
        train_minutes: a budget of training time (validation excluded): the schedule follows the share of it
            spent, and training stops when it is spent. ``None``: the schedule follows the steps of the run.
        val_every_minutes: with ``train_minutes``, validate (and keep the best checkpoint) after every so many
            minutes of training instead of at epoch ends.
    """

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    encoder_lr_ratio: float = 1.0
    weight_decay: float = 0.0
    freeze_encoder_epochs: int = 0
    freeze_encoder_fraction: float = 0.0
    scheduler: str = "constant"
    scheduler_kwargs: dict[str, Any] | None = None
    swa_lr: float | None = None
    swa_epoch_start: float = 0.8
    train_minutes: float | None = None
    val_every_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise BadValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULES:
            raise BadValueError(f"unknown schedule {self.scheduler!r}; choose one of {SCHEDULES}")
        unknown = sorted(set(self.scheduler_kwargs or {}) - set(SCHEDULER_OPTIONS))
        if unknown:
            raise BadValueError(f"unknown scheduler_kwargs {unknown}; the schedules take {list(SCHEDULER_OPTIONS)}")
        check_scheduler_options(self.scheduler, self.scheduler_kwargs or {}, timed=self.train_minutes is not None)
        for name in ("lr", "swa_lr", "train_minutes", "val_every_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BadValueError(f"{name} must be > 0, got {value}")
        if not self.swa_epoch_start > 0:
            raise BadValueError(
                f"swa_epoch_start must be > 0 (an epoch, or a fraction of the epochs), got {self.swa_epoch_start}"
            )
        for name in ("encoder_lr_ratio", "weight_decay", "freeze_encoder_epochs"):
            if getattr(self, name) < 0:
                raise BadValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.freeze_encoder_fraction < 1:
            raise BadValueError(f"freeze_encoder_fraction must be in [0, 1), got {self.freeze_encoder_fraction}")
        if self.freeze_encoder_fraction > 0 and self.freeze_encoder_epochs > 0:
            raise BadValueError("freeze_encoder_epochs and freeze_encoder_fraction both set the freeze: give one")
        if self.val_every_minutes is not None and self.train_minutes is None:
            raise BadValueError("val_every_minutes spaces validation by training time: it needs train_minutes")
        if self.swa_lr is not None and self.train_minutes is not None:
            raise BadValueError(
                "swa_lr does not combine with train_minutes: Lightning's stochastic weight averaging starts at an "
                "epoch, which a time budget does not fix"
            )

    def hyperparameters(self) -> dict[str, Any]:
        """Every field by name: the flat keys of the configs and checkpoints."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def parameter_groups(self, model: nn.Module, encoder: nn.Module | None) -> list[dict[str, Any]]:
        """The encoder's parameters at ``lr * encoder_lr_ratio``, all others of ``model`` at ``lr``."""
        encoder_parameters = list(encoder.parameters()) if encoder is not None else []
        encoder_ids = {id(parameter) for parameter in encoder_parameters}
        rest = [parameter for parameter in model.parameters() if id(parameter) not in encoder_ids]
        groups = [{"params": rest, "lr": self.lr, "name": "decoder"}]
        if encoder_parameters:
            groups.append({"params": encoder_parameters, "lr": self.lr * self.encoder_lr_ratio, "name": "encoder"})
        return groups

    @property
    def follows_progress(self) -> bool:
        """Whether training reads the run's progress: a schedule other than ``constant``, or a fractional freeze."""
        return self.scheduler != "constant" or self.freeze_encoder_fraction > 0

    def clock(self, time_source: Callable[[], float] = time.monotonic) -> TrainingClock | None:
        """The training clock of ``train_minutes`` (``None`` without a budget)."""
        if self.train_minutes is None:
            return None
        val_every = self.val_every_minutes * 60 if self.val_every_minutes is not None else None
        return TrainingClock(self.train_minutes * 60, val_every, time_source=time_source)

    def build_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """The optimiser over ``groups``."""
        options: dict[str, Any] = {"weight_decay": self.weight_decay}
        if self.optimizer == "sgd":
            options.update(momentum=0.9, nesterov=True)
        return OPTIMIZERS[self.optimizer](groups, lr=self.lr, **options)

    def shape(self, progress: RunProgress, steps_per_epoch: int | None) -> Shape | None:
        """The schedule's multiplier of the base rates as a function of ``progress`` (``None`` for ``constant``)."""
        return schedule_shape(
            self.scheduler,
            lr=self.lr,
            progress=progress,
            steps_per_epoch=steps_per_epoch,
            **(self.scheduler_kwargs or {}),
        )

    def callbacks(self) -> list[Callback]:
        """A snapshot at the end of every ``step_cyclic`` cycle, and SWA when ``swa_lr`` is set."""
        callbacks: list[Callback] = []
        if self.scheduler == "step_cyclic":
            callbacks.append(CycleSnapshots())
        if self.swa_lr is not None:
            callbacks.append(StochasticWeightAveraging(swa_lrs=self.swa_lr, swa_epoch_start=self.swa_epoch_start))
        return callbacks
